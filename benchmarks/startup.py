"""Trial start-up and platform overhead, measured from outside the production trial (docs/ARCHITECTURE.md section 6, issue 14 item 4).

A small search (the rank-aware preset, reduced sizes, on ``demo``; trials one at a time, no early stopping) runs
through the production path (``search.runner.run_search``: Ray Tune + OptunaSearch + one Ray Train DataParallelTrainer per trial,
one Ray Train worker per fold: the ``workers`` fold layout, which these figures have tracked since issue 14; the
``packed`` layout's start-up is the ``throughput`` benchmark's, MLflow tracking) with the trial function and the fold worker wrapped by
:mod:`benchmarks._timed_trial`, which only records timestamps. Per trial, from rank 0:

* ``train_setup``: trial function entered -> fold worker function entered (Train controller actor, placement
  group, worker processes, the fold exchange actor);
* ``imports``: worker entered -> torch/ray.train and blemore imported;
* ``data``: -> the features loaded (``search.trainable.load_data``; memory-mapped Arrow cache);
* ``first_epoch``: -> the first epoch reported (``ray.train.report`` returned on rank 0: set-up of the fold
  tensors and model + one epoch);
* ``start_up`` = train_setup + imports + data (target <= 8 s per trial on 2 cores);
* ``between_trials``: the previous trial function's end -> this one's start (Tune scheduling, trial actor start,
  the driver's MLflow writes of the previous trial).

The reference is :func:`blemore_core.train.cross_validate` of the same config in one fresh process (both cores):
``overhead`` = trial wall (function start to end) - in-process wall.

    python -m benchmarks --only startup
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

from ._common import Result, run_python

SPACE = """
name: {name}
preset: rank_aware
data: {{dir: {root}, encoders: [{encoders}]}}
fixed:
  model.latent_dim: 32
  model.shared_dim: 32
  model.seq_len: 8
  model.top_n: 2
  train.patience: 0
  train.max_epochs: {epochs}
params:
  train.lr: {{type: loguniform, low: 9.99e-4, high: 1.0e-3}}
metric: score
scheduler: none
budget: {{num_samples: {trials}, max_concurrent: 1}}
"""

DRIVER = r"""
import json, os, sys, time
t0 = time.time()
import search.trainable as trainable
from benchmarks import _timed_trial
trainable.run_trial = _timed_trial.timed_run_trial
from search.runner import SearchOptions, run_search
opts = SearchOptions(name="startup", storage={storage!r}, tracking_uri={uri!r}, num_cpus={cpus}, verbose=0,
                     fold_layout="workers", cpus_per_fold={cpf})
out = run_search({space!r}, opts)
print(json.dumps({{"wall_s": time.time() - t0, "start": t0, "end": time.time()}}))
"""

INPROC = r"""
import json, time, torch
torch.set_num_threads({threads})
from search.space import load_space
from blemore_core.train import prepare_data, cross_validate
space = load_space({space!r})
cfg = space.resolve({{"train.lr": 1.0e-3}})
data = prepare_data(cfg, {root!r}, progress=False)
t = time.perf_counter()
res = cross_validate(cfg, data, progress=False)
print(json.dumps({{"wall_s": time.perf_counter() - t, "score": res.metrics[res.metrics["headline"]]["mean"]["score"]}}))
"""


#: the encoders of the measured trials (the --quick run trains one, to keep the suite's check short)
ENCODERS = "imagebind, videomae, wavlm, hubert"
QUICK_ENCODERS = "imagebind, wavlm"  # top_n is 2


#: what a fold worker process imports before it trains (Ray core, Ray Train V2's worker side, torch, the library)
IMPORTS = ("import time; t = time.perf_counter(); import ray, ray.train, torch; import blemore_core.train, "
           "search.trainable; print(time.perf_counter() - t)")


def import_floor(n: int) -> float:
    """Wall seconds for ``n`` fresh Python processes started at once to import what a fold worker imports (the
    part of a trial's start-up that no scheduling can remove while each trial gets fresh worker processes)."""
    import subprocess
    import sys
    import time

    from ._common import subprocess_env

    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", IMPORTS], stdout=subprocess.DEVNULL, env=subprocess_env())
             for _ in range(n)]
    if any(p.wait(timeout=300) != 0 for p in procs):
        raise RuntimeError("a fresh Python could not import ray, ray.train, torch and blemore_core")
    return time.perf_counter() - t


def measure(tmp: Path, root: Path, epochs: int, trials: int, cpus: int, encoders: str = ENCODERS) -> dict:
    """Run the timed search and the in-process reference; returns per-trial breakdowns and walls."""
    space = tmp / "startup.yaml"
    space.write_text(SPACE.format(name="startup", root=root, epochs=epochs, trials=trials, encoders=encoders))
    tdir = tmp / "timing"
    tdir.mkdir()
    cpf = round((cpus - 0.01) / 5 - 0.005, 2)  # one trial at a time over all cores (the trial actor takes 0.01)
    drv = run_python(DRIVER.format(storage=str(tmp / "rr"), uri=f"sqlite:///{tmp}/mlflow.db", cpus=cpus,
                                   space=str(space), cpf=cpf),
                     env={"BLEMORE_BENCH_TIMING_DIR": str(tdir)}, timeout=1800, cwd=tmp)
    recs = [json.loads(p.read_text()) for p in tdir.glob("*.json")]
    trials_rec = sorted([r for r in recs if "start" in r], key=lambda r: r["start"])
    workers = [r for r in recs if "rank" in r]
    rows = []
    prev_end = drv["start"]
    for tr in trials_rec:
        w = [r for r in workers if r["trial_id"] == tr["trial_id"]]
        r0 = next((r for r in w if r["rank"] == 0), None)
        if r0 is None or r0["first_epoch"] is None:
            continue
        rows.append({
            "trial_id": tr["trial_id"],
            "between_trials": tr["start"] - prev_end,
            "train_setup": r0["enter"] - tr["start"],
            "train_setup_last_worker": max(r["enter"] for r in w) - tr["start"],
            "imports": r0["imports"] - r0["enter"],
            "imports_libs": r0["libs"] - r0["enter"],
            "data": r0["data"] - r0["imports"],
            "first_epoch": r0["first_epoch"] - r0["data"],
            "start_up": r0["data"] - tr["start"],
            "trial_wall": tr["end"] - tr["start"],
        })
        prev_end = tr["end"]
    inproc = run_python(INPROC.format(space=str(space), root=str(root), threads=cpus), timeout=1800)
    return {"rows": rows, "driver": drv, "inproc": inproc}


def run(quick: bool, out: Path) -> Result:
    from ._common import release

    res = Result("startup", quick)
    root = release("demo")
    cpus = min(2, os.cpu_count() or 1)
    # the overhead is about fixed per trial (~15 s here), so its fraction depends on the trial's length: 3 epochs
    # gave 39 %, 6 epochs 33 % (2026-12-02); 12 epochs (~100 s in one process) is still far below a real trial
    epochs, trials = (1, 1) if quick else (12, 2)
    encoders = QUICK_ENCODERS if quick else ENCODERS
    res.inputs = {"profile": "demo", "preset": "rank_aware (latent 32, seq_len 8)", "encoders": encoders,
                  "epochs": epochs,
                  "trials": trials, "max_concurrent": 1, "num_cpus": cpus, "folds": 5,
                  "reference": "cross_validate of the same config in one fresh process"}
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as d:
        m = measure(Path(d), root, epochs, trials, cpus, encoders)
    rows = m["rows"]
    if not rows:
        raise RuntimeError("no trial timings recorded")
    for k in ("between_trials", "train_setup", "train_setup_last_worker", "imports", "imports_libs", "data",
              "first_epoch", "start_up", "trial_wall"):
        res.figure(f"trial/{k}_s", [r[k] for r in rows], "s", note="per trial, rank 0 (median over trials)")
    res.figure("inprocess/cross_validate_wall_s", m["inproc"]["wall_s"], "s")
    walls = [r["trial_wall"] for r in rows]
    over = statistics.median(walls) - m["inproc"]["wall_s"]
    res.figure("overhead_per_trial_s", over, "s", note="median trial wall - in-process wall")
    res.figure("overhead_fraction", over / m["inproc"]["wall_s"], "fraction of in-process wall")
    res.figure("search_wall_s", m["driver"]["wall_s"], "s", note="whole search process incl. Ray start/stop")
    res.target("start_up_s_per_trial", statistics.median(r["start_up"] for r in rows), "<=", 8.0,
               f"trial function start -> data loaded on rank 0, {cpus} cores (was about 21 s)")
    res.target("overhead_fraction", over / m["inproc"]["wall_s"], "<=", 0.15,
               "cross_validate of the same config in one process, same run")
    res.figure("overhead_breaks_even_at_in_process_s", over / 0.15, "s",
               note="the in-process trial length above which this per-trial overhead is <= 15 %")
    one = [import_floor(1) for _ in range(1 if quick else 2)]
    five = [import_floor(5) for _ in range(1 if quick else 2)]
    res.figure("floor/imports_one_process_s", one, "s",
               note="one fresh Python importing ray, ray.train, torch, blemore_core.train alone")
    res.figure("floor/imports_five_processes_s", five, "s",
               note=f"five at once (a trial's five fold workers) on {cpus} cores: the part of start-up that fresh "
                    "worker processes cannot avoid")
    res.extra["per_trial"] = rows
    return res
