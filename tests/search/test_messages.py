"""Issue 21, item 8: config and space errors name the YAML line; every command prefixes its errors
``blemore <command>: error:``; names in advice are shell-quoted; resume is not advised for a search still
running; the experiment description's trial count is --num-samples."""

from __future__ import annotations

import pytest

from search import safety
from search.cli import main, with_yaml_lines


def test_config_and_space_errors_name_the_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {encoders: [imagebind], features: aggregated}\nmodel:\n  arch: mlp512\n  nope: 1\n"
                   "train: {lr: abc}\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: line 4: unknown key 'model.nope'" in err
    assert f"{cfg}: line 5: train.lr: expected a number, got 'abc'" in err
    space = tmp_path / "s.yaml"
    space.write_text("name: s\npreset: baseline\nfixed:\n  model.nope: 1\nparams:\n"
                     "  train.lr: {type: loguniform, low: 1, high: 0.1}\n")
    assert main(["search", str(space)]) == 2
    err = capsys.readouterr().err
    assert f"{space}: line 4: fixed: unknown key 'model.nope'" in err
    assert f"{space}: line 6: params.train.lr: empty range" in err


def test_line_annotation_leaves_other_messages_alone(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("ensemble:\n  members:\n    - config:\n        model: {arch: nope}\n")
    assert with_yaml_lines(f"{p} (ensemble.members[0].config): model.arch: unknown") == \
        f"{p} (ensemble.members[0].config): line 4: model.arch: unknown"
    for msg in ("--set: train.lr: must be finite", f"{p}: line 3: x", f"{p}: export.x (line 2): y",
                "/no/such.yaml: a.b: c"):
        assert with_yaml_lines(msg) == msg


@pytest.mark.parametrize("argv", [
    ["synth", "--profile", "tiny", "--encoders", "nope", "--out", "{t}/r"],
    ["train", "{t}/missing.yaml", "--out", "{t}/o"],
    ["evaluate", "--predictions", "{t}/missing.json", "--metadata", "{t}/m.csv"],
    ["search", "{t}/missing.yaml"],
    ["resume", "nosuch", "--storage", "{t}/st"],
    ["report", "--experiment", "x", "--tracking-uri", "sqlite:///{t}/none.db"],
    ["export", "--experiment", "x", "--out", "{t}/b.yaml", "--tracking-uri", "sqlite:///{t}/none.db"],
    ["ensemble", "--experiment", "x", "--out", "{t}/e.yaml", "--tracking-uri", "sqlite:///{t}/none.db"],
    ["retrain", "{t}/b.yaml", "--data", "{t}/nodata", "--out", "{t}/m"],
    ["predict", "{t}/m", "--data", "{t}/nodata", "--out", "{t}/s.zip"],
], ids=lambda a: a[0])
def test_every_command_prefixes_its_errors(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{t}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err and err[-1].startswith(f"blemore {argv[0]}: error: "), err
    assert not any(ln.startswith("error:") for ln in err), err


def test_advice_is_shell_quoted():
    assert safety.resume_command("dup ü x") == "blemore resume 'dup ü x'"
    assert safety.resume_command("s1", "/data/my runs") == "blemore resume s1 --storage '/data/my runs'"


def test_resume_is_not_advised_for_a_running_search(tmp_path):
    from mlflow.tracking import MlflowClient

    from search.records.store import NameLock

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("s1")
    msg = safety.name_taken_message("s1", tmp_path, None, uri)
    assert "blemore resume s1" in msg  # nothing running: resume is the advice
    lock = NameLock(client, exp, "s1", uri).acquire()
    try:
        msg = safety.name_taken_message("s1", tmp_path, None, uri)
    finally:
        lock.release()
    assert "still running" in msg and "blemore resume" not in msg


def test_description_counts_the_trials_of_num_samples(tmp_path, tiny_release):
    from search.runner import SearchOptions, _description
    from search.space import load_space
    from search.storage import resolve_storage

    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\npreset: baseline\ndata: {{dir: {tiny_release}}}\n"
                 "budget: {num_samples: 8, max_concurrent: 1}\n")

    class _Plan:
        def describe(self) -> str:
            return "plan"

    text = _description(load_space(p), SearchOptions(num_samples=3), "s", resolve_storage(str(tmp_path)),
                        str(tiny_release), _Plan())
    assert "3 trials" in text and "8 trials" not in text


@pytest.mark.parametrize("command", ["export", "ensemble", "report"])
def test_a_tracking_uri_that_is_not_a_database_is_named(command, tmp_path, capsys):
    (tmp_path / "notadb").write_text("hello")
    argv = [command, "--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path}/notadb"]
    assert main(argv + ([] if command == "report" else ["--out", str(tmp_path / "o.yaml")])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"blemore {command}: error: --tracking-uri ") and "is not an SQLite database" in err
    assert not (tmp_path / "o.yaml").exists()
