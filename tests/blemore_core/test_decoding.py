"""decode / fit_thresholds against a straightforward per-clip port of the organisers' code (docs/ARCHITECTURE.md section 3).

The reference below is a faithful port of blemore-common ``model/post_process.py`` (get_top_2_predictions,
probs2dict, grid_search_thresholds) and ``utils/generic_accuracy/accuracy_funcs.py`` (acc_presence_total,
acc_salience_total), operating on dicts per clip. Only change: the top-2 uses a *stable* descending sort (ties ->
lower emotion index first), our documented tie rule. It is also imported by benchmarks/thresholds.py.
Exact equality is required everywhere (tolerance 0): both sides compute the same float64 expressions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blemore_core.decoding import (
    THRESHOLD_GRID,
    ThresholdFit,
    crossfit_thresholds,
    decode,
    evaluate_thresholds,
    fit_thresholds,
)
from blemore_core.labels import EMOTIONS, LABEL_SETS, NEUTRAL_INDEX
from blemore_core.metrics import evaluate

INDEX_TO_LABEL = dict(enumerate(EMOTIONS))

# ----------------------------------------------------------------------------------------------------------------
# reference port (per clip, dicts)


def ref_get_top_2(y_pred: np.ndarray) -> np.ndarray:
    sorted_indices = np.argsort(-y_pred, axis=1, kind="stable")
    top_k_indices = sorted_indices[:, :2]
    mask = np.zeros_like(y_pred, dtype=bool)
    np.put_along_axis(mask, top_k_indices, True, axis=1)
    return y_pred * mask


def ref_probs2dict(y_pred, filenames, presence_threshold=0.1, salience_threshold=0.1):
    y_pred = np.copy(y_pred)
    result = {}
    for fname, vec in zip(filenames, y_pred, strict=True):
        pred_top_index = np.argmax(vec)
        if vec[pred_top_index] < presence_threshold:
            result[fname] = [{"emotion": INDEX_TO_LABEL[pred_top_index], "salience": 100.0}]
            continue
        vec[vec < presence_threshold] = 0
        nonzero = np.where(vec > 0)[0]
        if len(nonzero) == 1:
            result[fname] = [{"emotion": INDEX_TO_LABEL[nonzero[0]], "salience": 100.0}]
            continue
        if NEUTRAL_INDEX in nonzero:
            if vec[nonzero[0]] >= vec[NEUTRAL_INDEX]:
                preds = [{"emotion": INDEX_TO_LABEL[nonzero[0]], "salience": 100.0}]
            else:
                preds = [{"emotion": INDEX_TO_LABEL[NEUTRAL_INDEX], "salience": 100.0}]
            result[fname] = preds
            continue
        i, j = nonzero
        p1, p2 = vec[i], vec[j]
        if abs(p1 - p2) <= salience_threshold:
            sal1, sal2 = 0.5, 0.5
        elif p1 > p2:
            sal1, sal2 = 0.7, 0.3
        else:
            sal1, sal2 = 0.3, 0.7
        result[fname] = [
            {"emotion": INDEX_TO_LABEL[i], "salience": round(100 * sal1, 1)},
            {"emotion": INDEX_TO_LABEL[j], "salience": round(100 * sal2, 1)},
        ]
    return result


def ref_acc_presence_single(label, pred):
    return {x["emotion"] for x in label} == {p["emotion"] for p in pred}


def ref_acc_salience_single(label, pred):
    label_dict = {x["emotion"]: round(float(x["salience"])) for x in label}
    pred_dict = {p["emotion"]: round(float(p["salience"])) for p in pred}
    return label_dict == pred_dict


def ref_acc_presence_total(preds, labels):
    return np.mean([ref_acc_presence_single(labels[f], p) for f, p in preds.items()]).item()


def ref_acc_salience_total(preds, labels):
    res = []
    for f, p in preds.items():
        label = labels[f]
        if len(label) != 2:
            continue
        res.append(ref_acc_salience_single(label, p) if len(p) == 2 else False)
    return np.mean(res).item() if res else 0.0


def ref_labels(truth: np.ndarray) -> tuple[list[str], dict]:
    """Truth salience array -> (filenames, filename -> label list with saliences in percent, as the metadata)."""
    names = [f"clip{r}" for r in range(len(truth))]
    labels = {
        n: [{"emotion": EMOTIONS[j], "salience": float(round(100 * truth[r, j]))} for j in np.flatnonzero(truth[r] > 0)]
        for r, n in enumerate(names)
    }
    return names, labels


def ref_grid_search(preds, truth, presence_weight=0.5, alphas=None, betas=None):
    names, labels = ref_labels(truth)
    preds = ref_get_top_2(np.asarray(preds, dtype=np.float64))
    alphas = np.linspace(0.05, 0.95, 20) if alphas is None else alphas
    betas = np.linspace(0.05, 0.95, 20) if betas is None else betas
    grid = []
    for a in alphas:
        for b in betas:
            d = ref_probs2dict(preds, names, a, b)
            grid.append((a.item(), b.item(), ref_acc_presence_total(d, labels), ref_acc_salience_total(d, labels)))
    best_presence_only = max(grid, key=lambda x: x[2])[2]
    best_salience_only = max(grid, key=lambda x: x[3])[3]
    sorted_grid = sorted(grid, key=lambda x: presence_weight * x[2] + (1 - presence_weight) * x[3], reverse=True)
    a, b, p, s = sorted_grid[0]
    return {"alpha": a, "beta": b, "acc_presence": p, "acc_salience": s,
            "presence_only": best_presence_only, "salience_only": best_salience_only}


def ref_decode_array(probs: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    names = [f"clip{r}" for r in range(len(probs))]
    d = ref_probs2dict(ref_get_top_2(np.asarray(probs, dtype=np.float64)), names, alpha, beta)
    out = np.zeros((len(probs), 6), dtype=np.float32)
    for r, n in enumerate(names):
        for item in d[n]:
            out[r, EMOTIONS.index(item["emotion"])] = item["salience"] / 100.0
    return out


# ----------------------------------------------------------------------------------------------------------------
# random inputs with ties, exact grid values, zeros and neutral on top

_GRID_VALUES = [float(v) for v in THRESHOLD_GRID]


def random_probs(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.integers(5)
    if kind == 0:  # plain Dirichlet
        return rng.dirichlet(np.full(6, rng.choice([0.3, 1.0, 3.0])), size=n)
    if kind == 1:  # values taken from the grid (p == alpha) and zeros: many ties
        pool = np.array(_GRID_VALUES[:8] + [0.0, 0.0])
        return rng.choice(pool, size=(n, 6))
    if kind == 2:  # top-2 differences equal to beta values (p_i = p_j + beta in float64)
        p = rng.dirichlet(np.ones(6), size=n) * 0.1
        for r in range(n):
            i, j = rng.choice(6, size=2, replace=False)
            base = rng.choice(_GRID_VALUES[:6])
            p[r, j] = base
            p[r, i] = base + rng.choice(_GRID_VALUES[:10])
        return p
    if kind == 3:  # neutral on top, often tied with the runner-up
        p = rng.dirichlet(np.ones(6), size=n)
        p[:, NEUTRAL_INDEX] = p.max(axis=1) + rng.choice([0.0, 0.0, 0.05, 0.2], size=n)
        return p
    p = np.round(rng.dirichlet(np.ones(6) * 0.5, size=n), 2)  # coarse: ties at the top and at the threshold
    return p


def random_truth(rng: np.random.Generator, n: int, p_blend: float = 0.6) -> np.ndarray:
    y = np.zeros((n, 6), dtype=np.float32)
    for r in range(n):
        if rng.random() < p_blend:
            a, b = LABEL_SETS[6 + rng.integers(10)]
            y[r, a], y[r, b] = [(0.5, 0.5), (0.7, 0.3), (0.3, 0.7)][rng.integers(3)]
        else:
            y[r, rng.integers(6)] = 1.0
    return y


def _fit_as_dict(fit: ThresholdFit) -> dict:
    d = fit.to_dict()
    d.pop("score")
    return d


# ----------------------------------------------------------------------------------------------------------------
# decode


def test_decode_hand_cases():
    probs = np.array([
        [0.04, 0.03, 0.02, 0.01, 0.0, 0.0],  # top < alpha -> top alone
        [0.60, 0.30, 0.10, 0.0, 0.0, 0.0],  # pair, diff 0.3 > beta -> 70/30 to ang
        [0.30, 0.60, 0.10, 0.0, 0.0, 0.0],  # 30/70: the higher (disg) gets 70
        [0.45, 0.40, 0.15, 0.0, 0.0, 0.0],  # diff 0.05 <= 0.1 -> 50/50
        [0.50, 0.05, 0.0, 0.0, 0.0, 0.45],  # neutral in pair, ang higher -> ang alone
        [0.40, 0.0, 0.0, 0.0, 0.0, 0.60],  # neutral higher -> neutral alone
        [0.50, 0.0, 0.0, 0.0, 0.0, 0.50],  # tie with neutral -> the other alone
        [0.80, 0.15, 0.05, 0.0, 0.0, 0.0],  # second < alpha -> top alone
        [0.3, 0.3, 0.3, 0.1, 0.0, 0.0],  # three-way tie: top-2 = ang, disg (lower index first) -> 50/50
    ])
    expected = np.zeros_like(probs, dtype=np.float32)
    expected[0, 0] = 1
    expected[1, [0, 1]] = [0.7, 0.3]
    expected[2, [0, 1]] = [0.3, 0.7]
    expected[3, [0, 1]] = [0.5, 0.5]
    expected[4, 0] = 1
    expected[5, 5] = 1
    expected[6, 0] = 1
    expected[7, 0] = 1
    expected[8, [0, 1]] = [0.5, 0.5]
    out = decode(probs, 0.2, 0.1)
    assert out.dtype == np.float32 and out.shape == probs.shape
    np.testing.assert_array_equal(out, expected)


def test_decode_boundaries_are_inclusive():
    # p2 == alpha keeps the pair; |p1 - p2| == beta (same float64 expression) is 50/50
    a = float(THRESHOLD_GRID[3])
    probs = np.array([[0.5, a, 0, 0, 0, 0]])
    beta = abs(0.5 - a)
    f32 = lambda *v: np.array(v, dtype=np.float32)  # noqa: E731
    np.testing.assert_array_equal(decode(probs, a, beta)[0], f32(0.5, 0.5, 0, 0, 0, 0))
    np.testing.assert_array_equal(decode(probs, np.nextafter(a, 1), beta)[0], f32(1, 0, 0, 0, 0, 0))
    np.testing.assert_array_equal(decode(probs, a, np.nextafter(beta, 0))[0], f32(0.7, 0.3, 0, 0, 0, 0))


def test_decode_float32_input_compares_in_float64():
    p32 = np.array([[0.35, 0.15, 0.5, 0, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(decode(p32, 0.15, 0.2), ref_decode_array(p32.astype(np.float64), 0.15, 0.2))


def test_decode_matches_reference_random():
    rng = np.random.default_rng(1)
    for _ in range(300):
        probs = random_probs(rng, 20)
        a = float(rng.choice(THRESHOLD_GRID))
        b = float(rng.choice(THRESHOLD_GRID))
        np.testing.assert_array_equal(decode(probs, a, b), ref_decode_array(probs, a, b))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(_GRID_VALUES[:6] + [0.0, 0.3, 0.35, 0.5]) | st.floats(0, 1), min_size=6,
                      max_size=6), min_size=1, max_size=12),
    st.sampled_from(_GRID_VALUES),
    st.sampled_from(_GRID_VALUES + [0.0]),
)
def test_decode_matches_reference_hypothesis(rows, alpha, beta):
    probs = np.array(rows, dtype=np.float64)
    np.testing.assert_array_equal(decode(probs, alpha, beta), ref_decode_array(probs, alpha, beta))


def test_decode_rejects_bad_input():
    ok = np.full((2, 6), 1 / 6)
    with pytest.raises(ValueError, match="shape"):
        decode(np.ones((2, 5)), 0.1, 0.1)
    with pytest.raises(ValueError, match="finite"):
        decode(np.array([[np.nan, 0, 0, 0, 0, 1]]), 0.1, 0.1)
    with pytest.raises(ValueError, match=">= 0"):
        decode(-ok, 0.1, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        decode(ok, 0.0, 0.1)
    with pytest.raises(ValueError, match="beta"):
        decode(ok, 0.1, -0.1)


# ----------------------------------------------------------------------------------------------------------------
# fit_thresholds


def test_fit_thresholds_reference_example():
    # the organisers' own example in post_process.main(), with its printed result
    y_pred = np.array([[0.7, 0.1, 0.05, 0.03, 0.02, 0.1],
                       [0.2, 0.6, 0.05, 0.03, 0.02, 0.1],
                       [0.1, 0.1, 0.6, 0.05, 0.05, 0.1],
                       [0.0, 0.0, 0.0, 0.0, 0.4, 0.6],
                       [0.9, 0.0, 0.0, 0.0, 0.0, 0.1]])
    truth = np.zeros((5, 6))
    truth[0, [0, 1]] = [0.7, 0.3]
    truth[1, [1, 2]] = [0.5, 0.5]
    truth[2, [2, 4]] = [0.5, 0.5]
    truth[3, 5] = 1
    truth[4, 0] = 1
    fit = fit_thresholds(y_pred, truth)
    assert (fit.alpha, fit.beta) == (0.05, 0.05)
    assert fit.acc_presence == 0.6 and fit.acc_salience == pytest.approx(1 / 3, abs=0)
    assert fit.presence_only == 0.6 and fit.salience_only == pytest.approx(1 / 3, abs=0)
    assert fit.score == (0.6 + 1 / 3) / 2


def _check_many_matrices(seed: int, count: int) -> None:
    rng = np.random.default_rng(seed)
    sub = THRESHOLD_GRID[[0, 1, 3, 5, 9, 14]]
    for t in range(count):
        n = int(rng.integers(1, 14))
        probs = random_probs(rng, n)
        truth = random_truth(rng, n, p_blend=rng.choice([0.0, 0.5, 1.0]))
        w = float(rng.choice([0.5, 0.0, 1.0, 0.3]))
        ours = fit_thresholds(probs, truth, grid=sub, presence_weight=w)
        ref = ref_grid_search(probs, truth, w, sub, sub)
        assert _fit_as_dict(ours) == ref, (t, probs, truth, w)
        assert ours.score == (ref["acc_presence"] + ref["acc_salience"]) / 2


def test_fit_thresholds_matches_reference_many_matrices():
    """500 random matrices (1..13 clips) on a 6 x 6 sub-grid (keeps the reference loop fast)."""
    _check_many_matrices(seed=2, count=500)


@pytest.mark.slow
def test_fit_thresholds_matches_reference_thousands_of_matrices():
    """3,000 more random matrices, other seed."""
    _check_many_matrices(seed=12, count=3000)


def test_fit_thresholds_matches_reference_full_grid():
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(5, 40))
        probs = random_probs(rng, n)
        truth = random_truth(rng, n)
        assert _fit_as_dict(fit_thresholds(probs, truth)) == ref_grid_search(probs, truth)


@pytest.mark.slow
def test_fit_thresholds_matches_reference_large():
    rng = np.random.default_rng(4)
    probs = np.concatenate([random_probs(rng, 100) for _ in range(5)])
    truth = random_truth(rng, len(probs))
    assert _fit_as_dict(fit_thresholds(probs, truth)) == ref_grid_search(probs, truth)


def test_fit_thresholds_tie_goes_to_first_grid_point():
    # every grid point gives the same metrics -> (alpha, beta) = first point
    probs = np.array([[1.0, 0, 0, 0, 0, 0]])
    truth = np.array([[1.0, 0, 0, 0, 0, 0]])
    fit = fit_thresholds(probs, truth)
    assert (fit.alpha, fit.beta) == (float(THRESHOLD_GRID[0]), float(THRESHOLD_GRID[0]))
    assert fit.acc_presence == 1.0 and fit.acc_salience == 0.0  # no blended clip -> 0.0


def test_fit_thresholds_consistent_with_evaluate_thresholds():
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(6), size=300)
    truth = random_truth(rng, 300)
    fit = fit_thresholds(probs, truth)
    m = evaluate_thresholds(probs, truth, fit.alpha, fit.beta)
    assert m == {"acc_presence": fit.acc_presence, "acc_salience": fit.acc_salience, "score": fit.score}
    assert m == evaluate(decode(probs, fit.alpha, fit.beta), truth)


def test_fit_thresholds_rejects_bad_input():
    probs = np.full((3, 6), 1 / 6)
    truth = np.eye(6)[:3]
    with pytest.raises(ValueError, match="rows"):
        fit_thresholds(probs, np.eye(6)[:2])
    with pytest.raises(ValueError, match="no emotion"):
        fit_thresholds(probs, np.zeros((3, 6)))
    with pytest.raises(ValueError, match="presence_weight"):
        fit_thresholds(probs, truth, presence_weight=1.5)
    with pytest.raises(ValueError, match="alpha"):
        fit_thresholds(probs, truth, grid=np.array([0.0, 0.5]))


# ----------------------------------------------------------------------------------------------------------------
# protocols


def _fold_data(seed=6, n=250, k=5):
    rng = np.random.default_rng(seed)
    truth = random_truth(rng, n)
    probs = 0.5 * truth + 0.5 * rng.dirichlet(np.ones(6), size=n)  # weakly informative
    folds = np.arange(n) % k
    return probs, truth, folds


def test_crossfit_fits_on_other_folds():
    probs, truth, folds = _fold_data()
    out = crossfit_thresholds(probs, truth, folds)
    assert sorted(out) == [0, 1, 2, 3, 4]
    for k, rec in out.items():
        fit = fit_thresholds(probs[folds != k], truth[folds != k])
        assert (rec["alpha"], rec["beta"]) == (fit.alpha, fit.beta)
        assert {x: rec[x] for x in ("acc_presence", "acc_salience", "score")} == evaluate_thresholds(
            probs[folds == k], truth[folds == k], fit.alpha, fit.beta)
    with pytest.raises(ValueError, match="two folds"):
        crossfit_thresholds(probs, truth, np.zeros(len(probs), dtype=int))
