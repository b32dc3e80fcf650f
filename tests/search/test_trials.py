"""search.trials ranks by the search's recorded objective; a Pareto search must name the metric to rank by."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from search.records.callback import MLflowTracker
from search.trials import TrialsError, ranked, search_objectives


def _store(tmp_path, objectives: list[str]) -> tuple[MlflowClient, str]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tr = MLflowTracker(uri, "s", base={}, metric=objectives[0], objectives=objectives)
    exp = tr.ensure_store()
    c = MlflowClient(uri)
    for name, pres, sal in (("t01", 0.9, 0.1), ("t02", 0.5, 0.8), ("t03", 0.95, 0.5)):
        run = c.create_run(exp, tags={"role": "parent", "trial_status": "completed", "tune_trial_id": name,
                                      "mlflow.runName": name}).info.run_id
        for k, v in {"acc_presence": pres, "acc_salience": sal, "score": (pres + sal) / 2}.items():
            c.log_metric(run, k, v)
        c.set_terminated(run, "FINISHED")
    return c, uri


def test_ranked_by_default_on_the_searchs_objective(tmp_path):
    c, uri = _store(tmp_path, ["acc_salience"])
    assert search_objectives(c, "s", uri) == ("acc_salience",)
    assert [t.name for t in ranked(c, "s", uri)] == ["t02", "t03", "t01"]  # by score it would be t03, t02, t01
    assert [t.name for t in ranked(c, "s", uri, "acc_presence")] == ["t03", "t01", "t02"]


def test_a_pareto_search_is_never_ranked_on_score_by_default(tmp_path):
    c, uri = _store(tmp_path, ["acc_presence", "acc_salience"])
    assert search_objectives(c, "s", uri) == ("acc_presence", "acc_salience")
    with pytest.raises(TrialsError, match=r"'s' is a Pareto search of acc_presence, acc_salience .*--metric "
                                          r"acc_presence\|acc_salience"):
        ranked(c, "s", uri)
    assert ranked(c, "s", uri, "acc_salience")[0].name == "t02"


def test_a_search_recorded_before_the_objectives_tag_ranks_on_score(tmp_path):
    c, uri = _store(tmp_path, ["score"])
    exp = c.get_experiment_by_name("s").experiment_id
    c.delete_experiment_tag(exp, "blemore.objectives")
    assert search_objectives(c, "s", uri) == ("score",)
    assert ranked(c, "s", uri)[0].name == "t03"


def test_trials_errors_are_input_errors_the_cli_reports():
    from search.errors import InputError

    assert isinstance(TrialsError("--experiment 'x': no such experiment"), InputError)
