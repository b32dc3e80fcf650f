"""Issue 21, item 7 (the command's part): a search's last line says why it ended (all trials ran, Ctrl-C, the
time budget, failures), with the counts of completed, stopped early, cut before a first result and failed trials,
and the exit code."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from search.commands import search as cmd


def _r(metrics=None, error=None):
    return NS(metrics=metrics or {}, error=error)


RESULTS = [_r({"final": True, "score": 0.5}), _r({"score": 0.3}), _r(), _r({"trial_id": "x"})]


@pytest.mark.parametrize("interrupted,requested,results,code,why", [
    (False, 8, RESULTS, 0, "time budget reached: 4 of 8 trials: 1 completed, 1 stopped early (scheduler or budget), "
                           "2 cut before a first result, 0 failed; exit code 0"),
    (True, 8, RESULTS, 130, "interrupted (Ctrl-C): 4 of 8 trials"),
    (False, 2, [_r({"final": True, "score": 1.0}), _r(error=RuntimeError("x"))], 1,
     "finished with failed trials: 2 of 2 trials: 1 completed, 0 stopped early (scheduler or budget), 0 cut before "
     "a first result, 1 failed; exit code 1"),
    (False, 1, [_r({"final": True, "score": 1.0})], 0, "finished: 1 of 1 trials: 1 completed"),
])
def test_the_last_line_says_why_and_counts(interrupted, requested, results, code, why, monkeypatch, capsys):
    monkeypatch.setattr("search.runner.print_summary", lambda outcome: None)
    outcome = NS(name="s1", results=results, interrupted=interrupted)
    assert cmd._finish(outcome, requested, None) == code
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"search 's1' {why}" in text, text
    assert ("blemore resume s1" in out.err) == interrupted


def test_requested_count_comes_from_the_space(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nbudget: {num_samples: 8}\n")
    assert cmd._space_samples(str(p)) == 8
    assert cmd._space_samples(str(tmp_path / "missing.yaml")) is None


def test_summary_title_says_how_many_trials_it_leaves_out(capsys):
    """The table after a search shows the best five; its title says of how many (a user counting rows against the
    ending line's trial count sees why they differ)."""
    from search.runner import SearchOutcome, print_summary

    rows = [{"trial": f"t{i}", "status": "completed", "score": 0.3 - i / 100, "epochs": 10} for i in range(5)]
    print_summary(SearchOutcome("demo", "/x", "sqlite:///mlflow.db", results=[object()] * 8, summary=rows))
    assert "the 5 best of 8 trials of 'demo' by score" in " ".join(capsys.readouterr().out.split())
    print_summary(SearchOutcome("demo", "/x", "sqlite:///mlflow.db", results=[object()] * 5, summary=rows))
    out = " ".join(capsys.readouterr().out.split())
    assert "trials of 'demo' by score" in out and "best of" not in out
