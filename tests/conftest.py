"""Shared fixtures: one tiny synthetic release per test session (reused by every test that needs a release)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory):
    """A ``tiny`` synthetic release (seed 0), generated once per session; tests must not modify it."""
    from blemore_core.data import generate_release

    return generate_release(tmp_path_factory.mktemp("shared_release") / "tiny", "tiny", progress=False)
