"""End-to-end searches on the tiny synthetic release with a local Ray (slow; lean sizes so that the five fold
workers of a trial share the 2 CI cores): MLflow layout and numbers, a failing trial, interrupt + resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

SPACE = """
name: {name}
preset: rank_aware
data: {{dir: {data}, encoders: [imagebind, wavlm]}}
fixed:
  model.pooling: stat
  model.latent_dim: 16
  model.shared_dim: 16
  loss.domain: 0.0
  train.patience: 0
{extra}
params:
  model.fusion: {{type: choice, values: [concat, rank_aware]}}
  model.top_n: {{type: int, low: 1, high: 2, when: {{model.fusion: rank_aware}}}}
  train.lr: {{type: loguniform, low: 3.0e-4, high: 3.0e-3}}
metric: score
scheduler: none
budget: {{num_samples: 3, max_concurrent: 2, max_epochs: 2}}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from blemore_core.data import generate_release

    return generate_release(tmp_path_factory.mktemp("rel") / "tiny", "tiny", progress=False)


def _space(tmp_path: Path, tiny: Path, name: str, extra: str = "") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(SPACE.format(name=name, data=tiny, extra=extra))
    return p


def _runs(uri: str, name: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return c, [], []
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("role") == "parent"]
    folds = [r for r in runs if r.data.tags.get("role") == "fold"]
    return c, parents, folds


def _opts(tmp_path: Path, **kw):
    from search.runner import SearchOptions

    base = dict(storage=str(tmp_path / "ray_results"), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", num_cpus=2,
                cpus_per_trial=0.95, verbose=0)
    base.update(kw)
    return SearchOptions(**base)


def test_three_trial_search_records_everything(tmp_path, tiny):
    from search.runner import run_search

    opts = _opts(tmp_path)
    out = run_search(_space(tmp_path, tiny, "e2e"), opts)
    assert len(out.results) == 3 and not any(r.error for r in out.results)
    c, parents, folds = _runs(opts.tracking_uri, "e2e")
    assert len(parents) == 3 and len(folds) == 15
    assert all(r.info.status == "FINISHED" for r in parents + folds)
    import ray

    assert not ray.is_initialized()
    configs = {r.metrics["trial_id"]: r.config for r in out.results}
    for p in parents:
        tid = p.data.tags["tune_trial_id"]
        kids = [f for f in folds if f.data.tags["tune_trial_id"] == tid]
        assert sorted(int(k.data.tags["fold"]) for k in kids) == [0, 1, 2, 3, 4]
        assert all(k.data.tags["mlflow.parentRunId"] == p.info.run_id for k in kids)
        for k in kids:
            for m in ("acc_presence", "acc_salience", "score", "alpha", "beta", "best_epoch"):
                assert m in k.data.metrics, (m, k.data.metrics)
            hist = c.get_metric_history(k.info.run_id, "epoch/score")
            assert [h.step for h in hist] == [1, 2]
        for m in ("acc_presence", "acc_salience", "score"):
            mean = float(np.mean([k.data.metrics[m] for k in kids]))
            assert abs(p.data.metrics[m] - mean) <= 1e-9, (m, p.data.metrics[m], mean)
        # the conditional parameter: top_n sampled (in Tune's config) exactly when fusion is rank_aware
        config = configs[tid]
        assert ("model.top_n" in config) == (config["model.fusion"] == "rank_aware"), config
        assert p.data.params["model.fusion"] == config["model.fusion"]
        assert p.data.params["model.top_n"] == str(config.get("model.top_n", 2))
        local = Path(c.download_artifacts(p.info.run_id, "oof.parquet", str(tmp_path / tid)))
        oof = pd.read_parquet(local)
        from blemore_core.data import load_release

        n = len(load_release(tiny, ("imagebind",), progress=False).filenames)
        assert len(oof) == n and oof["filename"].is_unique
        assert set(oof["filename"]) == set(load_release(tiny, ("imagebind",), progress=False).filenames)
        # filename, fold, the six probabilities, and for rank-aware trials one importance column per encoder
        probs = [f"p_{e}" for e in ("ang", "disg", "fea", "hap", "sad", "neu")]
        imps = ["imp_imagebind", "imp_wavlm"] if config["model.fusion"] == "rank_aware" else []
        assert list(oof.columns) == ["filename", "fold", *probs, *imps], list(oof.columns)
        assert np.allclose(oof[probs].sum(axis=1), 1.0, atol=1e-4)
        if imps:
            assert np.allclose(oof[imps].sum(axis=1), 1.0, atol=1e-4)  # importances over the encoders
        arts = {a.path for a in c.list_artifacts(p.info.run_id)}
        assert {"config.yaml", "thresholds.json", "oof.parquet", "plots"} <= arts
        kid_arts = {a.path for a in c.list_artifacts(kids[0].info.run_id)}
        assert any(a.endswith(".pt") for a in kid_arts)
    # `blemore train`'s cross_validate in this process (1 torch thread, as the packed trial's worker) gives the same
    # per-fold crossfit numbers as the search trial (fold layout packed, the default) with the same config and seed
    r = next(r for r in out.results if r.metrics.get("final"))
    cv = _same_as_cross_validate(r, tmp_path / "e2e.yaml", tiny, execution="auto")
    assert r.metrics["fold_execution"] == cv.execution
    left = sorted(f.name for f in Path(r.metrics["oof_shards"]).iterdir())  # the final checkpoint carries every
    assert left == [f"report_{e:05d}.json" for e in range(1, r.metrics["epoch"] + 1)], left  # epoch: reports only


def _same_as_cross_validate(r, space_file: Path, tiny: Path, execution: str):
    """Assert that trial result ``r`` has the per-fold crossfit numbers of ``cross_validate`` of its config in this
    process with one torch thread (as a trial worker of these tests); returns the CVResult."""
    import torch

    from blemore_core.train import cross_validate, prepare_data
    from search.space import load_space
    from search.trainable import fold_records

    cfg = load_space(space_file).resolve({k: v for k, v in r.config.items() if not k.startswith("debug")})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cv = cross_validate(cfg, prepare_data(cfg, tiny, progress=False), progress=False, execution=execution)
    finally:
        torch.set_num_threads(threads)
    recs = {rec.fold: rec.protocols for rec in fold_records(r.metrics)}
    for k, row in zip(cv.metrics["folds"], cv.metrics["crossfit"]["per_fold"]):
        for m in ("epoch", "alpha", "beta", "acc_presence", "acc_salience", "score"):
            assert abs(recs[k]["crossfit"][m] - row[m]) <= 1e-6, (k, m, recs[k]["crossfit"][m], row[m])
    assert abs(r.metrics["score"] - cv.curves.objective().score) <= 1e-6
    return cv


def test_failing_trial_is_retried_and_recorded_failed(tmp_path, tiny):
    from search.runner import run_search

    opts = _opts(tmp_path, num_samples=2, max_failures=1)
    out = run_search(_space(tmp_path, tiny, "fails", extra="  debug.fail_trial: 1"), opts)
    errored = [r for r in out.results if r.error]
    ok = [r for r in out.results if not r.error]
    assert len(errored) == 1 and len(ok) == 1
    assert "debug.fail_trial" in str(errored[0].error)
    c, parents, folds = _runs(opts.tracking_uri, "fails")
    assert len(parents) == 2  # one parent per trial, also across the retry
    failed = [p for p in parents if p.info.status == "FAILED"]
    assert len(failed) == 1
    assert "debug.fail_trial" in failed[0].data.tags["error"]
    assert failed[0].data.tags.get("retries") == "1"  # Tune retried it once (FailureConfig max_failures=1)
    assert [p.info.status for p in parents if p not in failed] == ["FINISHED"]
    assert not any(r.info.status == "RUNNING" for r in parents + folds)


def test_interrupt_then_resume_gives_exactly_num_samples_runs(tmp_path, tiny):
    space = _space(tmp_path, tiny, "resumable").read_text().replace("max_concurrent: 2", "max_concurrent: 1")
    (tmp_path / "resumable.yaml").write_text(space)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = str(tmp_path / "ray_results")
    cmd = [sys.executable, "-m", "search.cli", "search", str(tmp_path / "resumable.yaml"), "--storage", storage,
           "--tracking-uri", uri, "--num-cpus", "2", "--cpus-per-trial", "0.95", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 900
    try:
        while time.time() < deadline:
            try:  # the search process may still be creating the SQLite schema: a read races its migration
                _, parents, _ = _runs(uri, "resumable") if (tmp_path / "mlflow.db").exists() else (None, [], [])
            except Exception:
                parents = []
            if sum(p.info.status == "FINISHED" for p in parents) >= 1:
                break
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            time.sleep(2)
        else:
            pytest.fail("no trial finished in time")
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _, parents, folds = _runs(uri, "resumable")
    assert 1 <= sum(p.info.status == "FINISHED" for p in parents) < 3
    assert not any(r.info.status == "RUNNING" for r in parents + folds)

    res = subprocess.run([sys.executable, "-m", "search.cli", "resume", "resumable", "--storage", storage, "--num-cpus",
                          "2", "--quiet"], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _, parents, folds = _runs(uri, "resumable")
    assert len(parents) == 3, [p.data.tags["tune_trial_id"] for p in parents]
    assert len({p.data.tags["tune_trial_id"] for p in parents}) == 3
    assert all(p.info.status == "FINISHED" for p in parents)
    assert len(folds) == 15 and all("score" in f.data.metrics for f in folds)


def _reference_objective(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> float:
    """Plain loops: fold mean of the crossfit Score from per-epoch OOF probabilities (N, 6, E)."""
    from blemore_core.decoding import evaluate_thresholds, fit_thresholds

    ks = sorted(set(folds.tolist()))
    own = {j: [fit_thresholds(probs[folds == j, :, e], labels[folds == j]).score for e in range(probs.shape[2])]
           for j in ks}
    scores = []
    for k in ks:
        curve = [np.mean([own[j][e] for j in ks if j != k]) for e in range(probs.shape[2])]
        e = int(np.argmax(curve))
        fit = fit_thresholds(probs[folds != k, :, e], labels[folds != k])
        scores.append(evaluate_thresholds(probs[folds == k, :, e], labels[folds == k], fit.alpha, fit.beta)["score"])
    return float(np.mean(scores))


def test_asha_stops_trials_and_releases_their_workers(tmp_path, tiny, monkeypatch):
    """ASHA stops poor trials at epoch 1 (deterministic: seeded sampler, one trial at a time); a stopped trial's
    fold workers and placement group are released (so later trials still start), and its runs are recorded with
    the metrics at the stop and the stopped_early tag.

    One objective: what OptunaSearch hands to Optuna, for stopped and completed trials alike, equals the fold-mean
    crossfit Score recomputed here from the trial's stored per-epoch OOF probabilities; MLflow's parent ``score``
    is the mean of its fold runs' ``score``; the printed ranking is the order of that number."""
    from ray.tune.search.optuna import OptunaSearch

    from blemore_core.data import load_release
    from search.runner import run_search

    told: dict[str, float] = {}
    real = OptunaSearch.on_trial_complete

    def record(self, trial_id, result=None, error=False):
        if result is not None and not error:
            told[result["trial_id"]] = result[self._metric]
        return real(self, trial_id, result=result, error=error)

    monkeypatch.setattr(OptunaSearch, "on_trial_complete", record)

    text = _space(tmp_path, tiny, "asha").read_text()
    text = text.replace("scheduler: none", "scheduler: {type: asha, grace_period: 1, reduction_factor: 4}")
    text = text.replace("budget: {num_samples: 3, max_concurrent: 2, max_epochs: 2}",
                        "budget: {num_samples: 4, max_concurrent: 1, max_epochs: 3}")
    text = text.replace("low: 3.0e-4, high: 3.0e-3", "low: 2.0e-5, high: 3.0e-2")
    (tmp_path / "asha.yaml").write_text(text)
    opts = _opts(tmp_path, fold_layout="workers", cpus_per_trial=None, cpus_per_fold=0.39)
    out = run_search(tmp_path / "asha.yaml", opts)
    assert len(out.results) == 4 and not any(r.error for r in out.results)
    stopped = [r for r in out.results if not r.metrics.get("final")]
    assert stopped, "expected ASHA to stop at least one trial"
    c, parents, folds = _runs(opts.tracking_uri, "asha")
    assert len(parents) == 4 and len(folds) == 20
    assert not any(r.info.status == "RUNNING" for r in parents + folds)
    tagged = [p for p in parents if p.data.tags.get("stopped_early") == "true"]
    assert len(tagged) == len(stopped)
    for p in tagged:
        kids = [f for f in folds if f.data.tags["tune_trial_id"] == p.data.tags["tune_trial_id"]]
        assert len(kids) == 5 and all("score" in k.data.metrics and "alpha" in k.data.metrics for k in kids)
        assert abs(p.data.metrics["score"] - float(np.mean([k.data.metrics["score"] for k in kids]))) <= 1e-9
    completed = [r for r in out.results if r.metrics.get("final")]
    assert completed, "expected at least one completed trial"
    release = load_release(tiny, ("imagebind",), progress=False)
    assert set(told) == {r.metrics["trial_id"] for r in out.results}
    from search.oof_shards import read_oof_epochs

    for r in out.results:
        if r.metrics.get("final"):  # completed: the final checkpoint holds every epoch; its npz shards are gone
            npz = np.load(Path(r.metrics["checkpoint_path"]) / "oof_epochs.npz", allow_pickle=False)
            left = sorted(f.name for f in Path(r.metrics["oof_shards"]).iterdir())
            assert left == [f"report_{e:05d}.json" for e in range(1, r.metrics["epoch"] + 1)], left  # reports only
        else:  # stopped by ASHA: its per-epoch shards, every epoch it ran exactly once
            npz = read_oof_epochs(r.metrics["oof_shards"], r.metrics["epoch"])
        probs = npz["probs"]
        assert probs.shape[2] == r.metrics["epoch"]
        want = _reference_objective(probs, release.labels, np.asarray(release.folds))
        assert abs(told[r.metrics["trial_id"]] - want) <= 1e-9, (r.metrics["trial_id"], told, want)
    for p in parents:  # every trial's record has every epoch it ran (stopped ones: assembled from the shards)
        arts = {a.path for a in c.list_artifacts(p.info.run_id)}
        assert "oof_epochs.npz" in arts, (p.data.tags.get("trial_status"), arts)
        assert (p.data.tags["fold_layout"], p.data.tags["fold_execution"]) == ("workers", "sequential")
    mlflow_score = {p.data.tags["tune_trial_id"]: p.data.metrics["score"] for p in parents}
    for tid, v in told.items():
        assert abs(mlflow_score[tid] - v) <= 1e-9
    ranked = sorted(mlflow_score, key=lambda t: -mlflow_score[t])
    assert [row["trial"] for row in out.summary] == ranked[: len(out.summary)]
    assert out.leaked_cpus == 0, f"{out.leaked_cpus:g} CPUs still reserved after the search"
    assert all(r.metrics.get("placement_group") for r in out.results)  # rank 0 named its group every time
    # the workers layout (one process per fold) gives `blemore train`'s per-fold numbers too
    _same_as_cross_validate(next(r for r in completed), tmp_path / "asha.yaml", tiny, execution="sequential")
    assert all(r.metrics["fold_execution"] == "sequential" for r in out.results)


def test_warm_started_search_runs_the_best_earlier_configurations_first_and_says_so(tmp_path, tiny, capsys):
    """Issue 20 on a real search: the second search is seeded from the first's trials through the tracking store,
    runs the first's two best configurations first, and says so on the console, in its tags and in the
    experiment description the MLflow UI shows."""
    import json
    from dataclasses import replace

    from search.runner import run_search

    opts = _opts(tmp_path)
    assert len(run_search(_space(tmp_path, tiny, "cold"), opts).results) == 3
    c, cold, _ = _runs(opts.tracking_uri, "cold")
    best = sorted(cold, key=lambda r: -r.data.metrics["score"])[:2]
    capsys.readouterr()
    out = run_search(_space(tmp_path, tiny, "warm"), replace(opts, warm_start=("cold",)))
    printed = capsys.readouterr().out
    assert len(out.results) == 3 and not any(r.error for r in out.results)
    assert "warm start: 3 finished trials seed the sampler ('cold' (3))" in printed, printed
    assert "warm start: the 2 best earlier configuration(s) run first" in printed, printed
    tags = c.get_experiment_by_name("warm").tags
    assert tags["warm_start.trials"] == "3" and json.loads(tags["warm_start.experiments"]) == {"cold": 3}
    assert sorted(json.loads(tags["warm_start.replayed"])) == sorted(r.info.run_id for r in best)
    assert "Warm-started: 3 finished trials of earlier searches seeded the sampler (`cold`: 3)" in tags[
        "mlflow.note.content"]
    _, warm, _ = _runs(opts.tracking_uri, "warm")
    keys = ("model.fusion", "model.top_n", "train.lr")
    first_two = sorted(warm, key=lambda r: r.info.run_name)[:2]  # t01, t02: the trials Tune started first

    def searched(r):
        return {k: r.data.params.get(k) for k in keys}

    assert all(searched(r)["train.lr"] for r in best + first_two)  # the parent runs carry the searched values
    assert sorted(map(str, map(searched, first_two))) == sorted(map(str, map(searched, best)))
