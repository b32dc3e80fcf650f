"""The benchmark suite (benchmarks/): ``python -m benchmarks --quick`` writes one complete JSON per benchmark.

Checks the schema of benchmarks/_common.py (machine, versions, inputs, figures with median and spread, targets
with measured value and whether it holds, or an explicit "not measured: <why>"), not the speed. The schema
checker itself is tested on hand-made records, so a broken checker cannot pass a broken suite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS, CPU_SUITE
from benchmarks._common import Result, summarise

ROOT = Path(__file__).resolve().parents[2]
FIGURE_KEYS = {"unit", "median", "spread", "min", "max", "repeats", "samples", "note"}
TARGET_KEYS = {"measured", "target", "holds", "reference", "status"}


def schema_errors(doc: dict, name: str) -> list[str]:
    """Every way ``doc`` departs from the suite's result schema (empty list = valid)."""
    errs = []
    for key in ("name", "schema_version", "quick", "started_utc", "wall_s", "machine", "versions", "inputs",
                "figures", "targets", "notes"):
        if key not in doc:
            errs.append(f"missing {key}")
    if errs:
        return errs
    if doc["name"] != name:
        errs.append(f"name {doc['name']!r} != {name!r}")
    for key in ("cpu", "cpu_count", "memory_gib", "cuda"):
        if key not in doc["machine"]:
            errs.append(f"machine.{key} missing")
    for key in ("python", "torch", "numpy", "ray", "optuna", "mlflow"):
        if not doc["versions"].get(key):
            errs.append(f"versions.{key} missing")
    if not doc["inputs"]:
        errs.append("inputs empty")
    if not doc["figures"] and not doc["targets"]:
        errs.append("neither figures nor targets")
    for fname, f in doc["figures"].items():
        if set(f) != FIGURE_KEYS:
            errs.append(f"figure {fname}: keys {sorted(f)}")
            continue
        if f["repeats"] != len(f["samples"]) or f["repeats"] < 1:
            errs.append(f"figure {fname}: repeats {f['repeats']} vs {len(f['samples'])} samples")
        finite = [x for x in f["samples"] if isinstance(x, (int, float)) and math.isfinite(x)]
        if finite and not (f["min"] <= f["median"] <= f["max"]) or f["spread"] < 0:
            errs.append(f"figure {fname}: inconsistent median/min/max/spread")
    for tname, t in doc["targets"].items():
        if set(t) != TARGET_KEYS:
            errs.append(f"target {tname}: keys {sorted(t)}")
            continue
        if t["status"] == "measured":
            if not isinstance(t["measured"], (int, float)) or not isinstance(t["holds"], bool):
                errs.append(f"target {tname}: measured without a value or verdict")
        elif not t["status"].startswith("not measured: ") or t["measured"] is not None or t["holds"] is not None:
            errs.append(f"target {tname}: status {t['status']!r} with measured={t['measured']} holds={t['holds']}")
    return errs


# --------------------------------------------------------------------------------------- the checker itself
def _good() -> dict:
    r = Result("x", quick=True)
    r.inputs = {"n": 1}
    r.figure("a", [1.0, 2.0, 4.0], "s")
    r.target("t", 2.0, ">=", 1.0, "ref")
    r.target("g", None, ">=", 20.0, "ref", not_measured="no GPU")
    return json.loads(json.dumps(r.to_dict()))


def test_checker_accepts_a_complete_record():
    assert schema_errors(_good(), "x") == []


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("versions"),
    lambda d: d["figures"]["a"].pop("spread"),
    lambda d: d["figures"]["a"].update(repeats=5),
    lambda d: d["targets"]["t"].update(holds=None),
    lambda d: d["targets"]["g"].update(status="skipped"),
    lambda d: d["targets"]["g"].update(measured=25.0),
    lambda d: d.update(inputs={}),
])
def test_checker_rejects_incomplete_records(mutate):
    d = _good()
    mutate(d)
    assert schema_errors(d, "x")


def test_summarise_median_and_spread():
    s = summarise([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 5.0
    assert s["spread"] == pytest.approx((4.0 - 2.0) / 2)          # IQR half-width, inclusive quartiles
    assert summarise([7.0])["spread"] == 0.0


def test_target_verdicts():
    r = Result("x", quick=True)
    assert r.target("a", 21.0, ">=", 20.0, "ref")["holds"] is True
    assert r.target("e", 20.0, ">=", 20.0, "ref")["holds"] is True          # the bound itself holds
    assert r.target("f", 4.0, "<=", 4.0, "ref")["holds"] is True
    assert r.target("b", 19.9, ">=", 20.0, "ref")["holds"] is False
    assert r.target("c", 4.1, "<", 4.0, "ref")["holds"] is False
    assert r.target("d", None, "<", 4.0, "ref", not_measured="no GPU")["status"] == "not measured: no GPU"


# ----------------------------------------------------------------------------------------- the quick suite
@pytest.mark.slow
def test_quick_suite_writes_complete_json(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               BLEMORE_CACHE=os.environ.get("BLEMORE_CACHE", str(Path.home() / ".cache" / "blemore")),
               RAY_ADDRESS="local")
    env.pop("OUT", None)
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    written = {p.stem for p in tmp_path.glob("*.json")}
    assert written == set(CPU_SUITE)
    for name in CPU_SUITE:
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        assert schema_errors(doc, name) == [], name
        assert doc["quick"] is True
    gpu = json.loads((tmp_path / "gpu.json").read_text())
    if gpu["machine"]["cuda"] is None:   # no made-up GPU numbers
        assert gpu["targets"] and all(t["status"] == "not measured: no GPU" for t in gpu["targets"].values())


def test_cli_rejects_unknown_benchmark():
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "nope"], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert r.returncode == 2 and "unknown benchmark(s) nope" in r.stderr
    assert set(CPU_SUITE) <= set(BENCHMARKS)


def test_missing_dev_extra_is_named_before_anything_runs(monkeypatch, capsys, tmp_path):
    import benchmarks.__main__ as suite

    monkeypatch.setattr(suite, "REQUIRES", ("pytest", "no_such_module_blemore"))
    assert suite.main(["--only", "thresholds", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing no_such_module_blemore" in err and "pip install -e '.[dev]'" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_fold_memory_fails_fast_when_a_fold_worker_dies(tmp_path):
    """A fold worker that dies (here: a preset file that does not exist) fails the measurement at once instead of
    leaving the parent waiting out its 25-minute timeout."""
    import time

    from benchmarks._fold_memory import measure

    t = time.monotonic()
    with pytest.raises(RuntimeError, match=r"fold worker\(s\) [01] \(exit code 1\).* died before reporting"):
        measure(str(tmp_path / "missing.yaml"), str(tmp_path), n=2)
    assert time.monotonic() - t < 120


def test_result_json_keeps_figures_readable_and_details_on_one_line(tmp_path):
    r = Result("x", quick=True)
    r.figure("f", [1.0, 2.0], "s")
    r.extra = {"seed0": [{"rows": [[0.1, 0.2, 0.3]], "flat": {"a": "1"}}] * 3}
    path = r.write(tmp_path)
    text = path.read_text()
    doc = json.loads(text)
    assert doc["details"] == r.extra and doc["figures"]["f"]["median"] == 1.5
    lines = text.splitlines()
    assert sum('"details"' in ln for ln in lines) == 1 and lines[-2].startswith('  "details": {"seed0":')
    assert '    "f": {' in text  # figures indented
    assert not list(tmp_path.glob("*.tmp-*"))
