"""The search driver at cluster scale, simulated from its parts (docs/ARCHITECTURE.md section 6, issue 14 item 6).

One driver process serves every trial of a search: Optuna proposes each config, Tune handles every result, and
one MLflow writer logs every run. Measured here:

1. Optuna TPE ``suggest`` time (one full define-by-run proposal of spaces/full.yaml's space, through the
   production ``SearchSpace.suggest``, with the production sampler: multivariate TPE, two objectives as in the
   space's Pareto metric) with 100, 1,000 and 5,000 finished trials in the study (filled with random configs and
   random objective values).
2. MLflow writer throughput against a tracking server on 127.0.0.1 (``mlflow server``, SQLite backend): runs
   created per second, and metric batches per second (one batch = one epoch report of a trial: 60 metrics).
3. Tune's per-result overhead: the wall time per reported result of a function trainable that does nothing but
   report (the difference of 2,000 and 50 results, so Ray start and trial start cancel).

Implied ceiling: the driver's busy time per trial = suggest (at 5,000 trials) + (E + 1) results x (Tune overhead +
one metric batch) + 6 runs created (parent + 5 folds) + 6 finals; trials/h ceiling = 3600 / that. A 64-GPU cluster
at 10 fold workers per GPU runs 128 five-fold trials at once; with E = the default epoch count (40, the rank-aware
preset), the driver is the bottleneck when a trial lasts less than 128 x the busy time.

    python -m benchmarks --only driver
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import ROOT, Result, run_python, subprocess_env

GPUS, FOLDS_PER_GPU, FOLDS = 64, 10, 5
DEFAULT_EPOCHS = 40
METRICS_PER_RESULT = 60

TUNE = r"""
import json, os, time, ray
from ray import tune
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
def fn(config):
    for i in range(config["n"]):
        tune.report({{"score": i * 1e-3, "epoch": i}})
out = {{}}
for n in {sizes}:
    t = time.perf_counter()
    tune.Tuner(fn, param_space={{"n": n}}, run_config=tune.RunConfig(storage_path={storage!r}, verbose=0)).fit()
    out.setdefault(str(n), []).append(time.perf_counter() - t)
ray.shutdown()
print(json.dumps(out))
"""


def tpe_suggest_times(sizes: tuple[int, ...], repeats: int, seed: int = 0) -> dict[int, list[float]]:
    """Seconds of one production ``SearchSpace.suggest`` under multivariate TPE with ``n`` finished trials."""
    import optuna

    from search.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(ROOT / "spaces" / "full.yaml")
    n_obj = len(space.metrics)
    rnd = optuna.create_study(directions=["maximize"] * n_obj, sampler=optuna.samplers.RandomSampler(seed=seed))
    import random

    rng = random.Random(seed)
    out = {}
    done = 0
    for n in sorted(sizes):
        while done < n:
            t = rnd.ask()
            space.suggest(t)
            rnd.tell(t, [rng.random() for _ in range(n_obj)] if n_obj > 1 else rng.random())
            done += 1
        study = optuna.create_study(directions=["maximize"] * n_obj,
                                    sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
        study.add_trials(rnd.get_trials(deepcopy=False)[:n])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            tr = study.ask()
            space.suggest(tr)
            times.append(time.perf_counter() - t0)
            study.tell(tr, state=optuna.trial.TrialState.FAIL)  # not counted as finished
        out[n] = times
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_throughput(tmp: Path, n_runs: int, n_batches: int) -> dict:
    """Runs/s and metric batches/s of an MlflowClient against ``mlflow server`` on 127.0.0.1."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db", "--artifacts-destination", str(tmp / "art"),
           "--workers", "1"]
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(), cwd=tmp)
    try:
        import urllib.request

        uri = f"http://127.0.0.1:{port}"
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                if srv.poll() is not None or time.time() - t0 > 180:
                    raise RuntimeError(f"mlflow server on 127.0.0.1:{port} did not start") from None
                time.sleep(0.5)
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        from search.compat import quiet_mlflow_console

        quiet_mlflow_console()  # as the search's writer: no URL print (and no extra get_run) per ended run
        c = MlflowClient(uri)
        exp = c.create_experiment("bench")
        t = time.perf_counter()
        runs = []
        for i in range(n_runs):
            r = c.create_run(exp, tags={"trial": str(i)})
            runs.append(r.info.run_id)
        t_runs = time.perf_counter() - t
        params = [Param(f"p{i}", str(i)) for i in range(60)]
        t = time.perf_counter()
        for r in runs:
            c.log_batch(r, params=params)
        t_params = time.perf_counter() - t
        ts = int(time.time() * 1000)
        t = time.perf_counter()
        for k in range(n_batches):
            ms = [Metric(f"m{i}", float(i + k), ts, k) for i in range(METRICS_PER_RESULT)]
            c.log_batch(runs[k % len(runs)], metrics=ms)
        t_batches = time.perf_counter() - t
        t = time.perf_counter()
        for r in runs:
            c.set_terminated(r, "FINISHED")
        t_end = time.perf_counter() - t
        return {"create_run_s": t_runs / n_runs, "log_params_s": t_params / n_runs,
                "metric_batch_s": t_batches / n_batches, "terminate_s": t_end / n_runs}
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=20)
        except subprocess.TimeoutExpired:
            srv.kill()


def run(quick: bool, out: Path) -> Result:
    res = Result("driver", quick)
    sizes = (20, 50) if quick else (100, 1000, 5000)
    reps = 2 if quick else 5
    res.inputs = {"space": "spaces/full.yaml", "sampler": "TPESampler(multivariate=True), 2 objectives",
                  "finished_trials": list(sizes), "cluster": {"gpus": GPUS, "folds_per_gpu": FOLDS_PER_GPU,
                                                              "folds_per_trial": FOLDS},
                  "epochs_per_trial": DEFAULT_EPOCHS, "metrics_per_result": METRICS_PER_RESULT}
    tpe = tpe_suggest_times(sizes, reps)
    for n, ts in tpe.items():
        res.figure(f"tpe_suggest_s/finished={n}", ts, "s")
    with tempfile.TemporaryDirectory(prefix="bench_mlflow_") as d:
        ml = mlflow_throughput(Path(d), n_runs=10 if quick else 60, n_batches=20 if quick else 300)
    res.figure("mlflow/create_run_s", ml["create_run_s"], "s", note="mean over the runs created")
    res.figure("mlflow/runs_per_s", 1.0 / ml["create_run_s"], "runs/s")
    res.figure("mlflow/metric_batch_s", ml["metric_batch_s"], "s", note=f"{METRICS_PER_RESULT} metrics per batch")
    res.figure("mlflow/metric_batches_per_s", 1.0 / ml["metric_batch_s"], "batches/s")
    res.figure("mlflow/log_params_s", ml["log_params_s"], "s")
    res.figure("mlflow/terminate_s", ml["terminate_s"], "s")
    n = 200 if quick else 2000
    with tempfile.TemporaryDirectory(prefix="bench_tune_") as d:
        tn = run_python(TUNE.format(n=n, storage=d, sizes=(50, n) if quick else (50, n, 50, n)), timeout=1200)
    import statistics

    per_result = [(b - a) / (n - 50) for a, b in zip(tn["50"], tn[str(n)], strict=True)]
    res.figure("tune/per_result_s", per_result, "s", note=f"(wall({n} results) - wall(50 results)) / {n - 50}")
    # the ceiling
    e = DEFAULT_EPOCHS
    suggest = statistics.median(tpe[max(sizes)])
    per_res = statistics.median(per_result)
    busy = (suggest + (e + 1) * (per_res + ml["metric_batch_s"]) + (1 + FOLDS) * (ml["create_run_s"]
            + ml["log_params_s"] + ml["terminate_s"]))
    concurrent = GPUS * FOLDS_PER_GPU // FOLDS
    res.figure("driver_busy_s_per_trial", busy, "s",
               note=f"suggest@{max(sizes)} + {e + 1} x (Tune result + metric batch) + {1 + FOLDS} runs")
    res.figure("ceiling_trials_per_hour", 3600.0 / busy, "trials/h")
    res.figure("bottleneck_below_trial_s", concurrent * busy, "s",
               note=f"{concurrent} concurrent trials: the driver saturates when a trial is shorter than this")
    res.notes.append(
        "What would lift the ceiling: TPE suggest grows with the number of finished trials (Optuna refits the "
        "Parzen estimators on every proposal): cap the history TPE sees (e.g. the best/most recent few thousand "
        "trials) or propose in batches; log epoch metrics less often or in one batch per trial at its end; run "
        "the MLflow writer with more server workers or several writer threads.")
    return res
