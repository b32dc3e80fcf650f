"""Training losses (docs/ARCHITECTURE.md section 4, Losses).

:func:`compute_loss` combines, each weighted by its :class:`~blemore_core.config.LossConfig` coefficient (a 0
coefficient skips the term's computation):

* ``kl``: KL(y_s || p) with the label-smoothed soft label y_s = (1 - eps) * y + eps / 6, mean over the batch.
  For the ``structured`` head the ``kl`` coefficient weights its natural likelihood instead:
  cross-entropy on the 16-way label set (label smoothing eps) + cross-entropy on the 3-way ratio of the true
  pair for blend rows (parts ``"set"`` and ``"ratio"``), so that the head trains with the default config.
* ``bce``: binary cross-entropy on presence (target y > 0), from ``presence_logits`` when the head has them,
  else from ``probs`` clamped to [1e-6, 1 - 1e-6]; mean over B * 6 entries.
* ``rank``: hinge max(0, m - (p[dominant] - p[subdominant])) on unequal blends (70/30, 30/70 truths), mean
  over those rows (0 when the batch has none).
* ``domain``: unsupervised feature-level domain term between the batch's embeddings and unlabeled target
  embeddings (:func:`domain_loss`, MMD or CORAL). Target *labels* never enter: the signature takes none.

Outputs with ``aux`` (mixed fusion, pretrain stage) get the supervised terms summed over their auxiliary
outputs; the domain term uses the main output's embedding.

:func:`loss_terms` returns the same terms as tensors; with ``vmap_safe=True`` it uses formulations without
data-dependent control flow or host synchronisation (masked means instead of boolean indexing, a tensor MMD
bandwidth, no label-set validation), so that it runs per fold under ``torch.func.vmap``
(:mod:`blemore_core.fused`). Those agree with the default ones to float32 rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import LossConfig
from .labels import LABEL_SETS, NUM_EMOTIONS
from .models.output import ModelOutput

DOMAIN_KINDS: tuple[str, ...] = ("mmd", "coral")
MMD_SCALES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Bandwidth multipliers of the multi-bandwidth Gaussian kernel (times the median squared distance)."""
_PROB_EPS = 1e-6


def _set_lookup(device: torch.device) -> Tensor:
    """(64,) int64: presence bit pattern (sum_e 2^e [y_e > 0]) -> label-set index, -1 for invalid patterns."""
    lut = torch.full((2 ** NUM_EMOTIONS,), -1, dtype=torch.long)
    for k, s in enumerate(LABEL_SETS):
        lut[sum(1 << e for e in s)] = k
    return lut.to(device)


def structured_targets(target: Tensor, validate: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Label-set, pair and ratio targets of salience arrays.

    Args:
        target: (B, 6) salience arrays (unsmoothed).
        validate: raise on rows that are not a valid label set (a host synchronisation; ``False`` under
            ``vmap``, where the caller validates the labels beforehand; invalid rows then get index -1).

    Returns:
        ``(set_idx (B,), pair_idx (B,), ratio (B,))`` int64: the LABEL_SETS index; for blends the pair index
        0..9 (LABEL_SETS[6:] order) and ratio class 0 = 50/50, 1 = lower-index emotion 70, 2 = lower-index 30;
        -1 in ``pair_idx``/``ratio`` for non-blends.

    Raises:
        ValueError: when a row's non-zero emotions are not a valid label set.
    """
    present = target > 0
    code = (present.long() << torch.arange(NUM_EMOTIONS, device=target.device)).sum(dim=1)
    set_idx = _set_lookup(target.device)[code]
    if validate and (set_idx < 0).any():
        bad = torch.nonzero(set_idx < 0).squeeze(1)[:5].tolist()
        raise ValueError(f"losses.py: target rows {bad} are not valid BlEmoRe label sets "
                         f"(e.g. {target[bad[0]].tolist()})")
    n_single = sum(len(s) == 1 for s in LABEL_SETS)
    blend = set_idx >= n_single
    # lower / higher emotion index of each row's pair: first and last present index
    idx = torch.arange(NUM_EMOTIONS, device=target.device)
    lo = torch.where(present, idx, NUM_EMOTIONS).min(dim=1).values.clamp_max(NUM_EMOTIONS - 1)
    hi = torch.where(present, idx, -1).max(dim=1).values.clamp_min(0)
    y_lo = target.gather(1, lo[:, None]).squeeze(1)
    y_hi = target.gather(1, hi[:, None]).squeeze(1)
    ratio = torch.where(torch.isclose(y_lo, y_hi, atol=1e-3), 0, torch.where(y_lo > y_hi, 1, 2))
    minus = torch.full_like(set_idx, -1)
    return set_idx, torch.where(blend, set_idx - n_single, minus), torch.where(blend, ratio, minus)


def kl_divergence(target: Tensor, log_probs: Tensor) -> Tensor:
    """Mean over rows of KL(target || p) = sum_e t_e (log t_e - log p_e), with 0 log 0 = 0. (B, 6) -> scalar."""
    return (torch.xlogy(target, target) - target * log_probs).sum(dim=1).mean()


def margin_ranking(probs: Tensor, target: Tensor, margin: float) -> Tensor:
    """Hinge on unequal blends: mean over rows with two unequal non-zero saliences of
    max(0, margin - (p[dominant] - p[subdominant])). Returns 0 (with graph) when there are no such rows."""
    top2 = target.topk(2, dim=1)
    unequal = (top2.values[:, 1] > 0) & (top2.values[:, 0] - top2.values[:, 1] > 1e-3)
    if not unequal.any():
        return probs.sum() * 0.0
    p_dom = probs.gather(1, top2.indices[:, :1]).squeeze(1)
    p_sub = probs.gather(1, top2.indices[:, 1:2]).squeeze(1)
    hinge = F.relu(margin - (p_dom - p_sub))
    return hinge[unequal].mean()


def margin_ranking_masked(probs: Tensor, target: Tensor, margin: float) -> Tensor:
    """:func:`margin_ranking` as a masked mean (no data-dependent branch or shape: runs under ``vmap``).

    Equal to :func:`margin_ranking` to float32 rounding; 0 (with graph) when the batch has no unequal blend.
    """
    top2 = target.topk(2, dim=1)
    unequal = (top2.values[:, 1] > 0) & (top2.values[:, 0] - top2.values[:, 1] > 1e-3)
    p_dom = probs.gather(1, top2.indices[:, :1]).squeeze(1)
    p_sub = probs.gather(1, top2.indices[:, 1:2]).squeeze(1)
    hinge = F.relu(margin - (p_dom - p_sub))
    w = unequal.to(hinge.dtype)
    return (hinge * w).sum() / w.sum().clamp_min(1.0)


def _pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def mmd(source: Tensor, target: Tensor, bandwidths: tuple[float, ...] | None = None,
        vmap_safe: bool = False) -> Tensor:
    """Biased squared MMD with a multi-bandwidth Gaussian kernel (Gretton et al. 2012).

    k(x, y) = sum_s exp(-||x - y||^2 / s) over bandwidths s; MMD^2 = mean k(S, S) + mean k(T, T) - 2 mean k(S, T).
    Default bandwidths: :data:`MMD_SCALES` times the median squared distance of the pooled set (detached).
    0 for identical sets.

    Args:
        source: (N, H). target: (M, H). bandwidths: explicit s values (squared-distance units).
        vmap_safe: keep the default bandwidths as (detached) tensors instead of Python floats, so that the
            function runs under ``torch.func.vmap`` (no host synchronisation); equal to float32 rounding.
    """
    if bandwidths is None:
        with torch.no_grad():
            pooled = torch.cat([source, target])
            d = _pairwise_sq_dists(pooled, pooled)
            n = len(pooled)
            if n > 1:
                off = torch.nonzero(~torch.eye(n, dtype=torch.bool, device=d.device).flatten()).squeeze(1)
                med = d.flatten()[off].median()
            else:
                med = d.sum()
            base = med.clamp_min(1e-6) if vmap_safe else float(med.clamp_min(1e-6))
        bandwidths = tuple(base * s for s in MMD_SCALES)

    def k(a: Tensor, b: Tensor) -> Tensor:
        d = _pairwise_sq_dists(a, b)
        return sum(torch.exp(-d / s) for s in bandwidths)

    return k(source, source).mean() + k(target, target).mean() - 2 * k(source, target).mean()


def coral(source: Tensor, target: Tensor) -> Tensor:
    """CORAL loss (Sun & Saenko 2016): ||C_S - C_T||_F^2 / (4 H^2), C the unbiased (n - 1) covariance. (N, H), (M, H)."""
    def cov(x: Tensor) -> Tensor:
        xc = x - x.mean(dim=0, keepdim=True)
        return xc.T @ xc / (x.shape[0] - 1)

    h = source.shape[1]
    return (cov(source) - cov(target)).pow(2).sum() / (4 * h * h)


def domain_loss(source_emb: Tensor, target_emb: Tensor, kind: str) -> Tensor:
    """Unsupervised domain term between training-batch embeddings and unlabeled target embeddings.

    Depends on the embeddings only (there is no label argument). Args: source_emb (N, H), target_emb (M, H),
    kind ``"mmd"`` | ``"coral"``.

    Raises:
        ValueError: for an unknown kind, mismatched widths, or fewer than 2 rows on a side for CORAL.
    """
    return _domain_loss(source_emb, target_emb, kind, vmap_safe=False)


def _domain_loss(source_emb: Tensor, target_emb: Tensor, kind: str, vmap_safe: bool) -> Tensor:
    """:func:`domain_loss`; ``vmap_safe`` as in :func:`mmd`.

    Raises:
        ValueError: for an unknown kind, mismatched widths, or fewer than 2 rows on a side for CORAL.
    """
    if kind not in DOMAIN_KINDS:
        raise ValueError(f"losses.py: loss.domain_kind must be one of {list(DOMAIN_KINDS)}, got {kind!r}")
    if source_emb.dim() != 2 or target_emb.dim() != 2 or source_emb.shape[1] != target_emb.shape[1]:
        raise ValueError(f"losses.py domain_loss: embeddings must be (N, H) and (M, H) with the same H, got "
                         f"{tuple(source_emb.shape)} and {tuple(target_emb.shape)}")
    if kind == "coral":
        if len(source_emb) < 2 or len(target_emb) < 2:
            raise ValueError(f"losses.py coral: needs >= 2 rows per side, got {len(source_emb)} and {len(target_emb)}")
        return coral(source_emb, target_emb)
    return mmd(source_emb, target_emb.to(source_emb.dtype), vmap_safe=vmap_safe)


def _structured(out: ModelOutput, target: Tensor, cfg: LossConfig, vmap_safe: bool) -> dict[str, Tensor]:
    """The ``set`` and ``ratio`` terms of the structured head (weighted by ``cfg.kl``)."""
    eps = cfg.label_smoothing
    set_idx, pair_idx, ratio = structured_targets(target, validate=not vmap_safe)
    parts = {"set": cfg.kl * F.cross_entropy(out.set_logits, set_idx, label_smoothing=eps)}
    if out.pair_ratio_logits is None:
        parts["ratio"] = out.set_logits.sum() * 0.0
        return parts
    blend = pair_idx >= 0
    if vmap_safe:  # masked mean over blend rows: no data-dependent shape
        logits = out.pair_ratio_logits.gather(
            1, pair_idx.clamp_min(0)[:, None, None].expand(-1, 1, out.pair_ratio_logits.shape[2])).squeeze(1)
        ce = F.cross_entropy(logits, ratio.clamp_min(0), reduction="none")
        w = blend.to(ce.dtype)
        parts["ratio"] = cfg.kl * ((ce * w).sum() / w.sum().clamp_min(1.0))
    elif blend.any():
        rows = torch.nonzero(blend).squeeze(1)
        parts["ratio"] = cfg.kl * F.cross_entropy(out.pair_ratio_logits[rows, pair_idx[rows]], ratio[rows])
    else:
        parts["ratio"] = out.set_logits.sum() * 0.0
    return parts


def _supervised(out: ModelOutput, target: Tensor, cfg: LossConfig,
                vmap_safe: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    parts: dict[str, Tensor] = {}
    eps = cfg.label_smoothing
    if cfg.kl > 0:
        if out.set_logits is not None:
            parts.update(_structured(out, target, cfg, vmap_safe))
        else:
            smooth = (1 - eps) * target + eps / NUM_EMOTIONS
            parts["kl"] = cfg.kl * kl_divergence(smooth, torch.log_softmax(out.logits, dim=1))
    if cfg.bce > 0:
        presence = (target > 0).to(out.probs.dtype)
        if out.presence_logits is not None:
            bce = F.binary_cross_entropy_with_logits(out.presence_logits, presence)
        else:
            bce = F.binary_cross_entropy(out.probs.clamp(_PROB_EPS, 1 - _PROB_EPS), presence)
        parts["bce"] = cfg.bce * bce
    if cfg.rank > 0:
        rank = margin_ranking_masked if vmap_safe else margin_ranking
        parts["rank"] = cfg.rank * rank(out.probs, target, cfg.margin)
    total = sum(parts.values()) if parts else out.probs.sum() * 0.0
    return total, parts


def loss_terms(out: ModelOutput, target: Tensor, cfg: LossConfig, target_embedding: Tensor | None = None, *,
               vmap_safe: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Total training loss of one batch and its weighted terms, as tensors (see :func:`compute_loss`).

    Args:
        out, target, cfg, target_embedding: as in :func:`compute_loss` (no target labels are accepted).
        vmap_safe: use the formulations that run under ``torch.func.vmap`` (module docstring); label sets of a
            structured head are then not validated here (the caller validates them once).

    Returns:
        ``(total, parts)``: scalar Tensor with graph, and ``{term: scalar Tensor}`` of each weighted term
        (``kl`` or ``set``/``ratio``, ``bce``, ``rank``, ``domain``; no ``total`` entry).

    Raises:
        ValueError: as :func:`compute_loss`.
    """
    if target.dim() != 2 or target.shape != out.probs.shape:
        raise ValueError(f"losses.py compute_loss: target must be (B, 6) like out.probs {tuple(out.probs.shape)}, "
                         f"got {tuple(target.shape)}")
    target = target.to(out.probs.dtype)
    if out.aux:
        total, parts = 0.0, {}
        for o in out.aux:
            t, p = _supervised(o, target, cfg, vmap_safe)
            total = total + t
            for k, v in p.items():
                parts[k] = parts.get(k, 0.0) + v
    else:
        total, parts = _supervised(out, target, cfg, vmap_safe)
    if cfg.domain > 0:
        if target_embedding is None:
            raise ValueError(f"losses.py compute_loss: loss.domain={cfg.domain} > 0 needs target_embedding "
                             "(embeddings of unlabeled target inputs)")
        parts["domain"] = cfg.domain * _domain_loss(out.embedding, target_embedding, cfg.domain_kind, vmap_safe)
        total = total + parts["domain"]
    return total, parts


def compute_loss(out: ModelOutput, target: Tensor, cfg: LossConfig,
                 target_embedding: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Total training loss of one batch.

    Args:
        out: the model output for the labelled batch (B rows).
        target: (B, 6) float salience arrays of the batch (fractions; rows sum to 1).
        cfg: loss coefficients (a 0 coefficient skips that term).
        target_embedding: (B', H) embeddings of unlabeled target inputs (validation or test features) for the
            domain term; required when ``cfg.domain > 0``. No target labels are accepted.

    Returns:
        ``(total, parts)``: scalar Tensor with graph, and a dict of floats of each weighted term (``kl`` or
        ``set``/``ratio``, ``bce``, ``rank``, ``domain``) plus ``total`` (:func:`loss_terms` with the values as
        floats).

    Raises:
        ValueError: for a target of the wrong shape, invalid label sets (structured head), or ``cfg.domain > 0``
            without ``target_embedding``.
    """
    total, parts = loss_terms(out, target, cfg, target_embedding)
    floats = {k: float(v.detach()) for k, v in parts.items()}
    floats["total"] = float(total.detach())
    return total, floats
