"""blemore_core.names: the cache root, and each name tuple stated once in the code (an ast scan)."""

from __future__ import annotations

import ast
from pathlib import Path

from blemore_core import names

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("blemore_core", "search", "benchmarks")
TUPLES = {"FOLD_METRICS": names.FOLD_METRICS, "METRICS": names.METRICS, "PROTOCOLS": names.PROTOCOLS,
          "HEADLINE_PROTOCOLS": names.HEADLINE_PROTOCOLS}


def test_cache_root_is_blemore_cache_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("BLEMORE_CACHE", "~/x/y")
    assert names.cache_root() == Path.home() / "x" / "y"
    monkeypatch.delenv("BLEMORE_CACHE")
    assert names.cache_root() == Path.home() / ".cache" / "blemore"


def test_the_feature_cache_falls_back_to_the_one_cache_root(monkeypatch, tmp_path):
    from blemore_core.data.cache import default_cache_dir

    monkeypatch.setenv("BLEMORE_CACHE", str(tmp_path / "c"))
    release = tmp_path / "release"
    release.write_text("")  # no <release>/.blemore_cache can be made: the cache goes under the cache root
    got = default_cache_dir(release)
    assert got == names.cache_root() / "features"


def restated(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` of every tuple/list/set literal of strings in ``source`` holding exactly the names of one
    tuple of :data:`TUPLES` (in any order): a fact stated again instead of imported."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2 and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            vals = [e.value for e in node.elts]
            for name, want in TUPLES.items():
                if sorted(vals) == sorted(want):
                    out.append((node.lineno, name))
    return out


def test_restated_finds_a_copy_in_any_order():
    assert restated("X = ('crossfit', 'val', 'train')\nfor p in ['val', 'crossfit']: pass\n") == [
        (1, "PROTOCOLS"), (2, "HEADLINE_PROTOCOLS")]
    assert restated("X = ('val', 'train')\n") == []


def test_metric_and_protocol_names_are_stated_once():
    bad = [f"{p.relative_to(ROOT)}:{line} restates names.{name}"
           for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) if p.name != "names.py"
           for line, name in restated(p.read_text())]
    assert not bad, f"{len(bad)} copies (import them from blemore_core.names):\n" + "\n".join(bad)
