"""Multimodal fusion (docs/ARCHITECTURE.md section 4): per-encoder inputs -> one fused vector (B, H).

Registered in :data:`~blemore_core.models.registry.FUSION` as
``cls(input_dims, *, encoders, features, model, reg)`` with ``out_dim`` (H) and
``forward(inputs, masks, keep) -> FusionResult``:

* ``inputs[e]``: (B, T_e, D_e) sequences (``features="sequence"``) or (B, D_e) aggregated vectors (7*D each,
  ``features="aggregated"``); ``masks[e]``: (B, T_e) bool True = real frame, or None for aggregated inputs;
* ``keep``: (B, E) bool, False where modality dropout removed encoder e for that sample (all True in eval).

With aggregated features the temporal pooling is bypassed: a unimodal branch is an MLP on the (7*D,) vector,
and attention fusion sees one token per encoder.

Shape legend: (B, T, D) sequences, (B, T) masks with True = real frame, (B, D) pooled, (B, C) logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .layers import MLP, AttentionPool, TransformerStack, check_heads, sinusoidal_positions
from .registry import FUSION, POOLING

if TYPE_CHECKING:  # type hints only: the config module imports the model registries (no cycle)
    from ..config import ModelConfig, RegConfig


@dataclass(frozen=True)
class FusionResult:
    """Output of a fusion module.

    Attributes:
        embedding: (B, H) fused vector.
        importances: (B, E) per-sample encoder importances (rank_aware) else None.
        branches: branch vectors trained by auxiliary heads (mixed, pretrain stage) else empty.
    """

    embedding: Tensor
    importances: Tensor | None = None
    branches: tuple[Tensor, ...] = ()


def _check_features(features: str, where: str) -> None:
    if features not in ("sequence", "aggregated"):
        raise ValueError(f"{where}: data.features must be 'sequence' or 'aggregated', got {features!r}")


class UnimodalBranch(nn.Module):
    """One encoder's branch: temporal pooling + MLP (sequence), or an MLP on the aggregated vector.

    forward(x (B, T, D) or (B, D), mask (B, T) or None) -> (B, out_dim). Pooling width = ``model.latent_dim``;
    MLP: Linear(pooled, latent_dim) -> GELU -> Dropout -> Linear(latent_dim, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, *, features: str, model: ModelConfig, dropout: float) -> None:
        super().__init__()
        _check_features(features, "models/fusion.py UnimodalBranch")
        self.sequence = features == "sequence"
        if self.sequence:
            self.pool = POOLING.get(model.pooling)(in_dim, width=model.latent_dim, layers=model.layers,
                                                   heads=model.heads, dropout=dropout)
            pooled = self.pool.out_dim
        else:
            self.pool = None
            pooled = in_dim
        self.mlp = MLP(pooled, model.latent_dim, out_dim, dropout)
        self.out_dim = out_dim

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.pool is not None:
            x = self.pool(x, mask)
        return self.mlp(x)


def _branches(input_dims: dict[str, int], encoders: tuple[str, ...], out_dim: int, features: str,
              model: ModelConfig, dropout: float) -> nn.ModuleDict:
    return nn.ModuleDict({e: UnimodalBranch(input_dims[e], out_dim, features=features, model=model, dropout=dropout)
                          for e in encoders})


@FUSION.register("concat")
class ConcatFusion(nn.Module):
    """Unimodal branches (pooling + MLP to latent_dim) concatenated: -> (B, E * latent_dim).

    A modality-dropped encoder's branch vector is zeroed for that sample.
    """

    def __init__(self, input_dims: dict[str, int], *, encoders: tuple[str, ...], features: str,
                 model: ModelConfig, reg: RegConfig) -> None:
        super().__init__()
        self.encoders = tuple(encoders)
        self.branches = _branches(input_dims, self.encoders, model.latent_dim, features, model, reg.dropout)
        self.out_dim = model.latent_dim * len(self.encoders)

    def forward(self, inputs: dict[str, Tensor], masks: dict[str, Tensor] | None, keep: Tensor) -> FusionResult:
        vecs = [self.branches[e](inputs[e], None if masks is None else masks[e]) * keep[:, i:i + 1]
                for i, e in enumerate(self.encoders)]
        return FusionResult(embedding=torch.cat(vecs, dim=1))


@FUSION.register("attention")
class AttentionFusion(nn.Module):
    """Cross-modal transformer: per-encoder Linear(D_e, shared_dim) + learned modality embedding (+ sinusoidal
    position within the encoder's sequence), sequences concatenated in time (B, sum T_e, shared_dim), masks
    concatenated (a modality-dropped encoder is masked out), pre-norm transformer, attention pooling ->
    (B, shared_dim). Aggregated features: one token per encoder (B, E, shared_dim).

    Raises:
        ValueError: when ``model.heads`` does not divide ``model.shared_dim``.
    """

    def __init__(self, input_dims: dict[str, int], *, encoders: tuple[str, ...], features: str,
                 model: ModelConfig, reg: RegConfig) -> None:
        super().__init__()
        _check_features(features, "models/fusion.py attention")
        check_heads(model.shared_dim, model.heads, "models/fusion.py attention (width = model.shared_dim)")
        self.encoders = tuple(encoders)
        self.sequence = features == "sequence"
        w = model.shared_dim
        self.proj = nn.ModuleDict({e: nn.Linear(input_dims[e], w) for e in self.encoders})
        self.modality = nn.Parameter(torch.randn(len(self.encoders), w) * 0.02)
        self.encoder = TransformerStack(w, model.layers, model.heads, reg.dropout, where="models/fusion.py attention")
        self.pool = AttentionPool(w)
        self.out_dim = w

    def forward(self, inputs: dict[str, Tensor], masks: dict[str, Tensor] | None, keep: Tensor) -> FusionResult:
        seqs, ms = [], []
        for i, e in enumerate(self.encoders):
            x = inputs[e]
            if self.sequence:
                m = masks[e] & keep[:, i:i + 1]
                x = torch.where(m[..., None], x, torch.zeros((), dtype=x.dtype))
                h = self.proj[e](x) + self.modality[i] + sinusoidal_positions(x.shape[1], self.out_dim, x.device)
            else:
                m = keep[:, i:i + 1]
                h = (self.proj[e](x) + self.modality[i])[:, None, :]
            seqs.append(h)
            ms.append(m)
        h, mask = torch.cat(seqs, dim=1), torch.cat(ms, dim=1)
        empty = ~mask.any(dim=1)
        h = self.encoder(h, mask | empty[:, None])
        return FusionResult(embedding=self.pool(h, mask))


@FUSION.register("rank_aware")
class RankAwareFusion(nn.Module):
    """Rank-aware gated fusion after seed paper 001.

    Per encoder e: a unimodal branch to the shared space, z_e (B, shared_dim). An attention gate scores each
    encoder, s_e = v^T tanh(W (z_e + m_e)) (m_e a learned modality embedding); importances
    a = softmax(s) over the encoders kept by modality dropout (B, E). A hard top-n mask keeps the n largest
    importances per sample; the kept importances are renormalised, w = a * keep_n / sum(a * keep_n), and the
    fused vector is sum_e w_e z_e (B, shared_dim). Gradients flow through the kept importances (the top-n
    selection itself is not differentiated; with top_n = 1 the single weight is 1 and the gate gets no
    gradient). ``importances`` = w (B, E): exactly top_n nonzero entries per sample in eval mode (fewer only when
    modality dropout left fewer encoders).

    Raises:
        ValueError: when ``model.top_n`` is outside 1..E.
    """

    def __init__(self, input_dims: dict[str, int], *, encoders: tuple[str, ...], features: str,
                 model: ModelConfig, reg: RegConfig) -> None:
        super().__init__()
        self.encoders = tuple(encoders)
        n_enc = len(self.encoders)
        if not 1 <= model.top_n <= n_enc:
            raise ValueError(f"models/fusion.py rank_aware: model.top_n must be in 1..{n_enc} "
                             f"(the number of encoders {list(self.encoders)}), got {model.top_n}")
        self.top_n = model.top_n
        w = model.shared_dim
        self.branches = _branches(input_dims, self.encoders, w, features, model, reg.dropout)
        self.modality = nn.Parameter(torch.randn(n_enc, w) * 0.02)
        self.gate = nn.Sequential(nn.Linear(w, w), nn.Tanh(), nn.Linear(w, 1, bias=False))
        self.out_dim = w

    def forward(self, inputs: dict[str, Tensor], masks: dict[str, Tensor] | None, keep: Tensor) -> FusionResult:
        z = torch.stack([self.branches[e](inputs[e], None if masks is None else masks[e])
                         for e in self.encoders], dim=1)  # (B, E, W)
        z = z * keep[..., None]
        scores = self.gate(z + self.modality).squeeze(-1).masked_fill(~keep, float("-inf"))
        a = torch.softmax(scores, dim=1)  # (B, E), at least one kept encoder per row
        top = torch.topk(a.detach(), self.top_n, dim=1).indices
        sel = torch.zeros_like(keep).scatter(1, top, True) & keep
        kept = a * sel
        w = kept / kept.sum(dim=1, keepdim=True)
        return FusionResult(embedding=torch.einsum("be,bew->bw", w, z), importances=w)


@FUSION.register("mixed")
class MixedFusion(nn.Module):
    """Concat and attention branches, combined by attention over the two branch vectors (seed paper 002).

    Stages (set by the model's ``set_stage``):

    * ``"pretrain"``: returns the branch vectors (concat (B, E*latent_dim), attention (B, shared_dim)) as
      ``branches`` (each trained through its own auxiliary head) and their concatenation as ``embedding``;
      the combiner is not used.
    * ``"combine"``: both branch vectors are projected to shared_dim, a learned branch embedding is added, and
      attention pooling over the two tokens gives ``embedding`` (B, shared_dim).
    """

    STAGES = ("pretrain", "combine")

    def __init__(self, input_dims: dict[str, int], *, encoders: tuple[str, ...], features: str,
                 model: ModelConfig, reg: RegConfig) -> None:
        super().__init__()
        kw = dict(encoders=encoders, features=features, model=model, reg=reg)
        self.concat = ConcatFusion(input_dims, **kw)
        self.attention = AttentionFusion(input_dims, **kw)
        w = model.shared_dim
        self.combiner = BranchCombiner(self.concat.out_dim, self.attention.out_dim, w)
        self.branch_dims = (self.concat.out_dim, self.attention.out_dim)
        self.out_dim = w
        self.stage = "pretrain"

    def forward(self, inputs: dict[str, Tensor], masks: dict[str, Tensor] | None, keep: Tensor) -> FusionResult:
        c = self.concat(inputs, masks, keep).embedding
        a = self.attention(inputs, masks, keep).embedding
        if self.stage == "pretrain":
            return FusionResult(embedding=torch.cat([c, a], dim=1), branches=(c, a))
        return FusionResult(embedding=self.combiner(c, a))


class BranchCombiner(nn.Module):
    """Attention over two branch vectors: c (B, Dc), a (B, Da) -> Linear to width + learned branch embedding
    -> tokens (B, 2, width) -> attention pooling -> (B, width)."""

    def __init__(self, concat_dim: int, attention_dim: int, width: int) -> None:
        super().__init__()
        self.proj_concat = nn.Linear(concat_dim, width)
        self.proj_attention = nn.Linear(attention_dim, width)
        self.branch_embedding = nn.Parameter(torch.randn(2, width) * 0.02)
        self.pool = AttentionPool(width)

    def forward(self, c: Tensor, a: Tensor) -> Tensor:
        tokens = torch.stack([self.proj_concat(c), self.proj_attention(a)], dim=1) + self.branch_embedding
        ones = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return self.pool(tokens, ones)
