"""Benchmark: vectorised fit_thresholds vs the per-clip reference loop (a port of the organisers' grid search).

Run:  python benchmarks/bench_thresholds.py [--n 2456] [--seed 0] [--repeats 20]

Both run on the same input (N clips with the real training-set size by default: random probabilities with the
tie-heavy patterns of the tests, labels drawn from the 16 valid label sets); the script checks that the results are
identical and prints both times and the ratio (target: >= 300x). The reference loop is the one in
tests/blemore_core/test_decoding.py, loaded from that file so that test and benchmark use the same code.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

from blemore_core.decoding import fit_thresholds

ROOT = Path(__file__).resolve().parents[1]


def _load_reference():
    path = ROOT / "tests" / "blemore_core" / "test_decoding.py"
    spec = importlib.util.spec_from_file_location("_blemore_decoding_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2456, help="number of clips (default: the real training set, 2456)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=20, help="repeats of the vectorised fit (best time is reported)")
    args = ap.parse_args(argv)

    ref = _load_reference()
    rng = np.random.default_rng(args.seed)
    chunks = [ref.random_probs(rng, 64) for _ in range(-(-args.n // 64))]
    probs = np.concatenate(chunks)[: args.n]
    truth = ref.random_truth(rng, args.n)

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fast = fit_thresholds(probs, truth)
        times.append(time.perf_counter() - t0)
    t_fast = min(times)

    t0 = time.perf_counter()
    slow = ref.ref_grid_search(probs, truth)
    t_slow = time.perf_counter() - t0

    got = fast.to_dict()
    got.pop("score")
    identical = got == slow
    print(f"N = {args.n} clips, grid 20 x 20 = 400 points")
    print(f"vectorised fit_thresholds : {t_fast * 1e3:9.2f} ms  (best of {args.repeats}; median "
          f"{np.median(times) * 1e3:.2f} ms)")
    print(f"per-clip reference loop   : {t_slow * 1e3:9.2f} ms")
    print(f"speed-up                  : {t_slow / t_fast:9.1f}x  (median-based {t_slow / np.median(times):.1f}x)")
    print(f"identical result          : {identical}")
    print(f"  fit = {fast}")
    if not identical:
        print(f"  reference = {slow}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
