"""The model output record shared by every model, head and the losses."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class ModelOutput:
    """What every model in :mod:`blemore_core.models` returns.

    Attributes:
        logits: (B, 6) temperature-scaled logits of the final distribution (may be log-probabilities).
        probs: (B, 6) the distribution thresholds and ensembles use; rows sum to 1.
        embedding: (B, H) fused representation (input of the head; the domain term's input).
        presence_logits: (B, 6) presence head logits (``presence_salience`` head) else None.
        salience_logits: (B, 6) salience head logits (``presence_salience`` head) else None.
        set_logits: (B, 16) label-set logits over :data:`blemore_core.labels.LABEL_SETS` (``structured``) else None.
        ratio_logits: (B, 3) ratio logits (50/50, 70/30, 30/70 within the pair, first = lower emotion index)
            for the most probable pair (``structured``) else None.
        pair_ratio_logits: (B, 10, 3) ratio logits for each of the 10 pairs (LABEL_SETS[6:] order)
            (``structured``) else None; the ratio loss reads the true pair's row.
        importances: (B, E) per-sample encoder importances after top-n selection (``rank_aware``) else None.
        aux: auxiliary outputs trained alongside the main one (``mixed`` fusion in its pretrain stage: one per
            branch); :func:`blemore_core.losses.compute_loss` adds their supervised losses. Empty otherwise.
    """

    logits: Tensor
    probs: Tensor
    embedding: Tensor
    presence_logits: Tensor | None = None
    salience_logits: Tensor | None = None
    set_logits: Tensor | None = None
    ratio_logits: Tensor | None = None
    pair_ratio_logits: Tensor | None = None
    importances: Tensor | None = None
    aux: tuple[ModelOutput, ...] = ()

    def float(self) -> ModelOutput:
        """A copy with every floating tensor in float32 (outputs of a ``torch.autocast`` bf16 forward).

        Losses and threshold fits then run in float32 whatever the forward's precision (``train.precision``).
        """
        changes = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != torch.float32:
                changes[f.name] = v.float()
        if self.aux:
            changes["aux"] = tuple(a.float() for a in self.aux)
        return replace(self, **changes) if changes else self
