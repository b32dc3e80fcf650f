"""Data layer: cold feature-cache build vs warm (memory-mapped) load per encoder, and peak memory (docs/ARCHITECTURE.md section 2.3, 6).

1. Per encoder on ``demo`` and ``full``: ``load_release`` with an empty cache directory (cold: validates and
   converts every per-clip file into the Arrow cache; the input files are in the OS page cache because they were
   just read or written) and again with the cache (warm: metadata, fingerprint, memory map), repeated. The ratio
   cold / warm is the figure (target: warm >= 10x faster on demo).
2. Memory of the five fold workers of one trial on ``full`` with the five-encoder preset
   (spaces/presets/rank_aware.yaml), five fresh processes at once, each loading the data, building its fold's
   tensors and training one epoch: per worker PSS (its private pages plus its share of the memory-mapped feature
   cache, target < 4 GiB), private pages and peak RSS (which counts the shared mapped pages in full).
3. Peak resident memory of a whole 2-trial search (driver, Ray processes, fold workers): the sum of the resident
   set sizes of the search process tree, sampled every 0.2 s (``psutil``).

    python -m benchmarks --only data
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from ._common import ROOT, Result, release, run_python, subprocess_env, summarise
from .trainer import FIVE_ENCODERS

FOLD_WORKERS = r"""
import json
from benchmarks._fold_memory import measure
print(json.dumps(measure({preset!r}, {root!r}, n={n}, epochs={epochs}, threads={threads})))
"""


def cold_warm(res: Result, profile: str, root: Path, encoders: list[str], repeats: int) -> None:
    from blemore_core.data import load_release

    work = Path(tempfile.mkdtemp(prefix=f"bench_data_{profile}_"))
    try:
        for e in encoders:
            cache = work / e
            t = time.perf_counter()
            load_release(root, [e], cache_dir=cache, progress=False)
            cold = time.perf_counter() - t
            warm = []
            for _ in range(repeats):
                t = time.perf_counter()
                d = load_release(root, [e], cache_dir=cache, progress=False)
                warm.append(time.perf_counter() - t)
            mb = d.sequences[e].frames.nbytes / 2**20 if e in d.sequences else 0.0
            del d
            ratio = cold / summarise(warm)["median"]
            res.figure(f"{profile}/{e}/cold_s", cold, "s", note=f"{mb:.0f} MiB of frames")
            res.figure(f"{profile}/{e}/warm_s", warm, "s")
            res.figure(f"{profile}/{e}/cold_over_warm", ratio, "x")
            if profile == "demo":
                res.target(f"warm_load_speedup/{profile}/{e}", ratio, ">=", 10.0,
                           "cold cache build of the same encoder, same run")
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fold_worker_memory(root: Path, n: int = 5, epochs: int = 1, threads: int = 1, preset: str = "rank_aware") -> dict:
    """Memory of ``n`` fold workers of one trial running at once on this node (fresh processes, each loading
    ``root`` with ``preset``, training and evaluating fold k for ``epochs``), read while all hold their inputs:
    per worker its proportional set size (PSS: private pages plus its share of the memory-mapped feature cache
    they all map), its private pages, and its peak RSS (which counts every shared mapped page in full)."""
    code = FOLD_WORKERS.format(threads=threads, preset=str(ROOT / "spaces" / "presets" / f"{preset}.yaml"),
                               epochs=epochs, root=str(root), n=n)
    return run_python(code, timeout=1800)


class TreeRss:
    """Samples the summed resident memory of a process and all its descendants (peak in GiB)."""

    def __init__(self, pid: int, period: float = 0.2):
        self.proc, self.period, self.peak = psutil.Process(pid), period, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            total = 0
            try:
                for p in [self.proc, *self.proc.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            self.peak = max(self.peak, total / 2**30)
            self._stop.wait(self.period)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def search_rss(tmp: Path, space_text: str, timeout: float = 900) -> tuple[float, float]:
    """(peak summed RSS GiB, wall s) of ``blemore search`` on ``space_text`` (process tree, Ray included)."""
    space = tmp / "space.yaml"
    space.write_text(space_text)
    cmd = [sys.executable, "-m", "search.cli", "search", str(space), "--name", "rss", "--storage", str(tmp / "rr"),
           "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--quiet"]
    env = subprocess_env()
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mon = TreeRss(p.pid)
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        peak = mon.stop()
    if p.returncode != 0:
        raise RuntimeError(f"search failed ({p.returncode}):\n{out[-3000:]}")
    return peak, time.perf_counter() - t


SEARCH_SPACE = """
name: rss
preset: {preset}
data: {{dir: {root}{encoders}}}
fixed:
  train.patience: 0
  train.max_epochs: {epochs}
params:
  train.lr: {{type: loguniform, low: 9.99e-4, high: 1.0e-3}}
metric: score
scheduler: none
budget: {{num_samples: 2, max_concurrent: 1}}
"""


def run(quick: bool, out: Path) -> Result:
    res = Result("data", quick)
    from blemore_core.data import ENCODERS

    demo = release("demo")
    cold_warm(res, "demo", demo, list(ENCODERS) if not quick else ["imagebind", "wavlm"], repeats=2 if quick else 5)
    if quick:
        root, preset, encs = demo, "baseline", ""
        res.inputs = {"profiles": ["demo"], "fold_worker": "demo, baseline preset, folds 0-1 at once, 1 epoch"}
    else:
        root = release("full", FIVE_ENCODERS)
        cold_warm(res, "full", root, FIVE_ENCODERS, repeats=3)
        preset, encs = "rank_aware", ""
        res.inputs = {"profiles": ["demo", "full"], "full_encoders": FIVE_ENCODERS,
                      "fold_worker": "full, rank_aware preset (5 encoders, sequences, MMD to the test split), folds "
                                      "0-4 at once, 1 epoch each"}
    w = fold_worker_memory(root, n=2 if quick else 5, preset="baseline" if quick else "rank_aware")
    res.figure("fold_worker/pss_gib", w["max_pss_gib"], "GiB", note=res.inputs["fold_worker"] + "; the largest "
               "of the folds' proportional set sizes, read while all of them run (shared feature pages split)")
    res.figure("fold_worker/private_gib", w["max_private_gib"], "GiB", note="pages of the worker alone")
    res.figure("fold_worker/peak_rss_gib", w["max_peak_rss_gib"], "GiB",
               note="counts every page of the shared memory-mapped feature cache in full, in every worker")
    res.figure("fold_workers/sum_pss_gib", w["sum_pss_gib"], "GiB", note="what the trial's folds take of the node")
    res.figure("fold_worker/data_s", w["data_s"], "s")
    res.target("fold_worker_pss_gib" + ("" if not quick else "/demo"), w["max_pss_gib"], "<", 4.0,
               "4 GiB budget per fold worker (issue 12/14), all folds of a trial on one node")
    if quick:  # a whole search is the startup/scaling benchmarks' business in --quick
        res.notes.append("--quick: the 2-trial search's memory is not measured")
        return res
    with tempfile.TemporaryDirectory(prefix="bench_rss_") as d:
        text = SEARCH_SPACE.format(preset=preset, root=root, encoders=encs, epochs=1)
        peak, wall = search_rss(Path(d), text)
    res.figure("search_2_trials/peak_rss_gib", peak, "GiB",
               note="sum of RSS over the search process tree (driver, Ray, 5 fold workers per trial), sampled 5/s; "
                    "shared memory-mapped pages count once per process")
    res.figure("search_2_trials/wall_s", wall, "s")
    res.extra["search_space"] = text
    return res


if __name__ == "__main__":
    print(json.dumps(run(True, Path(".")).to_dict(), indent=1))
