"""Regularisation helpers and masked building blocks."""

import torch

from blemore_core.models.layers import AttentionPool, masked_mean, modality_keep, temporal_dropout

torch.set_num_threads(1)


def test_temporal_dropout_keeps_a_real_frame_and_only_removes():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(500, 9, generator=g) > 0.5
    mask[0] = False
    new = temporal_dropout(mask, 0.95, generator=g)
    assert not (new & ~mask).any()  # only real frames are removed
    assert torch.equal(new.any(1), mask.any(1))  # a clip with real frames keeps at least one
    assert not new[0].any()


def test_temporal_dropout_rate():
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(4000, 16, dtype=torch.bool)
    new = temporal_dropout(mask, 0.3, generator=g)
    assert abs(1 - new.float().mean().item() - 0.3) < 0.01  # binomial sd ~0.0018 -> 5 sd
    assert temporal_dropout(mask, 0.0) is mask


def test_modality_keep_never_drops_all():
    g = torch.Generator().manual_seed(2)
    keep = modality_keep(5000, 3, 0.9, torch.device("cpu"), generator=g)
    assert keep.any(1).all()
    assert (~keep).any()
    assert modality_keep(4, 3, 0.0, torch.device("cpu")).all()


def test_masked_mean_and_attention_pool_hand_case():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[2.0], [0.0]]))
    pool = AttentionPool(1)
    w = pool.weights(x, mask)
    assert w[0, 2] == 0 and torch.isclose(w[0].sum(), torch.tensor(1.0)) and (w[1] == 0).all()
    out = pool(x, mask)
    assert 1.0 <= out[0, 0] <= 3.0 and out[1, 0] == 0
