"""Training losses (DESIGN.md section 4, Losses).

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


def structured_targets(target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Label-set, pair and ratio targets of salience arrays.

    Args:
        target: (B, 6) salience arrays (unsmoothed).

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
    if (set_idx < 0).any():
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


def _pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def mmd(source: Tensor, target: Tensor, bandwidths: tuple[float, ...] | None = None) -> Tensor:
    """Biased squared MMD with a multi-bandwidth Gaussian kernel (Gretton et al. 2012).

    k(x, y) = sum_s exp(-||x - y||^2 / s) over bandwidths s; MMD^2 = mean k(S, S) + mean k(T, T) - 2 mean k(S, T).
    Default bandwidths: :data:`MMD_SCALES` times the median squared distance of the pooled set (detached).
    0 for identical sets.

    Args:
        source: (N, H). target: (M, H). bandwidths: explicit s values (squared-distance units).
    """
    if bandwidths is None:
        with torch.no_grad():
            pooled = torch.cat([source, target])
            d = _pairwise_sq_dists(pooled, pooled)
            med = d[~torch.eye(len(pooled), dtype=torch.bool, device=d.device)].median() if len(pooled) > 1 else d.sum()
            base = float(med.clamp_min(1e-6))
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
    if kind not in DOMAIN_KINDS:
        raise ValueError(f"losses.py: loss.domain_kind must be one of {list(DOMAIN_KINDS)}, got {kind!r}")
    if source_emb.dim() != 2 or target_emb.dim() != 2 or source_emb.shape[1] != target_emb.shape[1]:
        raise ValueError(f"losses.py domain_loss: embeddings must be (N, H) and (M, H) with the same H, got "
                         f"{tuple(source_emb.shape)} and {tuple(target_emb.shape)}")
    if kind == "coral":
        if len(source_emb) < 2 or len(target_emb) < 2:
            raise ValueError(f"losses.py coral: needs >= 2 rows per side, got {len(source_emb)} and {len(target_emb)}")
        return coral(source_emb, target_emb)
    return mmd(source_emb, target_emb.to(source_emb.dtype))


def _supervised(out: ModelOutput, target: Tensor, cfg: LossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    parts: dict[str, Tensor] = {}
    eps = cfg.label_smoothing
    if cfg.kl > 0:
        if out.set_logits is not None:
            set_idx, pair_idx, ratio = structured_targets(target)
            parts["set"] = cfg.kl * F.cross_entropy(out.set_logits, set_idx, label_smoothing=eps)
            blend = pair_idx >= 0
            if blend.any() and out.pair_ratio_logits is not None:
                rows = torch.nonzero(blend).squeeze(1)
                parts["ratio"] = cfg.kl * F.cross_entropy(out.pair_ratio_logits[rows, pair_idx[rows]], ratio[rows])
            else:
                parts["ratio"] = out.set_logits.sum() * 0.0
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
        parts["rank"] = cfg.rank * margin_ranking(out.probs, target, cfg.margin)
    total = sum(parts.values()) if parts else out.probs.sum() * 0.0
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
        ``set``/``ratio``, ``bce``, ``rank``, ``domain``) plus ``total``.

    Raises:
        ValueError: for a target of the wrong shape, invalid label sets (structured head), or ``cfg.domain > 0``
            without ``target_embedding``.
    """
    if target.dim() != 2 or target.shape != out.probs.shape:
        raise ValueError(f"losses.py compute_loss: target must be (B, 6) like out.probs {tuple(out.probs.shape)}, "
                         f"got {tuple(target.shape)}")
    target = target.to(out.probs.dtype)
    if out.aux:
        total, parts = 0.0, {}
        for o in out.aux:
            t, p = _supervised(o, target, cfg)
            total = total + t
            for k, v in p.items():
                parts[k] = parts.get(k, 0.0) + v
    else:
        total, parts = _supervised(out, target, cfg)
    if cfg.domain > 0:
        if target_embedding is None:
            raise ValueError(f"losses.py compute_loss: loss.domain={cfg.domain} > 0 needs target_embedding "
                             "(embeddings of unlabeled target inputs)")
        parts["domain"] = cfg.domain * domain_loss(out.embedding, target_embedding, cfg.domain_kind)
        total = total + parts["domain"]
    floats = {k: float(v.detach()) for k, v in parts.items()}
    floats["total"] = float(total.detach())
    return total, floats
