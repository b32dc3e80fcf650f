"""Error types shared by the library's modules (one place, so that no two modules import each other for them)."""

from __future__ import annotations


class ArtifactError(ValueError):
    """A model directory, weights file or exported YAML is missing, malformed, truncated or was modified; the
    message names the file."""
