"""Benchmark: the fold trainer against a reference-style training loop (issue 4).

One fold of the organisers' baseline config (ImageBind + WavLM aggregated statistics, MLP-512, KL, thresholds
refitted every epoch) on the ``full`` synthetic profile (real dims), run twice in the same process:

* ours: :func:`blemore_core.train.fit_fold` (device tensors, vectorised threshold grid);
* reference: the organisers' style of loop: a torch ``DataLoader`` over a per-sample ``Dataset`` (default
  collate), and each epoch's thresholds refitted by the per-clip Python grid search (the port of blemore-common's
  ``grid_search_thresholds`` used by the decoding tests).

Ours runs at each ``--precisions`` value (fp32 by default in the library; bf16 autocast as the opt-in). The script
also prints the per-epoch cost outside the model arithmetic (batch assembly, validation forward and threshold fit),
the part a faster trainer can remove: on a CPU both loops spend most of an epoch in the same MLP-512 matrix
products (about 64 GFLOP per epoch on the full profile: forward and weight gradient of the 14,336 x 512 layer over
1,934 training clips, forward over 522 validation clips), which bounds the end-to-end ratio. ``--device cuda`` runs
both on a GPU (the reference moves each collated batch to the device, as such scripts do, and takes the
validation probabilities back to the CPU for its per-clip grid).

Both start from the same initial weights, see the same batches in the same order (same permutation generator)
and the same dropout draws, so their Scores agree closely (ours uses PyTorch's fused AdamW kernel, the reference
the default one: their rounding differs, and over 200 epochs that moves the best Score by up to about 0.01); the
script prints both wall times, the speed-up (target >= 20x) and both Scores (target: within 0.01).

Usage: python benchmarks/bench_trainer.py [--data DIR] [--epochs 200] [--fold 0] [--threads 2] [--precisions fp32,bf16]
                                          [--device cpu|cuda]
Without --data, the full profile (imagebind + wavlm only) is generated once under ~/.cache/blemore/synthetic.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from blemore_core.config import Config
from blemore_core.data import fold_indices
from blemore_core.losses import compute_loss
from blemore_core.models import build_model
from blemore_core.train import _moments, fit_fold, prepare_data

ROOT = Path(__file__).resolve().parents[1]


def _sibling(name: str):
    """Another script of benchmarks/ as a module (they are scripts, not a package)."""
    import importlib
    import sys

    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module(name)


def _reference_module():
    """The per-clip reference grid search, loaded the same way bench_thresholds.py loads it."""
    return _sibling("bench_thresholds")._load_reference()


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


def reference_fold(cfg: Config, data, fold: int, ref, device: str = "cpu") -> dict:
    device = torch.device(device)
    train_idx, val_idx = fold_indices(np.asarray(data.folds), fold)
    feats = {}
    for e in data.encoders:
        # the same standardisation as fit_fold, to the last bit: with Adam, even 1e-7 input differences flip the
        # sign of near-zero gradient components, and two runs then drift apart by a few hundredths of Score
        x = np.asarray(data.release.aggregated_features(e), dtype=np.float32)
        mean, std = _moments(x[train_idx])
        feats[e] = (x - mean) / std
    labels = np.asarray(data.labels, dtype=np.float32)
    torch.manual_seed(cfg.seed * 1009 + fold)
    gen = torch.Generator()
    gen.manual_seed(cfg.seed * 7919 + fold)
    model = build_model(cfg, data.input_dims).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.max_epochs, eta_min=cfg.train.lr_min)
    train_loader = torch.utils.data.DataLoader(
        PerSampleDataset(feats, labels, train_idx), batch_size=cfg.train.batch_size,
        sampler=PermutationSampler(len(train_idx), gen), generator=torch.Generator().manual_seed(0))
    # own generators: a DataLoader without one draws its base seed from the global RNG on every iter(), which would
    # shift the reference's dropout masks away from fit_fold's after the first validation pass
    val_loader = torch.utils.data.DataLoader(PerSampleDataset(feats, labels, val_idx), batch_size=64, shuffle=False,
                                             generator=torch.Generator().manual_seed(0))
    best = -math.inf
    t_loader = t_thr = 0.0
    for _ in range(cfg.train.max_epochs):
        model.train()
        it = iter(train_loader)
        while True:
            t0 = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                t_loader += time.perf_counter() - t0
                break
            x, y = {e: v.to(device) for e, v in x.items()}, y.to(device)
            t_loader += time.perf_counter() - t0
            loss, _ = compute_loss(model(x, None), y, cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            probs = torch.cat([model({e: v.to(device) for e, v in x.items()}, None).probs.cpu()
                               for x, _ in val_loader]).numpy()
        fit = ref.ref_grid_search(probs, labels[val_idx])
        t_thr += time.perf_counter() - t0
        best = max(best, 0.5 * fit["acc_presence"] + 0.5 * fit["acc_salience"])
    n = cfg.train.max_epochs
    return {"best_score": best, "overhead_s_per_epoch": (t_loader + t_thr) / n, "loader_s_per_epoch": t_loader / n,
            "eval_thresholds_s_per_epoch": t_thr / n}


def our_overhead(cfg: Config, data, fold: int, repeats: int = 20) -> dict:
    """Per-epoch cost of fit_fold outside the model arithmetic: batch gathers, validation forward + threshold fit."""
    from blemore_core.decoding import fit_thresholds
    from blemore_core.train import _FoldTensors, _predict

    train_idx, val_idx = fold_indices(np.asarray(data.folds), fold)
    device = torch.device(cfg.train.device if cfg.train.device != "auto" else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = _FoldTensors(data, cfg, np.asarray(train_idx), device)
    model = build_model(cfg, data.input_dims).to(device)
    truth = np.asarray(data.labels, dtype=np.float32)[val_idx]
    gen = torch.Generator(device=device).manual_seed(0)
    idx = torch.as_tensor(np.asarray(train_idx), device=device)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        perm = idx[torch.randperm(len(idx), generator=gen, device=device)]
        for s in range(0, len(perm), cfg.train.batch_size):
            t.inputs(perm[s : s + cfg.train.batch_size], train=True, gen=gen)
    sync()
    t_gather = (time.perf_counter() - t0) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        fit_thresholds(_predict(model, t, np.asarray(val_idx), precision=cfg.train.precision)[0], truth)
    t_thr = (time.perf_counter() - t0) / repeats
    return {"overhead_s_per_epoch": t_gather + t_thr, "loader_s_per_epoch": t_gather, "eval_thresholds_s_per_epoch": t_thr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,bf16", help="train.precision values to run ours at")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both loops train")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = args.data or _sibling("bench_presets").full_release(["imagebind", "wavlm"])
    cfg = Config.from_yaml(ROOT / "spaces" / "presets" / "baseline.yaml").override(
        {"train.max_epochs": args.epochs, "train.patience": 0, "train.device": args.device})
    data = prepare_data(cfg, root, progress=False)
    for e in data.encoders:
        data.release.aggregated_features(e)  # both sides start from loaded, aggregated features
    n_train = int((np.asarray(data.folds) != args.fold).sum())
    print(f"fold {args.fold}: {n_train} training clips, input dims {data.input_dims}, {args.epochs} epochs, "
          f"{args.threads} threads")

    runs = {}
    for prec in args.precisions.split(","):
        c = cfg.override({"train.precision": prec})
        t0 = time.perf_counter()
        r = fit_fold(c, data, args.fold)
        secs = time.perf_counter() - t0
        runs[prec] = {"seconds": secs, "epochs_per_s": args.epochs / secs,
                      "score": max(h["val_score"] for h in r.history), **our_overhead(c, data, args.fold)}
        print(f"ours ({prec}): {secs:8.1f} s  ({args.epochs / secs:.2f} epochs/s)  best val Score "
              f"{runs[prec]['score']:.4f}  overhead {runs[prec]['overhead_s_per_epoch'] * 1e3:.1f} ms/epoch")

    ref = _reference_module()
    t0 = time.perf_counter()
    theirs = reference_fold(cfg, data, args.fold, ref, args.device)
    t_ref = time.perf_counter() - t0
    print(f"reference:   {t_ref:8.1f} s  ({args.epochs / t_ref:.2f} epochs/s)  best val Score "
          f"{theirs['best_score']:.4f}  overhead {theirs['overhead_s_per_epoch'] * 1e3:.1f} ms/epoch "
          f"(DataLoader {theirs['loader_s_per_epoch'] * 1e3:.1f}, eval + per-clip threshold grid "
          f"{theirs['eval_thresholds_s_per_epoch'] * 1e3:.1f})")
    for prec, r in runs.items():
        r["speedup"] = t_ref / r["seconds"]
        r["overhead_speedup"] = theirs["overhead_s_per_epoch"] / r["overhead_s_per_epoch"]
        r["score_diff"] = abs(r["score"] - theirs["best_score"])
        print(f"{prec}: end-to-end speed-up {r['speedup']:.1f}x (target >= 20x); outside the model arithmetic "
              f"{r['overhead_speedup']:.0f}x; |Score difference| {r['score_diff']:.4f} (target <= 0.01)")
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "bench_trainer.json").write_text(json.dumps({
        "epochs": args.epochs, "fold": args.fold, "threads": args.threads, "cpu": _cpu_name(), "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "ours": runs,
        "reference": {"seconds": t_ref, **theirs}}, indent=2))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
