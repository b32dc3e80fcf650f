"""Actor-disjoint folds and training-fold-only standardisation (docs/ARCHITECTURE.md 2.3)."""

import numpy as np
import pytest
import torch

from blemore_core.data import assign_folds, check_actor_disjoint, fit_standardiser, fold_indices


def _toy(n_actors=12, per_actor=(3, 4, 5), seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.choice(per_actor, n_actors)
    actors = np.repeat(np.arange(100, 100 + n_actors), counts)
    return actors


def test_assign_folds_is_actor_disjoint_balanced_and_deterministic():
    actors = _toy(23)
    f1 = assign_folds(actors, 5, seed=0)
    f2 = assign_folds(actors, 5, seed=0)
    np.testing.assert_array_equal(f1, f2)
    assert set(f1.tolist()) == set(range(5))
    check_actor_disjoint(actors, f1)
    sizes = np.bincount(f1)
    assert sizes.max() - sizes.min() <= 5          # at most one actor's clips apart
    # a different seed gives a different (still valid) split
    f3 = assign_folds(actors, 5, seed=1)
    check_actor_disjoint(actors, f3)


def test_assign_folds_rejects_too_few_actors():
    with pytest.raises(ValueError, match="3 actors into 5 folds"):
        assign_folds(np.array([1, 1, 2, 3]), 5)


def test_check_actor_disjoint_names_actor_and_folds():
    actors = np.array([1, 1, 2, 2, 3])
    folds = np.array([0, 0, 1, 3, 2])
    names = ["A1_a", "A1_b", "A2_a", "A2_b", "A3_a"]
    with pytest.raises(ValueError) as ei:
        check_actor_disjoint(actors, folds, names)
    msg = str(ei.value)
    assert "A2" in msg and "[1, 3]" in msg and "A2_b" in msg
    check_actor_disjoint(actors, np.array([0, 0, 1, 1, -1]))       # -1 (test) ignored


def test_fold_indices_partition():
    folds = np.array([0, 1, 2, 0, 1, 2, -1])
    tr, va = fold_indices(folds, 1)
    np.testing.assert_array_equal(va, [1, 4])
    np.testing.assert_array_equal(tr, [0, 2, 3, 5])
    with pytest.raises(ValueError, match="no clip has fold 4"):
        fold_indices(folds, 4)


def test_fit_standardiser_aggregated_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (50, 4)).astype(np.float32)
    x[:, 3] = 1.5                                             # constant feature -> floored std
    rows = np.arange(0, 50, 2)
    m, s = fit_standardiser(x, rows)
    np.testing.assert_allclose(m, x[rows].astype(np.float64).mean(0), atol=1e-5)
    np.testing.assert_allclose(s[:3], x[rows, :3].astype(np.float64).std(0), atol=1e-5)
    assert s[3] == pytest.approx(1e-6)
    mt, st = fit_standardiser(torch.from_numpy(x), torch.from_numpy(rows))
    assert isinstance(mt, torch.Tensor)
    np.testing.assert_allclose(mt.numpy(), m, atol=1e-6)


def test_fit_standardiser_sequences_matches_frame_pooling():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 20, 30)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    frames = rng.normal(0, 3, (offsets[-1], 6)).astype(np.float32)
    rows = np.array([0, 3, 4, 9, 29])
    pooled = np.concatenate([frames[offsets[i] : offsets[i + 1]] for i in rows]).astype(np.float64)
    m, s = fit_standardiser(frames, rows, offsets=offsets)
    np.testing.assert_allclose(m, pooled.mean(0), atol=1e-5)
    np.testing.assert_allclose(s, pooled.std(0), atol=1e-5)


@pytest.mark.parametrize("form", ["aggregated", "sequence"])
def test_no_fold_leakage(form):
    """Changing one clip changes the statistics of split k iff the clip is in k's training folds."""
    rng = np.random.default_rng(2)
    actors = _toy(15)
    folds = assign_folds(actors, 5)
    n = len(actors)
    lengths = rng.integers(2, 9, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    base = rng.standard_normal((n, 4)) if form == "aggregated" else rng.standard_normal((offsets[-1], 4))
    base = base.astype(np.float32)

    def stats(x, k):
        tr, _ = fold_indices(folds, k)
        return fit_standardiser(x, tr, offsets=None if form == "aggregated" else offsets)

    before = {k: stats(base, k) for k in range(5)}
    for clip in rng.choice(n, 8, replace=False):
        x = base.copy()
        if form == "aggregated":
            x[clip] += 5.0
        else:
            x[offsets[clip] : offsets[clip + 1]] += 5.0
        for k in range(5):
            m, s = stats(x, k)
            changed = not (np.array_equal(m, before[k][0]) and np.array_equal(s, before[k][1]))
            assert changed == (folds[clip] != k), (clip, folds[clip], k)
