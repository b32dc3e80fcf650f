"""Decoding probabilities into challenge predictions, and fitting the thresholds alpha / beta.

Source: docs/ARCHITECTURE.md section 3; the organisers' ``model/post_process.py`` (blemore-common: ``get_top_2_predictions``,
``probs2dict``, ``grid_search_thresholds``), reproduced exactly, vectorised.

The decoding rule for one clip's probabilities p (6,), presence threshold alpha, salience threshold beta:

1. keep the two largest entries (top-2);
2. if the largest is < alpha -> that emotion alone;
3. zero every kept entry < alpha; if one emotion remains -> it alone;
4. if neutral is one of the two -> the higher of the two alone (on a tie the non-neutral one);
5. else with (i, j) the two in ascending emotion index: ``abs(p_i - p_j) <= beta`` -> 50/50; elif p_i > p_j ->
   i 70 / j 30; else i 30 / j 70.

Documented choices where the reference is not fully determined:

* **Ties in the top-2 choice.** The reference uses ``np.argsort(-p)``, which is not a stable sort. Here ties rank
  the lower emotion index first (a stable descending sort): the top-1 is the first maximum (``np.argmax``) and the
  top-2 the first maximum of the rest.
* **Float arithmetic.** Probabilities are converted to float64 (exact for float32 input) and every comparison
  (``p >= alpha``, ``abs(p_i - p_j) <= beta``) is made in float64 against the float64 grid values, as the
  reference does on float64 arrays.
* Thresholds must satisfy alpha > 0 (the reference fails on an all-zero row otherwise) and beta >= 0; the
  probabilities must be finite and >= 0.

Threshold fitting: the grid ``np.linspace(0.05, 0.95, 20)`` for both alpha and beta; the objective
``w * ACC_presence + (1 - w) * ACC_salience`` (w = presence_weight) evaluated as that same float64 expression;
the best is the first grid point in (alpha outer, beta inner) ascending order among ties (the reference's stable
``sorted(..., reverse=True)``). It is vectorised over the grid: the per-clip top-2 is computed once, presence
correctness depends only on alpha (A, N) and the ratio correctness only on beta (B, N); the (A, B) salience counts
are one matrix product.

Protocols (docs/ARCHITECTURE.md section 3) choose an epoch and thresholds per fold from per-epoch predictions: that lives in
:mod:`blemore_core.selection` (``val``, ``crossfit``) and :meth:`blemore_core.train.FoldTrainer.finalize`
(``train``). :func:`crossfit_thresholds` is the threshold half of ``crossfit`` for fixed out-of-fold predictions
(e.g. an ensemble's, refit without choosing epochs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from blemore_core.labels import NEUTRAL_INDEX, NUM_EMOTIONS
from blemore_core.metrics import as_salience_array, evaluate, percent
from blemore_core.names import METRICS

__all__ = [
    "THRESHOLD_GRID",
    "ThresholdFit",
    "top2",
    "decode",
    "fit_thresholds",
    "grid_metrics",
    "evaluate_thresholds",
    "fit_and_evaluate",
    "crossfit_thresholds",
]

THRESHOLD_GRID: np.ndarray = np.linspace(0.05, 0.95, 20)
"""float64 (20,): the organisers' grid for both alpha and beta (read-only)."""
THRESHOLD_GRID.setflags(write=False)


@dataclass(frozen=True)
class ThresholdFit:
    """Result of :func:`fit_thresholds`.

    Attributes:
        alpha: chosen presence threshold (a grid value, float).
        beta: chosen salience threshold (a grid value, float).
        acc_presence: ACC_presence at (alpha, beta).
        acc_salience: ACC_salience at (alpha, beta).
        score: the challenge Score (acc_presence + acc_salience) / 2 at (alpha, beta) (not the weighted objective).
        presence_only: max ACC_presence over the grid.
        salience_only: max ACC_salience over the grid.
    """

    alpha: float
    beta: float
    acc_presence: float
    acc_salience: float
    score: float
    presence_only: float
    salience_only: float

    def to_dict(self) -> dict[str, float]:
        """The fields as a plain dict of floats."""
        return asdict(self)

    def summary(self) -> dict[str, float]:
        """``{alpha, beta, acc_presence, acc_salience, score}`` (the per-protocol record)."""
        return {k: getattr(self, k) for k in ("alpha", "beta", *METRICS)}


def _check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    return as_salience_array(probs, name)


def _check_truth(truth: Any, n: int, name: str = "truth") -> np.ndarray:
    y = as_salience_array(truth, name)
    if len(y) != n:
        raise ValueError(f"{name}: has {len(y)} rows but probs has {n}")
    empty = ~(y > 0).any(axis=1)
    if empty.any():
        raise ValueError(f"{name}: row {int(np.flatnonzero(empty)[0])} has no emotion (all zeros)")
    return y


def _check_alpha_beta(alpha: Any, beta: Any, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    a = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
    b = np.atleast_1d(np.asarray(beta, dtype=np.float64))
    for arr, nm in ((a, "alpha"), (b, "beta")):
        if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
            raise ValueError(f"{what}{nm}: expected finite number(s), got {arr!r}")
    if (a <= 0).any():
        raise ValueError(f"{what}alpha: must be > 0, got {a[a <= 0][0]!r}")
    if (b < 0).any():
        raise ValueError(f"{what}beta: must be >= 0, got {b[b < 0][0]!r}")
    return a, b


def top2(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stable top-2 per row of a float (N, 6) array: ties rank the lower emotion index first.

    Returns:
        (i1, i2, p1, p2): int64 (N,) indices of the largest and second largest entries and their float64
        values (p1 >= p2).
    """
    p = np.asarray(probs, dtype=np.float64)
    rows = np.arange(len(p))
    i1 = np.argmax(p, axis=1)
    rest = p.copy()
    rest[rows, i1] = -np.inf
    i2 = np.argmax(rest, axis=1)
    return i1, i2, p[rows, i1], p[rows, i2]


def decode(probs: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Decode probabilities into discrete challenge predictions (docs/ARCHITECTURE.md section 3; the organisers' ``probs2dict``).

    Args:
        probs: float (N, 6) non-negative scores per emotion (usually rows summing to 1).
        alpha: presence threshold (> 0): an emotion is kept only if its probability >= alpha.
        beta: salience threshold (>= 0): two kept emotions whose probabilities differ by <= beta are 50/50.

    Returns:
        float32 (N, 6) salience array: one emotion at 1.0, or a pair at 0.5/0.5 or 0.7/0.3 (higher one 0.7).

    Raises:
        ValueError: for a wrong shape, non-finite/negative probabilities, alpha <= 0 or beta < 0.
    """
    if np.ndim(alpha) or np.ndim(beta):
        raise ValueError(f"alpha and beta must be scalars, got {alpha!r}, {beta!r}")
    p = _check_probs(probs)
    (a,), (b,) = _check_alpha_beta(alpha, beta)
    i1, i2, p1, p2 = top2(p)
    rows = np.arange(len(p))
    pair = (p2 >= a) & (i1 != NEUTRAL_INDEX) & (i2 != NEUTRAL_INDEX)
    even = np.abs(p1 - p2) <= b
    hi = np.where(p1 > p2, i1, i2)  # p1 == p2 -> the higher index, as the reference's else branch (never hit: beta >= 0)
    lo = np.where(p1 > p2, i2, i1)
    out = np.zeros((len(p), NUM_EMOTIONS), dtype=np.float32)
    single = ~pair
    out[rows[single], i1[single]] = 1.0
    r = rows[pair & even]
    out[r, i1[r]] = 0.5
    out[r, i2[r]] = 0.5
    r = rows[pair & ~even]
    out[r, hi[r]] = 0.7
    out[r, lo[r]] = 0.3
    return out


def grid_metrics(
    probs: np.ndarray, truth: np.ndarray, alphas: np.ndarray = THRESHOLD_GRID, betas: np.ndarray = THRESHOLD_GRID
) -> tuple[np.ndarray, np.ndarray]:
    """ACC_presence and ACC_salience of ``decode(probs, a, b)`` for every grid point, vectorised.

    Args:
        probs: float (N, 6) probabilities; truth: float (N, 6) salience array (each row at least one emotion).
        alphas: float (A,) presence thresholds (> 0); betas: float (B,) salience thresholds (>= 0).

    Returns:
        (acc_presence (A, B), acc_salience (A, B)) float64; entry [a, b] is the metric at (alphas[a], betas[b]).

    Raises:
        ValueError: for invalid arrays or thresholds (see :func:`decode`).
    """
    p = _check_probs(probs)
    y = _check_truth(truth, len(p))
    a, b = _check_alpha_beta(alphas, betas, "grid ")
    n = len(p)
    rows = np.arange(n)
    i1, i2, p1, p2 = top2(p)

    present = y > 0
    n_true = present.sum(axis=1)
    blended = n_true == 2
    with_neutral = (i1 == NEUTRAL_INDEX) | (i2 == NEUTRAL_INDEX)
    # presence when the decoded prediction is top-1 alone / the pair (i1, i2)
    single_ok = (n_true == 1) & present[rows, i1]
    pair_ok = blended & present[rows, i1] & present[rows, i2] & ~with_neutral
    kept = (p2[None, :] >= a[:, None]) & ~with_neutral[None, :]  # (A, N): decoded as the pair
    presence = np.where(kept, pair_ok[None, :], single_ok[None, :])
    acc_p = presence.sum(axis=1) / n  # (A,), the reference's mean of bools

    pct = percent(y)
    hi = np.where(p1 > p2, i1, i2)
    lo = np.where(p1 > p2, i2, i1)
    ratio_even = (pct[rows, i1] == 50) & (pct[rows, i2] == 50)
    ratio_7030 = (pct[rows, hi] == 70) & (pct[rows, lo] == 30)
    diff = np.abs(p1 - p2)
    ratio_ok = np.where(diff[None, :] <= b[:, None], ratio_even[None, :], ratio_7030[None, :])  # (B, N)
    sal_correct = (kept & pair_ok[None, :]).astype(np.float64) @ ratio_ok.T.astype(np.float64)  # (A, B) counts
    n_blend = int(blended.sum())
    acc_s = sal_correct / n_blend if n_blend else np.zeros((len(a), len(b)))
    return np.broadcast_to(acc_p[:, None], acc_s.shape).copy(), acc_s


def _grids(grid: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(grid, tuple) and len(grid) == 2:
        return np.asarray(grid[0], dtype=np.float64), np.asarray(grid[1], dtype=np.float64)
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1:
        raise ValueError(f"grid: expected a 1-D array (used for alpha and beta) or a tuple (alphas, betas), got shape {g.shape}")
    return g, g


def fit_thresholds(
    probs: np.ndarray, truth: np.ndarray, grid: Any = THRESHOLD_GRID, presence_weight: float = 0.5
) -> ThresholdFit:
    """Grid-search alpha and beta maximising ``w*ACC_presence + (1-w)*ACC_salience`` (docs/ARCHITECTURE.md section 3; the organisers'
    ``grid_search_thresholds``, which applies top-2 first, as :func:`decode` does).

    Args:
        probs: float (N, 6) probabilities.
        truth: float (N, 6) salience array (each row has at least one emotion).
        grid: float (G,) values used for both alpha and beta (default ``linspace(0.05, 0.95, 20)``), or a tuple
            ``(alphas (A,), betas (B,))``.
        presence_weight: w in [0, 1].

    Returns:
        :class:`ThresholdFit`; among equal objectives the first grid point in (alpha, then beta) ascending order.

    Raises:
        ValueError: for invalid arrays, thresholds or weight.
    """
    w = float(presence_weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"presence_weight: must be in [0, 1], got {presence_weight!r}")
    alphas, betas = _grids(grid)
    acc_p, acc_s = grid_metrics(probs, truth, alphas, betas)
    objective = w * acc_p + (1 - w) * acc_s
    ia, ib = np.unravel_index(int(np.argmax(objective)), objective.shape)  # first maximum in C order
    p, s = float(acc_p[ia, ib]), float(acc_s[ia, ib])
    return ThresholdFit(
        alpha=float(alphas[ia]),
        beta=float(betas[ib]),
        acc_presence=p,
        acc_salience=s,
        score=(p + s) / 2,
        presence_only=float(acc_p.max()),
        salience_only=float(acc_s.max()),
    )


def evaluate_thresholds(probs: np.ndarray, truth: np.ndarray, alpha: float, beta: float) -> dict[str, float]:
    """Decode ``probs`` at (alpha, beta) and score against ``truth``.

    Args:
        probs: float (N, 6); truth: float (N, 6) salience array; alpha > 0, beta >= 0.

    Returns:
        ``{"acc_presence", "acc_salience", "score"}`` floats.
    """
    p = _check_probs(probs)
    y = _check_truth(truth, len(p))
    return evaluate(decode(p, alpha, beta), y)


def fit_and_evaluate(
    fit_probs: np.ndarray,
    fit_truth: np.ndarray,
    eval_probs: np.ndarray,
    eval_truth: np.ndarray,
    presence_weight: float = 0.5,
    grid: Any = THRESHOLD_GRID,
) -> dict[str, float]:
    """Fit thresholds on one set of predictions and report the metrics on another.

    Args:
        fit_probs (M, 6), fit_truth (M, 6): where alpha/beta are fitted.
        eval_probs (N, 6), eval_truth (N, 6): where the metrics are measured.

    Returns:
        ``{"alpha", "beta", "acc_presence", "acc_salience", "score"}`` (metrics on the eval set).
    """
    fit = fit_thresholds(fit_probs, fit_truth, grid=grid, presence_weight=presence_weight)
    return {"alpha": fit.alpha, "beta": fit.beta, **evaluate_thresholds(eval_probs, eval_truth, fit.alpha, fit.beta)}


def _check_folds(folds: Any, n: int) -> np.ndarray:
    f = np.asarray(folds)
    if f.shape != (n,) or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"folds: expected an integer array of shape ({n},), got dtype {f.dtype} shape {f.shape}")
    return f


def crossfit_thresholds(
    probs: np.ndarray, truth: np.ndarray, folds: np.ndarray, presence_weight: float = 0.5
) -> dict[int, dict[str, float]]:
    """Thresholds of the ``crossfit`` protocol for fixed OOF predictions: fold k's alpha, beta are fitted on the
    OOF predictions of all other folds and evaluated on fold k (the epochs are already chosen, e.g. an ensemble).

    Args:
        probs: float (N, 6) out-of-fold probabilities; truth: float (N, 6); folds: int (N,).

    Returns:
        ``{fold: {"alpha", "beta", "acc_presence", "acc_salience", "score"}}`` (metrics on fold k).

    Raises:
        ValueError: with fewer than two folds, or invalid arrays.
    """
    p = _check_probs(probs)
    f = _check_folds(folds, len(p))
    y = _check_truth(truth, len(p))
    ks = np.unique(f)
    if len(ks) < 2:
        raise ValueError(f"folds: crossfit needs at least two folds, got {ks.tolist()}")
    return {int(k): fit_and_evaluate(p[f != k], y[f != k], p[f == k], y[f == k], presence_weight) for k in ks}
