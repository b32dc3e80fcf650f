"""The fold trainer: the steps of one fold (:class:`FoldTrainer`) and ``cross_validate``, which runs the folds in
lock step in one process.

DESIGN.md section 5. AdamW with a cosine decay of the learning rate from ``train.lr`` to ``train.lr_min`` over
``train.max_epochs``, mini-batches of ``train.batch_size`` drawn from tensors that live on the device (no
DataLoader, no per-sample Python). The folds of a cross-validation train in lock step: after every epoch all
folds' validation probabilities go into one :class:`~blemore_core.selection.EpochCurves` (per-epoch OOF
probabilities, thresholds refit every epoch), which chooses each fold's epoch and thresholds per protocol
(``val``, ``crossfit``; ``train`` at the end) and decides the stop: patience on the fold-mean headline Score.
Each fold keeps CPU copies of the weights of its currently chosen epochs only.

The search's fold worker (``search/trainable.py``) runs the same steps with one fold per process, so
``cross_validate`` and a search trial give the same numbers for the same config, seed, device and torch thread
count. Reproducibility: all randomness flows from per-fold seeds (``seed * 1009 + fold`` for torch's generator,
whose state each fold keeps privately, and ``seed * 7919 + fold`` for batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blemore_core.config import PROTOCOLS as PROTOCOL_KEYS  # protocol names are defined once, in config
from blemore_core.config import Config
from blemore_core.data import ReleaseData, fold_indices, load_release, standardise_length
from blemore_core.data.temporal import as_tensor
from blemore_core.decoding import fit_and_evaluate
from blemore_core.losses import compute_loss
from blemore_core.models import build_model
from blemore_core.selection import EpochCurves

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
    evaluation), then z-scored per batch: on the CPU the frames stay the read-only memory map of the Arrow cache,
    so the fold workers of a node share one copy through the page cache instead of each holding its own z-scored
    float32 copy (DESIGN 6: features loaded once per node); on a GPU the raw frames are copied to the device once.
    Aggregated inputs are (N, 7*D) tensors, z-scored once (small).
    """

    def __init__(self, data: TrainData, cfg: Config, train_idx: np.ndarray, device: torch.device):
        self.device = device
        self.features = data.features
        self.L = cfg.model.seq_len
        self.encoders = data.encoders
        self.frames: dict[str, torch.Tensor] = {}
        self.offsets: dict[str, torch.Tensor] = {}
        self.moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per-encoder (mean, std), (D,) each
        self.agg: dict[str, torch.Tensor] = {}
        self.target_frames: dict[str, torch.Tensor] = {}
        self.target_offsets: dict[str, torch.Tensor] = {}
        self.target_agg: dict[str, torch.Tensor] = {}
        standardise = cfg.data.standardise
        for e in data.encoders:
            if data.features == "aggregated":
                x = np.asarray(data.release.aggregated_features(e), dtype=np.float32)
                mean, std = _moments(x, train_idx) if standardise else (0.0, 1.0)
                self.agg[e] = torch.from_numpy((x - mean) / std).to(device)
                if data.target is not None:
                    xt = np.asarray(data.target.aggregated_features(e), dtype=np.float32)
                    self.target_agg[e] = torch.from_numpy((xt - mean) / std).to(device)
                continue
            seq = data.release.sequences[e]
            offsets = np.asarray(seq.offsets, dtype=np.int64)
            self.frames[e] = _frames_on(seq.frames, device)
            self.offsets[e] = torch.from_numpy(offsets.copy()).to(device)
            if standardise:
                mean, std = _moments(np.asarray(seq.frames), _frame_rows(offsets, train_idx))
                self.moments[e] = (torch.from_numpy(mean).to(device), torch.from_numpy(std).to(device))
            if data.target is not None:
                tseq = data.target.sequences[e]
                self.target_frames[e] = _frames_on(tseq.frames, device)
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
            x, ms[e] = standardise_length(frames[e], offsets[e], idx, self.L, train=train, generator=gen)
            if e in self.moments:  # z-score the batch's real frames; padded positions stay 0
                mean, std = self.moments[e]
                x = torch.where(ms[e].unsqueeze(-1), (x - mean) / std, x)
            xs[e] = x
        return xs, ms

    @property
    def n_target(self) -> int:
        """Number of clips in the test-split target set (0 when absent)."""
        src = self.target_agg or self.target_offsets
        if not src:
            return 0
        v = next(iter(src.values()))
        return int(v.shape[0]) if self.features == "aggregated" else int(v.shape[0] - 1)


def _moments(x: np.ndarray, rows: np.ndarray | None = None, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and population std (floored at 1e-6) of ``x[rows]`` (all rows when None), x (n, D),
    accumulated in float64 chunks (never a copy of all selected rows: x may be a multi-GB memory map)."""
    idx = np.arange(len(x)) if rows is None else np.asarray(rows)
    n = len(idx)
    s = np.zeros(x.shape[1], np.float64)
    for i in range(0, n, chunk):
        s += x[idx[i : i + chunk]].sum(axis=0, dtype=np.float64)
    mean = s / max(n, 1)
    ss = np.zeros_like(s)
    for i in range(0, n, chunk):
        d = x[idx[i : i + chunk]].astype(np.float64) - mean
        ss += np.einsum("ij,ij->j", d, d)
    std = np.maximum(np.sqrt(ss / max(n, 1)), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def _frames_on(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(total_T, D) float32 frames on ``device``: on the CPU a zero-copy view of the (read-only, memory-mapped)
    array, shared with every process mapping the same cache file; elsewhere one device copy."""
    t = as_tensor(np.asarray(frames))
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    return t if device.type == "cpu" else t.to(device)


def _frame_rows(offsets: np.ndarray, clips: np.ndarray) -> np.ndarray:
    """Row indices into the (total_T, D) frame array of all frames of ``clips`` (vectorised)."""
    starts, ends = offsets[clips], offsets[clips + 1]
    lengths = ends - starts
    rep = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(lengths.sum()) + rep


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
# ---------------------------------------------------------------------------------------------------------------
# results


@dataclass
class FoldResult:
    """The outcome of one fold of a lock-step cross-validation (:meth:`FoldTrainer.finalize`).

    Attributes:
        fold: fold index 0..4.
        val_idx: int64 (N_k,) rows of the training release that form the validation fold.
        filenames: the N_k validation clip names.
        oof_probs: float32 (N_k, 6) out-of-fold probabilities at the headline protocol's selected epoch.
        selected_epochs: ``{protocol: 1-based epoch}`` for ``val``, ``crossfit`` (when run with >= 2 folds) and
            ``train`` (which uses the ``crossfit`` epoch, or the ``val`` epoch with one fold).
        best_epoch: the headline protocol's selected epoch (whose weights are ``state_dict``).
        epochs_run: epochs trained (all folds of a cross-validation train the same number).
        stopped: True when the trial-level stop (patience on the objective) ended training before ``max_epochs``.
        thresholds: ``{protocol: {epoch, alpha, beta, acc_presence, acc_salience, score}}`` on the validation fold.
        history: one dict per epoch: epoch, train_loss, lr, loss_<part>, and the own-fold threshold fit of that
            epoch (val_score, acc_presence, acc_salience, alpha, beta).
        state_dict: CPU weights of the headline protocol's selected epoch.
        state_dicts: ``{protocol: CPU weights}`` of each protocol's selected epoch (shared when the epochs agree).
        importances: mean rank-aware importance per encoder on the validation fold (headline weights), or None.
        config: the resolved config.
    """

    fold: int
    val_idx: np.ndarray
    filenames: list[str]
    oof_probs: np.ndarray
    selected_epochs: dict[str, int]
    best_epoch: int
    epochs_run: int
    stopped: bool
    thresholds: dict[str, dict[str, float]]
    history: list[dict[str, Any]]
    state_dict: dict[str, torch.Tensor]
    state_dicts: dict[str, dict[str, torch.Tensor]]
    importances: dict[str, float] | None
    config: Config


@dataclass
class CVResult:
    """The outcome of :func:`cross_validate`.

    Attributes:
        folds: one :class:`FoldResult` per fold run.
        oof_probs: float32 (N, 6) over all training clips at each fold's headline epoch (NaN rows: folds not run).
        metrics: see :func:`summarize_protocols`.
        curves: the per-epoch OOF probabilities and protocol decisions (:class:`EpochCurves`; ``stack()`` gives
            (N, 6, E)).
    """

    folds: list[FoldResult]
    oof_probs: np.ndarray
    metrics: dict[str, Any]
    curves: EpochCurves


class FoldTrainer:
    """One fold of a lock-step cross-validation, as plain steps (DESIGN 5): set-up (the constructor), one epoch
    (:meth:`train_epoch`), evaluate (:meth:`evaluate`), keep weights (:meth:`keep`), finalise (:meth:`finalize`).

    :func:`cross_validate` drives all folds in one process and the search's fold worker drives one fold per Ray
    Train worker, both through these steps and one :class:`EpochCurves`, so the two give the same numbers.
    Each fold owns its random streams (a private copy of torch's global generator state, swapped in around every
    step, and a seeded ``torch.Generator`` for batches), so stepping several folds in one process gives the same
    numbers as one fold per process.

    Args:
        cfg: resolved configuration.
        data: from :func:`prepare_data`.
        fold: validation fold index (a value of ``data.folds``).

    Raises:
        ValueError: unknown fold, an empty training or validation set, CUDA requested without a GPU.
    """

    def __init__(self, cfg: Config, data: TrainData, fold: int):
        folds = np.asarray(data.folds)
        if fold not in set(folds.tolist()):
            raise ValueError(f"fold {fold} does not exist in the release (folds: {sorted(set(folds.tolist()))})")
        train_idx, val_idx = fold_indices(folds, fold)
        self.train_idx = np.asarray(train_idx, dtype=np.int64)
        self.val_idx = np.asarray(val_idx, dtype=np.int64)
        if len(self.train_idx) == 0 or len(self.val_idx) == 0:
            raise ValueError(f"fold {fold}: empty training ({len(self.train_idx)}) or validation "
                             f"({len(self.val_idx)}) set")
        self.cfg, self.data, self.fold = cfg, data, fold
        self.device = device = resolve_device(cfg.train.device)
        outer = _rng_state(device)
        try:
            torch.manual_seed(cfg.seed * 1009 + fold)
            self.gen = torch.Generator(device=device)
            self.gen.manual_seed(cfg.seed * 7919 + fold)
            self.tensors = _FoldTensors(data, cfg, self.train_idx, device)
            self.labels = torch.as_tensor(np.asarray(data.labels, dtype=np.float32), device=device)
            self.train_idx_t = torch.as_tensor(self.train_idx, device=device)
            self.target_pool = None
            if cfg.loss.domain > 0:
                self.target_pool = (torch.as_tensor(self.val_idx, device=device) if cfg.data.domain_target == "val"
                                    else torch.arange(self.tensors.n_target, device=device))
            self.model = build_model(cfg, data.input_dims).to(device)
            self.mixed = cfg.model.arch == "fusion" and cfg.model.fusion == "mixed"
            if self.mixed:
                self.model.set_stage("pretrain")
            self.opt = make_optimizer(self.model, cfg, device)
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=cfg.train.max_epochs,
                                                                    eta_min=cfg.train.lr_min)
            self._rng = _rng_state(device)
        finally:
            _set_rng_state(device, outer)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self._kept: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def first_epoch(self) -> int:
        """The first selectable epoch: 1, or for ``mixed`` fusion the first combine-stage epoch."""
        return first_selectable_epoch(self.cfg)

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch over the training folds (mini-batches of ``train.batch_size``, then one cosine step).

        Returns:
            ``{"epoch", "train_loss", "lr", "loss_<part>"...}`` (lr: the learning rate used in this epoch).

        Raises:
            NonFiniteLossError: the loss became NaN or infinite.
        """
        cfg, t, device, gen, model = self.cfg, self.tensors, self.device, self.gen, self.model
        outer = _rng_state(device)
        _set_rng_state(device, self._rng)
        try:
            self.epoch += 1
            epoch = self.epoch
            if self.mixed and epoch == cfg.model.mixed_pretrain_epochs + 1:
                model.set_stage("combine")  # seed 002: branches frozen, the combining attention trains
            model.train()
            prec, bs = cfg.train.precision, cfg.train.batch_size
            perm = self.train_idx_t[torch.randperm(len(self.train_idx_t), generator=gen, device=device)]
            total, n_seen, parts_sum = 0.0, 0, {}
            for s in range(0, len(perm), bs):
                idx = perm[s : s + bs]
                x, m = t.inputs(idx, train=True, gen=gen)
                out = forward(model, x, m, prec, device)
                target_emb = None
                if self.target_pool is not None:
                    pool = self.target_pool
                    tidx = pool[torch.randint(len(pool), (min(bs, len(pool)),), generator=gen, device=device)]
                    xt, mt = t.inputs(tidx, train=True, gen=gen, target=cfg.data.domain_target == "test")
                    target_emb = forward(model, xt, mt, prec, device).embedding
                loss, parts = compute_loss(out, self.labels[idx], cfg.loss, target_embedding=target_emb)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"fold {self.fold}, epoch {epoch}: non-finite loss {loss.item()} (parts {parts})")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total += loss.item() * len(idx)
                n_seen += len(idx)
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v) * len(idx)
            lr_now = self.opt.param_groups[0]["lr"]
            self.sched.step()
        finally:
            self._rng = _rng_state(device)
            _set_rng_state(device, outer)
        rec = {"epoch": epoch, "train_loss": total / max(n_seen, 1), "lr": float(lr_now)}
        rec.update({f"loss_{k}": v / max(n_seen, 1) for k, v in parts_sum.items()})
        self.history.append(rec)
        return rec

    def evaluate(self) -> np.ndarray:
        """float32 (N_k, 6): eval-mode validation probabilities of the current weights (no randomness drawn)."""
        probs, _ = _predict(self.model, self.tensors, self.val_idx, precision=self.cfg.train.precision)
        return probs

    def keep(self, epochs: set[int]) -> None:
        """Keep a CPU copy of the current weights when ``self.epoch`` is in ``epochs`` (the current choices of the
        protocols, :meth:`EpochCurves.kept_epochs`) and drop the copies of epochs no longer chosen."""
        if self.epoch in epochs:
            self._kept[self.epoch] = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        for e in [e for e in self._kept if e not in epochs]:
            del self._kept[e]

    def finalize(self, curves: EpochCurves, stopped: bool = False) -> FoldResult:
        """Final protocols of this fold from ``curves`` (which holds every fold's epochs) -> :class:`FoldResult`.

        ``val`` and ``crossfit`` come from ``curves``; ``train`` fits alpha, beta on this fold model's predictions
        for its own training rows at the ``crossfit`` epoch (the ``val`` epoch with one fold) and scores the
        validation fold with them.

        Raises:
            RuntimeError: when the weights of a selected epoch were not kept (``keep`` not called every epoch).
        """
        cfg, pw = self.cfg, self.cfg.thresholds.presence_weight
        protos = curves.per_epoch_protocols()
        choices = {p: curves.choice(p, self.fold) for p in protos}
        if any(c is None for c in choices.values()):
            raise RuntimeError(f"fold {self.fold}: no selectable epoch (epochs run {self.epoch}, first selectable "
                               f"{curves.first_epoch})")
        missing = [c.epoch for c in choices.values() if c.epoch not in self._kept]
        if missing:
            raise RuntimeError(f"fold {self.fold}: weights of epochs {missing} were not kept")
        val_truth = np.asarray(self.data.labels, dtype=np.float32)[self.val_idx]
        headline = cfg.thresholds.protocol if cfg.thresholds.protocol in choices else "val"
        train_from = "crossfit" if "crossfit" in choices else "val"
        weights = {p: self._kept[c.epoch] for p, c in choices.items()}
        weights["train"] = weights[train_from]
        thresholds = {p: c.as_dict() for p, c in choices.items()}
        self.model.load_state_dict(weights[train_from])
        e_train = choices[train_from].epoch
        train_probs, _ = _predict(self.model, self.tensors, self.train_idx, precision=cfg.train.precision)
        train_truth = np.asarray(self.data.labels, dtype=np.float32)[self.train_idx]
        tr = fit_and_evaluate(train_probs, train_truth, curves.probs_at(e_train)[self.val_idx], val_truth, pw)
        thresholds["train"] = {"epoch": e_train, **{k: float(v) for k, v in tr.items()}}
        self.model.load_state_dict(weights[headline])
        _, imps = _predict(self.model, self.tensors, self.val_idx, precision=cfg.train.precision)
        importances = None
        if imps is not None:
            importances = {e: float(v) for e, v in zip(self.data.encoders, imps.mean(axis=0))}
        for h in self.history:  # the own-fold threshold fit of every epoch (the learning curve)
            f = curves.own_fit(self.fold, h["epoch"])
            h.update(val_score=f.score, acc_presence=f.acc_presence, acc_salience=f.acc_salience, alpha=f.alpha,
                     beta=f.beta)
        return FoldResult(
            fold=self.fold, val_idx=self.val_idx, filenames=[self.data.filenames[i] for i in self.val_idx],
            oof_probs=curves.probs_at(choices[headline].epoch)[self.val_idx].copy(),
            selected_epochs={p: int(thresholds[p]["epoch"]) for p in ("val", "train", "crossfit") if p in thresholds},
            best_epoch=choices[headline].epoch, epochs_run=self.epoch, stopped=stopped, thresholds=thresholds,
            history=self.history, state_dict=weights[headline], state_dicts=weights, importances=importances,
            config=cfg,
        )


def first_selectable_epoch(cfg: Config) -> int:
    """1, or ``model.mixed_pretrain_epochs + 1`` for mixed fusion (the kept model is always a combined one)."""
    if cfg.model.arch == "fusion" and cfg.model.fusion == "mixed":
        return cfg.model.mixed_pretrain_epochs + 1
    return 1


def new_curves(cfg: Config, data: TrainData, folds: Sequence[int]) -> EpochCurves:
    """The :class:`EpochCurves` of a cross-validation of ``folds`` under ``cfg`` (headline, patience, mixed).

    With one fold the headline falls back to ``val`` (``crossfit`` needs the other folds).
    """
    headline = cfg.thresholds.protocol if len(folds) >= 2 else "val"
    return EpochCurves(data.labels, np.asarray(data.folds), folds, headline=headline,
                       presence_weight=cfg.thresholds.presence_weight, first_epoch=first_selectable_epoch(cfg),
                       patience=cfg.train.patience)


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def summarize_protocols(results: Sequence[FoldResult], curves: EpochCurves) -> dict[str, Any]:
    """Per-fold numbers of every protocol with fold mean and std (population, ddof=0).

    Returns:
        ``{"headline": protocol, "folds": [k...], "epochs_run": E, "<protocol>": {"per_fold": [{epoch, alpha,
        beta, acc_presence, acc_salience, score}, ...], "mean": {...}, "std": {...}}}`` for ``val``, ``train``
        and (with >= 2 folds) ``crossfit``. ``metrics[headline]["mean"]["score"]`` equals
        ``curves.objective().score``.
    """
    results = sorted(results, key=lambda r: r.fold)
    out: dict[str, Any] = {"headline": curves.headline, "folds": [r.fold for r in results],
                           "epochs_run": curves.epochs}
    for proto in PROTOCOL_KEYS:
        if proto not in results[0].thresholds:
            continue
        rows = [r.thresholds[proto] for r in results]
        arr = {k: np.array([row[k] for row in rows], dtype=np.float64) for k in rows[0]}
        out[proto] = {"per_fold": rows, "mean": {k: float(a.mean()) for k, a in arr.items()},
                      "std": {k: float(a.std()) for k, a in arr.items()}}
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
    """Train the folds in one process in lock step and compute every protocol (DESIGN 3, 5).

    Each epoch: every fold trains one epoch and evaluates its validation fold; the probabilities go into one
    :class:`EpochCurves`, whose choices say which weights each fold keeps; training stops for all folds when the
    objective (fold-mean headline Score) has not improved for ``train.patience`` epochs.

    Args:
        folds: which folds to run (default: every fold present in the release, ascending).
        progress: show a tqdm bar over all epochs of all folds.
    """
    all_folds = sorted(set(np.asarray(data.folds).tolist()))
    folds = sorted(all_folds if folds is None else folds)
    trainers = [FoldTrainer(cfg, data, k) for k in folds]
    curves = new_curves(cfg, data, folds)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(folds) * cfg.train.max_epochs, desc="cross-validate", unit="epoch", leave=True)
    stopped = False
    try:
        for epoch in range(1, cfg.train.max_epochs + 1):
            probs = {}
            for tr in trainers:
                tr.train_epoch()
                probs[tr.fold] = tr.evaluate()
                if bar is not None:
                    bar.update(1)
            curves.add(probs)
            for tr in trainers:
                tr.keep(curves.kept_epochs(tr.fold))
            if bar is not None:
                bar.set_postfix(score=f"{curves.objective().score:.3f}", refresh=False)
            if curves.should_stop():
                stopped = epoch < cfg.train.max_epochs
                break
    finally:
        if bar is not None:
            bar.close()
    results = [tr.finalize(curves, stopped=stopped) for tr in trainers]
    return CVResult(results, assemble_oof(results, len(data.filenames)), summarize_protocols(results, curves), curves)


def fit_fold(cfg: Config, data: TrainData, fold: int) -> FoldResult:
    """Train and evaluate one fold alone (``cross_validate(cfg, data, [fold])``): the ``val`` protocol selects
    its epoch and thresholds, since ``crossfit`` needs the other folds.

    Raises:
        ValueError: unknown fold, an empty training or validation set, CUDA requested without a GPU.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    return cross_validate(cfg, data, folds=[fold], progress=False).folds[0]
