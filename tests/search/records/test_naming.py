"""What a reviewer sees in the MLflow UI: trial run names, the experiment kind, the shared views behind the printed
links (their rendering in Chromium is checked in test_cluster_e2e.py)."""

from __future__ import annotations

import json

from search.compat import EXPERIMENT_KIND
from search.records.callback import MLflowTracker
from search.records.naming import (
    runs_link,
    trial_link,
    trial_number,
    trial_run_name,
)


def test_trial_run_names_say_what_the_trial_is():
    cfg = {"model.fusion": "rank_aware", "model.top_n": 3, "train.lr": 0.00112, "debug.trial_index": 3}
    assert trial_run_name("4f2c1_00003", cfg) == "t03 rank_aware top3 lr=1.1e-3"
    # the searched keys give the order; debug knobs never appear
    assert trial_run_name("4f2c1_00012", cfg, ["train.lr", "model.fusion"]) == "t12 lr=1.1e-3 rank_aware"
    assert trial_run_name("x_00001", {"model.dropout": 0.25, "data.encoders": ["a", "b"]}) == "t01 drop=0.25 a+b"
    assert trial_number("abc") is None and trial_run_name("abc", {}) == "abc"
    assert trial_number("88422978") is None  # Tune's hex trial id, all digits by chance: not a counter


def test_links_use_shared_views_stored_on_the_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    tr = MLflowTracker(uri, "ui", base={}, searched=["train.lr"], metric="score")
    exp_id = tr.ensure_store()
    link = runs_link("http://127.0.0.1:5000", exp_id)
    assert link == f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?viewStateShareKey=blemore-best-score"
    assert runs_link(uri, exp_id).startswith("http://127.0.0.1:5000/")  # the address `mlflow ui` serves
    tags = tr.client.get_experiment(exp_id).tags
    assert tags["mlflow.experimentKind"] == EXPERIMENT_KIND
    view = json.loads(tags["mlflow.sharedViewState.blemore-best-score"])
    assert view["orderByKey"] == "metrics.`score`" and view["orderByAsc"] is False
    assert view["searchFilter"] == "tags.role = 'parent'"
    assert view["selectedColumns"][:3] == ["metrics.`score`", "metrics.`acc_presence`", "metrics.`acc_salience`"]

    class T:
        trial_id = "ab_00002"
        config = {"train.lr": 0.002, "debug.trial_index": 2}

    run_id = tr.index.parent(T())
    assert tr.client.get_run(run_id).info.run_name == "t02 lr=2.0e-3"

    class U:  # a searcher's trial id: no counter -> numbered in order of creation
        trial_id = "e54e9abb"
        config = {"train.lr": 0.0011}

    assert tr.client.get_run(tr.index.parent(U())).info.run_name == "t02 lr=1.1e-3"  # 1 parent existed
    assert tr.index.run_name(U()) == "t02 lr=1.1e-3"  # stable for the same trial
    assert tr.index.fold_run_name(U(), 3) == "t02 fold3 lr=1.1e-3"
    tv = json.loads(tr.client.get_experiment(exp_id).tags["mlflow.sharedViewState.blemore-trial-ab_00002"])
    assert tv["searchFilter"] == "tags.tune_trial_id = 'ab_00002' and tags.role = 'fold'"
    assert [c for c in tv["selectedColumns"] if c.startswith("metrics")] == [
        "metrics.`acc_presence`", "metrics.`acc_salience`", "metrics.`score`", "metrics.`alpha`", "metrics.`beta`"]
    assert trial_link("http://h:1", exp_id, "ab_00002").endswith("?viewStateShareKey=blemore-trial-ab_00002")
    tr.close()
