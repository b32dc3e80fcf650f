"""Benchmark: training speed (epochs/s) of each seed preset on the ``full`` synthetic profile (issue 4).

For each preset of spaces/presets/, one fold (fold 0: about 1,930 training and 520 validation clips, the real
release's size and encoder dimensions) is trained for ``--epochs`` epochs with early stopping off; an epoch is the
whole training pass plus the validation forward and the threshold refit. The first epoch (allocator warm-up) is
left out of the figure, which is the median seconds per epoch of the others, reported as epochs/s.

Usage: python benchmarks/bench_presets.py [--presets baseline,attention_mixed,rank_aware] [--epochs 8]
                                          [--precisions fp32,bf16] [--threads 2] [--data DIR]
Without --data, the full profile of the presets' encoders is generated once under ~/.cache/blemore/synthetic
(about 2.4 GB per encoder, a minute per encoder). Prints a table and writes benchmarks/results/bench_presets.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from blemore_core.config import Config
from blemore_core.data import generate_release
from blemore_core.train import fit_fold, prepare_data

ROOT = Path(__file__).resolve().parents[1]


def full_release(encoders: list[str]) -> Path:
    """The full synthetic profile with ``encoders`` (generated once, then reused)."""
    cache = Path(os.environ.get("BLEMORE_CACHE", Path.home() / ".cache" / "blemore")) / "synthetic"
    root = cache / f"full-seed0-{'-'.join(sorted(encoders))}"
    if not (root / "manifest.json").exists():
        t0 = time.perf_counter()
        generate_release(root, "full", seed=0, encoders=sorted(encoders))
        print(f"generated the full profile ({', '.join(sorted(encoders))}) in {time.perf_counter() - t0:.0f} s")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="baseline,attention_mixed,rank_aware")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="a release holding every encoder of the presets")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch is warm-up)")
    torch.set_num_threads(args.threads)
    cfgs = {n: Config.from_yaml(ROOT / "spaces" / "presets" / f"{n}.yaml") for n in args.presets.split(",")}
    encoders = sorted({e for c in cfgs.values() for e in c.data.encoders})
    root = args.data or full_release(encoders)
    rows = {}
    for name, cfg in cfgs.items():
        for prec in args.precisions.split(","):
            c = cfg.override({"train.max_epochs": args.epochs, "train.patience": 0, "train.device": "cpu",
                              "train.precision": prec})
            if c.model.fusion == "mixed":  # time the combine stage too: half the epochs in each stage
                c = c.override({"model.mixed_pretrain_epochs": max(1, args.epochs // 2)})
            t0 = time.perf_counter()
            data = prepare_data(c, root, progress=False)
            r = fit_fold(c, data, 0)
            total = time.perf_counter() - t0
            secs = [h["seconds"] for h in r.history[1:]]
            med = statistics.median(secs)
            rows[f"{name}/{prec}"] = {"preset": name, "precision": prec, "features": c.data.features,
                                      "encoders": list(c.data.encoders), "epochs_per_s": 1.0 / med,
                                      "seconds_per_epoch": secs, "first_epoch_s": r.history[0]["seconds"],
                                      "total_s_incl_loading": total}
            print(f"{name:16s} {prec}  {1.0 / med:7.3f} epochs/s  ({med:6.2f} s/epoch; first epoch "
                  f"{r.history[0]['seconds']:.1f} s; with loading {total:.0f} s)")
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "bench_presets.json").write_text(json.dumps(
        {"profile": "full", "fold": 0, "threads": args.threads, "epochs": args.epochs, "data": str(root),
         "runs": rows}, indent=2))
    print(f"wrote {res / 'bench_presets.json'}")


if __name__ == "__main__":
    main()
