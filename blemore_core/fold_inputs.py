"""Fold inputs: the training data of a cross-validation as device tensors, the forward pass at a precision and
eval-mode prediction (docs/ARCHITECTURE.md section 2.3 and 5).

:func:`prepare_data` loads a release's features once (:class:`TrainData`, shared by every fold and, in a search,
by every trial of a node); :class:`FoldInputs` is one fold's view of them: z-scored with statistics of that fold's
training clips only, temporal standardisation to ``model.seq_len`` frames per batch. :func:`predict_probs` runs a
model in eval mode over clips in chunks. Used by the fold trainer (:mod:`blemore_core.train`), the fused folds
(:mod:`blemore_core.fused`) and retraining / test prediction (:mod:`blemore_core.refit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from blemore_core.config import Config
from blemore_core.data import ReleaseData, load_release, standardise_length
from blemore_core.data.temporal import as_tensor

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


class FoldInputs:
    """The inputs of one fold as device tensors, z-scored with statistics of the training clips only.

    Sequence inputs keep all frames (total_T, D) plus offsets and are standardised to L frames per batch with
    :func:`blemore_core.data.standardise_length` (random frame per segment in training, segment centre in
    evaluation), then z-scored per batch: on the CPU the frames stay the read-only memory map of the Arrow cache,
    so the fold workers of a node share one copy through the page cache instead of each holding its own z-scored
    float32 copy (docs/ARCHITECTURE.md section 6: features loaded once per node); on a GPU the raw frames are copied to the device once.
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
def predict_probs(model, tensors: FoldInputs, idx: np.ndarray, target: bool = False, precision: str = "fp32"):
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

def rng_state(device: torch.device) -> tuple:
    """Torch's global generator state (CPU, and the CUDA device's when ``device`` is CUDA): ``(cpu, cuda or None)``."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def set_rng_state(device: torch.device, state: tuple) -> None:
    """Restore a state taken with :func:`rng_state`."""
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
