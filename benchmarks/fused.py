"""Fused vs sequential folds (issue 22 item 3): wall time of ``cross_validate`` over all five folds, one process.

For each release (``tiny``, ``demo``), model (the organisers' baseline MLP-512 on aggregated features; the
rank_aware preset with a small latent, 16) and torch thread count (1, 2): seconds of 5 epochs (patience off) of
``cross_validate(cfg, data, execution=...)`` with ``"sequential"`` and ``"fused"``, run alternately in the same
process after one untimed 1-epoch warm-up of each; the figure is the ratio fused / sequential (below 1: fused is
faster). Device ``auto`` (the GPU when there is one). Not part of ``python -m benchmarks`` yet (the lead wires it)::

    python -m benchmarks.fused --release tiny=/path/to/tiny --release demo=/path/to/demo [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ._common import DEFAULT_OUT, ROOT, Result

MODELS = {
    "baseline_mlp512": ("baseline", {}),
    "rank_aware_latent16": ("rank_aware", {"model.latent_dim": 16, "model.shared_dim": 16}),
}


def _config(preset: str, over: dict, epochs: int):
    from blemore_core.config import Config

    return Config.from_yaml(ROOT / "spaces" / "presets" / f"{preset}.yaml").override(
        {"train.max_epochs": epochs, "train.patience": 0, "train.device": "auto", **over})


def _seconds(cfg, data, execution: str) -> float:
    from blemore_core.train import cross_validate

    t = time.perf_counter()
    cv = cross_validate(cfg, data, execution=execution, progress=False)
    if cv.execution != execution:
        raise RuntimeError(f"asked for {execution}, ran {cv.execution}")
    return time.perf_counter() - t


def run(quick: bool, out: Path, releases: dict[str, Path], epochs: int = 5, threads=(1, 2)) -> Result:
    """Measure every (release, model, threads) pair; write ``<out>/fused.json``; return the Result."""
    from blemore_core.train import prepare_data

    res = Result("fused", quick)
    res.inputs = {"releases": {k: str(v) for k, v in releases.items()}, "epochs": epochs, "threads": list(threads),
                  "models": {k: v[1] | {"preset": v[0]} for k, v in MODELS.items()}}
    for rel, root in releases.items():
        for name, (preset, over) in MODELS.items():
            cfg = _config(preset, over, epochs)
            data = prepare_data(cfg, root, progress=False)
            warm = cfg.override({"train.max_epochs": 1})
            for n in threads:
                torch.set_num_threads(n)
                _seconds(warm, data, "sequential"), _seconds(warm, data, "fused")
                seq, fus = _seconds(cfg, data, "sequential"), _seconds(cfg, data, "fused")
                key = f"{rel}_{name}_threads{n}"
                res.figure(f"{key}_sequential_s", seq, "s", f"{epochs} epochs, 5 folds")
                res.figure(f"{key}_fused_s", fus, "s", f"{epochs} epochs, 5 folds")
                res.figure(f"{key}_fused_over_sequential", fus / seq, "ratio", "below 1: fused faster")
                print(f"{key}: sequential {seq:.1f} s, fused {fus:.1f} s, ratio {fus / seq:.2f}", flush=True)
    res.notes.append("one sample per figure, on a shared CPU: ratios are indicative (+-20%)")
    res.write(out)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--release", action="append", required=True, help="NAME=PATH of a release")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    releases = dict(r.split("=", 1) for r in args.release)
    run(False, args.out, {k: Path(v) for k, v in releases.items()}, args.epochs)


if __name__ == "__main__":
    main()
