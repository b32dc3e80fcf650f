"""Assemble models from a :class:`~blemore_core.config.Config` (docs/ARCHITECTURE.md section 4).

``build_model(cfg, input_dims)``:

* ``model.arch = "fusion"``: :class:`FusionModel` = fusion (``model.fusion``, whose unimodal branches use
  ``model.pooling`` for sequence features) + head (``model.head``);
* ``model.arch`` in ``linear | mlp256 | mlp512``: the organisers' baselines (aggregated features only).

Shape legend: (B, T, D) sequences, (B, T) masks with True = real frame, (B, D) pooled, (B, C) logits.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .base import STAGES, BlemoreModel
from .fusion import MixedFusion
from .heads import decode_structured
from .layers import full_precision
from .output import ModelOutput
from .registry import ARCH, FUSION, HEAD

if TYPE_CHECKING:  # type hints only: the config module imports the model registries (no cycle)
    from ..config import Config


class FusionModel(BlemoreModel):
    """Fusion + head, with modality and temporal dropout applied in ``forward`` while training.

    forward(inputs, masks) -> ModelOutput: inputs[e] (B, T, D_e) with masks[e] (B, T) True = real frame, or
    (B, 7*D_e) with masks None. ``importances`` (B, E) is set for rank_aware fusion.

    Mixed fusion (seed paper 002) trains in two stages, switched with :meth:`set_stage`:

    * ``"pretrain"`` (the stage after construction): the concat branch and the attention branch are trained,
      each through its own auxiliary head (same head type as ``model.head``). The output's ``aux`` holds the two
      branch outputs (the loss sums their supervised terms), ``probs`` is the mean of the two branch
      distributions, ``embedding`` the concatenated branch vectors. The combiner and the main head are frozen
      (``requires_grad`` False) and unused.
    * ``"combine"``: both branches and the auxiliary heads are frozen (``requires_grad`` False, kept in eval
      mode even under ``model.train()`` so their dropout is off); the combining attention over the two branch
      vectors and the main head are trained; ``embedding`` is the combined vector (B, shared_dim).
    """

    def __init__(self, cfg: Config, input_dims: dict[str, int]) -> None:
        d, m, r = cfg.data, cfg.model, cfg.reg
        super().__init__(tuple(d.encoders), input_dims, d.features, r.modality_dropout,
                         r.temporal_dropout if d.features == "sequence" else 0.0)
        self.fusion = FUSION.get(m.fusion)(self.input_dims, encoders=self.encoders, features=d.features,
                                           model=m, reg=r)
        head_cls = HEAD.get(m.head)
        self.head = head_cls(self.fusion.out_dim, dropout=r.dropout)
        self.mixed = isinstance(self.fusion, MixedFusion)
        self.aux_heads = (nn.ModuleList([head_cls(dim, dropout=r.dropout) for dim in self.fusion.branch_dims])
                          if self.mixed else None)
        # the stage travels in state_dict() as a tensor buffer (0 = pretrain, 1 = combine) and is re-applied on load
        self.register_buffer("stage_code", torch.tensor(0, dtype=torch.long))
        self.register_load_state_dict_post_hook(FusionModel._restore_stage)
        self.set_stage("pretrain")

    def set_stage(self, stage: str) -> None:
        """``"pretrain"`` | ``"combine"``; see the class docstring (a no-op apart from mixed fusion).

        Raises:
            ValueError: for another stage name.
        """
        super().set_stage(stage)
        self.stage_code.fill_(STAGES.index(stage))
        if not self.mixed:
            return
        self.fusion.stage = stage
        pre = stage == "pretrain"
        for mod in (self.fusion.concat, self.fusion.attention, self.aux_heads):
            mod.requires_grad_(pre)
        for mod in (self.fusion.combiner, self.head):
            mod.requires_grad_(not pre)
        self.train(self.training)

    @staticmethod
    def _restore_stage(module: FusionModel, incompatible_keys) -> None:
        """load_state_dict post-hook: re-apply the stage saved in the ``stage_code`` buffer."""
        module.set_stage(STAGES[int(module.stage_code)])

    def train(self, mode: bool = True) -> FusionModel:
        super().train(mode)
        if self.mixed and self.stage == "combine":
            for mod in (self.fusion.concat, self.fusion.attention, self.aux_heads):
                mod.eval()
        return self

    def forward(self, inputs: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> ModelOutput:
        self.check_inputs(inputs, masks)
        masks, keep = self.regularise(inputs, masks if self.features == "sequence" else None)
        f = self.fusion(inputs, masks, keep)
        if self.mixed and self.stage == "pretrain":
            aux = tuple(full_precision(h, b) for h, b in zip(self.aux_heads, f.branches, strict=True))
            probs = torch.stack([o.probs for o in aux]).mean(dim=0)
            return ModelOutput(logits=probs.clamp_min(1e-12).log(), probs=probs, embedding=f.embedding, aux=aux)
        out = full_precision(self.head, f.embedding)
        return dataclasses.replace(out, importances=f.importances)

    def decode_structured(self, out: ModelOutput) -> Tensor:
        """(B, 6) salience arrays of valid labels only, from a structured-head output (see heads.py).

        Raises:
            ValueError: when the output has no structured fields.
        """
        return decode_structured(out)


def build_model(cfg: Config, input_dims: dict[str, int]) -> BlemoreModel:
    """Build the model named by ``cfg.model`` for the encoders of ``cfg.data``.

    Args:
        cfg: a resolved Config.
        input_dims: encoder -> D (sequence features) or 7*D (aggregated features), for every encoder of
            ``cfg.data.encoders``.

    Returns:
        an nn.Module (:class:`BlemoreModel`) with ``forward(inputs, masks) -> ModelOutput``, ``encoders`` and
        ``set_stage``.

    Raises:
        ValueError: for a baseline arch with sequence features, unknown registry names (listing the valid
            ones), missing input dims, heads not dividing a width, top_n outside 1..E.
    """
    m = cfg.model
    if m.arch == "fusion":
        return FusionModel(cfg, input_dims)
    arch = ARCH.get(m.arch)
    if cfg.data.features != "aggregated":
        raise ValueError(f"models/builders.py: model.arch={m.arch!r} needs data.features='aggregated', "
                         f"got {cfg.data.features!r}")
    return arch(input_dims, encoders=tuple(cfg.data.encoders), reg=cfg.reg)
