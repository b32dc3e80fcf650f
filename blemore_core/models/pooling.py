"""Temporal pooling (docs/ARCHITECTURE.md section 4): a (B, T, D) sequence with its (B, T) mask -> a (B, out_dim) vector.

Registered in :data:`~blemore_core.models.registry.POOLING`. Every pooling takes
``cls(in_dim, *, width, layers, heads, dropout)``, exposes ``out_dim`` and guarantees:

* masked frames (mask False) never change the output (their values are not read);
* a clip with no real frame gives an all-zero output row (never NaN, and no NaN gradient);
* any T is accepted (no positional parameter tied to ``model.seq_len``).

Shape legend: (B, T, D) sequences, (B, T) masks with True = real frame, (B, D) pooled.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .layers import AttentionPool, TransformerStack, check_heads, masked_mean, safe_mask, sinusoidal_positions
from .registry import POOLING

STAT_QUANTILES: tuple[float, ...] = (0.10, 0.25, 0.50, 0.75, 0.90)
"""Percentiles of the statistical aggregation, after mean and std (the organisers' 7 statistics)."""


def masked_quantiles(x: Tensor, mask: Tensor, qs: tuple[float, ...] = STAT_QUANTILES) -> Tensor:
    """Per-row, per-dimension quantiles over real frames, linear interpolation (``numpy.percentile`` default).

    Vectorised: masked entries are set to +inf, the time axis is sorted, and the order statistics at positions
    q * (n - 1) (n = real frames of the row) are interpolated.

    Args:
        x: (B, T, D) float. mask: (B, T) bool, True = real frame.

    Returns:
        (B, len(qs), D); rows without real frames give zeros.
    """
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    s, _ = torch.sort(torch.where(mask[..., None], x, inf), dim=1)
    n = mask.sum(dim=1)  # (B,)
    q = torch.tensor(qs, dtype=x.dtype, device=x.device)
    pos = q[None, :] * (n.clamp_min(1) - 1).to(x.dtype)[:, None]  # (B, Q)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    frac = (pos - lo.to(x.dtype))[..., None]  # (B, Q, 1)
    d = x.shape[2]
    v_lo = torch.gather(s, 1, lo[..., None].expand(-1, -1, d))
    v_hi = torch.gather(s, 1, hi[..., None].expand(-1, -1, d))
    out = v_lo + (v_hi - v_lo) * frac
    return torch.where((n > 0)[:, None, None], out, torch.zeros((), dtype=x.dtype))


@POOLING.register("stat")
class StatPooling(nn.Module):
    """Statistical aggregation: mean, std, p10, p25, p50, p75, p90 over real frames (no parameters).

    forward(x (B, T, D), mask (B, T)) -> (B, 7*D), statistic-major (all D means, then all D stds, ...), the
    layout of :func:`blemore_core.data.aggregate` and the organisers' ``*_static_features.npz``.
    std is the population std (ddof=0, ``numpy.std``); a single real frame gives std 0.
    """

    def __init__(self, in_dim: int, *, width: int = 0, layers: int = 1, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"models/pooling.py stat: in_dim must be >= 1, got {in_dim}")
        self.in_dim = in_dim
        self.out_dim = 7 * in_dim

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        mean = masked_mean(x, mask)
        dev = torch.where(mask[..., None], x - mean[:, None, :], torch.zeros((), dtype=x.dtype))
        var = (dev * dev).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1).to(x.dtype)
        std = torch.sqrt(var + 1e-12) * (var > 0)  # finite gradient at var = 0
        q = masked_quantiles(x, mask)
        return torch.cat([mean, std, q.flatten(1)], dim=1)


@POOLING.register("bilstm")
class BiLSTMPooling(nn.Module):
    """Bidirectional LSTM over the real frames only, then their mean.

    Real frames are first moved to the front of each row (order preserved; this also handles holes from
    temporal dropout) and packed with ``pack_padded_sequence``, so masked frames are never read.
    forward(x (B, T, D), mask (B, T)) -> (B, 2*width) (hidden size ``width`` per direction).
    """

    def __init__(self, in_dim: int, *, width: int, layers: int = 1, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if in_dim < 1 or width < 1 or layers < 1:
            raise ValueError(
                f"models/pooling.py bilstm: in_dim, width (model.latent_dim), layers must be >= 1, got {in_dim}, {width}, {layers}"
            )
        self.lstm = nn.LSTM(in_dim, width, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.out_dim = 2 * width

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real frames first, in time order
        x = torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[2]))
        n = mask.sum(dim=1)
        x = torch.where((torch.arange(x.shape[1], device=x.device)[None, :] < n[:, None])[..., None], x,
                        torch.zeros((), dtype=x.dtype))
        packed = pack_padded_sequence(x, n.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < n[:, None]
        pooled = masked_mean(out, valid)
        return torch.where((n > 0)[:, None], pooled, torch.zeros((), dtype=pooled.dtype))


class _TransformerPooling(nn.Module):
    def __init__(self, in_dim: int, width: int, layers: int, heads: int, dropout: float, name: str) -> None:
        super().__init__()
        if in_dim < 1 or width < 1:
            raise ValueError(f"models/pooling.py {name}: in_dim and width (model.latent_dim) must be >= 1, got {in_dim}, {width}")
        check_heads(width, heads, f"models/pooling.py {name} (width = model.latent_dim)")
        self.proj = nn.Linear(in_dim, width)
        self.encoder = TransformerStack(width, layers, heads, dropout, where=f"models/pooling.py {name}")
        self.out_dim = width

    def embed(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        attn_mask, empty = safe_mask(mask)
        x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype))
        h = self.proj(x) + sinusoidal_positions(x.shape[1], self.out_dim, x.device)
        return h, attn_mask, empty


@POOLING.register("cls")
class CLSPooling(_TransformerPooling):
    """Transformer encoder over [CLS] + projected frames; the [CLS] output is the pooled vector.

    x (B, T, D) -> Linear(D, width) + sinusoidal position -> prepend a learned [CLS] token -> pre-norm
    transformer (``src_key_padding_mask`` hides masked frames) -> (B, width) from the [CLS] position.
    """

    def __init__(self, in_dim: int, *, width: int, layers: int = 1, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__(in_dim, width, layers, heads, dropout, "cls")
        self.cls = nn.Parameter(torch.randn(width) * 0.02)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h, attn_mask, empty = self.embed(x, mask)
        b = x.shape[0]
        h = torch.cat([self.cls.expand(b, 1, -1), h], dim=1)
        m = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), attn_mask], dim=1)
        out = self.encoder(h, m)[:, 0]
        return torch.where(empty[:, None], torch.zeros((), dtype=out.dtype), out)


@POOLING.register("attention")
class AttentionPooling(_TransformerPooling):
    """Transformer encoder + attention pooling.

    x (B, T, D) -> Linear(D, width) + sinusoidal position -> pre-norm transformer -> scores v^T tanh(W h)
    -> softmax over real frames -> weighted sum -> (B, width).
    """

    def __init__(self, in_dim: int, *, width: int, layers: int = 1, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__(in_dim, width, layers, heads, dropout, "attention")
        self.pool = AttentionPool(width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h, attn_mask, empty = self.embed(x, mask)
        h = self.encoder(h, attn_mask)
        return self.pool(h, mask)  # zero for rows without a real frame
