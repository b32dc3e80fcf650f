"""Small rooms: no class over 250 lines and no function over 80 lines in blemore_core/, search/ and benchmarks/
(tests excluded), measured with ``ast`` (a definition's lines run from its first decorator to its last line)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("blemore_core", "search", "benchmarks")
MAX_LINES = {"class": 250, "function": 80}


def definition_lengths(source: str) -> list[tuple[str, str, int, int]]:
    """``(kind, qualified name, first line, number of lines)`` of every class and function (methods and nested
    functions included) in ``source``; kind is ``class`` or ``function``."""
    out: list[tuple[str, str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                out.append((kind, prefix + child.name, first, child.end_lineno - first + 1))
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def offenders(root: Path = ROOT) -> list[str]:
    """``path:line kind name: N lines (max M)`` for every definition over its limit, in file order."""
    bad = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            for kind, name, line, n in definition_lengths(path.read_text()):
                if n > MAX_LINES[kind]:
                    bad.append(f"{path.relative_to(root)}:{line} {kind} {name}: {n} lines (max {MAX_LINES[kind]})")
    return bad


def test_measures_classes_methods_and_decorators():
    src = "@dataclass\nclass A:\n    x: int\n\n    def f(self):\n        def g():\n            pass\n        return 1\n"
    assert definition_lengths(src) == [("class", "A", 1, 8), ("function", "A.f", 5, 4), ("function", "A.f.g", 6, 2)]


def test_no_class_over_250_and_no_function_over_80_lines():
    bad = offenders()
    if bad:
        pytest.fail(f"{len(bad)} definitions over the limit:\n" + "\n".join(bad))


def test_the_mlflow_tune_callback_is_at_most_150_lines():
    """Issue 19: the records' Tune callback only routes hooks; the work lives in search/records/'s other rooms."""
    src = (ROOT / "search" / "records" / "callback.py").read_text()
    (n,) = [n for kind, name, _, n in definition_lengths(src) if kind == "class" and name == "MLflowTracker"]
    assert n <= 150, f"MLflowTracker: {n} lines (max 150)"
