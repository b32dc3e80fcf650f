"""search.progress: the trial table redrawn in place in a terminal, one line per trial event otherwise."""

from __future__ import annotations

import types

from search.progress import LiveTable, TrialEvents, is_terminal


def _reporter(terminal: bool) -> LiveTable:
    r = LiveTable(metric_columns={"score": "score"}, max_report_frequency=0, terminal=terminal)
    r._progress_str = lambda trials, done, *info: f"== table ({len(trials)} trials)\nrow\nrow"  # Tune's text
    return r


def test_not_a_terminal_prints_the_table_once_at_the_end(capsys):
    r = _reporter(terminal=False)
    assert not r.should_report([], done=False)  # no copy every max_report_frequency seconds in a log
    assert r.should_report([], done=True)
    r.report([], True)
    assert capsys.readouterr().out.count("== table") == 1


def test_in_a_terminal_the_table_is_redrawn_in_place(capsys):
    r = _reporter(terminal=True)
    assert r.should_report([], done=False)
    r.report([1], False)
    first = capsys.readouterr().out
    assert "\x1b[" not in first
    r.report([1, 2], False)
    second = capsys.readouterr().out
    assert second.startswith("\x1b[3F\x1b[J") and "(2 trials)" in second  # the 3 lines drawn before are erased


def test_one_line_per_trial_event(capsys):
    ev = TrialEvents("score", ["train.lr"])
    t = types.SimpleNamespace(trial_id="t1", config={"train.lr": 0.001, "seed": 0})
    ev.on_trial_start(0, [], t)
    ev.on_trial_result(0, [], t, {"epoch": 3, "score": 0.25})
    ev.on_trial_complete(0, [], t)
    u = types.SimpleNamespace(trial_id="t2", config={})
    ev.on_trial_start(0, [], u)
    ev.on_trial_result(0, [], u, {"epoch": 5, "score": 0.3, "final": True})
    ev.on_trial_complete(0, [], u)
    ev.on_trial_error(0, [], types.SimpleNamespace(trial_id="t3", config={}))
    assert capsys.readouterr().out.splitlines() == [
        "trial t1: started (train.lr=0.001)", "trial t1: stopped early at epoch 3, score 0.2500",
        "trial t2: started", "trial t2: completed at epoch 5, score 0.3000",
        "trial t3: failed (see its error in MLflow and the log)"]


def test_is_terminal_reads_the_stream():
    assert is_terminal(types.SimpleNamespace(isatty=lambda: True))
    assert not is_terminal(types.SimpleNamespace(isatty=lambda: False)) and not is_terminal(object())
