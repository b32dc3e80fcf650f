"""Temporal pooling contract over every registered pooling, and the stat pooling against numpy."""

import numpy as np
import pytest
import torch

from blemore_core.models import POOLING
from blemore_core.models.pooling import masked_quantiles

torch.set_num_threads(1)
D, W = 5, 8


def make(name):
    torch.manual_seed(0)
    return POOLING.get(name)(D, width=W, layers=1, heads=2, dropout=0.1)


def batch(b=6, t=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, D, generator=g)
    mask = torch.rand(b, t, generator=g) > 0.4
    mask[0] = True  # full clip
    mask[1] = False  # no real frame
    mask[2] = False
    mask[2, t // 2] = True  # one real frame in the middle
    return x, mask


@pytest.mark.parametrize("name", POOLING.names())
def test_shape_finite_and_empty_rows_zero(name):
    pool = make(name).eval()
    x, mask = batch()
    out = pool(x, mask)
    assert out.shape == (6, pool.out_dim)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros(pool.out_dim))


@pytest.mark.parametrize("name", POOLING.names())
@pytest.mark.parametrize("t", [3, 11])
def test_any_length(name, t):
    pool = make(name).eval()
    x, mask = batch(t=t)
    assert pool(x, mask).shape == (6, pool.out_dim)


@pytest.mark.parametrize("name", POOLING.names())
def test_masked_frames_do_not_change_output(name):
    pool = make(name).eval()
    x, mask = batch()
    x2 = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    torch.testing.assert_close(pool(x, mask), pool(x2, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", POOLING.names())
def test_gradient_reaches_every_parameter(name):
    pool = make(name).train()
    x, mask = batch()
    x.requires_grad_(True)
    out = pool(x, mask)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in pool.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[~mask], torch.zeros_like(x.grad[~mask]))  # masked frames get no gradient


def test_stat_matches_numpy():
    """mean, population std and linear-interpolation percentiles over real frames (numpy reference, 1e-5)."""
    pool = POOLING.get("stat")(D)
    x, mask = batch()
    out = pool(x, mask).numpy()
    for i in range(len(x)):
        real = x[i][mask[i]].numpy().astype(np.float64)
        if len(real) == 0:
            np.testing.assert_array_equal(out[i], 0)
            continue
        ref = np.concatenate([real.mean(0), real.std(0)] + [np.percentile(real, q, axis=0) for q in (10, 25, 50, 75, 90)])
        np.testing.assert_allclose(out[i], ref, atol=1e-5)


def test_masked_quantiles_hand_case():
    """Frames [4, 1, 9, 100(masked), 3]: real sorted [1, 3, 4, 9]; p50 at 1.5 -> 3.5, p90 at 2.7 -> 4 + 0.7*5 = 7.5."""
    x = torch.tensor([4.0, 1.0, 9.0, 100.0, 3.0]).reshape(1, 5, 1)
    mask = torch.tensor([[True, True, True, False, True]])
    q = masked_quantiles(x, mask, (0.5, 0.9)).flatten()
    torch.testing.assert_close(q, torch.tensor([3.5, 7.5]))


def test_heads_must_divide_width():
    for name in ("cls", "attention"):
        with pytest.raises(ValueError, match="model.heads=3 must be >= 1 and divide the transformer width 8"):
            POOLING.get(name)(D, width=8, layers=1, heads=3, dropout=0.0)


@pytest.mark.parametrize("name", POOLING.names())
def test_appending_padded_frames_does_not_change_output(name):
    """Stronger than changing padded values (which zeroing alone would pass): extra masked frames must not
    enter attention / recurrence / statistics at all."""
    pool = make(name).eval()
    x, mask = batch()
    x2 = torch.cat([x, torch.randn(6, 4, D)], dim=1)
    mask2 = torch.cat([mask, torch.zeros(6, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(pool(x, mask), pool(x2, mask2), atol=1e-5, rtol=1e-5)
