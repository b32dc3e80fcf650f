"""The fold trainer: ``fit_fold`` trains one actor-disjoint fold, ``cross_validate`` runs all five in one process.

DESIGN.md section 5. AdamW with a cosine decay of the learning rate from ``train.lr`` to ``train.lr_min`` over
``train.max_epochs``, mini-batches of ``train.batch_size`` drawn from tensors that live on the device (no
DataLoader, no per-sample Python), early stopping on the validation Score with thresholds refitted every epoch
(``val`` protocol: alpha/beta fitted on the validation fold itself, which is cheap because
:func:`blemore_core.decoding.fit_thresholds` is vectorised) and ``train.patience``.

At the end of a fold, the best epoch's weights are restored and the three threshold protocols of DESIGN 3 are
prepared: ``val`` (fit on the validation fold), ``train`` (fit on the model's predictions for its own training
folds) and ``crossfit`` (fold k's thresholds fitted on the out-of-fold predictions of the other folds; computed by
:func:`finalize_protocols` once all folds are done, since it needs them all).

Reproducibility: the same config, seed and device give the same metrics (all randomness flows from
``torch.manual_seed(seed, fold)`` and one seeded ``torch.Generator``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blemore_core.config import Config
from blemore_core.data import ReleaseData, fold_indices, load_release, standardise_length
from blemore_core.decoding import crossfit_thresholds, fit_and_evaluate, fit_thresholds
from blemore_core.losses import compute_loss
from blemore_core.models import build_model

PROTOCOL_KEYS: tuple[str, ...] = ("val", "train", "crossfit")
METRIC_KEYS: tuple[str, ...] = ("acc_presence", "acc_salience", "score", "alpha", "beta")
_EVAL_CHUNK = 1024


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (the fold, epoch and loss parts are in the message)."""


# ---------------------------------------------------------------------------------------------------------------
# data


@dataclass
class TrainData:
    """Everything a fold needs, loaded once and shared by all folds (and, in a search, by all trials on a node).

    Attributes:
        release: the training split (features memory-mapped from the Arrow cache; labels (N, 6) float32).
        target: the test split's features when ``data.domain_target == "test"`` (unlabeled), else ``None``.
        encoders: encoder keys in model input order.
        features: ``"sequence"`` or ``"aggregated"``.
        input_dims: encoder -> D (sequence) or 7*D (aggregated).
    """

    release: ReleaseData
    target: ReleaseData | None
    encoders: tuple[str, ...]
    features: str
    input_dims: dict[str, int]

    @property
    def labels(self) -> np.ndarray:
        """Soft labels (N, 6) float32 of the training clips."""
        return self.release.labels

    @property
    def folds(self) -> np.ndarray:
        """Fold of each training clip, int64 (N,), values 0..4."""
        return self.release.folds

    @property
    def filenames(self) -> list[str]:
        """Training clip names (N,), without extension."""
        return self.release.filenames


def prepare_data(cfg: Config, root: str | Path, cache_dir: str | Path | None = None, progress: bool = True) -> TrainData:
    """Load (and on first use, cache) the features ``cfg.data`` asks for from a BlEmoRe release at ``root``.

    Raises:
        FileNotFoundError / ValueError: from :func:`blemore_core.data.load_release`, naming the file and field.
    """
    enc = tuple(cfg.data.encoders)
    release = load_release(root, enc, split="train", cache_dir=cache_dir, progress=progress)
    target = None
    if cfg.loss.domain > 0 and cfg.data.domain_target == "test":
        target = load_release(root, enc, split="test", cache_dir=cache_dir, progress=progress)
    if cfg.data.features == "aggregated":
        dims = {e: int(release.aggregated_features(e).shape[1]) for e in enc}
    else:
        missing = [e for e in enc if e not in release.sequences]
        if missing:
            raise ValueError(
                f"{root}: data.features is 'sequence' but encoders {missing} have no per-clip sequences "
                "(only aggregated .npz files); use data.features: aggregated"
            )
        dims = {e: int(release.sequences[e].dim) for e in enc}
    return TrainData(release, target, enc, cfg.data.features, dims)


class _FoldTensors:
    """The inputs of one fold as device tensors, z-scored with statistics of the training clips only.

    Sequence inputs keep all frames (total_T, D) plus offsets and are standardised to L frames per batch with
    :func:`blemore_core.data.standardise_length` (random frame per segment in training, segment centre in
    evaluation); evaluation inputs are materialised once. Aggregated inputs are (N, 7*D) tensors.
    """

    def __init__(self, data: TrainData, cfg: Config, train_idx: np.ndarray, device: torch.device):
        self.device = device
        self.features = data.features
        self.L = cfg.model.seq_len
        self.encoders = data.encoders
        self.frames: dict[str, torch.Tensor] = {}
        self.offsets: dict[str, torch.Tensor] = {}
        self.agg: dict[str, torch.Tensor] = {}
        self.target_frames: dict[str, torch.Tensor] = {}
        self.target_offsets: dict[str, torch.Tensor] = {}
        self.target_agg: dict[str, torch.Tensor] = {}
        standardise = cfg.data.standardise
        for e in data.encoders:
            if data.features == "aggregated":
                x = np.asarray(data.release.aggregated_features(e), dtype=np.float32)
                mean, std = _moments(x[train_idx]) if standardise else (0.0, 1.0)
                self.agg[e] = torch.from_numpy((x - mean) / std).to(device)
                if data.target is not None:
                    xt = np.asarray(data.target.aggregated_features(e), dtype=np.float32)
                    self.target_agg[e] = torch.from_numpy((xt - mean) / std).to(device)
            else:
                seq = data.release.sequences[e]
                offsets = np.asarray(seq.offsets, dtype=np.int64)
                frames = np.asarray(seq.frames)
                if standardise:
                    sel = _frame_rows(offsets, train_idx)
                    mean, std = _moments(frames[sel])
                    frames = (frames - mean) / std
                else:
                    frames = np.array(frames, dtype=np.float32)  # a writable copy of the memory map
                self.frames[e] = torch.as_tensor(np.ascontiguousarray(frames, dtype=np.float32)).to(device)
                self.offsets[e] = torch.from_numpy(offsets.copy()).to(device)
                if data.target is not None:
                    tseq = data.target.sequences[e]
                    tf = np.array(tseq.frames, dtype=np.float32)
                    if standardise:
                        tf = (tf - mean) / std
                    self.target_frames[e] = torch.as_tensor(np.ascontiguousarray(tf, dtype=np.float32)).to(device)
                    self.target_offsets[e] = torch.from_numpy(np.array(tseq.offsets, dtype=np.int64)).to(device)

    def inputs(self, idx: torch.Tensor, train: bool, gen: torch.Generator | None, target: bool = False):
        """Model inputs for clips ``idx`` (B,): ({e: (B, L, D) or (B, 7*D)}, {e: (B, L) bool} or None)."""
        if self.features == "aggregated":
            src = self.target_agg if target else self.agg
            return {e: src[e][idx] for e in self.encoders}, None
        frames = self.target_frames if target else self.frames
        offsets = self.target_offsets if target else self.offsets
        xs, ms = {}, {}
        for e in self.encoders:
            xs[e], ms[e] = standardise_length(frames[e], offsets[e], idx, self.L, train=train, generator=gen)
        return xs, ms

    @property
    def n_target(self) -> int:
        """Number of clips in the test-split target set (0 when absent)."""
        src = self.target_agg or self.target_offsets
        if not src:
            return 0
        v = next(iter(src.values()))
        return int(v.shape[0]) if self.features == "aggregated" else int(v.shape[0] - 1)


def _moments(x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and population std (floored at 1e-6) of x (n, D), accumulated in float64 chunks."""
    n = len(x)
    s = np.zeros(x.shape[1], np.float64)
    for i in range(0, n, chunk):
        s += x[i : i + chunk].sum(axis=0, dtype=np.float64)
    mean = s / max(n, 1)
    ss = np.zeros_like(s)
    for i in range(0, n, chunk):
        d = x[i : i + chunk].astype(np.float64) - mean
        ss += np.einsum("ij,ij->j", d, d)
    std = np.maximum(np.sqrt(ss / max(n, 1)), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def _frame_rows(offsets: np.ndarray, clips: np.ndarray) -> np.ndarray:
    """Row indices into the (total_T, D) frame array of all frames of ``clips`` (vectorised)."""
    starts, ends = offsets[clips], offsets[clips + 1]
    lengths = ends - starts
    rep = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(lengths.sum()) + rep


# ---------------------------------------------------------------------------------------------------------------
# results


@dataclass
class EpochRecord:
    """What ``on_epoch`` receives after every epoch of a fold (metrics on the validation fold, ``val`` protocol)."""

    fold: int
    epoch: int
    train_loss: float
    val_score: float
    acc_presence: float
    acc_salience: float
    alpha: float
    beta: float
    lr: float
    best_score: float
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of the record (``parts`` flattened as ``loss_<name>``)."""
        d = {k: v for k, v in self.__dict__.items() if k != "parts"}
        d.update({f"loss_{k}": v for k, v in self.parts.items()})
        return d


@dataclass
class FoldResult:
    """The outcome of :func:`fit_fold` for one fold.

    Attributes:
        fold: fold index 0..4.
        val_idx: int64 (N_k,) rows of the training release that form the validation fold.
        filenames: the N_k validation clip names.
        oof_probs: float32 (N_k, 6) out-of-fold probabilities of the best epoch.
        best_epoch: 1-based epoch whose weights were kept.
        epochs_run: epochs actually trained.
        stopped: True when stopped before ``max_epochs`` (early stopping, or ``on_epoch`` asked to stop).
        thresholds: ``{"val": {...}, "train": {...}}``, each with alpha, beta, acc_presence, acc_salience, score
            on the validation fold.
        history: one dict per epoch (see :class:`EpochRecord`).
        state_dict: the best weights (CPU tensors).
        importances: mean rank-aware importance per encoder on the validation fold, or None.
        config: the resolved config.
    """

    fold: int
    val_idx: np.ndarray
    filenames: list[str]
    oof_probs: np.ndarray
    best_epoch: int
    epochs_run: int
    stopped: bool
    thresholds: dict[str, dict[str, float]]
    history: list[dict[str, Any]]
    state_dict: dict[str, torch.Tensor]
    importances: dict[str, float] | None
    config: Config


@dataclass
class CVResult:
    """The outcome of :func:`cross_validate`: the fold results, the assembled OOF probabilities and the metrics.

    Attributes:
        folds: one :class:`FoldResult` per fold run.
        oof_probs: float32 (N, 6) over all training clips (NaN rows for folds not run).
        metrics: see :func:`finalize_protocols`.
    """

    folds: list[FoldResult]
    oof_probs: np.ndarray
    metrics: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------------
# training


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"`` without a GPU raises ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the model's parameters with ``train.lr`` and ``train.weight_decay`` (DESIGN.md section 5).

    Uses PyTorch's fused AdamW kernel where it exists (CPU and CUDA floating-point parameters: one kernel for the
    whole update instead of several multi-tensor passes) and the default kernel otherwise.
    """
    fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in model.parameters())
    kwargs = {"lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay}
    if fused:
        try:
            return torch.optim.AdamW(model.parameters(), fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a build or device without the fused kernel
            pass
    return torch.optim.AdamW(model.parameters(), **kwargs)


def forward(model: torch.nn.Module, x, m, precision: str, device: torch.device):
    """``model(x, m)`` at ``train.precision``; the returned ModelOutput's tensors are always float32.

    ``"bf16"`` runs the forward under ``torch.autocast(device.type, dtype=torch.bfloat16)``; ``"fp32"`` runs it as is.
    """
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(x, m)
        return out.float()
    return model(x, m)


@torch.no_grad()
def _predict(model, tensors: _FoldTensors, idx: np.ndarray, target: bool = False, precision: str = "fp32"):
    """Eval-mode probabilities float32 (n, 6) and importances (n, E) or None for clips ``idx``."""
    model.eval()
    probs, imps = [], []
    idx_t = torch.as_tensor(idx, dtype=torch.long, device=tensors.device)
    for s in range(0, len(idx_t), _EVAL_CHUNK):
        x, m = tensors.inputs(idx_t[s : s + _EVAL_CHUNK], train=False, gen=None, target=target)
        out = forward(model, x, m, precision, tensors.device)
        probs.append(out.probs.cpu())  # float32: forward() returns float32 at every precision
        if out.importances is not None:
            imps.append(out.importances.cpu())
    p = torch.cat(probs).numpy() if probs else np.zeros((0, 6), np.float32)
    return p.astype(np.float32), (torch.cat(imps).numpy() if imps else None)


def fit_fold(
    cfg: Config,
    data: TrainData,
    fold: int,
    on_epoch: Callable[[EpochRecord], bool | None] | None = None,
    progress: Any = None,
) -> FoldResult:
    """Train and evaluate one fold: fold ``fold`` is validation, the others are training (DESIGN 5).

    Args:
        cfg: resolved configuration.
        data: from :func:`prepare_data`.
        fold: validation fold index (a value of ``data.folds``).
        on_epoch: called after each epoch with an :class:`EpochRecord`; returning True stops training now (used by
            the search to let ASHA stop all folds of a trial). Exceptions propagate.
        progress: optional tqdm-like bar with ``update()`` and ``set_postfix()``, advanced once per epoch.

    Returns:
        FoldResult with OOF probabilities (N_k, 6), thresholds for the ``val`` and ``train`` protocols and history.

    Raises:
        ValueError: unknown fold, an empty training or validation set, CUDA requested without a GPU.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    folds = np.asarray(data.folds)
    if fold not in set(folds.tolist()):
        raise ValueError(f"fold {fold} does not exist in the release (folds: {sorted(set(folds.tolist()))})")
    train_idx, val_idx = fold_indices(folds, fold)
    train_idx, val_idx = np.asarray(train_idx, dtype=np.int64), np.asarray(val_idx, dtype=np.int64)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"fold {fold}: empty training ({len(train_idx)}) or validation ({len(val_idx)}) set")
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.seed * 1009 + fold)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed * 7919 + fold)

    t = _FoldTensors(data, cfg, train_idx, device)
    labels = torch.as_tensor(np.asarray(data.labels, dtype=np.float32), device=device)
    val_truth = np.asarray(data.labels, dtype=np.float32)[val_idx]
    train_idx_t = torch.as_tensor(train_idx, device=device)
    use_domain = cfg.loss.domain > 0
    if use_domain:
        if cfg.data.domain_target == "val":
            target_pool = torch.as_tensor(val_idx, device=device)
        else:
            target_pool = torch.arange(t.n_target, device=device)

    model = build_model(cfg, data.input_dims).to(device)
    is_mixed = cfg.model.arch == "fusion" and cfg.model.fusion == "mixed"
    if is_mixed:
        model.set_stage("pretrain")
    opt = make_optimizer(model, cfg, device)
    prec = cfg.train.precision
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.max_epochs, eta_min=cfg.train.lr_min)
    bs = cfg.train.batch_size
    pw = cfg.thresholds.presence_weight

    best_score, best_epoch, best_state, since_best = -math.inf, 0, None, 0
    history: list[dict[str, Any]] = []
    stopped = False
    epoch = 0
    for epoch in range(1, cfg.train.max_epochs + 1):
        t0 = time.perf_counter()
        if is_mixed and epoch == cfg.model.mixed_pretrain_epochs + 1:
            # seed 002: branches frozen, the combining attention trains; the kept model is a combined one
            model.set_stage("combine")
            best_score, since_best = -math.inf, 0
        model.train()
        perm = train_idx_t[torch.randperm(len(train_idx_t), generator=gen, device=device)]
        total, n_seen, parts_sum = 0.0, 0, {}
        for s in range(0, len(perm), bs):
            idx = perm[s : s + bs]
            x, m = t.inputs(idx, train=True, gen=gen)
            out = forward(model, x, m, prec, device)
            target_emb = None
            if use_domain:
                tidx = target_pool[torch.randint(len(target_pool), (min(bs, len(target_pool)),), generator=gen,
                                                 device=device)]
                xt, mt = t.inputs(tidx, train=True, gen=gen, target=cfg.data.domain_target == "test")
                target_emb = forward(model, xt, mt, prec, device).embedding
            loss, parts = compute_loss(out, labels[idx], cfg.loss, target_embedding=target_emb)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"fold {fold}, epoch {epoch}: non-finite loss {loss.item()} (parts {parts})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            n_seen += len(idx)
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + float(v) * len(idx)
        lr_now = opt.param_groups[0]["lr"]
        sched.step()

        probs, _ = _predict(model, t, val_idx, precision=prec)
        fit = fit_thresholds(probs, val_truth, presence_weight=pw)
        improved = fit.score > best_score + 1e-12
        if improved:
            best_score, best_epoch, since_best = fit.score, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            since_best += 1
        rec = EpochRecord(
            fold=fold, epoch=epoch, train_loss=total / max(n_seen, 1), val_score=float(fit.score),
            acc_presence=float(fit.acc_presence), acc_salience=float(fit.acc_salience), alpha=float(fit.alpha),
            beta=float(fit.beta), lr=float(lr_now), best_score=float(best_score), seconds=time.perf_counter() - t0,
            parts={k: v / max(n_seen, 1) for k, v in parts_sum.items()},
        )
        history.append(rec.as_dict())
        if progress is not None:
            progress.update(1)
            progress.set_postfix(fold=fold, score=f"{fit.score:.3f}", best=f"{best_score:.3f}", refresh=False)
        if on_epoch is not None and on_epoch(rec):
            stopped = True
            break
        if cfg.train.patience > 0 and since_best >= cfg.train.patience:
            stopped = epoch < cfg.train.max_epochs
            break

    model.load_state_dict(best_state)
    oof, imps = _predict(model, t, val_idx, precision=prec)
    val_fit = fit_thresholds(oof, val_truth, presence_weight=pw)
    train_probs, _ = _predict(model, t, train_idx, precision=prec)
    train_truth = np.asarray(data.labels, dtype=np.float32)[train_idx]
    thresholds = {
        "val": {"alpha": float(val_fit.alpha), "beta": float(val_fit.beta),
                "acc_presence": float(val_fit.acc_presence), "acc_salience": float(val_fit.acc_salience),
                "score": float(val_fit.score)},
        "train": {k: float(v) for k, v in fit_and_evaluate(train_probs, train_truth, oof, val_truth, pw).items()},
    }
    importances = None
    if imps is not None:
        importances = {e: float(v) for e, v in zip(data.encoders, imps.mean(axis=0))}
    return FoldResult(
        fold=fold, val_idx=val_idx, filenames=[data.filenames[i] for i in val_idx], oof_probs=oof,
        best_epoch=best_epoch, epochs_run=epoch, stopped=stopped, thresholds=thresholds, history=history,
        state_dict=best_state, importances=importances, config=cfg,
    )


def finalize_protocols(results: Sequence[FoldResult], data: TrainData, cfg: Config) -> dict[str, Any]:
    """Gather per-fold metrics of all three threshold protocols, with fold mean and std.

    ``crossfit`` fits fold k's alpha/beta on the OOF probabilities of the *other* folds in ``results`` and scores
    fold k with them (DESIGN 3); it needs at least two folds and is omitted otherwise.

    Returns:
        ``{"headline": protocol, "folds": [k...], "<protocol>": {"per_fold": [{alpha, beta, acc_presence,
        acc_salience, score}, ...], "mean": {...}, "std": {...}}}``; std is the population std over folds.
    """
    results = sorted(results, key=lambda r: r.fold)
    out: dict[str, Any] = {"headline": cfg.thresholds.protocol, "folds": [r.fold for r in results]}
    per: dict[str, list[dict[str, float]]] = {
        "val": [r.thresholds["val"] for r in results],
        "train": [r.thresholds["train"] for r in results],
    }
    if len(results) >= 2:
        idx = np.concatenate([r.val_idx for r in results])
        probs = np.concatenate([r.oof_probs for r in results])
        truth = np.asarray(data.labels, dtype=np.float32)[idx]
        fold_of = np.asarray(data.folds)[idx]
        cf = crossfit_thresholds(probs, truth, fold_of, presence_weight=cfg.thresholds.presence_weight)
        per["crossfit"] = [{k: float(v) for k, v in cf[r.fold].items()} for r in results]
    for proto, rows in per.items():
        keys = list(rows[0].keys())
        arr = {k: np.array([row[k] for row in rows], dtype=np.float64) for k in keys}
        out[proto] = {
            "per_fold": rows,
            "mean": {k: float(a.mean()) for k, a in arr.items()},
            "std": {k: float(a.std()) for k, a in arr.items()},
        }
    return out


def assemble_oof(results: Sequence[FoldResult], n: int) -> np.ndarray:
    """OOF probabilities float32 (n, 6) from fold results; rows of folds not run are NaN."""
    oof = np.full((n, 6), np.nan, dtype=np.float32)
    for r in results:
        oof[r.val_idx] = r.oof_probs
    return oof


def cross_validate(
    cfg: Config, data: TrainData, folds: Sequence[int] | None = None, progress: bool = True
) -> CVResult:
    """Run :func:`fit_fold` for each fold in one process and compute all threshold protocols.

    Args:
        folds: which folds to run (default: every fold present in the release, ascending).
        progress: show a tqdm bar over all epochs of all folds.
    """
    all_folds = sorted(set(np.asarray(data.folds).tolist()))
    folds = list(all_folds if folds is None else folds)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(folds) * cfg.train.max_epochs, desc="cross-validate", unit="epoch", leave=True)
    results = []
    try:
        for k in folds:
            res = fit_fold(cfg, data, k, progress=bar)
            if bar is not None:  # early stopping skips the rest of this fold's epochs
                bar.update(cfg.train.max_epochs - res.epochs_run)
            results.append(res)
    finally:
        if bar is not None:
            bar.close()
    return CVResult(results, assemble_oof(results, len(data.filenames)), finalize_protocols(results, data, cfg))
