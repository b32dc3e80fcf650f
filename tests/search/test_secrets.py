"""Issue 21, item 3: credentials in a URI (tracking store, storage, Ray address) never reach a message, log, MLflow
tag, manifest, written file or printed link: ``http://user:***@host``."""

from __future__ import annotations

import json

import pytest

from search import safety
from search.cli import main

SECRET = "PASSWORD"
URI = f"http://user:{SECRET}@127.0.0.1:9"  # port 9: nothing answers, refused at once


@pytest.mark.parametrize("argv", [
    ["search", "{space}", "--tracking-uri", URI],
    ["search", "{space}", "--storage", f"s3://key:{SECRET}@bucket/prefix", "--tracking-uri", "sqlite:///{t}/m.db"],
    ["search", "{space}", "--address", f"ray://user:{SECRET}@127.0.0.1:9", "--tracking-uri", "sqlite:///{t}/m.db"],
    ["resume", "nosuch", "--tracking-uri", URI],
    ["export", "--experiment", "x", "--out", "{t}/best.yaml", "--tracking-uri", URI],
    ["ensemble", "--experiment", "x", "--out", "{t}/ens.yaml", "--tracking-uri", URI],
    ["report", "--experiment", "x", "--tracking-uri", URI],
    ["retrain", "{t}/best.yaml", "--data", "{t}", "--out", "{t}/model", "--tracking-uri", URI],
], ids=["search-tracking", "search-storage", "search-address", "resume", "export", "ensemble", "report", "retrain"])
def test_no_command_prints_a_password(argv, tmp_path, tiny_release, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BLEMORE_LOG_DIR", str(tmp_path / "logs"))
    space = tmp_path / "s.yaml"
    space.write_text(f"name: s\npreset: baseline\ndata: {{dir: {tiny_release}}}\n"
                     "budget: {num_samples: 1, max_concurrent: 1, max_epochs: 1}\n")
    (tmp_path / "best.yaml").write_text("model: {arch: mlp512}\nexport: {selected_epochs: {0: 1}}\n")
    argv = [a.replace("{space}", str(space)).replace("{t}", str(tmp_path)) for a in argv]
    rc = main(argv)
    out = capsys.readouterr()
    text = out.out + out.err + "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert rc != 0, text
    assert SECRET not in text
    assert f"blemore {argv[0]}: " in out.err
    if argv[0] != "resume":  # resume fails on the missing search first: no URI to show
        assert ":***@" in out.err, out.err


def test_runtime_failure_log_and_line_are_masked(tmp_path, monkeypatch, capsys):
    from search.commands import evaluate

    def boom(args):
        raise RuntimeError(f"could not reach {URI}/api (token in s3://k:{SECRET}@b?X-Amz-Signature=abc)")

    monkeypatch.setenv("BLEMORE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(evaluate, "run", boom)
    assert main(["evaluate", "--predictions", f"{URI}/p.json", "--metadata", "m.csv"]) == 1
    err = capsys.readouterr().err
    log = next((tmp_path / "logs").glob("*.log")).read_text()
    for text in (err, log):
        assert SECRET not in text and "abc" not in text.split("Signature=")[-1][:3]
        assert "user:***@127.0.0.1:9" in text


def test_mask_uri_forms():
    m = safety.mask_uri
    assert m("http://user:pw@host:5000/x") == "http://user:***@host:5000/x"
    assert m("see https://tok@github.com/a and postgresql://u:p@db/x.") == \
        "see https://***@github.com/a and postgresql://u:***@db/x."
    assert m("Ray is not reachable at user:pw@127.0.0.1:9") == "Ray is not reachable at user:***@127.0.0.1:9"
    assert m("s3://b/k?X-Amz-Signature=abc&x=1") == "s3://b/k?X-Amz-Signature=***&x=1"
    assert m("sqlite:////tmp/mlflow.db and user@example.com") == "sqlite:////tmp/mlflow.db and user@example.com"
    assert safety.mask_secrets({"a": [URI], "b": 1}) == {"a": ["http://user:***@127.0.0.1:9"], "b": 1}


def test_manifest_and_written_yaml_hold_no_password_and_resume_asks_for_it(tmp_path, monkeypatch):
    from search.commands.export import write_yaml
    from search.storage import resolve_storage, write_manifest

    st = resolve_storage(str(tmp_path / "st"))
    write_manifest(st, "s", {"tracking_uri": URI, "options": {"address": f"ray://a:{SECRET}@h:1"}})
    text = (tmp_path / "st" / "s" / "blemore_search.json").read_text()
    assert SECRET not in text and json.loads(text)["tracking_uri"] == "http://user:***@127.0.0.1:9"
    write_yaml({"export": {"tracking_uri": URI}}, tmp_path / "best.yaml")
    assert SECRET not in (tmp_path / "best.yaml").read_text()
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    with pytest.raises(safety.InputError, match="credentials are not stored"):
        safety.unmasked_tracking_uri("http://user:***@127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "x")
    assert safety.unmasked_tracking_uri("http://user:***@127.0.0.1:9") == "http://127.0.0.1:9"


def test_mlflow_description_and_end_tags_are_masked(tmp_path):
    from mlflow.tracking import MlflowClient

    from search.records.callback import MLflowTracker

    uri = f"sqlite:///{tmp_path}/m.db"
    tr = MLflowTracker(uri, "e", base={})
    exp = tr.ensure_store()
    tr.describe_experiment(f"storage s3://k:{SECRET}@bucket/p")
    note = MlflowClient(uri).get_experiment(exp).tags["mlflow.note.content"]
    assert SECRET not in note and "s3://k:***@bucket/p" in note
