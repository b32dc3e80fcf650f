"""Fused folds: the folds of one trial stepped as one batched model (placeholder until the fused step lands)."""

from __future__ import annotations

from typing import Any


def fusable(cfg: Any, trainers: list) -> str | None:
    """Why ``trainers`` cannot be fused (a sentence), or None when they can."""
    return "fused fold execution is not available yet"


class FusedFolds:  # pragma: no cover - replaced by the fused step
    """Placeholder."""

    execution = "fused"
