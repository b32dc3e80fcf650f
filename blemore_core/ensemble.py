"""Ensemble selection over out-of-fold predictions (Caruana, Niculescu-Mizil, Crew and Ksikes, "Ensemble
selection from libraries of models", ICML 2004; the AutoGluon variant with ``use_best``).

Greedy forward selection *with replacement*: the ensemble is a multiset of candidate models whose OOF probabilities
are averaged; it starts with the best candidates (sorted initialisation: the ``init_size`` best single models,
added one at a time), then each round adds the candidate (possibly one already in) that maximises the ensemble's
objective; after ``rounds`` rounds the ensemble is the prefix of this trajectory with the best objective (the
earliest among ties: ``use_best``). The objective is the fold-mean cross-fitted Score (docs/ARCHITECTURE.md section 3, protocol
``crossfit``: fold k decoded with alpha, beta fitted on the other folds), so the selection never reads a fold's
labels to choose that fold's thresholds. Because the trajectory starts with the best single candidate, the chosen
ensemble's objective is never below the best single member's on the same OOF predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blemore_core.decoding import crossfit_thresholds


def crossfit_score(probs: np.ndarray, truth: np.ndarray, folds: np.ndarray, presence_weight: float = 0.5) -> float:
    """Fold mean of the cross-fitted Score of OOF probabilities ``probs`` (N, 6) against ``truth`` (N, 6) with
    ``folds`` (N,) (the number a search trial reports as ``score`` under the crossfit protocol).

    Raises:
        ValueError: fewer than two folds, invalid arrays (from :func:`blemore_core.decoding.crossfit_thresholds`).
    """
    cf = crossfit_thresholds(probs, truth, folds, presence_weight=presence_weight)
    return float(np.mean([v["score"] for v in cf.values()]))


@dataclass
class EnsembleSelection:
    """The outcome of :func:`select_ensemble`.

    Attributes:
        weights: float64 (M,) weight of each candidate (counts / total; zeros for unused candidates).
        counts: int64 (M,) times each candidate was picked (within the kept prefix).
        order: candidate indices in the order they were added (the kept prefix).
        trajectory: objective after each addition (whole trajectory, before ``use_best`` cuts it).
        score: the kept ensemble's objective (= max of ``trajectory``).
        single_scores: float64 (M,) objective of each candidate alone.
    """

    weights: np.ndarray
    counts: np.ndarray
    order: list[int]
    trajectory: list[float]
    score: float
    single_scores: np.ndarray

    @property
    def best_single(self) -> int:
        """Index of the best single candidate (the first among ties)."""
        return int(np.argmax(self.single_scores))


def select_ensemble(
    probs: np.ndarray,
    truth: np.ndarray,
    folds: np.ndarray,
    rounds: int = 25,
    init_size: int = 1,
    presence_weight: float = 0.5,
) -> EnsembleSelection:
    """Greedy forward selection with replacement, sorted initialisation and ``use_best`` (module docstring).

    Args:
        probs: float (M, N, 6) OOF probabilities of M candidates on the same N clips (rows aligned).
        truth: float (N, 6) salience labels; folds: int (N,) fold of each clip (at least two folds).
        rounds: greedy additions after the initialisation (>= 0).
        init_size: best single candidates that start the ensemble (1 <= init_size <= M).
        presence_weight: weight of ACC_presence in the threshold fit (docs/ARCHITECTURE.md section 3).

    Returns:
        :class:`EnsembleSelection`.

    Raises:
        ValueError: wrong shapes, M = 0, a bad ``rounds`` or ``init_size``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 3 or p.shape[2] != 6 or p.shape[0] == 0:
        raise ValueError(f"probs: expected (M >= 1, N, 6), got {p.shape}")
    m = p.shape[0]
    if rounds < 0:
        raise ValueError(f"rounds: must be >= 0, got {rounds}")
    if not 1 <= init_size <= m:
        raise ValueError(f"init_size: must be in 1..{m}, got {init_size}")

    def objective(x: np.ndarray) -> float:
        return crossfit_score(x, truth, folds, presence_weight)

    single = np.array([objective(p[i]) for i in range(m)])
    ranking = np.argsort(-single, kind="stable")
    order: list[int] = []
    traj: list[float] = []
    total = np.zeros_like(p[0])
    for i in ranking[:init_size]:
        order.append(int(i))
        total += p[i]
        traj.append(single[i] if len(order) == 1 else objective(total / len(order)))
    for _ in range(rounds):
        n = len(order) + 1
        cand = [objective((total + p[i]) / n) for i in range(m)]
        best = int(np.argmax(cand))  # ties: the lowest candidate index
        order.append(best)
        total += p[best]
        traj.append(float(cand[best]))
    keep = int(np.argmax(traj)) + 1  # use_best: the earliest best point of the trajectory
    counts = np.bincount(np.asarray(order[:keep], dtype=np.int64), minlength=m)
    return EnsembleSelection(weights=counts / counts.sum(), counts=counts, order=order[:keep],
                             trajectory=[float(t) for t in traj], score=float(traj[keep - 1]), single_scores=single)


def blend(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean float32 (N, 6) of candidate probabilities ``probs`` (M, N, 6) with ``weights`` (M,)."""
    w = np.asarray(weights, dtype=np.float64)
    return np.tensordot(w / w.sum(), np.asarray(probs, dtype=np.float64), axes=1).astype(np.float32)
