"""Common model behaviour: input checking, stages, and the training-time modality / temporal dropout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import check_rate, modality_keep, temporal_dropout

STAGES: tuple[str, ...] = ("pretrain", "combine")


class BlemoreModel(nn.Module):
    """Base of every model built by :func:`blemore_core.models.build_model`.

    forward(inputs: dict[str, Tensor], masks: dict[str, Tensor] | None) -> ModelOutput, where
    ``inputs[e]`` is (B, T, D_e) with ``masks[e]`` (B, T) bool True = real frame (``features="sequence"``), or
    (B, D_e) with ``masks`` None (``features="aggregated"``; D_e = 7 * per-frame dim).

    Attributes:
        encoders: encoder keys in input order (``cfg.data.encoders``).
        input_dims: encoder -> last input dimension.
        features: ``"sequence"`` or ``"aggregated"``.
        stage: ``"pretrain"`` or ``"combine"`` (only the mixed fusion behaves differently).
    """

    def __init__(self, encoders: tuple[str, ...], input_dims: dict[str, int], features: str,
                 modality_dropout: float = 0.0, temporal_dropout: float = 0.0) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("models: data.encoders must name at least one encoder, got []")
        missing = [e for e in encoders if e not in input_dims]
        if missing:
            raise ValueError(f"models/builders.py: input_dims lacks encoders {missing} (has {sorted(input_dims)})")
        bad = {e: input_dims[e] for e in encoders if int(input_dims[e]) < 1}
        if bad:
            raise ValueError(f"models/builders.py: input_dims must be >= 1, got {bad}")
        if features not in ("sequence", "aggregated"):
            raise ValueError(f"models/builders.py: data.features must be 'sequence' or 'aggregated', got {features!r}")
        check_rate(modality_dropout, "reg.modality_dropout", "models/builders.py")
        check_rate(temporal_dropout, "reg.temporal_dropout", "models/builders.py")
        self.encoders = tuple(encoders)
        self.input_dims = {e: int(input_dims[e]) for e in encoders}
        self.features = features
        self.modality_dropout = float(modality_dropout)
        self.temporal_dropout = float(temporal_dropout)
        self.stage = "pretrain"

    # ------------------------------------------------------------------ stages
    def set_stage(self, stage: str) -> None:
        """Switch the training stage (``"pretrain"`` | ``"combine"``); a no-op except for mixed fusion.

        Raises:
            ValueError: for another stage name.
        """
        if stage not in STAGES:
            raise ValueError(f"models: stage must be one of {list(STAGES)}, got {stage!r}")
        self.stage = stage

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, inputs: dict[str, Tensor], masks: dict[str, Tensor] | None) -> None:
        """Raise ValueError when an encoder is missing or shapes disagree with the model's features."""
        missing = [e for e in self.encoders if e not in inputs]
        if missing:
            raise ValueError(f"models: inputs lack encoders {missing} (model encoders {list(self.encoders)})")
        want = 3 if self.features == "sequence" else 2
        for e in self.encoders:
            x = inputs[e]
            if x.dim() != want or x.shape[-1] != self.input_dims[e]:
                raise ValueError(f"models: inputs[{e!r}] must be {'(B, T, D)' if want == 3 else '(B, D)'} with "
                                 f"D = {self.input_dims[e]} (data.features={self.features!r}), got {tuple(x.shape)}")
        if self.features == "sequence":
            if masks is None or any(e not in masks for e in self.encoders):
                raise ValueError(f"models: sequence inputs need masks for every encoder {list(self.encoders)}")
            for e in self.encoders:
                if masks[e].shape != inputs[e].shape[:2] or masks[e].dtype != torch.bool:
                    raise ValueError(f"models: masks[{e!r}] must be bool {tuple(inputs[e].shape[:2])}, got "
                                     f"{masks[e].dtype} {tuple(masks[e].shape)}")

    def regularise(self, inputs: dict[str, Tensor],
                   masks: dict[str, Tensor] | None) -> tuple[dict[str, Tensor] | None, Tensor]:
        """Training-time temporal dropout on masks and modality dropout draw.

        Returns:
            (masks after temporal dropout (or unchanged / None), keep (B, E) bool). In eval mode masks are
            returned unchanged and keep is all True.
        """
        x0 = inputs[self.encoders[0]]
        b, dev = x0.shape[0], x0.device
        if not self.training:
            return masks, torch.ones(b, len(self.encoders), dtype=torch.bool, device=dev)
        if masks is not None and self.temporal_dropout > 0:
            masks = {e: temporal_dropout(masks[e], self.temporal_dropout) for e in self.encoders}
        return masks, modality_keep(b, len(self.encoders), self.modality_dropout, dev)
