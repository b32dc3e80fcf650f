"""Benchmark: the fold trainer against a reference-style training loop (issue 4).

One fold of the organisers' baseline config (ImageBind + WavLM aggregated statistics, MLP-512, KL, thresholds
refitted every epoch) on the ``full`` synthetic profile (real dims), run twice in the same process:

* ours: :func:`blemore_core.train.fit_fold` (device tensors, vectorised threshold grid);
* reference: the organisers' style of loop: a torch ``DataLoader`` over a per-sample ``Dataset`` (default
  collate), and each epoch's thresholds refitted by the per-clip Python grid search (the port of blemore-common's
  ``grid_search_thresholds`` used by the decoding tests).

Both start from the same initial weights, see the same batches in the same order (same permutation generator)
and the same dropout draws, so their Scores agree closely; the script prints both wall times, the speed-up
(target >= 20x) and both Scores (target: within 0.01).

Usage: python benchmarks/bench_trainer.py [--data DIR] [--epochs 200] [--fold 0] [--threads 2]
Without --data, the full profile (imagebind + wavlm only) is generated once under ~/.cache/blemore/synthetic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from blemore_core.config import Config
from blemore_core.data import fold_indices, generate_release
from blemore_core.losses import compute_loss
from blemore_core.models import build_model
from blemore_core.train import fit_fold, prepare_data

ROOT = Path(__file__).resolve().parents[1]


def _reference_module():
    """The per-clip reference grid search, loaded the same way bench_thresholds.py loads it."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_thresholds import _load_reference

    return _load_reference()


class PerSampleDataset(torch.utils.data.Dataset):
    """One (inputs dict, label) item per clip, as a typical research training script holds them."""

    def __init__(self, feats: dict[str, np.ndarray], labels: np.ndarray, rows: np.ndarray):
        self.items = [({e: torch.tensor(x[i]) for e, x in feats.items()}, torch.tensor(labels[i])) for i in rows]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class PermutationSampler(torch.utils.data.Sampler):
    """Yields torch.randperm(n, generator=gen) each epoch: the same order fit_fold draws."""

    def __init__(self, n: int, gen: torch.Generator):
        self.n, self.gen = n, gen

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.gen).tolist())


def reference_fold(cfg: Config, data, fold: int, ref) -> dict:
    train_idx, val_idx = fold_indices(np.asarray(data.folds), fold)
    feats = {}
    for e in data.encoders:
        x = np.asarray(data.release.aggregated_features(e), dtype=np.float32)
        mean = x[train_idx].astype(np.float64).mean(0)
        std = np.maximum(x[train_idx].astype(np.float64).std(0), 1e-6)
        feats[e] = ((x - mean) / std).astype(np.float32)
    labels = np.asarray(data.labels, dtype=np.float32)
    torch.manual_seed(cfg.seed * 1009 + fold)
    gen = torch.Generator()
    gen.manual_seed(cfg.seed * 7919 + fold)
    model = build_model(cfg, data.input_dims)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.max_epochs, eta_min=cfg.train.lr_min)
    train_loader = torch.utils.data.DataLoader(
        PerSampleDataset(feats, labels, train_idx), batch_size=cfg.train.batch_size,
        sampler=PermutationSampler(len(train_idx), gen), generator=torch.Generator().manual_seed(0))
    val_loader = torch.utils.data.DataLoader(PerSampleDataset(feats, labels, val_idx), batch_size=64, shuffle=False)
    best = -math.inf
    for _ in range(cfg.train.max_epochs):
        model.train()
        for x, y in train_loader:
            loss, _ = compute_loss(model(x, None), y, cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            probs = torch.cat([model(x, None).probs for x, _ in val_loader]).numpy()
        fit = ref.ref_grid_search(probs, labels[val_idx])
        best = max(best, 0.5 * fit["acc_presence"] + 0.5 * fit["acc_salience"])
    return {"best_score": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = args.data
    if root is None:
        cache = Path(os.environ.get("BLEMORE_CACHE", Path.home() / ".cache" / "blemore")) / "synthetic"
        root = cache / "full-seed0-imagebind-wavlm"
        if not (root / "manifest.json").exists():
            t0 = time.perf_counter()
            generate_release(root, "full", seed=0, encoders=["imagebind", "wavlm"])
            print(f"generated the full profile (imagebind, wavlm) in {time.perf_counter() - t0:.1f} s")
    cfg = Config.from_yaml(ROOT / "spaces" / "presets" / "baseline.yaml").override(
        {"train.max_epochs": args.epochs, "train.patience": 0, "train.device": "cpu"})
    data = prepare_data(cfg, root, progress=False)
    for e in data.encoders:
        data.release.aggregated_features(e)  # both sides start from loaded, aggregated features
    n_train = int((np.asarray(data.folds) != args.fold).sum())
    print(f"fold {args.fold}: {n_train} training clips, input dims {data.input_dims}, {args.epochs} epochs, "
          f"{args.threads} threads")

    t0 = time.perf_counter()
    ours = fit_fold(cfg, data, args.fold)
    t_ours = time.perf_counter() - t0
    ours_score = max(h["val_score"] for h in ours.history)
    print(f"ours:      {t_ours:8.1f} s  ({args.epochs / t_ours:.2f} epochs/s)  best val Score {ours_score:.4f}")

    ref = _reference_module()
    t0 = time.perf_counter()
    theirs = reference_fold(cfg, data, args.fold, ref)
    t_ref = time.perf_counter() - t0
    print(f"reference: {t_ref:8.1f} s  ({args.epochs / t_ref:.2f} epochs/s)  best val Score {theirs['best_score']:.4f}")
    ratio = t_ref / t_ours
    diff = abs(ours_score - theirs["best_score"])
    print(f"speed-up {ratio:.1f}x (target >= 20x); |Score difference| {diff:.4f} (target <= 0.01)")
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "bench_trainer.json").write_text(json.dumps({
        "epochs": args.epochs, "fold": args.fold, "threads": args.threads, "ours_s": t_ours, "reference_s": t_ref,
        "speedup": ratio, "ours_score": ours_score, "reference_score": theirs["best_score"]}, indent=2))


if __name__ == "__main__":
    main()
