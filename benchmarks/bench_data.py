"""Benchmark of the data layer: synthetic generation, cold feature-cache build and warm (cached) load.

    python benchmarks/bench_data.py                                   # demo, all encoders
    python benchmarks/bench_data.py --profiles demo,full --full-encoders imagebind,wavlm

For each profile: generate the release (timed), then ``load_release`` with an empty cache directory (cold:
validates and converts every per-clip file into the Arrow cache) and again (warm: metadata + stat-based
fingerprint + memory map), plus ``aggregate`` and a ``standardise_length`` batch on the cached frames.
"Cold" means no feature cache; the input files are in the OS page cache because they were just written.
Prints the figures and the warm/cold ratio; the demo profile's warm load must be >= 10x faster than the cold
build (exit code 1 otherwise).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from blemore_core.data import ENCODERS, generate_release, load_release, standardise_length


def _du(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _names(encoders: list[str]) -> str:
    return "all 8" if set(encoders) == set(ENCODERS) else ",".join(encoders)[:30]


def bench(profile: str, encoders: list[str], work: Path, repeats: int) -> dict:
    root = work / f"{profile}-seed0"
    t = time.perf_counter()
    generate_release(root, profile, 0, encoders=encoders, progress=False)
    gen = time.perf_counter() - t
    cache = work / f"cache-{profile}"
    t = time.perf_counter()
    data = load_release(root, encoders, cache_dir=cache, progress=False)
    cold = time.perf_counter() - t
    del data
    warm_times = []
    for _ in range(repeats):
        t = time.perf_counter()
        data = load_release(root, encoders, cache_dir=cache, progress=False)
        warm_times.append(time.perf_counter() - t)
    warm = statistics.median(warm_times)
    frames_mb = sum(s.frames.nbytes for s in data.sequences.values()) / 2**20
    t = time.perf_counter()
    for e in encoders:
        data.aggregated_features(e)
    agg = time.perf_counter() - t
    s = data.sequences[encoders[0]]
    idx = torch.randperm(len(data))[:64]
    frames, offsets = torch.from_numpy(s.frames.copy()), torch.from_numpy(s.offsets.copy())
    standardise_length(frames, offsets, idx, 16, True, torch.Generator().manual_seed(0))
    t = time.perf_counter()
    for _ in range(20):
        standardise_length(frames, offsets, idx, 16, True, torch.Generator().manual_seed(0))
    batch_ms = (time.perf_counter() - t) / 20 * 1e3
    return {"profile": profile, "encoders": encoders, "clips": len(data), "generate_s": gen,
            "release_mb": _du(root), "frames_mb": frames_mb, "cache_mb": _du(cache), "cold_s": cold,
            "warm_s": warm, "ratio": cold / warm, "aggregate_s": agg, "batch_ms": batch_ms}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="demo", help="comma-separated: tiny, demo, full (default demo)")
    ap.add_argument("--encoders", default=",".join(ENCODERS), help="encoders for tiny/demo (default all 8)")
    ap.add_argument("--full-encoders", default="imagebind,wavlm",
                    help="encoders for the full profile (default imagebind,wavlm: real dims, ~2.5 GB)")
    ap.add_argument("--workdir", default=None, help="where to generate (default: a temporary directory)")
    ap.add_argument("--repeats", type=int, default=5, help="warm loads (median reported)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_data-"))
    work.mkdir(parents=True, exist_ok=True)
    ok = True
    try:
        print(f"{'profile':8} {'encoders':>30} {'clips':>6} {'gen s':>7} {'release MB':>10} {'frames MB':>9} "
              f"{'cold s':>7} {'warm s':>7} {'cold/warm':>9} {'aggregate s':>11} {'batch ms':>8}", flush=True)
        for profile in args.profiles.split(","):
            encs = (args.full_encoders if profile == "full" else args.encoders).split(",")
            r = bench(profile, encs, work, args.repeats)
            print(f"{r['profile']:8} {_names(r['encoders']):>30} {r['clips']:6d} {r['generate_s']:7.2f} "
                  f"{r['release_mb']:10.1f} {r['frames_mb']:9.1f} {r['cold_s']:7.2f} {r['warm_s']:7.3f} "
                  f"{r['ratio']:9.1f} {r['aggregate_s']:11.2f} {r['batch_ms']:8.2f}", flush=True)
            if profile == "demo" and r["ratio"] < 10:
                print(f"FAIL: demo warm load only {r['ratio']:.1f}x faster than the cold build (need >= 10x)")
                ok = False
            shutil.rmtree(work / f"{profile}-seed0", ignore_errors=True)
            shutil.rmtree(work / f"cache-{profile}", ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
