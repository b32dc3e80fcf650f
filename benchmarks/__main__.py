"""The benchmark suite: ``python -m benchmarks [--quick] [--only NAME[,NAME]] [--out DIR]``.

Each benchmark writes ``<out>/<name>.json`` (schema in :mod:`benchmarks._common`); ``--out`` defaults to ``$OUT``
when set, else benchmarks/results/. ``--quick`` shrinks every benchmark to seconds (tiny/demo data, one or two
repeats): it checks that the suite runs and its JSON is complete, not the speed. The default CPU suite runs every
benchmark of :data:`CPU_SUITE`; ``--only gpu`` runs the GPU part (fold training end to end vs the reference loop,
folds packed per GPU), which records "not measured: no GPU" without CUDA.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from ._common import DEFAULT_OUT

#: benchmark name -> module of benchmarks/ (each has ``run(quick: bool, out: Path) -> Result``)
BENCHMARKS: dict[str, str] = {
    "thresholds": "benchmarks.thresholds",
    "trainer": "benchmarks.trainer",
    "data": "benchmarks.data",
    "startup": "benchmarks.startup",
    "scaling": "benchmarks.scaling",
    "driver": "benchmarks.driver",
    "efficiency": "benchmarks.efficiency",
    "calibration": "benchmarks.calibration",
    "gpu": "benchmarks.gpu",
    "throughput": "benchmarks.throughput",
}
#: what ``python -m benchmarks`` runs without --only (the CPU part; gpu only records "not measured" there)
CPU_SUITE: tuple[str, ...] = ("thresholds", "driver", "efficiency", "startup", "scaling", "trainer", "data",
                              "calibration", "gpu", "throughput")


#: modules the suite needs beyond the package's own dependencies (the ``dev`` extra): the reference ports of the
#: organisers' code live in tests/ (they import pytest), and the memory figures read PSS through psutil
REQUIRES: tuple[str, ...] = ("pytest", "psutil")


def missing_requirements() -> list[str]:
    """The modules of :data:`REQUIRES` that are not installed."""
    import importlib.util

    return [m for m in REQUIRES if importlib.util.find_spec(m) is None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds-sized inputs: checks the suite, not the speed")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--out", type=Path, default=None, help="result folder (default: $OUT, else benchmarks/results)")
    args = ap.parse_args(argv)
    names = list(CPU_SUITE) if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"--only: unknown benchmark(s) {', '.join(unknown)} (valid: {', '.join(BENCHMARKS)})")
    missing = missing_requirements()
    if missing:
        print(f"python -m benchmarks: missing {', '.join(missing)}: the suite needs the dev extra "
              "(pip install -e '.[dev]')", file=sys.stderr)
        return 2
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else DEFAULT_OUT)
    failed = []
    for name in names:
        t = time.perf_counter()
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        try:
            res = importlib.import_module(BENCHMARKS[name]).run(args.quick, out)
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' results
            traceback.print_exc()
            failed.append(name)
            continue
        path = res.write(out)
        for k, v in res.targets.items():
            mark = {True: "holds", False: "MISSED", None: v["status"]}[v["holds"]]
            val = "-" if v["measured"] is None else f"{v['measured']:.4g}"
            print(f"   target {k}: {val} (target {v['target']}): {mark}", flush=True)
        print(f"   wrote {path} in {time.perf_counter() - t:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
