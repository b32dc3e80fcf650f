"""Small building blocks shared by pooling, fusion and heads (torchtune style: plain modules and functions).

Shape legend used throughout :mod:`blemore_core.models`: (B, T, D) sequences, (B, T) masks with True = real
frame, (B, D) pooled vectors, (B, C) logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def full_precision(module: nn.Module, *inputs: Tensor):
    """``module(*inputs)`` in float32 even inside a ``torch.autocast`` region (``train.precision: bf16``).

    The output heads run this way, so that probabilities sum to 1 to float32 precision and the threshold fits see
    no bf16 rounding (about 3 significant digits); the body of the model keeps the autocast dtype. Standard
    mixed-precision practice (PyTorch AMP recipe: softmax and losses in float32).
    """
    with torch.autocast(inputs[0].device.type, enabled=False):
        return module(*(x.float() for x in inputs))


def check_heads(width: int, heads: int, where: str) -> None:
    """Raise ValueError unless ``heads`` >= 1 divides ``width`` (multi-head attention rule)."""
    if heads < 1 or width < 1 or width % heads != 0:
        raise ValueError(f"{where}: model.heads={heads} must be >= 1 and divide the transformer width {width}")


def check_rate(p: float, key: str, where: str) -> None:
    """Raise ValueError unless 0 <= p < 1."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{where}: {key} must be in [0, 1), got {p}")


def safe_mask(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Make attention safe for clips without any real frame.

    Args:
        mask: (B, T) bool, True = real frame.

    Returns:
        ``(attn_mask, empty)``: ``attn_mask`` (B, T) bool equal to ``mask`` except that rows with no real frame
        are all True (so softmax never sees an all ``-inf`` row, which would give NaN values and NaN
        gradients); ``empty`` (B,) bool marks those rows. Callers zero the output of ``empty`` rows.
    """
    empty = ~mask.any(dim=1)
    return mask | empty[:, None], empty


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over real frames. x (B, T, D), mask (B, T) -> (B, D); rows without real frames give zeros."""
    w = mask.to(x.dtype)
    total = torch.einsum("btd,bt->bd", torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype)), w)
    return total / w.sum(dim=1, keepdim=True).clamp_min(1.0)


def sinusoidal_positions(length: int, width: int, device: torch.device | None = None) -> Tensor:
    """Fixed sinusoidal position code (Vaswani et al. 2017) -> (length, width) float32; no parameters, any length."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    i = torch.arange(0, width, 2, dtype=torch.float32, device=device)
    freq = torch.exp(-math.log(10000.0) * i / max(width, 1))
    pe = torch.zeros(length, width, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : width // 2]
    return pe


class TransformerStack(nn.Module):
    """Pre-norm (norm_first) batch-first transformer encoder with a final LayerNorm.

    dim_feedforward = 2 * width, GELU. forward(x (B, T, W), mask (B, T) True = real) -> (B, T, W). Outputs at
    masked positions are unspecified; outputs at real positions do not depend on masked positions. The mask
    must have at least one True per row (use :func:`safe_mask`).

    Raises:
        ValueError: when ``heads`` does not divide ``width`` or ``layers`` < 1.
    """

    def __init__(self, width: int, layers: int, heads: int, dropout: float, where: str = "TransformerStack") -> None:
        super().__init__()
        check_heads(width, heads, where)
        if layers < 1:
            raise ValueError(f"{where}: model.layers must be >= 1, got {layers}")
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.norm(self.encoder(x, src_key_padding_mask=~mask))


class AttentionPool(nn.Module):
    """Attention pooling: scores = v^T tanh(W x) -> softmax over real frames -> weighted sum.

    forward(x (B, T, W), mask (B, T) True = real) -> (B, W). Rows without a real frame give zeros. The score
    layer has no output bias (softmax is shift invariant, a bias would never get a gradient).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)
        self.score = nn.Linear(width, 1, bias=False)

    def weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """Attention weights (B, T), zero on masked frames, rows sum to 1 (0 for rows without real frames)."""
        attn_mask, empty = safe_mask(mask)
        s = self.score(torch.tanh(self.proj(x))).squeeze(-1)
        s = s.masked_fill(~attn_mask, float("-inf"))
        w = torch.softmax(s, dim=1)
        return torch.where(empty[:, None], torch.zeros_like(w), w)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        w = self.weights(x, mask)
        x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype))
        return torch.einsum("bt,btd->bd", w, x)


class MLP(nn.Module):
    """Two-layer perceptron: Linear(in, hidden) -> GELU -> Dropout -> Linear(hidden, out). (B, in) -> (B, out)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        for k, v in (("in_dim", in_dim), ("hidden", hidden), ("out_dim", out_dim)):
            if v < 1:
                raise ValueError(f"models/layers.py MLP: {k} must be >= 1, got {v}")
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Temperature(nn.Module):
    """Learned temperature T = exp(log_t), log-parameterised scalar initialised at T = 1.

    forward(logits (B, C)) -> logits / T (B, C).
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_t = nn.Parameter(torch.zeros(()))

    @property
    def value(self) -> Tensor:
        return self.log_t.exp()

    def forward(self, logits: Tensor) -> Tensor:
        return logits / self.log_t.exp()


# ---------------------------------------------------------------------------------------------- regularisation
def temporal_dropout(mask: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Mask each real frame with probability ``p``, keeping at least one real frame per clip that had one.

    Args:
        mask: (B, T) bool, True = real frame.
        p: drop probability in [0, 1).

    Returns:
        (B, T) bool, a subset of ``mask``; where every real frame of a clip was drawn for dropping, the real
        frame with the largest random draw is kept.
    """
    if p <= 0:
        return mask
    r = torch.rand(mask.shape, device=mask.device, generator=generator)
    new = mask & ~(r < p)
    lost = mask.any(dim=1) & ~new.any(dim=1)
    keep_one = F.one_hot(torch.where(mask, r, -1.0).argmax(dim=1), mask.shape[1]).bool()
    return new | (keep_one & lost[:, None])


def modality_keep(batch: int, n_encoders: int, p: float, device: torch.device,
                  generator: torch.Generator | None = None) -> Tensor:
    """Draw which encoders each sample keeps under modality dropout.

    Each (sample, encoder) is dropped with probability ``p``; a sample that would lose every encoder keeps the
    one with the largest random draw (never drop all encoders of a sample).

    Returns:
        keep (B, E) bool, True = encoder kept; at least one True per row.
    """
    if p <= 0:
        return torch.ones(batch, n_encoders, dtype=torch.bool, device=device)
    r = torch.rand(batch, n_encoders, device=device, generator=generator)
    keep = r >= p
    lost = ~keep.any(dim=1)
    keep_one = F.one_hot(r.argmax(dim=1), n_encoders).bool()
    return keep | (keep_one & lost[:, None])
