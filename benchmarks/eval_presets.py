"""Acceptance figures of the seed presets on the synthetic ``demo`` release (issue 4).

For each preset in spaces/presets/: 5-fold cross-validation in one process; ACC_presence, ACC_salience and Score
under the three threshold protocols; the two trivial baselines on the same clips; the rank-aware gate's mean
encoder importance against the generator's true informativeness (Spearman, from manifest.json); and rank_aware
against concat when a near-noise encoder is added.

Usage: python benchmarks/eval_presets.py [--data DIR] [--presets baseline,rank_aware] [--max-epochs N]
Prints a table and writes benchmarks/results/eval_presets.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from blemore_core.config import Config
from blemore_core.data import ensure_demo_release
from blemore_core.metrics import trivial_baselines
from blemore_core.train import cross_validate, prepare_data

ROOT = Path(__file__).resolve().parents[1]


def run(cfg: Config, root: Path) -> tuple[dict, float, dict | None]:
    data = prepare_data(cfg, root, progress=False)
    t0 = time.perf_counter()
    cv = cross_validate(cfg, data, progress=False)
    secs = time.perf_counter() - t0
    imps = [r.importances for r in cv.folds if r.importances]
    mean_imp = {k: float(np.mean([d[k] for d in imps])) for k in imps[0]} if imps else None
    epochs = sum(r.epochs_run for r in cv.folds)
    return cv.metrics, epochs / secs, mean_imp


def fmt(m: dict) -> str:
    return " | ".join(
        f"{p}: P={m[p]['mean']['acc_presence']:.3f} S={m[p]['mean']['acc_salience']:.3f} "
        f"Score={m[p]['mean']['score']:.3f}"
        for p in ("val", "train", "crossfit")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--presets", default="baseline,attention_mixed,rank_aware")
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = args.data or ensure_demo_release()
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    out: dict = {"data": str(root)}

    labels = prepare_data(Config.from_yaml(ROOT / "spaces/presets/baseline.yaml"), root, progress=False).labels
    triv = trivial_baselines(labels)
    out["trivial_baselines"] = triv
    print("trivial baselines:", json.dumps(triv, default=lambda o: o.tolist()))

    for name in args.presets.split(","):
        cfg = Config.from_yaml(ROOT / "spaces" / "presets" / f"{name}.yaml")
        if args.max_epochs:
            cfg = cfg.override({"train.max_epochs": args.max_epochs})
        m, eps, imp = run(cfg, root)
        out[name] = {"metrics": m, "epochs_per_s": eps, "importances": imp}
        print(f"{name:16s} {eps:6.2f} epochs/s  {fmt(m)}")
        if imp:
            truth = {e: manifest["encoders"][e]["informativeness"] for e in imp}
            rho = spearmanr([imp[e] for e in imp], [truth[e] for e in imp]).statistic
            out[name]["importance_spearman"] = float(rho)
            print(f"  importances {imp}\n  true informativeness {truth}\n  Spearman = {rho:.3f}")

    # rank_aware vs concat with a near-noise encoder included
    noise = min(manifest["encoders"], key=lambda e: manifest["encoders"][e]["informativeness"])
    base = Config.from_yaml(ROOT / "spaces/presets/rank_aware.yaml")
    enc = list(base.data.encoders) + ([noise] if noise not in base.data.encoders else [])
    for fusion in ("rank_aware", "concat"):
        cfg = base.override({"data.encoders": enc, "model.fusion": fusion})
        if args.max_epochs:
            cfg = cfg.override({"train.max_epochs": args.max_epochs})
        m, eps, _ = run(cfg, root)
        out[f"noise_{fusion}"] = {"encoders": enc, "metrics": m}
        print(f"with noise encoder {noise!r}: {fusion:10s} {fmt(m)}")

    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "eval_presets.json").write_text(json.dumps(out, indent=2, default=lambda o: o.tolist()))
    print(f"wrote {res / 'eval_presets.json'}")


if __name__ == "__main__":
    main()
