"""The import contracts of pyproject.toml (``[tool.importlinter]``) hold: blemore_core never imports search, Ray,
Optuna or MLflow; in search the CLI sits above its commands and the commands above the search library; no import
cycle between the modules of a package. Runs ``lint-imports`` (import-linter, in the ``dev`` extra)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

ROOT = Path(__file__).resolve().parent.parent


def test_the_contracts_are_declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert {c["id"]: c["type"] for c in cfg["contracts"]} == {
        "library-plain": "forbidden", "search-layers": "layers", "no-cycles": "acyclic_siblings"}


def test_lint_imports_keeps_every_contract():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    assert Path(exe).exists(), "lint-imports not found: pip install -e '.[dev]' (import-linter)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's packages, not an installed copy
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
