"""Issue 21, item 4: every YAML and JSON the CLI reads goes through one bounded loader (no aliases, a depth cap, a
size cap; answered within 1 s, exit 2 naming the file); prediction and metadata readers stop at a size cap."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from blemore_core import io as bio
from search.cli import main


def _bomb() -> str:
    """A "billion laughs" document: 9 levels of 9 aliases (~4e8 strings once expanded)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def test_loader_refuses_aliases_depth_and_size(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(_bomb())
    with pytest.raises(bio.BoundedInputError, match=r"x\.yaml: line 2: YAML alias \*a0 refused"):
        bio.load_yaml(p)
    p.write_text("a: " + "[" * 100 + "]" * 100)
    with pytest.raises(bio.BoundedInputError, match="nested deeper than 64"):
        bio.load_yaml(p)
    with pytest.raises(bio.BoundedInputError, match="larger than the"):
        bio.load_yaml("/dev/zero")
    with pytest.raises(bio.BoundedInputError, match="nested deeper"):
        bio.loads_json("[" * 5000 + "]" * 5000, "p.json")
    with pytest.raises(bio.BoundedInputError, match="nested deeper"):
        bio.loads_json("[" * 80 + "]" * 80, "p.json")
    p.write_text("a: &x 1\nb: [1, {c: 2}]\n")  # an anchor alone is harmless
    assert bio.load_yaml(p) == {"a": 1, "b": [1, {"c": 2}]}


def test_key_line_finds_nested_flat_and_listed_keys(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nparams:\n  train.lr: {type: loguniform}\nmodel:\n  top_n: 3\nm:\n  - a: 1\n  - b: 2\n")
    assert bio.key_line(p, "name") == 1
    assert bio.key_line(p, "params.train.lr") == 3
    assert bio.key_line(p, "model.top_n") == 5
    assert bio.key_line(p, "m.1.b") == 8
    assert bio.key_line(p, "model.nope") == 4  # the deepest key found
    assert bio.key_line(p, "nope") is None and bio.key_line(tmp_path / "missing.yaml", "a") is None


@pytest.fixture
def bomb_files(tmp_path, tiny_release):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_bomb())
    space = tmp_path / "space.yaml"
    space.write_text(f"name: s\npreset: baseline\ndata: {{dir: {tiny_release}}}\n" + _bomb())
    best = tmp_path / "best.yaml"
    best.write_text("model: {arch: mlp512}\nexport:\n" + "".join("  " + ln + "\n" for ln in _bomb().splitlines()))
    deep = tmp_path / "deep.json"
    deep.write_text('{"predictions": ' + "[" * 3000 + "]" * 3000 + "}")
    ok = tmp_path / "ok.json"
    ok.write_text('{"predictions": {}}')
    return {"ok": ok, "cfg": cfg, "space": space, "best": best, "deep": deep, "rel": tiny_release, "t": tmp_path}


CASES = {
    "train_config_bomb": (["train", "{cfg}", "--data", "{rel}", "--out", "{t}/o"], "bomb.yaml", "alias"),
    "search_space_bomb": (["search", "{space}", "--storage", "{t}/st", "--tracking-uri", "sqlite:///{t}/m.db"],
                          "space.yaml", "alias"),
    "retrain_export_bomb": (["retrain", "{best}", "--data", "{rel}", "--out", "{t}/o", "--no-mlflow"],
                            "best.yaml", "alias"),
    "evaluate_deep_json": (["evaluate", "--predictions", "{deep}", "--labels", "{rel}/test_labels.csv"],
                           "deep.json", "nested deeper"),
    "evaluate_endless_predictions": (["evaluate", "--predictions", "/dev/zero", "--labels", "{rel}/test_labels.csv"],
                                     "/dev/zero", "cap"),
    "evaluate_endless_labels": (["evaluate", "--predictions", "{ok}", "--labels", "/dev/zero"], "/dev/zero", "cap"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bombs_and_endless_files_are_exit_2_within_a_second(case, bomb_files, monkeypatch, capsys):
    argv, named, said = CASES[case]
    monkeypatch.chdir(bomb_files["t"])
    argv = [a.format(**bomb_files) for a in argv]
    t = time.time()
    rc = main(argv)
    took = time.time() - t
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert err[-1].startswith(f"blemore {argv[0]}: error: ") and named in err[-1] and said in err[-1], err
    assert took < 1.0 + (2.0 if argv[0] == "search" else 0.0), took  # search: + its preset/space imports
    assert not Path(bomb_files["t"] / "o").exists() and not Path(bomb_files["t"] / "st").exists()
