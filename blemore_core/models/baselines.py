"""The organisers' baselines (blemore-common ``model/models.py``) on aggregated features (docs/ARCHITECTURE.md section 4).

Registered in :data:`~blemore_core.models.registry.ARCH`: ``linear`` = nn.Linear(in, 6); ``mlp256`` /
``mlp512`` = Linear(in, hidden) -> ReLU -> Dropout(reg.dropout) -> Linear(hidden, 6). The input is every
encoder's (7*D_e,) aggregated vector concatenated in ``data.encoders`` order, (B, sum 7*D_e); the output is a
softmax distribution (no temperature, as the organisers trained them with KL to the soft label). Modality
dropout zeroes a dropped encoder's slice of the input. ``embedding`` is the hidden layer (MLP) or the input
(linear). Shape legend: (B, D) pooled, (B, C) logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..labels import NUM_EMOTIONS
from .base import BlemoreModel
from .layers import full_precision
from .output import ModelOutput
from .registry import ARCH

if TYPE_CHECKING:  # type hints only: the config module imports the model registries (no cycle)
    from ..config import RegConfig


class AggregatedBaseline(BlemoreModel):
    """forward(inputs {e: (B, 7*D_e)}, masks None) -> ModelOutput(logits (B, 6), probs (B, 6), embedding)."""

    def __init__(self, input_dims: dict[str, int], *, encoders: tuple[str, ...], reg: RegConfig,
                 hidden: int | None) -> None:
        super().__init__(tuple(encoders), input_dims, "aggregated", reg.modality_dropout, 0.0)
        in_dim = sum(self.input_dims[e] for e in self.encoders)
        if hidden is None:
            self.body: nn.Module = nn.Identity()
            self.fc = nn.Linear(in_dim, NUM_EMOTIONS)
        else:
            self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(reg.dropout))
            self.fc = nn.Linear(hidden, NUM_EMOTIONS)

    def forward(self, inputs: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> ModelOutput:
        self.check_inputs(inputs, None)
        _, keep = self.regularise(inputs, None)
        x = torch.cat([inputs[e] * keep[:, i:i + 1] for i, e in enumerate(self.encoders)], dim=1)
        h = self.body(x)
        logits = full_precision(self.fc, h)
        return ModelOutput(logits=logits, probs=torch.softmax(logits, dim=1), embedding=h)


@ARCH.register("linear")
class LinearBaseline(AggregatedBaseline):
    """nn.Linear(sum 7*D_e, 6) + softmax (the organisers' ``Linear``)."""

    def __init__(self, input_dims: dict[str, int], *, encoders: tuple[str, ...], reg: RegConfig) -> None:
        super().__init__(input_dims, encoders=encoders, reg=reg, hidden=None)


@ARCH.register("mlp256")
class MLP256Baseline(AggregatedBaseline):
    """Linear(in, 256) -> ReLU -> Dropout -> Linear(256, 6) + softmax (the organisers' ``MLP``, hidden 256)."""

    def __init__(self, input_dims: dict[str, int], *, encoders: tuple[str, ...], reg: RegConfig) -> None:
        super().__init__(input_dims, encoders=encoders, reg=reg, hidden=256)


@ARCH.register("mlp512")
class MLP512Baseline(AggregatedBaseline):
    """Linear(in, 512) -> ReLU -> Dropout -> Linear(512, 6) + softmax (the organisers' ``MLP``, hidden 512)."""

    def __init__(self, input_dims: dict[str, int], *, encoders: tuple[str, ...], reg: RegConfig) -> None:
        super().__init__(input_dims, encoders=encoders, reg=reg, hidden=512)
