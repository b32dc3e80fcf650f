"""Heads against direct formulas; the structured decode yields only valid labels; learned temperature."""

import math

import pytest
import torch

from blemore_core.labels import BLEND_RATIOS, LABEL_SETS, label_set_indices
from blemore_core.models import HEAD, ModelOutput, decode_structured
from blemore_core.models.heads import StructuredHead

torch.set_num_threads(1)
H = 10


def make(name):
    torch.manual_seed(0)
    return HEAD.get(name)(H, dropout=0.0).eval()


@pytest.mark.parametrize("name", HEAD.names())
def test_probs_rows_sum_to_one_and_logits_are_consistent(name):
    out = make(name)(3 * torch.randn(32, H))
    torch.testing.assert_close(out.probs.sum(1), torch.ones(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.softmax(out.logits, 1), out.probs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", HEAD.names())
def test_temperature_divides_logits(name):
    head = make(name)
    h = torch.randn(4, H)
    base = head(h)
    with torch.no_grad():
        head.temperature.log_t.fill_(math.log(2.0))
    hot = head(h)
    assert float(head.temperature.value.detach()) == pytest.approx(2.0)
    if name == "softmax":
        torch.testing.assert_close(hot.logits, base.logits / 2)
    elif name == "presence_salience":
        torch.testing.assert_close(hot.presence_logits, base.presence_logits / 2)
        torch.testing.assert_close(hot.salience_logits, base.salience_logits / 2)
    else:
        torch.testing.assert_close(hot.set_logits, base.set_logits / 2)
        torch.testing.assert_close(hot.pair_ratio_logits, base.pair_ratio_logits / 2)


def test_presence_salience_formula():
    """p = normalise(sigmoid(a) * softmax(s)) (tolerance 1e-6)."""
    out = make("presence_salience")(torch.randn(5, H))
    raw = torch.sigmoid(out.presence_logits) * torch.softmax(out.salience_logits, 1)
    torch.testing.assert_close(out.probs, raw / raw.sum(1, keepdim=True), atol=1e-6, rtol=1e-5)


def test_structured_probs_match_loop():
    """p(e) = sum_S p(S) * share_S(e), computed with a plain loop (tolerance 1e-6)."""
    head = make("structured")
    out = head(torch.randn(4, H))
    p_set = torch.softmax(out.set_logits, 1)
    r = torch.softmax(out.pair_ratio_logits, 2)
    ref = torch.zeros(4, 6)
    for i in range(4):
        pair = 0
        for k, s in enumerate(LABEL_SETS):
            if len(s) == 1:
                ref[i, s[0]] += p_set[i, k]
            else:
                lo_share = 0.5 * r[i, pair, 0] + 0.7 * r[i, pair, 1] + 0.3 * r[i, pair, 2]
                ref[i, s[0]] += p_set[i, k] * lo_share
                ref[i, s[1]] += p_set[i, k] * (1 - lo_share)
                pair += 1
    torch.testing.assert_close(out.probs, ref, atol=1e-6, rtol=1e-5)
    best = p_set[:, 6:].argmax(1)
    torch.testing.assert_close(out.ratio_logits, out.pair_ratio_logits[torch.arange(4), best])


def test_structured_decode_yields_only_valid_labels():
    g = torch.Generator().manual_seed(0)
    n = 2000
    out = ModelOutput(logits=torch.zeros(n, 6), probs=torch.full((n, 6), 1 / 6), embedding=torch.zeros(n, 1),
                      set_logits=torch.randn(n, 16, generator=g), pair_ratio_logits=torch.randn(n, 10, 3, generator=g))
    y = decode_structured(out)
    sets = label_set_indices(y.numpy())  # raises on an invalid set
    assert set(sets.tolist()) == set(range(16))  # every set reachable
    torch.testing.assert_close(torch.from_numpy(sets), out.set_logits.argmax(1))
    torch.testing.assert_close(y.sum(1), torch.ones(n))
    allowed = {round(s / 100, 2) for r in BLEND_RATIOS for s in r} | {1.0}
    assert {round(v, 2) for v in y[y > 0].tolist()} <= allowed
    pairs = y[torch.from_numpy(sets) >= 6]
    top = pairs.topk(2, 1).values
    assert {(round(a, 2), round(b, 2)) for a, b in top.tolist()} == {(0.5, 0.5), (0.7, 0.3)}


def test_structured_decode_hand_case():
    """Set argmax = hap+sad (index of (3, 4)), ratio argmax = class 2 (30/70) -> hap 0.3, sad 0.7."""
    k = LABEL_SETS.index((3, 4))
    set_logits = torch.zeros(1, 16)
    set_logits[0, k] = 5
    ratio = torch.zeros(1, 10, 3)
    ratio[0, k - 6, 2] = 5
    out = ModelOutput(logits=torch.zeros(1, 6), probs=torch.zeros(1, 6), embedding=torch.zeros(1, 1),
                      set_logits=set_logits, pair_ratio_logits=ratio)
    torch.testing.assert_close(StructuredHead.decode_structured(None, out), torch.tensor([[0, 0, 0, 0.3, 0.7, 0]]))


def test_decode_requires_structured_output():
    out = make("softmax")(torch.randn(2, H))
    with pytest.raises(ValueError, match="model.head must be 'structured'"):
        decode_structured(out)


@pytest.mark.parametrize("name", HEAD.names())
def test_bad_constructor_args_raise(name):
    with pytest.raises(ValueError, match="in_dim must be >= 1, got 0"):
        HEAD.get(name)(0, dropout=0.0)
    with pytest.raises(ValueError, match=r"reg.dropout must be in \[0, 1\), got 1.5"):
        HEAD.get(name)(4, dropout=1.5)
