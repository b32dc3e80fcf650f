"""Threshold fitting: vectorised ``fit_thresholds`` vs the per-clip reference loop (docs/ARCHITECTURE.md section 3; target >= 300x).

Both run on the same input: N clips (500, the real training set's 2,456, and 10,000) of random probabilities
with the tie-heavy patterns of the decoding tests and labels drawn from the 16 valid label sets. The reference is
the port of the organisers' ``grid_search_thresholds`` in tests/blemore_core/test_decoding.py (loaded from that
file, so test and benchmark run the same code); both must return identical thresholds and accuracies.

    python -m benchmarks --only thresholds
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ._common import ROOT, Result, timed

SIZES = (500, 2456, 10000)
TARGET_RATIO = 300.0


def load_reference():
    """tests/blemore_core/test_decoding.py as a module (ref_grid_search, random_probs, random_truth)."""
    path = ROOT / "tests" / "blemore_core" / "test_decoding.py"
    spec = importlib.util.spec_from_file_location("_blemore_decoding_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_input(ref, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probs (n, 6) float64, soft labels (n, 6)) with the decoding tests' tie-heavy patterns."""
    rng = np.random.default_rng(seed)
    probs = np.concatenate([ref.random_probs(rng, 64) for _ in range(-(-n // 64))])[:n]
    return probs, ref.random_truth(rng, n)


def run(quick: bool, out: Path) -> Result:
    from blemore_core.decoding import fit_thresholds

    res = Result("thresholds", quick)
    ref = load_reference()
    sizes = (500,) if quick else SIZES
    fast_reps, ref_reps = (3, 1) if quick else (20, 2)  # the reference takes ~28 s per call at N = 10,000
    res.inputs = {"sizes": list(sizes), "grid": "linspace(0.05, 0.95, 20) x 2 = 400 points",
                  "repeats_vectorised": fast_reps, "repeats_reference": ref_reps,
                  "reference": "per-clip port of blemore-common grid_search_thresholds (tests/blemore_core/test_decoding.py)"}
    for n in sizes:
        probs, truth = make_input(ref, n)
        t_fast, fit = timed(lambda: fit_thresholds(probs, truth), fast_reps, warmup=1)  # noqa: B023
        t_ref, slow = timed(lambda: ref.ref_grid_search(probs, truth), ref_reps)  # noqa: B023
        got = fit.to_dict()
        got.pop("score")
        res.figure(f"vectorised_s/N={n}", t_fast, "s")
        res.figure(f"reference_s/N={n}", t_ref, "s")
        ratio = float(np.median(t_ref) / np.median(t_fast))
        res.figure(f"speedup/N={n}", ratio, "x", note="median reference / median vectorised, same run")
        res.target(f"identical_result/N={n}", float(got == slow), ">=", 1.0, "reference loop's thresholds, "
                   "ACC_presence, ACC_salience (exact)")
        res.target(f"speedup/N={n}", ratio, ">=", TARGET_RATIO, "per-clip reference loop, same input, same run")
    return res
