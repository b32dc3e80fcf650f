"""The fold trainer on the tiny synthetic release: determinism, protocols, stopping, errors, label isolation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from blemore_core.config import Config
from blemore_core.decoding import evaluate_thresholds, fit_thresholds
from blemore_core.selection import EpochCurves
from blemore_core.train import NonFiniteLossError, cross_validate, fit_fold, prepare_data

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from blemore_core.data import generate_release

    root = tmp_path_factory.mktemp("tiny")
    return generate_release(root / "release", "tiny", seed=0, progress=False)


def small_cfg(**over) -> Config:
    base = {
        "data.encoders": ["imagebind", "wavlm", "openface"],
        "model.pooling": "attention", "model.fusion": "concat", "model.latent_dim": 16, "model.shared_dim": 16,
        "model.seq_len": 6, "model.heads": 2,
        "train.max_epochs": 3, "train.patience": 0, "train.batch_size": 32, "train.device": "cpu",
    }
    base.update(over)
    return Config().override(base)


def test_same_seed_same_metrics(tiny):
    cfg = small_cfg()
    data = prepare_data(cfg, tiny, progress=False)
    a = fit_fold(cfg, data, 0)
    b = fit_fold(cfg, data, 0)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    np.testing.assert_array_equal(a.oof_probs, b.oof_probs)
    assert a.thresholds == b.thresholds
    c = fit_fold(cfg.override({"seed": 1}), data, 0)
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


@pytest.mark.parametrize("fusion", ["concat", "rank_aware"])
def test_bf16_precision_trains_deterministically_with_float32_outputs(tiny, fusion):
    cfg = small_cfg(**{"train.precision": "bf16", "model.fusion": fusion, "model.head": "presence_salience"})
    data = prepare_data(cfg, tiny, progress=False)
    a = fit_fold(cfg, data, 0)
    b = fit_fold(cfg, data, 0)
    assert a.oof_probs.dtype == np.float32 and np.isfinite(a.oof_probs).all()
    np.testing.assert_allclose(a.oof_probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a.oof_probs, b.oof_probs)
    fp32 = fit_fold(cfg.override({"train.precision": "fp32"}), data, 0)
    # same initial weights and batches; bf16 forwards round activations to ~3 significant digits
    assert not np.array_equal(a.oof_probs, fp32.oof_probs)
    assert np.abs(a.oof_probs - fp32.oof_probs).max() < 0.2


def test_optimizer_is_fused_adamw_on_cpu():
    from blemore_core.models import build_model
    from blemore_core.train import make_optimizer

    cfg = small_cfg(**{"train.lr": 3e-4, "train.weight_decay": 0.01})
    opt = make_optimizer(build_model(cfg, {"imagebind": 8, "wavlm": 8, "openface": 8}), cfg, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    g = opt.param_groups[0]
    assert g["fused"] is True and g["lr"] == 3e-4 and g["weight_decay"] == 0.01


def test_precision_is_validated():
    from blemore_core.config import ConfigError

    with pytest.raises(ConfigError, match="train.precision"):
        Config().override({"train.precision": "fp16"})


def test_fold_result_contents(tiny):
    cfg = small_cfg()
    data = prepare_data(cfg, tiny, progress=False)
    r = fit_fold(cfg, data, 1)
    assert set(np.asarray(data.folds)[r.val_idx]) == {1}
    assert r.oof_probs.shape == (len(r.val_idx), 6)
    np.testing.assert_allclose(r.oof_probs.sum(1), 1.0, atol=1e-5)
    assert len(r.history) == r.epochs_run == 3 and 1 <= r.best_epoch <= 3
    # the val protocol equals a threshold fit on the OOF probabilities themselves
    fit = fit_thresholds(r.oof_probs, data.labels[r.val_idx])
    assert r.thresholds["val"]["score"] == pytest.approx(fit.score, abs=1e-12)
    assert r.thresholds["val"]["alpha"] == pytest.approx(fit.alpha)
    # the best epoch's validation Score is what the restored weights reproduce
    assert r.history[r.best_epoch - 1]["val_score"] == pytest.approx(fit.score, abs=1e-6)


def test_nan_loss_raises(tiny, monkeypatch):
    import blemore_core.train as train_mod

    cfg = small_cfg()
    data = prepare_data(cfg, tiny, progress=False)
    real = train_mod.compute_loss

    def broken(*a, **k):
        loss, parts = real(*a, **k)
        return loss * float("nan"), parts

    monkeypatch.setattr(train_mod, "compute_loss", broken)
    with pytest.raises(NonFiniteLossError, match="fold 0, epoch 1"):
        fit_fold(cfg, data, 0)


def _reference_crossfit(stack, labels, folds, k, first_epoch=1):
    """Plain-loop reference of the crossfit protocol for fold k from per-epoch OOF probabilities (N, 6, E)."""
    ks = sorted(set(folds.tolist()))
    best_e, best = None, -1.0
    for e in range(first_epoch, stack.shape[2] + 1):
        scores = []
        for j in ks:
            if j == k:
                continue
            rows = folds == j
            scores.append(fit_thresholds(stack[rows, :, e - 1], labels[rows]).score)
        mean = sum(scores) / len(scores)
        if mean > best:  # strict: the earliest epoch wins ties
            best, best_e = mean, e
    others, mine = folds != k, folds == k
    fit = fit_thresholds(stack[others, :, best_e - 1], labels[others])
    m = evaluate_thresholds(stack[mine, :, best_e - 1], labels[mine], fit.alpha, fit.beta)
    return best_e, fit.alpha, fit.beta, m["score"]


def _reference_stop(objectives, patience):
    """Epochs a trial runs when it stops after `patience` epochs without a better objective (plain loop)."""
    best, since = -1.0, 0
    for e, o in enumerate(objectives, start=1):
        if o > best + 1e-12:
            best, since = o, 0
        else:
            since += 1
        if patience and since >= patience:
            return e
    return len(objectives)


def test_cross_validate_crossfit_matches_reference(tiny):
    """crossfit per fold (epoch, alpha, beta, Score) equals a plain-loop reference over the stored per-epoch OOF
    probabilities; the kept weights reproduce the selected epoch's probabilities; the objective is their mean."""
    from blemore_core.fold_inputs import predict_probs as _predict
    from blemore_core.models import build_model
    from blemore_core.train import FoldTrainer

    cfg = small_cfg(**{"train.max_epochs": 4})
    data = prepare_data(cfg, tiny, progress=False)
    cv = cross_validate(cfg, data, progress=False)
    stack = cv.curves.stack()
    folds = np.asarray(data.folds)
    assert stack.shape == (len(data.filenames), 6, 4) and not np.isnan(stack).any()
    epochs = set()
    for r, row in zip(cv.folds, cv.metrics["crossfit"]["per_fold"]):
        e, alpha, beta, score = _reference_crossfit(stack, data.labels, folds, r.fold)
        assert (row["epoch"], row["alpha"], row["beta"]) == (e, alpha, beta)
        assert row["score"] == pytest.approx(score, abs=1e-12)
        epochs.add(e)
        np.testing.assert_array_equal(r.oof_probs, stack[r.val_idx, :, e - 1])
        # the kept weights are those of the selected epoch
        model = build_model(cfg, data.input_dims)
        model.load_state_dict(r.state_dict)
        p, _ = _predict(model, FoldTrainer(cfg, data, r.fold).tensors, r.val_idx)
        np.testing.assert_allclose(p, r.oof_probs, atol=1e-6)
    m = cv.metrics["crossfit"]
    assert cv.curves.objective().score == pytest.approx(np.mean([x["score"] for x in m["per_fold"]]), abs=1e-12)
    assert m["mean"]["score"] == cv.curves.objective().score


def test_trial_level_stop_is_patience_on_the_objective(tiny):
    cfg = small_cfg(**{"train.max_epochs": 6, "train.patience": 1, "train.lr": 3e-2})
    data = prepare_data(cfg, tiny, progress=False)
    cv = cross_validate(cfg, data, progress=False)
    stack, folds = cv.curves.stack(), np.asarray(data.folds)
    objectives = []
    for e in range(1, stack.shape[2] + 1):
        objectives.append(np.mean([_reference_crossfit(stack[:, :, :e], data.labels, folds, k)[3]
                                   for k in sorted(set(folds.tolist()))]))
    want = _reference_stop(objectives, 1)
    assert {r.epochs_run for r in cv.folds} == {want} == {stack.shape[2]}
    assert all(r.stopped == (want < 6) for r in cv.folds)


def test_mixed_fusion_keeps_a_combined_stage_model(tiny):
    """mixed: epochs of the pretraining stage are never selected, and the kept weights are a combined-stage model."""
    from blemore_core.models import STAGES

    cfg = small_cfg(**{"model.fusion": "mixed", "model.mixed_pretrain_epochs": 2, "train.max_epochs": 3,
                       "train.patience": 1})
    data = prepare_data(cfg, tiny, progress=False)
    cv = cross_validate(cfg, data, folds=[0, 1], progress=False)
    for r in cv.folds:
        assert set(r.selected_epochs.values()) == {3} and r.epochs_run == 3
        for sd in r.state_dicts.values():
            assert int(sd["stage_code"]) == STAGES.index("combine")
    # unit level: a pretraining epoch with perfect probabilities is still not selected
    labels, folds = np.asarray(data.labels), np.asarray(data.folds)
    c = EpochCurves(labels, folds, [0, 1], first_epoch=3, patience=1)
    rng = np.random.default_rng(0)
    for e in range(3):
        c.add({k: (labels[folds == k] if e == 0 else rng.dirichlet(np.ones(6), (folds == k).sum()))
               for k in (0, 1)})
        assert not c.should_stop()
    assert all(c.choice(p, k).epoch == 3 for p in ("val", "crossfit") for k in (0, 1))


def test_mixed_pretraining_must_end_before_max_epochs():
    from blemore_core.config import ConfigError

    with pytest.raises(ConfigError, match="mixed_pretrain_epochs: mixed fusion must train its combined stage"):
        small_cfg(**{"model.fusion": "mixed", "model.mixed_pretrain_epochs": 3, "train.max_epochs": 3})
    small_cfg(**{"model.fusion": "concat", "model.mixed_pretrain_epochs": 3, "train.max_epochs": 3})


def test_domain_term_never_reads_target_labels(tiny):
    """Permuting the validation fold's labels changes nothing in training with a val-fold domain target."""
    cfg = small_cfg(**{"loss.domain": 0.5, "data.domain_target": "val"})
    data = prepare_data(cfg, tiny, progress=False)
    a = fit_fold(cfg, data, 0)
    val = np.flatnonzero(np.asarray(data.folds) == 0)
    labels = data.release.labels.copy()
    data.release.labels = labels.copy()
    data.release.labels[val] = np.roll(labels[val], 3, axis=1)
    try:
        b = fit_fold(cfg, data, 0)
    finally:
        data.release.labels = labels
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["val_score"] for h in a.history] != [h["val_score"] for h in b.history]


@pytest.mark.parametrize("preset", ["baseline", "attention_mixed", "rank_aware"])
def test_presets_train_on_tiny(tiny, preset):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cfg = Config.from_yaml(root / "spaces" / "presets" / f"{preset}.yaml").override(
        {"train.max_epochs": 2, "model.mixed_pretrain_epochs": 1, "train.device": "cpu"})
    data = prepare_data(cfg, tiny, progress=False)
    r = fit_fold(cfg, data, 0)
    assert np.isfinite(r.oof_probs).all() and r.epochs_run == 2
    if cfg.model.fusion == "rank_aware" and cfg.model.arch == "fusion":
        assert set(r.importances) == set(cfg.data.encoders)


def test_train_cli_writes_outputs(tiny, tmp_path):
    from search.cli import main

    cfg = small_cfg(**{"train.max_epochs": 2})
    cfg_path = tmp_path / "c.yaml"
    cfg.to_yaml(cfg_path)
    out = tmp_path / "out"
    assert main(["train", str(cfg_path), "--data", str(tiny), "--out", str(out), "--folds", "0,1"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["folds"] == [0, 1] and {"val", "train", "crossfit"} <= set(doc)
    oof = pd.read_parquet(out / "oof.parquet")
    assert len(oof) == int(np.isin(prepare_data(cfg, tiny, progress=False).folds, [0, 1]).sum())
    assert Config.from_yaml(out / "config.yaml") == cfg
    assert (out / "fold0.pt").exists()


def test_fold_inputs_share_the_memory_map_and_match_zscored_frames(tiny):
    """On the CPU a fold's sequence frames are the release's memory map itself (no per-fold copy: the fold workers
    of a node share it), and the per-batch z-score gives exactly what z-scoring every frame with the training
    clips' moments and then cutting to L frames gives (the reference, a plain numpy computation)."""
    from blemore_core.data import fold_indices, standardise_length
    from blemore_core.fold_inputs import FoldInputs as _FoldTensors

    cfg = small_cfg(**{"data.features": "sequence", "data.standardise": True, "model.arch": "fusion",
                       "model.pooling": "stat", "model.fusion": "concat", "loss.domain": 0.1,
                       "data.domain_target": "test", "model.seq_len": 40})
    data = prepare_data(cfg, tiny, progress=False)
    train_idx, _ = fold_indices(data.release.folds, 2)
    t = _FoldTensors(data, cfg, train_idx, torch.device("cpu"))
    idx = torch.arange(0, len(data.labels), 3)
    x, m = t.inputs(idx, train=False, gen=None)
    xt, mt = t.inputs(torch.arange(t.n_target), train=False, gen=None, target=True)
    assert any(bool((~m[e]).any()) for e in data.encoders)  # some clips are shorter than L: padding is checked
    for e in data.encoders:
        seq = data.release.sequences[e]
        frames = np.asarray(seq.frames)
        assert t.frames[e].data_ptr() == frames.__array_interface__["data"][0]  # the map itself, not a copy
        offsets = np.asarray(seq.offsets)
        rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in train_idx])
        mean = frames[rows].astype(np.float64).mean(0).astype(np.float32)
        std = np.maximum(frames[rows].astype(np.float64).std(0), 1e-6).astype(np.float32)
        want, want_m = standardise_length((frames - mean) / std, offsets, idx, cfg.model.seq_len, train=False)
        assert torch.equal(m[e], want_m)
        assert torch.allclose(x[e], want, rtol=0, atol=1e-5), float((x[e] - want).abs().max())
        assert not x[e][~m[e]].any()  # padded positions stay 0
        tseq = data.target.sequences[e]
        tw, _ = standardise_length((np.asarray(tseq.frames) - mean) / std, np.asarray(tseq.offsets),
                                   np.arange(t.n_target), cfg.model.seq_len, train=False)
        assert torch.allclose(xt[e], tw, rtol=0, atol=1e-5)
