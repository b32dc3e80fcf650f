"""Losses against hand-computed references (tolerances stated per test)."""

import inspect
import math

import pytest
import torch

from blemore_core.config import LossConfig
from blemore_core.losses import (
    compute_loss,
    coral,
    domain_loss,
    kl_divergence,
    margin_ranking,
    mmd,
    structured_targets,
)
from blemore_core.models import ModelOutput

torch.set_num_threads(1)


def out_from_probs(p, emb=None, **kw):
    p = torch.as_tensor(p, dtype=torch.float32)
    return ModelOutput(logits=p.log(), probs=p, embedding=torch.zeros(len(p), 2) if emb is None else emb, **kw)


def test_kl_hand_case():
    """KL([0.7, 0.3, 0..] || [0.5, 0.25, 0.25/4 x4]) = 0.7 ln(1.4) + 0.3 ln(1.2) (tolerance 1e-6)."""
    y = torch.tensor([[0.7, 0.3, 0, 0, 0, 0]])
    p = torch.tensor([[0.5, 0.25, 0.0625, 0.0625, 0.0625, 0.0625]])
    ref = 0.7 * math.log(1.4) + 0.3 * math.log(1.2)
    assert kl_divergence(y, p.log()).item() == pytest.approx(ref, abs=1e-6)
    total, parts = compute_loss(out_from_probs(p), y, LossConfig(kl=2.0))
    assert parts["kl"] == pytest.approx(2 * ref, abs=1e-6) and total.item() == pytest.approx(2 * ref, abs=1e-6)
    assert set(parts) == {"kl", "total"}  # 0 coefficients skip their terms


def test_label_smoothing_target():
    """eps = 0.6 on a one-hot: target (0.5, 0.1 x5); KL to uniform = 0.5 ln 3 + 5 * 0.1 ln 0.6 (tol 1e-6)."""
    y = torch.tensor([[1.0, 0, 0, 0, 0, 0]])
    p = torch.full((1, 6), 1 / 6)
    _, parts = compute_loss(out_from_probs(p), y, LossConfig(label_smoothing=0.6))
    assert parts["kl"] == pytest.approx(0.5 * math.log(3) + 0.5 * math.log(0.6), abs=1e-6)


def test_margin_ranking_hand_case():
    """Rows: 70/30 with p gap 0.05 (hinge 0.1 - 0.05 = 0.05), 30/70 with the wrong order gap -0.2 (hinge 0.3),
    a 50/50 blend and a single (ignored) -> mean 0.175 (tolerance 1e-6)."""
    y = torch.tensor([[0.7, 0.3, 0, 0, 0, 0], [0, 0, 0.3, 0.7, 0, 0], [0.5, 0, 0, 0, 0.5, 0], [0, 0, 0, 0, 0, 1.0]])
    p = torch.tensor([[0.40, 0.35, 0.1, 0.05, 0.05, 0.05], [0.1, 0.1, 0.4, 0.2, 0.1, 0.1],
                      [0.9, 0.02, 0.02, 0.02, 0.02, 0.02], [0.9, 0.02, 0.02, 0.02, 0.02, 0.02]])
    assert margin_ranking(p, y, 0.1).item() == pytest.approx(0.175, abs=1e-6)
    _, parts = compute_loss(out_from_probs(p), y, LossConfig(kl=0.0, rank=2.0, margin=0.1))
    assert parts["rank"] == pytest.approx(0.35, abs=1e-6)
    assert margin_ranking(p[2:], y[2:], 0.1).item() == 0.0


def test_bce_from_probs_and_from_presence_logits():
    """Without presence logits: BCE on clamped probs; with them: BCE-with-logits (reference by formula, 1e-6)."""
    y = torch.tensor([[0.7, 0.3, 0, 0, 0, 0]])
    p = torch.tensor([[0.4, 0.3, 0.1, 0.1, 0.05, 0.05]])
    t = (y > 0).float()
    ref = -(t * p.log() + (1 - t) * (1 - p).log()).mean().item()
    _, parts = compute_loss(out_from_probs(p), y, LossConfig(kl=0.0, bce=1.0))
    assert parts["bce"] == pytest.approx(ref, abs=1e-6)
    a = torch.tensor([[2.0, 0.0, -1.0, -3.0, 1.0, 0.5]])
    s = torch.sigmoid(a)
    ref = -(t * s.log() + (1 - t) * (1 - s).log()).mean().item()
    _, parts = compute_loss(out_from_probs(p, presence_logits=a), y, LossConfig(kl=0.0, bce=1.0))
    assert parts["bce"] == pytest.approx(ref, abs=1e-6)


def test_structured_targets_and_loss():
    y = torch.tensor([[0, 0, 0, 1.0, 0, 0], [0.7, 0.3, 0, 0, 0, 0], [0, 0, 0, 0.3, 0.7, 0], [0, 0.5, 0.5, 0, 0, 0]])
    set_idx, pair_idx, ratio = structured_targets(y)
    # LABEL_SETS: singles 0..5, pairs (0,1)=6, (0,2)=7, (0,3)=8, (0,4)=9, (1,2)=10, (1,3)=11, (1,4)=12, (2,3)=13, (2,4)=14, (3,4)=15
    assert set_idx.tolist() == [3, 6, 15, 10]
    assert pair_idx.tolist() == [-1, 0, 9, 4]
    assert ratio.tolist() == [-1, 1, 2, 0]
    set_logits = torch.zeros(4, 16)
    pair_ratio = torch.zeros(4, 10, 3)
    out = ModelOutput(logits=torch.zeros(4, 6), probs=torch.full((4, 6), 1 / 6), embedding=torch.zeros(4, 2),
                      set_logits=set_logits, pair_ratio_logits=pair_ratio)
    _, parts = compute_loss(out, y, LossConfig(kl=0.5))
    assert parts["set"] == pytest.approx(0.5 * math.log(16), abs=1e-6)  # uniform logits
    assert parts["ratio"] == pytest.approx(0.5 * math.log(3), abs=1e-6)
    with pytest.raises(ValueError, match="not valid BlEmoRe label sets"):
        structured_targets(torch.tensor([[0.5, 0, 0, 0, 0, 0.5]]))


def test_mmd_identical_zero_shifted_positive_and_loop_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 4, generator=g)
    assert mmd(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert mmd(x, x + 1.0).item() > 0.05
    y = torch.randn(15, 4, generator=g) + 0.5
    bws = (0.5, 2.0)

    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / s) for s in bws)

    ref = (sum(k(a, b) for a in x for b in x) / 400 + sum(k(a, b) for a in y for b in y) / 225
           - 2 * sum(k(a, b) for a in x for b in y) / 300)
    assert mmd(x, y, bws).item() == pytest.approx(ref, abs=1e-5)


def test_coral_against_direct_formula():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = 2 * torch.randn(25, 3, generator=g, dtype=torch.float64)
    ref = ((torch.cov(x.T) - torch.cov(y.T)) ** 2).sum().item() / (4 * 9)
    assert coral(x, y).item() == pytest.approx(ref, rel=1e-10)
    assert coral(x, x).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="needs >= 2 rows per side"):
        domain_loss(x[:1], y, "coral")


def test_domain_term_never_sees_target_labels():
    """compute_loss and domain_loss accept no target labels, and the domain part depends only on embeddings."""
    assert list(inspect.signature(compute_loss).parameters) == ["out", "target", "cfg", "target_embedding"]
    assert list(inspect.signature(domain_loss).parameters) == ["source_emb", "target_emb", "kind"]
    g = torch.Generator().manual_seed(2)
    emb, tgt = torch.randn(8, 5, generator=g), torch.randn(6, 5, generator=g) + 1
    p = torch.softmax(torch.randn(8, 6, generator=g), 1)
    y = torch.eye(6)[torch.randint(0, 6, (8,), generator=g)]
    cfg = LossConfig(domain=0.7)
    for kind in ("mmd", "coral"):
        c = LossConfig(domain=0.7, domain_kind=kind)
        _, parts = compute_loss(out_from_probs(p, emb=emb), y, c, tgt)
        assert parts["domain"] == pytest.approx(0.7 * domain_loss(emb, tgt, kind).item(), rel=1e-6)
        # a different labelled batch target changes kl but never the domain term
        _, parts2 = compute_loss(out_from_probs(p, emb=emb), y.roll(1, 0), c, tgt)
        assert parts2["domain"] == parts["domain"] and parts2["kl"] != parts["kl"]
    with pytest.raises(ValueError, match="needs target_embedding"):
        compute_loss(out_from_probs(p, emb=emb), y, cfg, None)
    with pytest.raises(ValueError, match="domain_kind must be one of"):
        domain_loss(emb, tgt, "wasserstein")


def test_aux_outputs_are_summed():
    y = torch.tensor([[1.0, 0, 0, 0, 0, 0]])
    a, b = out_from_probs(torch.full((1, 6), 1 / 6)), out_from_probs(torch.tensor([[0.5, 0.1, 0.1, 0.1, 0.1, 0.1]]))
    main = out_from_probs(torch.full((1, 6), 1 / 6))
    main = ModelOutput(logits=main.logits, probs=main.probs, embedding=main.embedding, aux=(a, b))
    _, parts = compute_loss(main, y, LossConfig())
    assert parts["kl"] == pytest.approx(math.log(6) + math.log(2), abs=1e-6)


def test_bad_target_shape_raises():
    with pytest.raises(ValueError, match=r"target must be \(B, 6\)"):
        compute_loss(out_from_probs(torch.full((2, 6), 1 / 6)), torch.zeros(2, 5), LossConfig())
