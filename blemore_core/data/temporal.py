"""Temporal standardisation and statistical aggregation of variable-length clips (docs/ARCHITECTURE.md section 2.3).

Clips of one encoder are stored concatenated: ``frames`` (total_T, D) and ``offsets`` (N+1,), clip ``i`` is
``frames[offsets[i]:offsets[i+1]]``. Both functions are batched over clips on torch tensors; neither loops
over clips in Python (aggregation loops only over memory-bounded chunks of clips).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

#: the 7 statistics of :func:`aggregate`, in output order (stat-major layout)
STATISTICS: tuple[str, ...] = ("mean", "std", "p10", "p25", "p50", "p75", "p90")
_QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Zero-copy torch view of a numpy array (also a read-only memory-mapped one); tensors pass through.

    The Arrow cache hands out read-only arrays; torch warns about those, but every function here only reads.
    """
    if isinstance(x, torch.Tensor):
        return x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(x))


def _check_offsets(offsets: torch.Tensor, total: int) -> None:
    if offsets.ndim != 1 or len(offsets) < 1:
        raise ValueError(f"offsets must be a 1-D array (N+1,), got shape {tuple(offsets.shape)}")
    if int(offsets[0]) != 0 or int(offsets[-1]) != total:
        raise ValueError(f"offsets must start at 0 and end at total_T={total}, got {int(offsets[0])}..{int(offsets[-1])}")
    if len(offsets) > 1 and bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError("offsets must be non-decreasing")


def segment_bounds(lengths: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of the L uniform segments of clips of length T (used when T >= L).

    Segment j of a clip of length T covers frames ``[floor(j*T/L), floor((j+1)*T/L))``; for T >= L every
    segment holds at least one frame.

    Args:
        lengths: int64 (B,) clip lengths T.
        L: number of segments.
    Returns:
        (start, end): int64 (B, L) each, end exclusive.
    """
    j = torch.arange(L, dtype=torch.int64, device=lengths.device)
    T = lengths.to(torch.int64)[:, None]
    return (j * T) // L, ((j + 1) * T) // L


def standardise_length(
    frames: torch.Tensor | np.ndarray,
    offsets: torch.Tensor | np.ndarray,
    idx: torch.Tensor | np.ndarray,
    L: int,
    train: bool,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring a batch of clips to a fixed length L (docs/ARCHITECTURE.md section 2.3).

    For a clip of T frames: T >= L -> split into L uniform segments (:func:`segment_bounds`) and take one
    frame from each: in training a uniformly random frame of the segment (drawn from ``generator``), in
    evaluation the segment centre ``(start + end - 1) // 2``. T < L -> the T frames followed by zero
    padding. Fully vectorised: one gather for the whole batch.

    Args:
        frames: (total_T, D) float features of all clips of one encoder (numpy arrays are viewed zero-copy).
        offsets: (N+1,) int64; clip i is ``frames[offsets[i]:offsets[i+1]]``.
        idx: (B,) int64 clip indices of the batch.
        L: target length (> 0).
        train: random frame per segment (True) or segment centre (False).
        generator: torch random generator for the training draw (None: torch's default generator).
    Returns:
        x: (B, L, D) float32 on ``frames``' device (padded positions are 0);
        mask: (B, L) bool, True = real frame.
    Raises:
        ValueError: for L < 1, an index out of range, or malformed offsets.
    """
    if int(L) < 1:
        raise ValueError(f"L must be >= 1, got {L}")
    L = int(L)
    frames_t = as_tensor(frames)
    offsets_t = as_tensor(offsets).to(torch.int64)
    idx_t = as_tensor(idx).to(torch.int64).reshape(-1)
    if frames_t.ndim != 2:
        raise ValueError(f"frames must have shape (total_T, D), got {tuple(frames_t.shape)}")
    n = len(offsets_t) - 1
    if len(idx_t) and (int(idx_t.min()) < 0 or int(idx_t.max()) >= n):
        raise ValueError(f"clip index out of range 0..{n - 1}: min {int(idx_t.min())}, max {int(idx_t.max())}")
    offsets_t = offsets_t.to(frames_t.device)
    idx_t = idx_t.to(frames_t.device)
    starts = offsets_t[idx_t]
    lengths = offsets_t[idx_t + 1] - starts                        # (B,)
    seg_start, seg_end = segment_bounds(lengths, L)               # (B, L)
    if train:
        # draw on the generator's own device (a CUDA generator cannot fill a CPU tensor, nor the reverse)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(seg_start.shape, generator=generator, dtype=torch.float64, device=gen_device)
        u = u.to(frames_t.device)
        width = (seg_end - seg_start).to(torch.float64)
        pos = seg_start + torch.minimum((u * width).floor().to(torch.int64), (seg_end - seg_start - 1).clamp_min(0))
    else:
        pos = (seg_start + seg_end - 1) // 2
    j = torch.arange(L, dtype=torch.int64, device=frames_t.device).expand_as(pos)
    short = (lengths < L)[:, None]
    pos = torch.where(short, j, pos)
    mask = torch.where(short, j < lengths[:, None], torch.ones_like(short))
    gather = torch.where(mask, starts[:, None] + pos, torch.zeros_like(pos))
    x = frames_t[gather.reshape(-1)].reshape(len(idx_t), L, frames_t.shape[1]).to(torch.float32)
    x = x * mask[..., None].to(x.dtype)
    return x, mask


def aggregate(
    frames: torch.Tensor | np.ndarray,
    offsets: torch.Tensor | np.ndarray,
    chunk_elements: int = 1 << 24,
) -> np.ndarray | torch.Tensor:
    """Statistical aggregation of every clip: mean, std, p10, p25, p50, p75, p90 over its real frames.

    The organisers' static features (docs/ARCHITECTURE.md section 2.3). Computed in float64 on padded, sorted chunks of clips.
    ``std`` is the population standard deviation (ddof=0, ``np.std``'s default; a one-frame clip has std 0);
    percentiles use linear interpolation between closest ranks (``np.percentile``'s default method) and
    match it within 1e-5.

    Args:
        frames: (total_T, D) float features of all clips.
        offsets: (N+1,) int64 clip boundaries; every clip must have T >= 1.
        chunk_elements: bound on the padded chunk size (clips x max T x D) held at once.
    Returns:
        (N, 7*D) float32, stat-major: all D means, then all D stds, then p10 ... p90. A numpy array when
        ``frames`` is numpy, else a tensor on ``frames``' device.
    Raises:
        ValueError: for malformed offsets or an empty clip (T = 0).
    """
    is_numpy = not isinstance(frames, torch.Tensor)
    frames_t = as_tensor(frames)
    offsets_t = as_tensor(offsets).to(torch.int64).cpu()
    if frames_t.ndim != 2:
        raise ValueError(f"frames must have shape (total_T, D), got {tuple(frames_t.shape)}")
    _check_offsets(offsets_t, frames_t.shape[0])
    lengths = offsets_t[1:] - offsets_t[:-1]
    n, d = len(lengths), frames_t.shape[1]
    if n and int(lengths.min()) < 1:
        bad = int(torch.nonzero(lengths < 1)[0, 0])
        raise ValueError(f"clip {bad} has no frames (T = 0); aggregation needs T >= 1")
    out = torch.empty((n, 7 * d), dtype=torch.float32, device=frames_t.device)
    q = torch.tensor(_QUANTILES, dtype=torch.float64, device=frames_t.device)
    i = 0
    while i < n:
        # grow the chunk while the padded block stays within budget (always at least one clip)
        j, tmax = i + 1, int(lengths[i])
        while j < n and (j + 1 - i) * max(tmax, int(lengths[j])) * d <= chunk_elements:
            tmax = max(tmax, int(lengths[j]))
            j += 1
        out[i:j] = _aggregate_chunk(frames_t, offsets_t[i : j + 1], tmax, q)
        i = j
    return out.cpu().numpy() if is_numpy else out


def _aggregate_chunk(frames: torch.Tensor, offsets: torch.Tensor, tmax: int, q: torch.Tensor) -> torch.Tensor:
    dev = frames.device
    lengths = (offsets[1:] - offsets[:-1]).to(dev)
    m, d = len(lengths), frames.shape[1]
    block = frames[int(offsets[0]) : int(offsets[-1])]
    rows = torch.repeat_interleave(torch.arange(m, device=dev), lengths)
    cols = torch.arange(len(block), device=dev) - torch.repeat_interleave((offsets[:-1] - offsets[0]).to(dev), lengths)
    lf = lengths.to(torch.float64)
    # mean and population std from segment sums in float64 (two passes, no padding)
    b64 = block.to(torch.float64)
    mean = torch.zeros((m, d), dtype=torch.float64, device=dev).index_add_(0, rows, b64) / lf[:, None]
    dev2 = (b64 - mean[rows]) ** 2
    std = (torch.zeros((m, d), dtype=torch.float64, device=dev).index_add_(0, rows, dev2) / lf[:, None]).sqrt()
    del b64, dev2
    # percentiles: a (D, m, tmax) block padded with +inf, sorted in place along its contiguous last axis
    padded = torch.full((d, m * tmax), float("inf"), dtype=block.dtype, device=dev)
    padded.index_copy_(1, rows * tmax + cols, block.t())
    padded = padded.view(d, m, tmax)
    if dev.type == "cpu":
        padded.numpy().sort(axis=-1)          # numpy's SIMD sort: ~10x faster than torch.sort on CPU
        srt = padded
    else:
        srt = padded.sort(dim=-1).values      # real frames first, +inf padding last
    pos = (lf[:, None] - 1.0) * q[None, :]                            # (m, 5) fractional ranks
    lo = pos.floor().to(torch.int64)
    hi = torch.minimum(lo + 1, (lengths[:, None] - 1).to(torch.int64))
    frac = (pos - lo.to(torch.float64)).t()[:, :, None]               # (5, m, 1)
    a = torch.gather(srt, 2, lo[None].expand(d, m, len(q))).permute(2, 1, 0).to(torch.float64)   # (5, m, D)
    b = torch.gather(srt, 2, hi[None].expand(d, m, len(q))).permute(2, 1, 0).to(torch.float64)
    # numpy's lerp: a + (b-a)*t for t < 0.5, b - (b-a)*(1-t) otherwise
    diff = b - a
    pct = torch.where(frac < 0.5, a + diff * frac, b - diff * (1.0 - frac))   # (5, m, D)
    pct = pct.permute(1, 0, 2).reshape(m, len(q) * d)
    stats = torch.cat([mean, std, pct], dim=1)
    return stats.to(torch.float32)
