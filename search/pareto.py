"""Pareto-aware early stopping for multi-objective searches (issue 20 item 3).

A Pareto search (``metric: [acc_presence, acc_salience]``) has no single number to rank trials by; ASHA on the
scalar ``score`` stops trials on the ends of the front for being average. :class:`ParetoASHA` keeps ASHA's
asynchronous successive-halving rungs (Ray Tune's ``ASHAScheduler`` with one bracket: milestones
``grace_period * reduction_factor**k`` below ``max_t``, each trial judged once per rung, when it first reaches the
milestone, against the trials recorded there so far) and replaces the percentile cut on one metric by
non-dominated sorting of the metric vectors recorded at the rung (:func:`non_dominated_fronts`):

    a trial reaching a rung is stopped only when at least ``ceil(n / reduction_factor)`` of the rung's ``n``
    trials (itself included) lie in strictly better fronts than its own.

So the best fronts that together hold ``1/reduction_factor`` of the rung's trials go on (the front that crosses
that share goes on whole), and a trial is stopped only when it is dominated, front after front, by enough trials.
A trial whose vector holds a NaN is placed behind every front. Every objective is maximised.

:class:`ParetoRungs` is the rule without Ray (the efficiency benchmark drives it directly);
:class:`ParetoASHAScheduler` is the Ray Tune scheduler around it (wired by the runner for Pareto spaces with
``scheduler: asha``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

__all__ = ["non_dominated_fronts", "ParetoRungs", "ParetoASHAScheduler", "hypervolume_2d"]


def non_dominated_fronts(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Front index of every point under maximisation (0 = the non-dominated front), by repeated peeling.

    Args:
        points: (n, m) objective vectors, larger is better; rows holding a NaN go behind every front.

    Returns:
        int64 (n,) front indices. ``a`` dominates ``b`` when ``a >= b`` in every objective and ``>`` in one.

    Raises:
        ValueError: ``points`` is not two-dimensional.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"points: expected an (n, m) array, got shape {p.shape}")
    n = len(p)
    ranks = np.full(n, -1, dtype=np.int64)
    bad = np.isnan(p).any(axis=1)
    ge = (p[:, None, :] >= p[None, :, :]).all(axis=2)
    gt = (p[:, None, :] > p[None, :, :]).any(axis=2)
    dom = ge & gt  # dom[i, j]: i dominates j
    dom[bad, :] = False
    dom[:, bad] = False
    left = ~bad
    front = 0
    while left.any():
        cur = left & ~dom[left].any(axis=0)  # left points no left point dominates
        ranks[cur] = front
        left &= ~cur
        front += 1
    ranks[bad] = front
    return ranks


class ParetoRungs:
    """Asynchronous successive-halving rungs deciding on metric vectors (the rule in the module docstring).

    Args:
        grace_period: first milestone (iterations, here epochs), >= 1.
        max_t: iterations a trial may run; milestones are ``grace_period * reduction_factor**k`` as in Tune's
            ``_Bracket`` (``k < log(max_t / grace_period) / log(reduction_factor) + 1``).
        reduction_factor: >= 2; ``1/reduction_factor`` of a rung's trials go on.

    Raises:
        ValueError: a grace period < 1, a reduction factor < 2 or ``max_t`` < ``grace_period``.
    """

    def __init__(self, grace_period: int, max_t: int, reduction_factor: float):
        if grace_period < 1 or reduction_factor < 2 or max_t < grace_period:
            raise ValueError(f"ParetoRungs: need grace_period >= 1, reduction_factor >= 2, max_t >= grace_period; "
                             f"got {grace_period}, {reduction_factor}, {max_t}")
        self.rf = reduction_factor
        n_rungs = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        self.milestones = [grace_period * reduction_factor**k for k in range(n_rungs)]
        self.recorded: dict[float, dict[str, tuple[float, ...]]] = {m: {} for m in self.milestones}

    def on_result(self, trial_id: str, iteration: int, values: Sequence[float]) -> bool:
        """Record ``values`` at the highest milestone ``iteration`` reached and not yet recorded for the trial and
        decide there; returns True to continue, False to stop (a trial between milestones continues)."""
        for m in reversed(self.milestones):
            if iteration < m or trial_id in self.recorded[m]:
                continue
            self.recorded[m][trial_id] = tuple(float(v) for v in values)
            return not self.dominated_enough(m, trial_id)
        return True

    def dominated_enough(self, milestone: float, trial_id: str) -> bool:
        """Whether ``trial_id`` has at least ``ceil(n / reduction_factor)`` of the rung's ``n`` trials in strictly
        better fronts (True = stop)."""
        ids = list(self.recorded[milestone])
        ranks = non_dominated_fronts([self.recorded[milestone][t] for t in ids])
        mine = ranks[ids.index(trial_id)]
        return int((ranks < mine).sum()) >= math.ceil(len(ids) / self.rf)

    def remove(self, trial_id: str) -> None:
        """Nothing to forget: like ASHA, a rung keeps every trial it recorded (the later ones are judged against
        them)."""


class ParetoASHAScheduler(FIFOScheduler):
    """Ray Tune scheduler: :class:`ParetoRungs` on the reported ``metrics`` (maximised) at ``time_attr``.

    Args:
        metrics: the objectives (``("acc_presence", "acc_salience")``).
        max_t, grace_period, reduction_factor: as Tune's ``ASHAScheduler`` (a trial reaching ``max_t`` stops).
        time_attr: the result field counting iterations (``training_iteration`` = epochs here).
    """

    def __init__(self, metrics: Sequence[str], max_t: int, grace_period: int, reduction_factor: float,
                 time_attr: str = "training_iteration"):
        super().__init__()
        self.metrics = tuple(metrics)
        self.max_t = max_t
        self.time_attr = time_attr
        self.rungs = ParetoRungs(grace_period, max_t, reduction_factor)
        self._metric, self._mode = self.metrics[0], "max"

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        """The objectives are fixed at construction; Tune's single metric and mode are not used."""
        return True

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """CONTINUE or STOP ``trial`` after ``result`` (see :class:`ParetoRungs`)."""
        if self.time_attr not in result or any(m not in result for m in self.metrics):
            return TrialScheduler.CONTINUE
        it = result[self.time_attr]
        if it >= self.max_t:
            return TrialScheduler.STOP
        values = [float("nan") if result[m] is None else float(result[m]) for m in self.metrics]
        return TrialScheduler.CONTINUE if self.rungs.on_result(trial.trial_id, it, values) else TrialScheduler.STOP

    def debug_string(self) -> str:
        """One line per rung: milestone and trials recorded (Tune's status output)."""
        rungs = ", ".join(f"{m:g}: {len(r)}" for m, r in self.rungs.recorded.items())
        return f"Pareto-aware ASHA on {list(self.metrics)} (rung milestone: trials recorded) {rungs}"


def hypervolume_2d(points: np.ndarray | Sequence[Sequence[float]], ref: Sequence[float] = (0.0, 0.0)) -> float:
    """Area dominated by the (maximised) 2-D ``points`` and bounded below by ``ref`` (rows with a NaN or not above
    ``ref`` in both objectives add nothing). Used by the efficiency benchmark to compare final fronts."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    p = p[~np.isnan(p).any(axis=1) & (p[:, 0] > ref[0]) & (p[:, 1] > ref[1])]
    if not len(p):
        return 0.0
    p = p[np.argsort(-p[:, 0])]
    area, best_y = 0.0, ref[1]
    for x, y in p:
        if y > best_y:
            area += (x - ref[0]) * (y - best_y)
            best_y = y
    return float(area)
