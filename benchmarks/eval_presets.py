"""Acceptance figures of the seed presets on the synthetic ``demo`` release (issue 4).

For each preset in spaces/presets/: 5-fold cross-validation in one process; ACC_presence, ACC_salience and Score
under the three threshold protocols; the two trivial baselines on the same clips; the rank-aware gate's mean
encoder importance against the generator's true informativeness (Spearman, from manifest.json); and rank_aware
against concat when a near-noise encoder is added.

Usage: python benchmarks/eval_presets.py [--data DIR] [--presets baseline,rank_aware] [--max-epochs N]
                                        [--parts presets,noise] [--noise-seeds 0,1]
                                        [--noise-top-n 3,5] [--noise-fusions rank_aware,concat]
Prints a table and writes benchmarks/results/eval_presets.json (merged with an earlier run's entries, so the two
parts can be run separately).
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
    ap.add_argument("--parts", default="presets,noise", help="presets, noise, or both (comma-separated)")
    ap.add_argument("--noise-seeds", default="0", help="seeds of the rank_aware vs concat comparison")
    ap.add_argument("--noise-top-n", default="", help="model.top_n values of rank_aware (default: encoders - 1)")
    ap.add_argument("--noise-fusions", default="rank_aware,concat", help="fusions of the noise comparison")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)
    root = args.data or ensure_demo_release()
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    res = ROOT / "benchmarks" / "results"
    prev = res / "eval_presets.json"
    out: dict = json.loads(prev.read_text()) if prev.exists() else {}
    out["data"] = str(root)

    labels = prepare_data(Config.from_yaml(ROOT / "spaces/presets/baseline.yaml"), root, progress=False).labels
    triv = trivial_baselines(labels)
    out["trivial_baselines"] = triv
    print("trivial baselines:", json.dumps(triv, default=lambda o: o.tolist()))

    for name in args.presets.split(",") if "presets" in parts else []:
        cfg = Config.from_yaml(ROOT / "spaces" / "presets" / f"{name}.yaml")
        if args.max_epochs:
            ov = {"train.max_epochs": args.max_epochs}
            if cfg.model.fusion == "mixed" and cfg.model.mixed_pretrain_epochs >= args.max_epochs:
                ov["model.mixed_pretrain_epochs"] = args.max_epochs // 2  # the combined stage must train
            cfg = cfg.override(ov)
        m, eps, imp = run(cfg, root)
        out[name] = {"metrics": m, "epochs_per_s": eps, "importances": imp}
        print(f"{name:16s} {eps:6.2f} epochs/s  {fmt(m)}")
        if imp:
            truth = {e: manifest["encoders"][e]["informativeness"] for e in imp}
            rho = spearmanr([imp[e] for e in imp], [truth[e] for e in imp]).statistic
            out[name]["importance_spearman"] = float(rho)
            print(f"  importances {imp}\n  true informativeness {truth}\n  Spearman = {rho:.3f}")

    # rank_aware vs concat with a near-noise encoder included (same preset otherwise: pooling, head, losses).
    # rank_aware runs at each --noise-top-n (default E - 1: the gate may drop exactly one encoder).
    if "noise" in parts:
        noise = min(manifest["encoders"], key=lambda e: manifest["encoders"][e]["informativeness"])
        base = Config.from_yaml(ROOT / "spaces/presets/rank_aware.yaml")
        enc = list(base.data.encoders) + ([noise] if noise not in base.data.encoders else [])
        seeds = [int(x) for x in args.noise_seeds.split(",")]
        top_ns = [int(x) for x in args.noise_top_n.split(",")] if args.noise_top_n else [len(enc) - 1]
        runs = [("concat", None)] * ("concat" in args.noise_fusions.split(",")) + [
            ("rank_aware", n) for n in top_ns if "rank_aware" in args.noise_fusions.split(",")]
        for fusion, top_n in runs:
            key = f"noise_{fusion}" + (f"_top{top_n}" if top_n else "")
            per_seed = {}
            for seed in seeds:
                ov = {"data.encoders": enc, "model.fusion": fusion, "seed": seed}
                if top_n:
                    ov["model.top_n"] = top_n
                if args.max_epochs:
                    ov["train.max_epochs"] = args.max_epochs
                m, eps, imp = run(base.override(ov), root)
                per_seed[seed] = {"metrics": m, "epochs_per_s": eps, "importances": imp}
                print(f"with noise encoder {noise!r}, seed {seed}: {key:20s} {eps:5.2f} epochs/s  {fmt(m)}")
                if imp:
                    print(f"  importances {imp}")
            mean = {p: float(np.mean([r["metrics"][p]["mean"]["score"] for r in per_seed.values()]))
                    for p in ("val", "train", "crossfit")}
            out[key] = {"encoders": enc, "noise_encoder": noise, "top_n": top_n, "max_epochs": args.max_epochs,
                        "seeds": per_seed, "mean_score": mean}
            print(f"  {key}: mean Score over seeds {seeds}: {mean}")
        for key in [k for k in out if k.startswith("noise_rank_aware_top")]:
            if "noise_concat" in out:
                d = {p: out[key]["mean_score"][p] - out["noise_concat"]["mean_score"][p]
                     for p in ("val", "train", "crossfit")}
                out[key.replace("noise_", "noise_diff_") + "_minus_concat"] = d
                print(f"{key} - concat (mean Score over seeds): {d}")

    res.mkdir(parents=True, exist_ok=True)
    (res / "eval_presets.json").write_text(json.dumps(out, indent=2, default=lambda o: o.tolist()))
    print(f"wrote {res / 'eval_presets.json'}")


if __name__ == "__main__":
    main()
