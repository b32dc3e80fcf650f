"""Model zoo (docs/ARCHITECTURE.md section 4): temporal pooling, fusion, heads and the organisers' baselines.

Building blocks are registered by name (:data:`POOLING`, :data:`FUSION`, :data:`HEAD`, :data:`ARCH`) and
assembled by :func:`build_model`. Shape legend: (B, T, D) sequences, (B, T) masks with True = real frame,
(B, D) pooled, (B, C) logits.
"""

from . import baselines, fusion, heads, pooling  # noqa: F401  (import order registers the blocks)
from .base import STAGES, BlemoreModel
from .builders import FusionModel, build_model
from .fusion import FusionResult
from .heads import decode_structured
from .output import ModelOutput
from .registry import ARCH, FUSION, HEAD, POOLING, Registry, RegistryError

__all__ = [
    "ARCH", "FUSION", "HEAD", "POOLING", "STAGES", "BlemoreModel", "FusionModel", "FusionResult", "ModelOutput",
    "Registry", "RegistryError", "build_model", "decode_structured",
]
