"""Caruana ensemble selection: never below the best single member (property), hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blemore_core.decoding import crossfit_thresholds
from blemore_core.ensemble import blend, crossfit_score, select_ensemble

# valid labels: 6 singles, 10 non-neutral pairs at 50/50 and 70/30
_LABELS = [np.eye(6)[i] for i in range(6)]
for i in range(5):
    for j in range(i + 1, 5):
        for a, b in ((0.5, 0.5), (0.7, 0.3)):
            v = np.zeros(6)
            v[i], v[j] = a, b
            _LABELS.append(v)
_LABELS = np.array(_LABELS)


def _problem(seed: int, m: int, n: int, k: int):
    rng = np.random.default_rng(seed)
    truth = _LABELS[rng.integers(len(_LABELS), size=n)]
    folds = np.arange(n) % k
    q = rng.uniform(0, 1, size=(m, 1, 1))
    probs = q * truth[None] + (1 - q) * rng.dirichlet(np.ones(6), size=(m, n))
    return probs, truth, folds


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 5), n=st.integers(12, 60), k=st.integers(2, 5),
       rounds=st.integers(0, 6), init=st.integers(1, 3))
def test_ensemble_never_below_best_single_member(seed, m, n, k, rounds, init):
    probs, truth, folds = _problem(seed, m, n, k)
    sel = select_ensemble(probs, truth, folds, rounds=rounds, init_size=min(init, m))
    singles = [crossfit_score(p, truth, folds) for p in probs]
    members = np.flatnonzero(sel.counts)
    assert sel.score >= max(singles[i] for i in members) - 1e-12
    assert sel.score >= max(singles) - 1e-12
    # the reported score is the crossfit Score of the weighted blend (reference: crossfit_thresholds directly)
    cf = crossfit_thresholds(blend(probs, sel.weights), truth, folds)
    assert sel.score == pytest.approx(np.mean([v["score"] for v in cf.values()]), abs=1e-6)
    assert sel.weights.sum() == pytest.approx(1.0) and len(sel.order) == sel.counts.sum()
    assert sel.score == max(sel.trajectory)


def test_hand_case_picks_the_informative_model_and_stops_at_the_best_point():
    probs, truth, folds = _problem(0, 1, 60, 3)
    good = 0.9 * truth + 0.1 / 6  # decodes every clip right at some thresholds
    rng = np.random.default_rng(1)
    noise = rng.dirichlet(np.ones(6), size=(2, 60))
    p = np.stack([noise[0], good, noise[1]])
    sel = select_ensemble(p, truth, folds, rounds=5)
    assert sel.best_single == 1 and sel.order[0] == 1
    # adding noise can only hurt a perfect model: use_best keeps it alone (or with more copies of itself)
    assert set(sel.order) == {1} and sel.score == pytest.approx(sel.single_scores[1])
    assert sel.weights.tolist() == [0.0, 1.0, 0.0]


def test_complementary_models_are_blended():
    """Two models each right on a different half of the clips: their average beats both (hand-built)."""
    n = 40
    truth = np.zeros((n, 6))
    truth[np.arange(n), np.arange(n) % 5] = 1.0  # singles, no neutral
    folds = np.arange(n) % 4
    wrong = np.roll(truth, 1, axis=1)
    half = (np.arange(n) < n // 2)[:, None]
    a = np.where(half, 0.6 * truth + 0.4 * wrong, 0.4 * truth + 0.6 * wrong)
    b = np.where(half, 0.4 * truth + 0.6 * wrong, 0.6 * truth + 0.4 * wrong)
    a = 0.9 * a + 0.1 / 6
    b = 0.9 * b + 0.1 / 6
    sel = select_ensemble(np.stack([a, b]), truth, folds, rounds=3)
    assert sorted(np.flatnonzero(sel.counts)) == [0, 1] and sel.score > max(sel.single_scores)


def test_errors():
    with pytest.raises(ValueError, match="probs"):
        select_ensemble(np.zeros((0, 5, 6)), np.zeros((5, 6)), np.zeros(5))
    probs, truth, folds = _problem(0, 2, 20, 2)
    with pytest.raises(ValueError, match="init_size"):
        select_ensemble(probs, truth, folds, init_size=3)
    with pytest.raises(ValueError, match="rounds"):
        select_ensemble(probs, truth, folds, rounds=-1)
