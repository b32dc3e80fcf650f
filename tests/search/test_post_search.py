"""export / report / ensemble against a synthetic MLflow store (parent runs with the artifacts a trial logs), fast."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from blemore_core.artifacts import load_config_file
from blemore_core.config import Config
from blemore_core.decoding import crossfit_thresholds, fit_thresholds
from blemore_core.labels import soft_labels
from blemore_core.results import oof_frame

NAMES = (Path(__file__).parents[1] / "fixtures" / "blemore_fold_filenames.txt").read_text().split()
SPACE = """
name: syn
preset: baseline
fixed: {train.lr_min: 0.0}
params:
  train.lr: {type: loguniform, low: 1.0e-7, high: 1.0e-1}
  reg.dropout: {type: uniform, low: 0.0, high: 0.5}
  model.latent_dim: {type: choice, values: [16, 32]}
metric: %s
scheduler: none
budget: {num_samples: 12, max_concurrent: 1, max_epochs: 3}
"""


def _folds(n: int) -> np.ndarray:
    return np.arange(n) % 5


def _oof(rng, quality: float) -> np.ndarray:
    """OOF probabilities: ``quality`` x the soft label + (1 - quality) x a random distribution."""
    truth = soft_labels(NAMES)
    noise = rng.dirichlet(np.ones(6), size=len(NAMES))
    return (quality * truth + (1 - quality) * noise).astype(np.float32)


def _log_trial(c, exp_id: str, i: int, params: dict, metrics: dict, probs: np.ndarray | None, space: Path,
               status: str = "completed", tmp: Path | None = None) -> str:
    cfg = Config().override({"train.lr_min": 0.0, **params})
    tags = {"role": "parent", "tune_trial_id": f"t{i:02d}", "mlflow.runName": f"trial_{i:02d}", "space": str(space),
            "trial_status": status}
    run = c.create_run(exp_id, tags=tags, start_time=1_000 + i)
    rid = run.info.run_id
    from mlflow.entities import Metric, Param

    ps = [Param(k, str(v)) for k, v in cfg.flat().items()]
    for j in range(0, len(ps), 90):
        c.log_batch(rid, params=ps[j : j + 90])
    c.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    if probs is not None:
        d = tmp / rid
        d.mkdir()
        truth, folds = soft_labels(NAMES), _folds(len(NAMES))
        cf = crossfit_thresholds(probs, truth, folds)
        per = [dict(cf[k]) for k in sorted(cf)]
        mean = {m: float(np.mean([r[m] for r in per])) for m in per[0]}
        doc = {"headline": "crossfit", "folds": [0, 1, 2, 3, 4],
               "crossfit": {"per_fold": per, "mean": mean, "std": {m: 0.0 for m in mean}},
               "selected_epochs": {str(k): 2 + k % 2 for k in range(5)}}
        (d / "metrics.json").write_text(json.dumps(doc))
        (d / "thresholds.json").write_text(json.dumps(
            {"headline": "crossfit", "crossfit": {"per_fold": [{"fold": k, "alpha": r["alpha"], "beta": r["beta"]}
                                                               for k, r in enumerate(per)]}}))
        cfg.to_yaml(d / "config.yaml")
        oof_frame(NAMES, folds, probs).to_parquet(d / "oof.parquet", index=False)
        c.log_artifacts(rid, str(d))
    c.set_terminated(rid, "FINISHED" if status != "error" else "FAILED")
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Experiment ``syn``: 12 finished trials whose Score is decided by lr (< 1e-5: nothing learnt) and whose
    OOF predictions have that quality; ``stopped_only``: trials stopped early; ``pareto``: a 2-objective search."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp}/mlflow.db"
    c = MlflowClient(uri)
    rng = np.random.default_rng(0)
    space = tmp / "syn.yaml"
    space.write_text(SPACE % "score")
    exp = c.create_experiment("syn", artifact_location=(tmp / "mlruns").as_uri())
    runs = []
    for i in range(12):
        lr = float(10 ** rng.uniform(-7, -1))
        q = 0.05 if lr < 1e-5 else 0.6
        probs = _oof(rng, q + rng.uniform(0, 0.05))
        score = float(np.mean([v["score"] for v in crossfit_thresholds(probs, soft_labels(NAMES),
                                                                        _folds(len(NAMES))).values()]))
        params = {"train.lr": lr, "reg.dropout": float(rng.uniform(0, 0.5)),
                  "model.latent_dim": int(rng.choice([16, 32]))}
        runs.append((_log_trial(c, exp, i, params, {"score": score, "acc_presence": score, "acc_salience": score},
                                probs, space, tmp=tmp), score))
    _log_trial(c, exp, 99, {}, {"score": 0.99}, None, space, status="stopped")  # never ranked
    _log_trial(c, exp, 98, {}, {}, None, space, status="error")
    e2 = c.create_experiment("stopped_only")
    _log_trial(c, e2, 0, {}, {"score": 0.5}, None, space, status="stopped")
    p_space = tmp / "pareto.yaml"
    p_space.write_text(SPACE % "[acc_presence, acc_salience]")
    e3 = c.create_experiment("pareto", artifact_location=(tmp / "mlruns3").as_uri())
    for i in range(6):
        a = float(rng.uniform(0.2, 0.6))
        _log_trial(c, e3, i, {"train.lr": 1e-3 * (i + 1)}, {"acc_presence": a, "acc_salience": 0.8 - a},
                   None, p_space, tmp=tmp)
    return tmp, uri, runs


def _cli(*argv) -> int:
    from search.cli import main

    return main([str(a) for a in argv])


def test_export_best_and_kth(store, tmp_path, capsys):
    tmp, uri, runs = store
    order = sorted(runs, key=lambda r: -r[1])
    out = tmp_path / "best.yaml"
    assert _cli("export", "--experiment", "syn", "--tracking-uri", uri, "--out", out) == 0
    doc = yaml.safe_load(out.read_text())
    ex = doc["export"]
    assert ex["run_id"] == order[0][0] and ex["rank"] == 1 and ex["n_finished"] == 12
    assert "rank 1 of 12" in capsys.readouterr().out
    # pooled thresholds = the fit on all of the trial's OOF predictions (reference: fit_thresholds)
    from mlflow.tracking import MlflowClient

    oof = pd.read_parquet(MlflowClient(uri).download_artifacts(ex["run_id"], "oof.parquet", str(tmp_path)))
    ref = fit_thresholds(oof[[c for c in oof.columns if c.startswith("p_")]].to_numpy(), soft_labels(oof.filename))
    assert (ex["thresholds"]["pooled"]["alpha"], ex["thresholds"]["pooled"]["beta"]) == (ref.alpha, ref.beta)
    assert ex["selected_epochs"] == {k: 2 + k % 2 for k in range(5)}
    assert len(ex["thresholds"]["crossfit"]) == 5 and ex["fold_metrics"]["crossfit"]["mean"]["score"] == \
        pytest.approx(order[0][1])
    cf = load_config_file(out)  # blemore train / retrain load it as it is
    assert cf.export["run_id"] == ex["run_id"]
    out2 = tmp_path / "second.yaml"
    assert _cli("export", "--experiment", "syn", "--tracking-uri", uri, "--rank", "2", "--out", out2) == 0
    assert yaml.safe_load(out2.read_text())["export"]["run_id"] == order[1][0]


@pytest.mark.parametrize("args, message", [
    (["--experiment", "nope"], "'nope': no such experiment"),
    (["--experiment", "stopped_only"], "no finished trial"),
    (["--experiment", "pareto", "--metric", "score"], "'score': not recorded by any finished trial"),
    (["--experiment", "syn", "--rank", "13"], "has 12 finished trials"),
])
def test_export_errors_are_clear_and_write_nothing(store, tmp_path, capsys, args, message):
    _, uri, _ = store
    out = tmp_path / "x" / "best.yaml"
    assert _cli("export", *args, "--tracking-uri", uri, "--out", out) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "x").exists()


def test_unanswering_tracking_server_is_named_within_seconds(tmp_path, capsys):
    t0 = time.time()
    assert _cli("export", "--experiment", "syn", "--tracking-uri", "http://127.0.0.1:9", "--out",
                tmp_path / "b.yaml") == 2
    assert time.time() - t0 < 15
    assert "http://127.0.0.1:9: the MLflow tracking server does not answer" in capsys.readouterr().err
    assert _cli("report", "--experiment", "syn", "--tracking-uri", f"sqlite:///{tmp_path}/none.db") == 2
    assert "no MLflow store" in capsys.readouterr().err


def test_report_ranks_the_parameter_that_drives_the_score_first(store, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    tmp, uri, _ = store
    assert _cli("report", "--experiment", "syn", "--tracking-uri", uri, "--out", tmp_path / "rep") == 0
    printed = capsys.readouterr().out
    imp = json.loads((tmp_path / "rep" / "importances.json").read_text())["score"]
    assert list(imp) == sorted(imp, key=imp.get, reverse=True)
    assert next(iter(imp)) == "train.lr" and set(imp) == {"train.lr", "reg.dropout", "model.latent_dim"}
    assert printed.index("train.lr") < printed.index("reg.dropout")
    c = MlflowClient(uri)
    (rep,) = c.search_runs([c.get_experiment_by_name("syn").experiment_id], "tags.role = 'search_report'")
    assert rep.data.metrics["n_trials"] == 12 and rep.info.status == "FINISHED"
    arts = {a.path for a in c.list_artifacts(rep.info.run_id, "plots")}
    assert {"plots/best_so_far.png", "plots/importances_score.png", "plots/parallel_coordinates.png"} <= arts
    top = pd.read_csv(tmp_path / "rep" / "top_trials.csv")
    assert list(top["score"]) == sorted(top["score"], reverse=True)
    best = rep.data.tags["best_run_id"]
    assert {a.path for a in c.list_artifacts(rep.info.run_id, "analysis/trial_" + top["trial"][0][-2:])} >= set()
    assert best == top["run_id"][0]


def test_report_of_a_pareto_search_draws_the_front(store, tmp_path):
    _, uri, _ = store
    assert _cli("report", "--experiment", "pareto", "--tracking-uri", uri, "--out", tmp_path / "rep") == 0
    assert (tmp_path / "rep" / "plots" / "pareto_front.png").is_file()
    assert set(json.loads((tmp_path / "rep" / "importances.json").read_text())) == {"acc_presence", "acc_salience"}


def test_pareto_mask_hand_case():
    from search.report import pareto_mask

    pts = np.array([[0.1, 0.9], [0.5, 0.5], [0.4, 0.4], [0.9, 0.1], [0.5, 0.5]])
    assert pareto_mask(pts).tolist() == [True, True, False, True, True]


def test_ensemble_command_beats_or_equals_the_best_single(store, tmp_path, capsys):
    from blemore_core.ensemble import blend, crossfit_score

    _, uri, runs = store
    out = tmp_path / "ens.yaml"
    assert _cli("ensemble", "--experiment", "syn", "--top-k", "5", "--rounds", "6", "--tracking-uri", uri,
                "--out", out) == 0
    e = yaml.safe_load(out.read_text())["ensemble"]
    best = max(runs, key=lambda r: r[1])
    assert e["best_single"]["run_id"] == best[0]
    assert e["best_single"]["score"] == pytest.approx(best[1], abs=1e-12)
    assert e["score"] >= e["best_single"]["score"]
    assert math.isclose(sum(m["weight"] for m in e["members"]), 1.0)
    # the recorded score is the crossfit Score of the weighted average of the members' OOF
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    probs = []
    for m in e["members"]:
        df = pd.read_parquet(c.download_artifacts(m["run_id"], "oof.parquet", str(tmp_path / m["run_id"][:8])))
        probs.append(df.sort_values("filename")[[x for x in df.columns if x.startswith("p_")]].to_numpy())
    names = sorted(NAMES)
    fold_of = dict(zip(NAMES, _folds(len(NAMES)), strict=True))
    ens = blend(np.stack(probs), [m["weight"] for m in e["members"]])
    assert crossfit_score(ens, soft_labels(names), np.array([fold_of[n] for n in names])) == \
        pytest.approx(e["score"], abs=1e-12)
    assert load_config_file(out).ensemble["members"][0]["export"]["run_id"] == e["members"][0]["run_id"]
    assert "crossfit Score" in capsys.readouterr().out


def test_export_ensemble_report_leave_no_temp_files(store, tmp_path, monkeypatch, capsys):
    """Issue 21 item 6: TMPDIR listed before and after each command (downloads of trial artifacts, report files)."""
    import tempfile

    _, uri, _ = store
    tmp = tmp_path / "TMP"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    for argv in (["export", "--experiment", "syn", "--out", tmp_path / "best.yaml"],
                 ["ensemble", "--experiment", "syn", "--top-k", "3", "--rounds", "2", "--out", tmp_path / "e.yaml"],
                 ["report", "--experiment", "syn", "--out", tmp_path / "rep"],
                 ["export", "--experiment", "nosuch", "--out", tmp_path / "x.yaml"]):
        before = sorted(tmp.iterdir())
        rc = _cli(*argv, "--tracking-uri", uri)
        assert rc == (2 if "nosuch" in argv else 0), capsys.readouterr().err
        assert sorted(tmp.iterdir()) == before, (argv[0], sorted(tmp.rglob("*")))
    assert (tmp_path / "rep" / "importances.json").is_file()  # the report folder itself is kept
    capsys.readouterr()


@pytest.mark.slow
def test_commands_work_against_an_http_tracking_server(store, tmp_path, capsys, monkeypatch, mlflow_server):
    """The same store served by `mlflow server` on 127.0.0.1: export, report and ensemble over HTTP."""
    tmp, uri, runs = store
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    http = mlflow_server(uri)
    out = tmp_path / "best.yaml"
    assert _cli("export", "--experiment", "syn", "--tracking-uri", http, "--out", out) == 0
    assert yaml.safe_load(out.read_text())["export"]["run_id"] == max(runs, key=lambda r: r[1])[0]
    capsys.readouterr()
    assert _cli("report", "--experiment", "syn", "--tracking-uri", http) == 0
    printed = capsys.readouterr()
    assert "Downloading artifacts" not in printed.err + printed.out  # no progress bar per small artifact
    assert "View run" not in printed.out
    assert _cli("ensemble", "--experiment", "syn", "--top-k", "3", "--rounds", "2", "--tracking-uri", http,
                "--out", tmp_path / "e.yaml") == 0
