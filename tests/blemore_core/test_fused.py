"""Fused folds (blemore_core/fused.py) on the tiny synthetic release: per-fold numbers equal the sequential loop's
(all dropouts 0, 3 epochs, tolerance 1e-4 absolute on every epoch's validation probabilities), the batched AdamW
against torch.optim.AdamW per fold, fallbacks with their reasons, and the fused step's randomness."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from blemore_core import fused
from blemore_core.config import Config
from blemore_core.fold_inputs import NonFiniteLossError
from blemore_core.train import FoldTrainer, cross_validate, fold_group, prepare_data

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-4  # fused vs sequential, per-fold validation probabilities of every epoch (float32 batched kernels)
NO_DROPOUT = {"reg.dropout": 0.0, "reg.modality_dropout": 0.0, "reg.temporal_dropout": 0.0}
# batch 32 on tiny: fold 0 trains on 432 clips (14 batches, last 16), folds 1-4 on 414 (13 batches, last 30), so
# the last steps group the folds by batch size and fold 0 steps alone at the end
SMALL = {"train.max_epochs": 3, "train.patience": 0, "train.batch_size": 32, "train.device": "cpu",
         "model.latent_dim": 8, "model.shared_dim": 8, "model.seq_len": 4, "model.heads": 2, **NO_DROPOUT}


def preset(name: str, **over) -> Config:
    return Config.from_yaml(ROOT / "spaces" / "presets" / f"{name}.yaml").override({**SMALL, **over})


def fusion(**over) -> Config:
    return Config().override({**SMALL, "data.encoders": ["imagebind", "openface"], "model.arch": "fusion", **over})


FAMILIES = {
    "linear": lambda: preset("baseline", **{"model.arch": "linear"}),
    "mlp256": lambda: preset("baseline", **{"model.arch": "mlp256"}),
    "mlp512": lambda: preset("baseline", **{"model.arch": "mlp512", "train.weight_decay": 0.01}),
    "concat-stat": lambda: fusion(**{"model.fusion": "concat", "model.pooling": "stat", "loss.rank": 0.5}),
    "concat-attention": lambda: fusion(**{"model.fusion": "concat", "model.pooling": "attention"}),
    "attention-stat": lambda: fusion(**{"model.fusion": "attention", "model.pooling": "stat"}),
    "attention-attention": lambda: fusion(**{"model.fusion": "attention", "model.pooling": "attention",
                                             "model.head": "structured"}),
    "rank_aware": lambda: preset("rank_aware"),  # presence_salience head, MMD domain term on the test split
    "rank_aware-coral-val": lambda: fusion(**{"model.fusion": "rank_aware", "model.pooling": "cls", "model.top_n": 1,
                                              "loss.domain": 0.2, "loss.domain_kind": "coral",
                                              "data.domain_target": "val"}),
}
FAST = {"linear", "mlp512", "concat-stat"}


@pytest.mark.parametrize("family", [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES])
def test_fused_equals_sequential(tiny_release, family):
    cfg = FAMILIES[family]()
    data = prepare_data(cfg, tiny_release, progress=False)
    seq = cross_validate(cfg, data, execution="sequential", progress=False)
    fus = cross_validate(cfg, data, execution="fused", progress=False)
    assert (seq.execution, fus.execution) == ("sequential", "fused")
    assert fus.curves.epochs == seq.curves.epochs == 3
    np.testing.assert_allclose(fus.curves.stack(), seq.curves.stack(), rtol=0, atol=ATOL)
    for a, b in zip(seq.folds, fus.folds, strict=True):
        assert (a.fold, a.selected_epochs, a.best_epoch, a.epochs_run) == (b.fold, b.selected_epochs, b.best_epoch,
                                                                          b.epochs_run)
        assert a.thresholds == b.thresholds
        assert [sorted(h) for h in a.history] == [sorted(h) for h in b.history]
        for ha, hb in zip(a.history, b.history, strict=True):  # train loss, lr (cosine per fold), loss parts
            assert ha == pytest.approx(hb, rel=1e-4, abs=1e-6)
        assert a.state_dict.keys() == b.state_dict.keys()


def _adamw_reference(rows: torch.Tensor, grads, lrs, stepped, wd, fused_kernel):
    """Each row trained by its own torch.optim.AdamW, stepping only when ``stepped`` says so."""
    params = [torch.nn.Parameter(r.clone()) for r in rows]
    opts = [torch.optim.AdamW([p], lr=1.0, weight_decay=wd, fused=fused_kernel) for p in params]
    for g, lr, st in zip(grads, lrs, stepped, strict=True):
        for k in st:
            opts[k].param_groups[0]["lr"] = float(lr[k])
            params[k].grad = g[k].clone()
            opts[k].step()
    return torch.stack([p.detach() for p in params])


@pytest.mark.parametrize("fused_kernel", [False, True])
def test_batched_adamw_matches_torch_adamw_per_fold(fused_kernel):
    """3 folds, 7 steps, per-fold and per-step learning rates; fold 1 skips steps 2 and 4 and fold 2 stops after
    step 3 (as a fold with fewer batches). Tolerance 1e-6 absolute (float32)."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 11, generator=gen)
    grads = [torch.randn(3, 11, generator=gen) for _ in range(7)]
    lrs = [torch.tensor([1e-2, 3e-3, 5e-2], dtype=torch.float64) * (1 - 0.1 * t) for t in range(7)]
    stepped = [[0, 1, 2], [0, 1, 2], [0, 2], [0, 1, 2], [0], [0, 1], [0, 1]]
    opt = fused.BatchedAdamW(rows.clone(), betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    for g, lr, st in zip(grads, lrs, stepped, strict=True):
        before = [t[1].clone() for t in (opt.flat, opt.exp_avg, opt.exp_avg_sq)]
        opt.step(g, lr, st)
        if 1 not in st:  # a fold that does not step is untouched, parameters and moments
            for b, t in zip(before, (opt.flat, opt.exp_avg, opt.exp_avg_sq), strict=True):
                assert torch.equal(b, t[1])
    ref = _adamw_reference(rows, grads, lrs, stepped, 0.05, fused_kernel)
    torch.testing.assert_close(opt.flat, ref, rtol=0, atol=1e-6)
    assert opt.steps.tolist() == [7.0, 5.0, 4.0]


def test_mixed_fusion_falls_back_to_sequential(tiny_release):
    cfg = fusion(**{"model.fusion": "mixed", "model.mixed_pretrain_epochs": 1, "train.max_epochs": 2})
    data = prepare_data(cfg, tiny_release, progress=False)
    assert cross_validate(cfg, data, folds=[0, 1], execution="auto", progress=False).execution == "sequential"
    with pytest.raises(ValueError, match=r"fold execution 'fused': mixed fusion switches stage"):
        cross_validate(cfg, data, folds=[0, 1], execution="fused", progress=False)


def test_auto_fuses_two_or_more_folds_only(tiny_release):
    cfg = preset("baseline")
    data = prepare_data(cfg, tiny_release, progress=False)
    assert fold_group(cfg, data, [0, 1, 2, 3, 4], "auto").execution == "fused"
    assert fold_group(cfg, data, [3], "auto").execution == "sequential"
    with pytest.raises(ValueError, match=r"fold execution 'fused': fusing needs two or more folds .* got 1"):
        fold_group(cfg, data, [3], "fused")


def _state(trainers):
    return ([tr.gen.get_state() for tr in trainers], torch.get_rng_state(),
            [{k: v.clone() for k, v in tr.model.state_dict().items()} for tr in trainers],
            [tr.opt.param_groups[0]["lr"] for tr in trainers], [tr.epoch for tr in trainers])


def _same(a, b) -> bool:
    gens, glob, sds, lrs, epochs = a
    gens2, glob2, sds2, lrs2, epochs2 = b
    return (all(torch.equal(x, y) for x, y in zip(gens, gens2, strict=True)) and torch.equal(glob, glob2)
            and all(all(torch.equal(s[k], t[k]) for k in s) for s, t in zip(sds, sds2, strict=True))
            and (lrs, epochs) == (lrs2, epochs2))


@pytest.mark.parametrize("pooling", ["stat", "bilstm"])
def test_probe_consumes_no_randomness_and_names_the_reason(tiny_release, pooling):
    """bilstm's packed sequences do not run under vmap: the probe's error is the reason; either way every
    trainer's generator, torch's global generator, the weights, the schedule and the epoch are unchanged."""
    cfg = fusion(**{"model.pooling": pooling, "reg.dropout": 0.3, "reg.modality_dropout": 0.3})
    data = prepare_data(cfg, tiny_release, progress=False)
    trainers = [FoldTrainer(cfg, data, k) for k in range(3)]
    before = _state(trainers)
    reason = fused.fusable(cfg, trainers)
    assert _same(before, _state(trainers))
    if pooling == "stat":
        assert reason is None
    else:
        assert reason.startswith("the folds' models do not run as one batched model under torch.func.vmap (")


def test_non_finite_loss_names_fold_epoch_and_parts(tiny_release, monkeypatch):
    cfg = preset("baseline", **{"model.arch": "linear"})
    data = prepare_data(cfg, tiny_release, progress=False)
    group = fold_group(cfg, data, [0, 1, 2], "fused")
    real = fused.loss_terms

    def broken(out, target, c, emb=None, **kw):
        total, parts = real(out, target, c, emb, **kw)
        return total * float("nan"), parts

    monkeypatch.setattr(fused, "loss_terms", broken)
    before = group.flat.detach().clone()
    with pytest.raises(NonFiniteLossError) as err:
        group.train_epoch()
    assert re.fullmatch(r"fold 0, epoch 1: non-finite loss nan \(parts \{'kl': [0-9.]+, 'total': nan\}\)",
                        str(err.value))
    assert torch.equal(before, group.flat.detach())  # raised before any parameter changed


def test_dropout_draws_from_the_groups_private_stream(tiny_release):
    """With dropout the fused masks come from the group's own copy of torch's generator: two runs agree whatever
    the global state, and the global state is left as it was (masks differ from the sequential ones)."""
    cfg = fusion(**{"model.fusion": "rank_aware", "model.pooling": "stat", "reg.dropout": 0.3,
                    "reg.modality_dropout": 0.3, "reg.temporal_dropout": 0.3, "train.max_epochs": 2})
    data = prepare_data(cfg, tiny_release, progress=False)
    runs = []
    for seed in (123, 456):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        runs.append(cross_validate(cfg, data, execution="fused", progress=False).curves.stack())
        assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(runs[0], runs[1])
