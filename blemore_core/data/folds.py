"""Actor-disjoint folds and feature standardisation fitted on training folds only (docs/ARCHITECTURE.md section 2.3).

The real release ships a ``fold`` column (0..4) whose folds are actor-disjoint; :func:`check_actor_disjoint`
enforces that, and :func:`assign_folds` builds a deterministic actor-grouped split when the column is absent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .temporal import as_tensor

DEFAULT_FOLDS = 5


def check_actor_disjoint(actors: np.ndarray, folds: np.ndarray, filenames: Sequence[str] | None = None) -> None:
    """Fail loudly when an actor's clips lie in more than one fold.

    Args:
        actors: (N,) int actor ids.
        folds: (N,) int fold ids (negative entries, e.g. -1 for test clips, are ignored).
        filenames: optional (N,) clip names, used to name an offending clip.
    Raises:
        ValueError: naming the actor, its folds and one clip of each fold.
    """
    actors = np.asarray(actors)
    folds = np.asarray(folds)
    if actors.shape != folds.shape:
        raise ValueError(f"actors {actors.shape} and folds {folds.shape} must have the same shape")
    keep = folds >= 0
    a, f = actors[keep], folds[keep]
    if len(a) == 0:
        return
    pairs = np.unique(np.stack([a, f], 1), axis=0)
    ua, counts = np.unique(pairs[:, 0], return_counts=True)
    if (counts > 1).any():
        actor = int(ua[np.argmax(counts > 1)])
        bad_folds = sorted(int(x) for x in pairs[pairs[:, 0] == actor, 1])
        where = ""
        if filenames is not None:
            idx = np.flatnonzero(keep)
            ex = [str(filenames[idx[np.flatnonzero((a == actor) & (f == k))[0]]]) for k in bad_folds]
            where = " (e.g. " + ", ".join(f"{n} in fold {k}" for n, k in zip(ex, bad_folds, strict=True)) + ")"
        raise ValueError(f"fold: actor A{actor} appears in folds {bad_folds}; folds must be actor-disjoint{where}")


def assign_folds(actors: np.ndarray, n_folds: int = DEFAULT_FOLDS, seed: int = 0) -> np.ndarray:
    """Deterministic actor-grouped fold assignment, used when the metadata has no ``fold`` column.

    Actors are shuffled with ``numpy.random.default_rng(seed)`` (from their sorted ids), then each actor in
    turn goes to the fold with the fewest clips so far (ties -> lowest fold), which balances clip counts.

    Args:
        actors: (N,) int actor ids.
        n_folds: number of folds (>= 2 and <= the number of actors).
        seed: shuffle seed.
    Returns:
        (N,) int64 fold ids 0..n_folds-1, actor-disjoint.
    Raises:
        ValueError: for fewer actors than folds or n_folds < 2.
    """
    actors = np.asarray(actors)
    ua, counts = np.unique(actors, return_counts=True)
    if n_folds < 2 or len(ua) < n_folds:
        raise ValueError(f"n_folds: cannot split {len(ua)} actors into {n_folds} folds")
    order = np.random.default_rng(seed).permutation(len(ua))
    load = np.zeros(n_folds, dtype=np.int64)
    fold_of = {}
    for k in order:
        f = int(np.argmin(load))
        fold_of[ua[k]] = f
        load[f] += counts[k]
    return np.array([fold_of[a] for a in actors], dtype=np.int64)


def fold_indices(folds: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation clip indices of split k.

    Args:
        folds: (N,) int fold ids (negative ids, e.g. test clips, are in neither set).
        k: the validation fold.
    Returns:
        (train_idx, val_idx): int64 arrays, ascending; train = every clip with fold >= 0 and != k.
    Raises:
        ValueError: when no clip has fold k.
    """
    folds = np.asarray(folds)
    val = np.flatnonzero(folds == k)
    if len(val) == 0:
        raise ValueError(f"fold: no clip has fold {k} (folds present: {sorted(set(int(x) for x in folds))})")
    train = np.flatnonzero((folds >= 0) & (folds != k))
    return train.astype(np.int64), val.astype(np.int64)


def fit_standardiser(
    x: np.ndarray | torch.Tensor,
    rows: np.ndarray | torch.Tensor | None = None,
    offsets: np.ndarray | torch.Tensor | None = None,
    floor: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """Z-score statistics fitted on training data only (docs/ARCHITECTURE.md section 2.3).

    Two forms:

    * aggregated: ``x`` (N, F) and ``rows`` the training clip indices -> statistics over ``x[rows]``;
    * sequences: ``x`` = frames (total_T, D), ``offsets`` (N+1,) and ``rows`` the training clip indices ->
      statistics over every frame of those clips (each frame weighs the same).

    Statistics are computed in float64: mean and population std (ddof=0), the std floored at ``floor`` so
    constant features do not divide by zero. Pass ``rows = fold_indices(folds, k)[0]`` for split k: the
    validation fold never enters.

    Returns:
        (mean, std): float32 (F,) each; numpy when ``x`` is numpy, else tensors on ``x``'s device.
    Raises:
        ValueError: for an empty selection or a wrong shape.
    """
    is_numpy = not isinstance(x, torch.Tensor)
    xt = as_tensor(x)
    if xt.ndim != 2:
        raise ValueError(f"x must be 2-D (N, F) or (total_T, D), got shape {tuple(xt.shape)}")
    if offsets is None:
        sel = xt if rows is None else xt[as_tensor(rows).to(torch.int64).reshape(-1).to(xt.device)]
        if len(sel) == 0:
            raise ValueError("rows: no training rows to fit the standardiser on")
        sel = sel.to(torch.float64)
        mean = sel.mean(0)
        std = sel.std(0, unbiased=False)
    else:
        off = as_tensor(offsets).to(torch.int64).cpu()
        n = len(off) - 1
        r = torch.arange(n) if rows is None else as_tensor(rows).to(torch.int64).cpu().reshape(-1)
        if len(r) == 0:
            raise ValueError("rows: no training clips to fit the standardiser on")
        lengths = off[r + 1] - off[r]
        total = int(lengths.sum())
        if total == 0:
            raise ValueError("rows: the selected clips have no frames")
        s1 = torch.zeros(xt.shape[1], dtype=torch.float64, device=xt.device)
        s2 = torch.zeros_like(s1)
        # chunk over clips to bound memory (frames may be a large memory map)
        budget = max(1, (1 << 24) // max(1, xt.shape[1]))
        start = 0
        while start < len(r):
            stop, acc = start, 0
            while stop < len(r) and (acc == 0 or acc + int(lengths[stop]) <= budget):
                acc += int(lengths[stop])
                stop += 1
            rr, ll = r[start:stop], lengths[start:stop]
            gi = torch.repeat_interleave(off[rr], ll) + (torch.arange(int(ll.sum())) - torch.repeat_interleave(ll.cumsum(0) - ll, ll))
            block = xt[gi.to(xt.device)].to(torch.float64)
            s1 += block.sum(0)
            s2 += (block * block).sum(0)
            start = stop
        mean = s1 / total
        std = (s2 / total - mean * mean).clamp_min(0).sqrt()
    std = std.clamp_min(floor)
    mean, std = mean.to(torch.float32), std.to(torch.float32)
    if is_numpy:
        return mean.cpu().numpy(), std.cpu().numpy()
    return mean, std
