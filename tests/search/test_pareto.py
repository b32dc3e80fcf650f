"""Pareto-aware stopping (search/pareto.py): non-dominated sorting, stop / continue decisions, the scheduler, and
its wiring (Pareto spaces use it, scalar spaces keep ASHA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from optuna.study._multi_objective import _fast_non_domination_rank
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from search.pareto import ParetoASHAScheduler, ParetoRungs, hypervolume_2d, non_dominated_fronts
from search.runner import SearchOptions, _build_tuner
from search.space import load_space

SPACES = Path(__file__).resolve().parents[2] / "spaces"


def _brute_fronts(p: np.ndarray) -> np.ndarray:
    """Plain loops: peel the points no remaining point dominates (maximisation)."""
    left, ranks, f = set(range(len(p))), np.zeros(len(p), int), 0
    while left:
        cur = {i for i in left if not any(np.all(p[j] >= p[i]) and np.any(p[j] > p[i]) for j in left)}
        for i in cur:
            ranks[i] = f
        left -= cur
        f += 1
    return ranks


@pytest.mark.parametrize("seed", range(5))
def test_fronts_match_plain_loops_and_optuna(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(0, 1, (40, 2 + seed % 2)), 1)  # rounded: ties and duplicates occur
    got = non_dominated_fronts(p)
    assert np.array_equal(got, _brute_fronts(p))
    assert np.array_equal(got, _fast_non_domination_rank(-p))  # Optuna's own sort (it minimises)


def test_nan_rows_go_behind_every_front():
    got = non_dominated_fronts([[0.1, 0.1], [np.nan, 0.9], [0.5, 0.5]])
    assert got.tolist() == [1, 2, 0]


def test_ends_of_the_front_go_on_where_score_asha_stops_them():
    """Two balanced trials, then one on the front's end (high presence, low salience: average score): ASHA on
    the mean stops it, the Pareto rule keeps it; a trial dominated by half the rung is stopped by both."""
    rungs = ParetoRungs(grace_period=1, max_t=8, reduction_factor=2)
    asha = _Bracket(1, 8, 2, s=0)

    class T:
        def __init__(self, i):
            self.trial_id = i

    seq = [("a", (0.50, 0.50)), ("b", (0.55, 0.50)), ("end", (0.90, 0.05)), ("worse", (0.45, 0.45))]
    pareto = {i: rungs.on_result(i, 1, v) for i, v in seq}
    scalar = {i: asha.on_result(T(i), 1, float(np.mean(v))) == TrialScheduler.CONTINUE for i, v in seq}
    assert pareto == {"a": True, "b": True, "end": True, "worse": False}
    assert scalar["end"] is False and scalar["worse"] is False


def test_decisions_keep_the_best_fronts_holding_a_share():
    r = ParetoRungs(grace_period=2, max_t=20, reduction_factor=3)
    assert r.milestones == [2, 6, 18]
    assert r.on_result("x", 1, (0.0, 0.0))  # before the first milestone: nothing recorded
    assert r.recorded[2] == {}
    assert all(r.on_result(f"t{i}", 2, (i, 9 - i)) for i in range(6))  # one front of six: all go on
    assert not r.on_result("mid", 2, (2.5, 5.5))  # front 1 behind six trials >= ceil(7/3): stopped
    # the next rung: t1 dominates t0; t2 is behind two fronts holding 2 >= ceil(3/3) trials: stopped; t3 is
    # dominated by t1 only (front 1 with t0): 1 trial in better fronts < ceil(4/3) = 2: goes on
    assert r.on_result("t0", 6, (1, 1)) and r.on_result("t1", 6, (2, 2))
    assert not r.on_result("t2", 6, (0.5, 0.5))
    assert r.on_result("t3", 6, (1.5, 0.8))
    assert r.on_result("t0", 7, (0, 0))  # between milestones, already recorded at 6: no decision
    with pytest.raises(ValueError, match="reduction_factor >= 2"):
        ParetoRungs(1, 8, 1)


def test_hypervolume_2d():
    assert hypervolume_2d([[1, 1]]) == 1.0
    assert hypervolume_2d([[1, 0.5], [0.5, 1]]) == pytest.approx(0.75)
    assert hypervolume_2d([[1, 0.5], [0.5, 1], [0.4, 0.4], [np.nan, 2]]) == pytest.approx(0.75)
    assert hypervolume_2d([]) == 0.0


def test_scheduler_stops_dominated_trials_and_at_max_t():
    s = ParetoASHAScheduler(("acc_presence", "acc_salience"), max_t=6, grace_period=1, reduction_factor=2)

    class T:
        def __init__(self, i):
            self.trial_id = i

    def res(it, p, q):
        return {"training_iteration": it, "acc_presence": p, "acc_salience": q}

    assert s.on_trial_result(None, T("a"), res(1, 0.6, 0.6)) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, T("b"), res(1, 0.9, 0.1)) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, T("c"), res(1, 0.5, 0.5)) == TrialScheduler.STOP
    assert s.on_trial_result(None, T("a"), {"training_iteration": 2}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, T("a"), res(6, 0.6, 0.6)) == TrialScheduler.STOP
    assert s.set_search_properties("score", "max") and "acc_presence" in s.debug_string()


@pytest.mark.parametrize("name, cls", [("full.yaml", ParetoASHAScheduler), ("baseline.yaml", ASHAScheduler)])
def test_pareto_spaces_use_pareto_stopping(name, cls, tmp_path):
    space = load_space(SPACES / name)
    assert space.scheduler == "asha"
    tuner, _ = _build_tuner(space, SearchOptions(), space.name, str(tmp_path), "/nonexistent", 5, 0.5, 1,
                            f"sqlite:///{tmp_path}/m.db")
    sched = tuner._local_tuner._tune_config.scheduler
    assert type(sched) is cls
    if cls is ParetoASHAScheduler:
        assert sched.metrics == space.metrics and sched.max_t == space.max_epochs + 2
