"""The efficiency benchmark's scoring (benchmarks/efficiency.py), without training: a trial's Score is the one the
search records (its last epoch's objective) and a level is reached at the end of the trial recording it."""

from __future__ import annotations

from benchmarks import efficiency as ef


def _trial(*scores: float) -> dict:
    return {"rows": [(s, 0.0, 0.0) for s in scores]}


def test_a_level_is_reached_by_a_recorded_score_at_the_end_of_its_trial():
    # trial 1 peaks at 0.9 in epoch 2 but records 0.5; trial 2 (stopped after 1 epoch) records 0.7;
    # trial 3 records 0.8 after 3 epochs
    trials = [_trial(0.1, 0.9, 0.5), _trial(0.7), _trial(0.2, 0.6, 0.8)]
    assert ef._best(trials) == 0.8  # an intermediate epoch's 0.9 is not a result the search recorded
    assert ef.fold_epochs_to_reach(trials, 0.7) == (3 + 1) * ef.N_FOLDS
    assert ef.fold_epochs_to_reach(trials, 0.8) == (3 + 1 + 3) * ef.N_FOLDS
    assert ef.fold_epochs_to_reach(trials, 0.85) is None


def test_the_level_is_set_within_the_budget_and_every_seed_counts_a_search_not_reaching_it_as_the_cap():
    budget = 20  # fold-epochs; each trial below is one epoch (5 fold-epochs), cap = EXTEND x 20
    cap = ef.EXTEND * budget
    runs = {
        # random gets there past the budget (its 6th trial); a later 2.0 must not move the level (0.95 x 1.0)
        0: {"random": [_trial(0.5)] * 4, "random_beyond_budget": [_trial(0.5), _trial(0.96), _trial(2.0)],
            "tpe_asha": [_trial(0.2), _trial(0.3), _trial(1.0)]},
        # TPE + ASHA never gets there, not even past the budget: the seed counts (a lower bound), not dropped
        1: {"random": [_trial(0.9), _trial(1.0)], "tpe_asha": [_trial(0.1)] * 4,
            "tpe_asha_beyond_budget": [_trial(0.1)] * 12},
        # random never gets there: its fold-epochs are the cap (an upper bound of the ratio)
        2: {"random": [_trial(0.1)] * 4, "random_beyond_budget": [_trial(0.1)] * 12, "tpe_asha": [_trial(1.0)]},
    }
    res = ef.Result("efficiency", False)
    ef._score_targets(res, runs, budget)
    assert res.figures["seed0/best_score"]["median"] == 1.0
    assert res.figures["seed0/random_fold_epochs_to_95pct"]["median"] == 6 * ef.N_FOLDS
    assert sorted(res.figures["ratio_tpe_asha_over_random"]["samples"]) == sorted(
        [15 / 30, cap / 10, 5 / cap])
    assert res.targets["tpe_asha_fraction_of_random_fold_epochs"]["measured"] == 0.5
    assert "random in 1 of 3 seeds" in res.notes[-1] and "TPE + ASHA in 1" in res.notes[-1]


class _FakeTraining:
    """Stands in for ef.run_trial: a configuration's epochs follow from its dropout (deterministic), calls counted."""

    def __init__(self, shift: float = 0.0):
        self.calls, self.shift = 0, shift

    def __call__(self, cfg, data, decide=None):
        self.calls += 1
        s = float(cfg.reg.dropout) + self.shift
        rows = []
        for e in range(1, cfg.train.max_epochs + 1):
            rows.append((s * e / cfg.train.max_epochs, s, s))
            if decide is not None and not decide(e, rows[-1]):
                break
        return rows


def test_a_search_past_the_budget_replays_the_earlier_trials_then_stops_at_the_first_recording_the_level(
        monkeypatch):
    space = ef.rare_space(quick=True)  # 2 epochs: 10 fold-epochs a trial
    fake = _FakeTraining()
    monkeypatch.setattr(ef, "run_trial", fake)
    full = ef.search(space, None, "random", 3, 400, None)  # the reference: the same search, never replayed
    first = full[:2]
    scores = [ef.recorded(t) for t in full]
    level = max(scores[2:12])
    j = next(i for i, x in enumerate(scores) if x >= level)
    assert j >= 2

    fake.calls = 0
    ext = ef.search(space, None, "random", 3, 400, None, until=level, replay=first)
    assert [t["flat"] for t in ext] == [t["flat"] for t in full[:j + 1]]
    assert [t["rows"] for t in ext] == [t["rows"] for t in full[:j + 1]]
    assert fake.calls == 1 + (j + 1 - len(first))  # the first replayed trial trained again, then only new ones


def test_a_replay_that_diverges_is_refused(monkeypatch):
    import pytest

    space = ef.rare_space(quick=True)
    monkeypatch.setattr(ef, "run_trial", _FakeTraining())
    first = ef.search(space, None, "random", 3, 20, None)
    other = [{**first[0], "flat": {**first[0]["flat"], "reg.dropout": "0.123"}}] + first[1:]
    with pytest.raises(RuntimeError, match="another configuration"):
        ef.search(space, None, "random", 3, 20, None, replay=other)
    stopped = [{**first[0], "rows": first[0]["rows"][:1], "stopped": True}] + first[1:]
    with pytest.raises(RuntimeError, match="continues it at epoch 1"):
        ef._replay(stopped[0], first[0]["flat"], lambda e, r: True, 0)
    monkeypatch.setattr(ef, "run_trial", _FakeTraining(shift=0.01))  # other code: other epochs
    with pytest.raises(RuntimeError, match="not what this code trains"):
        ef.search(space, None, "random", 3, 20, None, replay=first)
