"""Fold training: the fold trainer vs the reference-style loop, and each seed preset's speed (docs/ARCHITECTURE.md section 5, issue 4).

1. One fold of the organisers' baseline (ImageBind + WavLM aggregated statistics, MLP-512, KL, thresholds refit
   every epoch) on the ``full`` profile (real dims), run by :func:`blemore_core.train.fit_fold` (device tensors,
   vectorised threshold grid; fp32 and bf16) and by the reference loop: a torch ``DataLoader`` over a per-sample
   ``Dataset`` and the per-clip threshold grid of the organisers each epoch. Same initial weights, batches and
   dropout draws, so the best validation Score agrees (target: within 0.01). On a CPU both loops spend most of an
   epoch in the same MLP matrix products, so the CPU target is the per-epoch cost *outside* that shared arithmetic
   (batch assembly, validation forward, threshold fit; target >= 20x); end to end >= 20x is a GPU target
   (``python -m benchmarks --only gpu``).
2. Each seed preset (spaces/presets/) on ``full``: seconds per epoch (median over epochs 2.., the first is
   allocator warm-up), epochs/s, and the full-fold wall time projected to the preset's ``max_epochs``.

    python -m benchmarks --only trainer
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ._common import ROOT, Result, release

PRESETS = ("baseline", "attention_mixed", "rank_aware")
FIVE_ENCODERS = ["hicmae", "hubert", "imagebind", "videomae", "wavlm"]


class PerSampleDataset(torch.utils.data.Dataset):
    """One (inputs dict, label) item per clip, as a typical research training script holds them."""

    def __init__(self, feats: dict[str, np.ndarray], labels: np.ndarray, rows: np.ndarray):
        self.items = [({e: torch.tensor(x[i]) for e, x in feats.items()}, torch.tensor(labels[i])) for i in rows]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class PermutationSampler(torch.utils.data.Sampler):
    """Yields ``torch.randperm(n, generator=gen)`` each epoch: the same order fit_fold draws."""

    def __init__(self, n: int, gen: torch.Generator):
        self.n, self.gen = n, gen

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.gen).tolist())


def reference_fold(cfg, data, fold: int, ref, device: str = "cpu") -> dict:
    """The reference-style loop on one fold: returns best Score, wall seconds and its per-epoch overhead."""
    from blemore_core.data import fold_indices
    from blemore_core.fold_inputs import _moments
    from blemore_core.losses import compute_loss
    from blemore_core.models import build_model
    from blemore_core.train import fold_seeds

    t_start = time.perf_counter()
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    train_idx, val_idx = fold_indices(np.asarray(data.folds), fold)
    feats = {}
    for e in data.encoders:
        # fit_fold's standardisation to the last bit: with Adam, 1e-7 input differences drift the runs apart
        x = np.asarray(data.release.aggregated_features(e), dtype=np.float32)
        mean, std = _moments(x[train_idx])
        feats[e] = (x - mean) / std
    labels = np.asarray(data.labels, dtype=np.float32)
    torch_seed, batch_seed = fold_seeds(cfg.seed, fold)
    torch.manual_seed(torch_seed)
    gen = torch.Generator()
    gen.manual_seed(batch_seed)
    model = build_model(cfg, data.input_dims).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.max_epochs, eta_min=cfg.train.lr_min)
    train_loader = torch.utils.data.DataLoader(
        PerSampleDataset(feats, labels, train_idx), batch_size=cfg.train.batch_size,
        sampler=PermutationSampler(len(train_idx), gen), generator=torch.Generator().manual_seed(0))
    # own generators: a DataLoader without one draws its base seed from the global RNG on every iter(), which
    # would shift the reference's dropout masks away from fit_fold's after the first validation pass
    val_loader = torch.utils.data.DataLoader(PerSampleDataset(feats, labels, val_idx), batch_size=64,
                                             shuffle=False, generator=torch.Generator().manual_seed(0))
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
            x, y = {e: v.to(dev) for e, v in x.items()}, y.to(dev)
            sync()
            t_loader += time.perf_counter() - t0
            loss, _ = compute_loss(model(x, None), y, cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        sync()
        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            probs = torch.cat([model({e: v.to(dev) for e, v in x.items()}, None).probs.cpu()
                               for x, _ in val_loader]).numpy()
        fit = ref.ref_grid_search(probs, labels[val_idx])
        t_thr += time.perf_counter() - t0
        best = max(best, 0.5 * fit["acc_presence"] + 0.5 * fit["acc_salience"])
    n = cfg.train.max_epochs
    return {"best_score": best, "seconds": time.perf_counter() - t_start,
            "overhead_s_per_epoch": (t_loader + t_thr) / n, "loader_s_per_epoch": t_loader / n,
            "eval_thresholds_s_per_epoch": t_thr / n}


def our_overhead(cfg, data, fold: int, repeats: int) -> list[float]:
    """Per-epoch cost of fit_fold outside the model arithmetic (batch gathers + validation forward + threshold
    fit), one sample per repeat."""
    from blemore_core.data import fold_indices
    from blemore_core.decoding import fit_thresholds
    from blemore_core.fold_inputs import FoldInputs, predict_probs, resolve_device
    from blemore_core.models import build_model

    train_idx, val_idx = fold_indices(np.asarray(data.folds), fold)
    device = resolve_device(cfg.train.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = FoldInputs(data, cfg, np.asarray(train_idx), device)
    model = build_model(cfg, data.input_dims).to(device)
    truth = np.asarray(data.labels, dtype=np.float32)[val_idx]
    gen = torch.Generator(device=device).manual_seed(0)
    idx = torch.as_tensor(np.asarray(train_idx), device=device)
    out = []
    for _ in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        perm = idx[torch.randperm(len(idx), generator=gen, device=device)]
        for s in range(0, len(perm), cfg.train.batch_size):
            t.inputs(perm[s : s + cfg.train.batch_size], train=True, gen=gen)
        fit_thresholds(predict_probs(model, t, np.asarray(val_idx), precision=cfg.train.precision)[0], truth)
        sync()
        out.append(time.perf_counter() - t0)
    return out[1:]  # the first is warm-up


def compare_with_reference(res: Result, root: Path, epochs: int, precisions: list[str], device: str,
                           threads: int, fold: int = 0, repeats: int = 5) -> None:
    """Part 1 (shared by the CPU and the GPU benchmark): figures and targets into ``res``."""
    from blemore_core.config import Config
    from blemore_core.train import fit_fold, prepare_data

    from .thresholds import load_reference

    torch.set_num_threads(threads)
    cfg = Config.from_yaml(ROOT / "spaces" / "presets" / "baseline.yaml").override(
        {"train.max_epochs": epochs, "train.patience": 0, "train.device": device})
    data = prepare_data(cfg, root, progress=False)
    for e in data.encoders:
        data.release.aggregated_features(e)  # both sides start from loaded, aggregated features
    n_train = int((np.asarray(data.folds) != fold).sum())
    res.inputs.update({"data": str(root), "fold": fold, "train_clips": n_train, "input_dims": data.input_dims,
                       "epochs": epochs, "threads": threads, "device": device, "precisions": precisions})
    ref = load_reference()
    theirs = reference_fold(cfg, data, fold, ref, device)
    res.figure("reference/wall_s", theirs["seconds"], "s", note=f"{epochs} epochs, one fold")
    res.figure("reference/overhead_s_per_epoch", theirs["overhead_s_per_epoch"], "s",
               note="DataLoader batches + validation forward + per-clip threshold grid")
    res.figure("reference/best_score", theirs["best_score"], "Score")
    for prec in precisions:
        c = cfg.override({"train.precision": prec})
        t0 = time.perf_counter()
        r = fit_fold(c, data, fold)
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        score = max(h["val_score"] for h in r.history)
        over = our_overhead(c, data, fold, repeats)
        res.figure(f"ours_{prec}/wall_s", wall, "s", note=f"{epochs} epochs, one fold")
        res.figure(f"ours_{prec}/epochs_per_s", epochs / wall, "epochs/s")
        res.figure(f"ours_{prec}/overhead_s_per_epoch", over, "s")
        res.figure(f"ours_{prec}/best_score", score, "Score")
        ratio_e2e = theirs["seconds"] / wall
        ratio_over = theirs["overhead_s_per_epoch"] / float(np.median(over))
        res.figure(f"ours_{prec}/speedup_end_to_end", ratio_e2e, "x")
        res.figure(f"ours_{prec}/speedup_outside_arithmetic", ratio_over, "x")
        res.target(f"score_within_0.01/{prec}", abs(score - theirs["best_score"]), "<=", 0.01,
                   "|best val Score ours - reference loop|, same fold, same seeds")
        if device == "cuda":
            res.target(f"speedup_end_to_end_gpu/{prec}", ratio_e2e, ">=", 20.0,
                       "reference-style loop on the same GPU, same run")
        else:
            res.target(f"speedup_outside_arithmetic_cpu/{prec}", ratio_over, ">=", 20.0,
                       "per-epoch cost outside the shared MLP arithmetic, reference-style loop, same run")


def preset_speeds(res: Result, root: Path, epochs: int, threads: int, presets=PRESETS, precision: str = "fp32",
                  device: str = "cpu") -> None:
    """Part 2: seconds per epoch of each seed preset, one fold, and the projected full-fold wall time."""
    from blemore_core.config import Config
    from blemore_core.train import FoldTrainer, prepare_data

    torch.set_num_threads(threads)
    for name in presets:
        cfg = Config.from_yaml(ROOT / "spaces" / "presets" / f"{name}.yaml")
        over = {"train.max_epochs": epochs, "train.patience": 0, "train.device": device, "train.precision": precision}
        if cfg.model.fusion == "mixed":  # time the combine stage too: half the epochs in each stage (one override:
            over["model.mixed_pretrain_epochs"] = max(1, epochs // 2)  # the preset's 15 is >= the reduced epochs)
        c = cfg.override(over)
        t0 = time.perf_counter()
        data = prepare_data(c, root, progress=False)
        t_data = time.perf_counter() - t0
        tr = FoldTrainer(c, data, 0)
        all_secs = []
        for _ in range(epochs):  # one epoch = the training pass + the validation forward (what a trial runs)
            t0 = time.perf_counter()
            tr.train_epoch()
            tr.evaluate()
            all_secs.append(time.perf_counter() - t0)
        secs = all_secs[1:] or all_secs
        med = float(np.median(secs))
        res.figure(f"preset/{name}/seconds_per_epoch", secs, "s", note=f"fold 0, epochs 2..{epochs}, {precision}")
        res.figure(f"preset/{name}/epochs_per_s", 1.0 / med, "epochs/s")
        res.figure(f"preset/{name}/data_load_s", t_data, "s", note="prepare_data (warm cache)")
        proj = all_secs[0] + (cfg.train.max_epochs - 1) * med
        res.figure(f"preset/{name}/full_fold_wall_s_projected", proj, "s",
                   note=f"first epoch + {cfg.train.max_epochs - 1} x median epoch (max_epochs of the preset, "
                        "no early stop)")


def run(quick: bool, out: Path) -> Result:
    res = Result("trainer", quick)
    if quick:
        root = release("demo")
        compare_with_reference(res, root, epochs=3, precisions=["fp32"], device="cpu", threads=2, repeats=2)
        preset_speeds(res, root, epochs=2, threads=2, presets=("baseline",))
        res.inputs["profile"] = "demo"
    else:
        root = release("full", FIVE_ENCODERS)
        compare_with_reference(res, root, epochs=15, precisions=["fp32", "bf16"], device="cpu", threads=2)
        preset_speeds(res, root, epochs=3, threads=2)
        res.inputs["profile"] = "full"
    res.target("speedup_end_to_end_gpu", None, ">=", 20.0, "reference-style loop on the same GPU",
               not_measured="no GPU in this run (python -m benchmarks --only gpu on a CUDA machine)")
    return res
