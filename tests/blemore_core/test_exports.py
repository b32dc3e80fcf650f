"""Issue 21, item 5: exported and ensemble YAML validated like configs (unknown keys, wrong types, non-finite
numbers: exit 2 naming key, line and value); every ensemble member hash-checked like a single model; ``evaluate``
refuses impossible saliences naming clip and field."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from blemore_core.artifacts import ArtifactError, read_model_dir, write_model_dir
from blemore_core.config import Config
from search.cli import main

CONFIG = {"data": {"encoders": ["imagebind"], "features": "aggregated"}, "model": {"arch": "mlp512"},
          "train": {"max_epochs": 3}, "thresholds": {"protocol": "val"}}
EXPORT = {"experiment": "s", "run_id": "r1", "selected_epochs": {0: 2, 1: 3},
          "thresholds": {"pooled": {"alpha": 0.3, "beta": 0.1}, "val": [{"fold": 0, "alpha": 0.3, "beta": 0.1}]}}


def _export_yaml(tmp_path, export) -> str:
    p = tmp_path / "best.yaml"
    p.write_text(yaml.safe_dump({**CONFIG, "export": export}, sort_keys=False))
    return str(p)


@pytest.mark.parametrize("change,said", [
    (lambda e: e.update(nope=1), ["export.nope (line ", "unknown key", "got 1"]),
    (lambda e: e["thresholds"]["pooled"].update(alpha=float("nan")),
     ["export.thresholds.pooled.alpha (line ", "finite", "nan"]),
    (lambda e: e["selected_epochs"].update({0: "two"}), ["export.selected_epochs.0 (line ", "integer", "'two'"]),
    (lambda e: e["thresholds"]["val"][0].update(beta="x"), ["export.thresholds.val.0.beta", "'x'"]),
])
def test_retrain_refuses_an_invalid_export_naming_key_line_and_value(change, said, tmp_path, capsys):
    exp = json.loads(json.dumps(EXPORT))
    exp["selected_epochs"] = {0: 2, 1: 3}
    change(exp)
    best = _export_yaml(tmp_path, exp)
    (tmp_path / "d").mkdir()
    rc = main(["retrain", best, "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--no-mlflow"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("blemore retrain: error: ") and "best.yaml" in err[0], err
    for s in said:
        assert s in err[0], (s, err[0])
    assert not (tmp_path / "o").exists()


def test_ensemble_file_is_validated_too(tmp_path):
    from blemore_core.artifacts import load_config_file
    from blemore_core.config import ConfigError

    doc = {"ensemble": {"thresholds": {"pooled": {"alpha": 0.3, "beta": float("inf")}},
                        "members": [{"weight": 1.0, "config": CONFIG, "export": EXPORT, "extra": 2}]}}
    p = tmp_path / "ens.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_config_file(p)
    msg = str(e.value)
    assert "ensemble.thresholds.pooled.beta (line 5): expected a finite number, got inf" in msg
    assert "ensemble.members.0.extra" in msg and "unknown key" in msg


def _model(tmp_path, name, kind="full", members=()):
    cfg = Config.from_dict(CONFIG)
    return write_model_dir(tmp_path / name, cfg, kind=kind, thresholds={"pooled": {"alpha": 0.3, "beta": 0.1}},
                           metrics={}, members=members)


def test_every_ensemble_member_is_hash_checked(tmp_path, capsys):
    m0, m1 = _model(tmp_path, "m0"), _model(tmp_path, "m1")
    ens = _model(tmp_path, "ens", kind="ensemble", members=[m0, m1])
    assert len(read_model_dir(ens).members) == 2
    cfg = ens / "member1" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("max_epochs: 3", "max_epochs: 4"))  # edited after writing
    with pytest.raises(ArtifactError, match=r"member1/config\.yaml: sha256 differs"):
        read_model_dir(ens)
    (tmp_path / "d").mkdir()
    rc = main(["predict", str(ens), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "s.zip")])
    err = capsys.readouterr().err
    assert rc == 2 and "member1/config.yaml" in err and "sha256" in err and not (tmp_path / "s.zip").exists()
    # the member's own model.json re-hashed to match: the ensemble's model.json still catches it
    mj = ens / "member1" / "model.json"
    info = json.loads(mj.read_text())
    from blemore_core.artifacts import file_sha256

    info["files"]["config.yaml"] = file_sha256(cfg)
    mj.write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match=r"member1/model\.json: sha256 differs"):
        read_model_dir(ens)


@pytest.mark.parametrize("items,said", [
    ([{"emotion": "hap", "salience": 150}], ["clip 'test_0001.mov'", "field 'salience' of 'hap'", "150"]),
    ([{"emotion": "hap", "salience": 70}, {"emotion": "sad", "salience": 60}],
     ["clip 'test_0001.mov'", "field 'salience'", "sum to 130"]),
])
def test_evaluate_refuses_impossible_saliences(items, said, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,emotion_1,emotion_2,emotion_1_salience,emotion_2_salience\n"
                      "test_0001,hap,,100,\n")
    pred = tmp_path / "p.json"
    pred.write_text(json.dumps({"predictions": {"test_0001.mov": items}}))
    rc = main(["evaluate", "--predictions", str(pred), "--labels", str(labels)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    for s in said:
        assert s in err[-1], (s, err)
    ok = {"predictions": {"test_0001.mov": [{"emotion": "hap", "salience": 100}]}}
    pred.write_text(json.dumps(ok))
    assert main(["evaluate", "--predictions", str(pred), "--labels", str(labels), "--json"]) == 0
    assert np.isclose(json.loads(capsys.readouterr().out)["acc_presence"], 1.0)
