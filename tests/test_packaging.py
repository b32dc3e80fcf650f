"""Packaging (pyproject.toml): every package of the source tree is shipped, and the built-in spaces and presets
ship as the data package ``blemore_spaces`` (issue 19 item 8). The wheel itself is built and installed by
``tests/test_wheel_e2e.py`` (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from setuptools import find_packages

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_is_listed():
    """The package list is explicit (a renamed data directory cannot be found by `find`): a new sub-package must be
    added to it, or the wheel would lack it."""
    listed = set(_setuptools()["packages"])
    found = set(find_packages(where=str(ROOT), include=["blemore_core*", "search*"]))
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
    assert listed - found == {"blemore_spaces"}


def test_spaces_and_presets_ship_as_blemore_spaces():
    st = _setuptools()
    assert st["package-dir"] == {"blemore_spaces": "spaces"}
    patterns = st["package-data"]["blemore_spaces"]
    shipped = {p.relative_to(ROOT / "spaces") for pat in patterns for p in (ROOT / "spaces").glob(pat)}
    on_disk = {p.relative_to(ROOT / "spaces") for p in (ROOT / "spaces").rglob("*.yaml")}
    assert on_disk and shipped == on_disk, on_disk - shipped
    assert any(str(p).startswith("presets/") for p in shipped)


def test_pydantic_is_a_bounded_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "pydantic>=2.6,<3" in deps
