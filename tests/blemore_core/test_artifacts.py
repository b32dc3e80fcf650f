"""The one artifact format (model directory + weights files), fixed-epoch retraining and prediction."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml

from blemore_core.artifacts import (
    ArtifactError,
    load_config_file,
    load_weights,
    read_model_dir,
    save_weights,
    selected_epochs,
    write_cv_dir,
)
from blemore_core.config import Config, ConfigError
from blemore_core.decoding import fit_thresholds
from blemore_core.refit import fit_epochs, predict_weights, train_rows
from blemore_core.train import cross_validate, prepare_data

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from blemore_core.data import generate_release

    return generate_release(tmp_path_factory.mktemp("tiny") / "release", "tiny", seed=0, progress=False)


def small_cfg(**over) -> Config:
    base = {
        "data.encoders": ["imagebind", "wavlm"], "model.pooling": "attention", "model.fusion": "rank_aware",
        "model.top_n": 1, "model.latent_dim": 8, "model.shared_dim": 8, "model.seq_len": 4, "model.heads": 2,
        "train.max_epochs": 3, "train.patience": 0, "train.batch_size": 32, "train.device": "cpu",
    }
    base.update(over)
    return Config().override(base)


@pytest.fixture(scope="module")
def cv(tiny):
    cfg = small_cfg()
    data = prepare_data(cfg, tiny, progress=False)
    # sequential fold execution: retraining (fit_epochs, one FoldTrainer) repeats it bit for bit; a fused
    # cross-validation equals it within float32 rounding (tests/blemore_core/test_fused.py)
    return cfg, data, cross_validate(cfg, data, progress=False, execution="sequential")


@pytest.fixture(scope="module")
def model_dir(cv, tmp_path_factory):
    cfg, data, res = cv
    return write_cv_dir(tmp_path_factory.mktemp("md") / "model", cfg, res.folds, res.metrics, data)


def test_model_dir_round_trip(cv, model_dir):
    cfg, data, res = cv
    md = read_model_dir(model_dir)
    assert md.kind == "cv" and md.config == cfg
    assert md.weights == [f"fold{r.fold}.pt" for r in res.folds]
    assert len(md.oof) == len(data.filenames)
    # pooled thresholds = the fit on all OOF rows (reference: fit_thresholds on the assembled OOF matrix)
    truth = np.asarray(data.labels)[np.concatenate([r.val_idx for r in res.folds])]
    probs = md.oof[[c for c in md.oof.columns if c.startswith("p_")]].to_numpy()
    ref = fit_thresholds(probs, truth)
    assert md.predict_thresholds() == (ref.alpha, ref.beta)
    assert [row["alpha"] for row in md.thresholds["crossfit"]["per_fold"]] == \
        [row["alpha"] for row in res.metrics["crossfit"]["per_fold"]]
    assert selected_epochs(md.metrics) == {r.fold: r.best_epoch for r in res.folds}
    for r in res.folds:
        w = md.load(f"fold{r.fold}.pt")
        assert w.config == cfg and w.meta["fold"] == r.fold
        assert w.meta["train_folds"] == [k for k in range(5) if k != r.fold]
        assert w.state_dict.keys() == r.state_dict.keys()
        assert all(torch.equal(w.state_dict[k], r.state_dict[k]) for k in r.state_dict)
    # per-clip importances: their fold means are the fold results' mean importances
    for r in res.folds:
        rows = md.oof[md.oof["fold"] == r.fold]
        np.testing.assert_allclose([rows[f"imp_{e}"].mean() for e in cfg.data.encoders],
                                   [r.importances[e] for e in cfg.data.encoders], atol=1e-5)
    assert json.loads((model_dir / "confusion.json").read_text())["protocol"] == res.metrics["headline"]
    assert set(json.loads((model_dir / "importances.json").read_text())) == {str(r.fold) for r in res.folds}


def test_weights_tampered_or_truncated_name_the_file(cv, tmp_path):
    cfg, _, res = cv
    sd = res.folds[0].state_dict
    p = save_weights(tmp_path / "w.pt", sd, cfg, fold=0)
    assert load_weights(p).meta == {"fold": 0}
    # a tensor edited, digest kept: the stored digest no longer matches
    obj = torch.load(p, weights_only=True)
    k = next(iter(obj["state_dict"]))
    obj["state_dict"][k] = obj["state_dict"][k] + 1
    torch.save(obj, tmp_path / "edited.pt")
    with pytest.raises(ArtifactError, match=r"edited\.pt: sha256"):
        load_weights(tmp_path / "edited.pt")
    # truncated
    raw = p.read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match=r"cut\.pt: not a readable"):
        load_weights(tmp_path / "cut.pt")
    # a pickle carrying code is refused by weights_only, never executed
    import fractions

    torch.save({"format": "blemore-weights/1", "x": fractions.Fraction(1, 3)}, tmp_path / "evil.pt")
    with pytest.raises(ArtifactError, match=r"evil\.pt"):
        load_weights(tmp_path / "evil.pt")
    # a plain state dict (no config inside) is not our format
    torch.save(sd, tmp_path / "bare.pt")
    with pytest.raises(ArtifactError, match=r"bare\.pt: format"):
        load_weights(tmp_path / "bare.pt")


def test_modified_file_in_model_dir_is_named(model_dir, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(model_dir, d)
    th = json.loads((d / "thresholds.json").read_text())
    th["pooled"]["alpha"] = 0.9
    (d / "thresholds.json").write_text(json.dumps(th))
    with pytest.raises(ArtifactError, match=r"thresholds\.json: sha256"):
        read_model_dir(d)
    (d / "model.json").unlink()
    with pytest.raises(ArtifactError, match="model.json missing"):
        read_model_dir(d)


def test_rewrite_replaces_directory_atomically(cv, tmp_path, monkeypatch):
    cfg, data, res = cv
    out = write_cv_dir(tmp_path / "m", cfg, res.folds, res.metrics, data, with_weights=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import blemore_core.artifacts as art

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(art, "save_weights", boom)
    with pytest.raises(KeyboardInterrupt):
        write_cv_dir(out, cfg, res.folds, res.metrics, data)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary directory left behind


def test_fit_epochs_repeats_the_fold_run(cv):
    """Same seeds and schedule: retraining fold k on the other folds for its best epoch gives its weights."""
    cfg, data, res = cv
    r = res.folds[1]
    sd, hist = fit_epochs(cfg, data, train_rows(data, [0, 2, 3, 4]), r.best_epoch, seed_key=1)
    assert len(hist) == r.best_epoch
    assert all(torch.equal(sd[k], r.state_dict[k]) for k in r.state_dict)
    with pytest.raises(ValueError, match="epochs"):
        fit_epochs(cfg, data, train_rows(data, [0]), 4, seed_key=0)


def test_predict_weights_reproduces_oof(cv):
    """The prediction path (target split, standardised with the training folds' statistics) gives the OOF
    probabilities when the target is the training split itself."""
    cfg, data, res = cv
    r = res.folds[2]
    as_target = dataclasses.replace(data, target=data.release)
    p, imps = predict_weights(cfg, r.state_dict, as_target, [0, 1, 3, 4])
    np.testing.assert_allclose(p[r.val_idx], r.oof_probs, atol=1e-6)
    assert imps.shape == (len(data.filenames), 2)


def test_selected_epochs_reads_both_layouts():
    assert selected_epochs({"best_epoch": {"0": 3, "1": 4}}) == {0: 3, 1: 4}
    doc = {"headline": "crossfit", "best_epoch": {"0": 3}, "selected_epochs": {"0": {"val": 2, "crossfit": 5}}}
    assert selected_epochs(doc) == {0: 5}


def test_load_config_file_plain_export_and_errors(cv, tmp_path):
    cfg = cv[0]
    doc = cfg.to_dict()
    doc["export"] = {"run_id": "abc", "selected_epochs": {"0": 2}}
    p = tmp_path / "best.yaml"
    p.write_text(yaml.safe_dump(doc))
    cf = load_config_file(p)
    assert cf.config == cfg and cf.export["run_id"] == "abc"
    p.write_text(yaml.safe_dump({"ensemble": {"members": []}}))
    with pytest.raises(ConfigError, match="ensemble.members"):
        load_config_file(p)
    p.write_text(yaml.safe_dump({**cfg.to_dict(), "bogus": 1}))
    with pytest.raises(ConfigError, match="bogus"):
        load_config_file(p)


def test_predict_and_retrain_cli_on_a_cv_directory(cv, model_dir, tiny, tmp_path, capsys):
    """``blemore predict`` reads a cross-validation directory (fold models averaged); a modified directory or a
    plain config given to ``retrain`` is refused, naming the file, and nothing is written."""
    import shutil
    import zipfile

    from blemore_core.decoding import decode
    from blemore_core.refit import predict_model
    from search.cli import main

    sub = tmp_path / "sub.zip"
    assert main(["predict", str(model_dir), "--data", str(tiny), "--out", str(sub)]) == 0
    with zipfile.ZipFile(sub) as zf:
        preds = json.loads(zf.read(zf.namelist()[0]))["predictions"]
    md = read_model_dir(model_dir)
    names, probs = predict_model(md, tiny)
    assert sorted(preds) == sorted(f"{n}.mov" for n in names) and len(names) == 72
    sal = decode(probs, *md.predict_thresholds())
    for n, row in zip(names, sal, strict=True):
        assert {e["emotion"]: e["salience"] for e in preds[f"{n}.mov"]} == \
            {e: round(100 * float(v), 1) for e, v in zip(("ang", "disg", "fea", "hap", "sad", "neu"), row) if v > 0}
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "fold2.pt").write_bytes((bad / "fold2.pt").read_bytes()[:-100])
    capsys.readouterr()
    assert main(["predict", str(bad), "--data", str(tiny), "--out", str(tmp_path / "no.zip")]) == 2
    assert "fold2.pt: sha256 differs" in capsys.readouterr().err and not (tmp_path / "no.zip").exists()
    assert main(["retrain", str(model_dir / "config.yaml"), "--data", str(tiny), "--out", str(tmp_path / "r"),
                 "--no-mlflow"]) == 2
    assert "no export section" in capsys.readouterr().err and not (tmp_path / "r").exists()
