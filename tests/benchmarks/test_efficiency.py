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
