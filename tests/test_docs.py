"""docs/ARCHITECTURE.md: every section a docstring or README cites ("DESIGN.md section 2.3", "DESIGN 6",
"ARCHITECTURE.md sections 6 and 8") exists as a heading of the document."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
#: a citation: the document's name, optional "section(s)", then numbers joined by "and", "-", ","
CITATION = re.compile(r"(?:DESIGN|ARCHITECTURE)(?:\.md)?\s+(?:sections?\s+)?(\d+(?:\.\d+)?(?:\s*(?:and|-|,)\s*\d+(?:\.\d+)?)*)")


def _headings() -> set[str]:
    return {m.group(1) for m in re.finditer(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", DOC.read_text(), re.M)}


def _citations() -> dict[str, list[str]]:
    cited: dict[str, list[str]] = {}
    files = [p for d in ("blemore_core", "search", "benchmarks", "cluster") for p in (ROOT / d).rglob("*.py")]
    for path in [*files, ROOT / "README.md"]:
        for m in CITATION.finditer(path.read_text()):
            for number in re.findall(r"\d+(?:\.\d+)?", m.group(1)):
                cited.setdefault(number, []).append(str(path.relative_to(ROOT)))
    return cited


def test_every_cited_section_exists():
    cited, headings = _citations(), _headings()
    assert len(cited) >= 10, cited  # the docstrings do cite the document
    missing = {n: files[:3] for n, files in cited.items() if n not in headings}
    assert not missing, f"cited but not a heading of {DOC.name}: {missing}"


def test_the_section_numbers_keep_their_topics():
    """Citations were written against these topics: a renumbering would send them to the wrong place."""
    text = DOC.read_text()
    for number, topic in (("1", "The flow"), ("2", "Data"), ("2.1", "release layout"), ("2.2", "Labels"),
                          ("2.3", "Feature cache"), ("2.4", "Synthetic release"), ("3", "Metrics"), ("4", "Models"),
                          ("5", "fold trainer"), ("6", "search"), ("7", "After the search"), ("8", "Cluster"),
                          ("9", "Style")):
        assert re.search(rf"^#+ {re.escape(number)}\.? .*{topic}", text, re.M | re.I), (number, topic)
