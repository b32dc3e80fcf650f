"""``blemore spaces``: one line per built-in space (its name, then its summary or ``--path``)."""

from __future__ import annotations

from pathlib import Path

from search.cli import main
from search.space import builtin_spaces


def test_one_line_per_builtin_space(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["spaces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = list(builtin_spaces())
    assert len(lines) == len(names) >= 4
    for line, name in zip(lines, names, strict=True):
        assert line.split()[0] == name and len(line.split()) > 2, line
    assert main(["spaces", "--path"]) == 0
    paths = [Path(line.split(maxsplit=1)[1]) for line in capsys.readouterr().out.splitlines()]
    assert [p.stem for p in paths] == names and all(p.is_file() for p in paths)
