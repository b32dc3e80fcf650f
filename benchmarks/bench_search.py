"""Search platform overhead and scaling on the demo release (prints its figures; not a test).

1. Overhead: wall time of one 5-fold trial under Ray Tune + Ray Train (one TorchTrainer, one worker per fold)
   vs ``blemore_core.train.cross_validate`` of the same config in one process (all cores, fresh process).
   overhead = trial wall - in-process wall; target <= 15 % of the in-process time. The trial's start-up
   breakdown (from the final report's ``timing/*`` keys) is printed too.
2. Scaling: the same small search run with Ray given one core (``taskset -c 0``, ``--num-cpus 1``) and both cores;
   trials per hour with two cores over one core (target >= 1.6x). Threads per fold worker follow
   ``--cpus-per-fold`` (1 thread below one CPU), so workers do not oversubscribe.

Usage: python benchmarks/bench_search.py [--part overhead|scaling|all] [--epochs 10] [--trials 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPACE = """
name: {name}
preset: rank_aware
data: {{encoders: [imagebind, videomae, wavlm, hubert]}}
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
budget: {{num_samples: {trials}, max_concurrent: 4}}
"""

INPROC = """
import json, sys, time, torch
torch.set_num_threads({threads})
from blemore_core.data import ensure_demo_release
from search.space import load_space
from blemore_core.train import prepare_data, cross_validate
space = load_space({space!r})
cfg = space.resolve({{"train.lr": 1.0e-3}})
data = prepare_data(cfg, ensure_demo_release(), progress=False)
t = time.perf_counter()
res = cross_validate(cfg, data, progress=False)
print(json.dumps({{"wall": time.perf_counter() - t, "score": res.metrics[res.metrics["headline"]]["mean"]["score"]}}))
"""


def _space(tmp: Path, name: str, epochs: int, trials: int) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(SPACE.format(name=name, epochs=epochs, trials=trials))
    return p


def _search(space: Path, tmp: Path, name: str, num_cpus: int, cpus_per_fold: float, taskset: str | None) -> dict:
    cmd = [sys.executable, "-m", "search.cli", "search", str(space), "--name", name, "--storage", str(tmp / "rr"),
           "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--num-cpus", str(num_cpus), "--cpus-per-fold",
           str(cpus_per_fold), "--quiet"]
    if taskset:
        cmd = ["taskset", "-c", taskset, *cmd]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"search failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    trials = []
    for f in (tmp / "rr" / name).glob("*/result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        trials.append(rows[-1])
    return {"wall": wall, "trials": trials}


def overhead(tmp: Path, epochs: int) -> None:
    space = _space(tmp, "bench_overhead", epochs, 1)
    r = subprocess.run([sys.executable, "-c", INPROC.format(space=str(space), threads=os.cpu_count())],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    inproc = json.loads(r.stdout.strip().splitlines()[-1])
    res = _search(space, tmp, "bench_overhead", os.cpu_count(), round((os.cpu_count() - 0.01) / 5 - 0.005, 2), None)
    trial = res["trials"][0]
    t_trial = trial["time_total_s"]
    print(f"== overhead: rank_aware default size, {epochs} epochs x 5 folds, demo release, {os.cpu_count()} cores")
    print(f"in-process cross_validate:        {inproc['wall']:7.1f} s (score {inproc['score']:.4f})")
    print(f"Ray Tune + Train trial (5 workers): {t_trial:7.1f} s (score {trial['score']:.4f}); whole search "
          f"command incl. Ray start/stop: {res['wall']:.1f} s")
    over = t_trial - inproc["wall"]
    print(f"platform overhead per trial:       {over:7.1f} s = {100 * over / inproc['wall']:.0f} % of in-process")
    timing = {k.split("/", 1)[1]: round(v, 1) for k, v in trial.items() if k.startswith("timing/")}
    print(f"trial start-up breakdown (s since the trial function started, rank 0): {timing}")


def scaling(tmp: Path, epochs: int, trials: int) -> None:
    space = _space(tmp, "bench_scale", epochs, trials)
    print(f"== scaling: {trials} trials of {epochs} epochs x 5 folds")
    out = {}
    for cores, taskset in ((1, "0"), (2, "0,1")):
        name = f"bench_scale_{cores}"
        res = _search(space, tmp, name, cores, 0.19, taskset)
        per_hour = 3600 * len(res["trials"]) / res["wall"]
        out[cores] = per_hour
        print(f"{cores} core(s): {len(res['trials'])} trials in {res['wall']:.1f} s -> {per_hour:.1f} trials/hour")
    print(f"speed-up 2 cores / 1 core: {out[2] / out[1]:.2f}x (target >= 1.6x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("overhead", "scaling", "all"), default="all")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--trials", type=int, default=4)
    args = ap.parse_args()
    from blemore_core.data import ensure_demo_release

    ensure_demo_release()
    with tempfile.TemporaryDirectory(prefix="bench_search_") as d:
        tmp = Path(d)
        if args.part in ("overhead", "all"):
            overhead(tmp, args.epochs)
        if args.part in ("scaling", "all"):
            scaling(tmp, max(2, args.epochs // 2), args.trials)


if __name__ == "__main__":
    main()
