"""The CLI's runtime-failure half of the error contract: exit 1, the cause in one line with the path of the full
log, a traceback only with ``-v``; usage errors are one line with exit 2."""

from __future__ import annotations

import pytest

from search import cli
from search.commands import evaluate


def _boom(args):
    raise RuntimeError("disk on fire\nsecond line of the cause")


def test_runtime_failure_is_one_line_with_the_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLEMORE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(evaluate, "run", _boom)
    rc = cli.main(["evaluate", "--predictions", "p.json", "--metadata", "m.csv"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("blemore evaluate: failed: RuntimeError: disk on fire second line of the cause")
    log = next((tmp_path / "logs").glob("blemore-evaluate-*.log"))
    assert f"full log: {log}" in err[0] and "Traceback" in log.read_text() and "_boom" in log.read_text()
    rc = cli.main(["evaluate", "--predictions", "p.json", "--metadata", "m.csv", "-v"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback (most recent call last)" in err and "_boom" in err


@pytest.mark.parametrize("argv,named", [(["train", "c.yaml", "--out", "o", "--folds", "x"], "--folds"),
                                        (["search", "s.yaml", "--num-samples", "many"], "--num-samples"),
                                        (["nosuch"], "nosuch")])
def test_usage_errors_are_one_line_exit_2(argv, named, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "error:" in err[0], err
