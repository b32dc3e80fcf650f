"""benchmarks/calibration.py reuses the checkout's recorded 5-fold runs (hours each on a CPU) wherever it writes."""

from __future__ import annotations

import json

from benchmarks import calibration
from benchmarks._common import DEFAULT_OUT


def test_recorded_runs_are_reused_when_writing_elsewhere(tmp_path, monkeypatch):
    recorded = [json.loads(x) for x in (DEFAULT_OUT / "calibration_runs.jsonl").read_text().splitlines() if x]
    keys = [r["key"] for r in recorded]
    assert calibration.job_key("demo", "rank_aware") in keys  # the checkout holds the run this test relies on
    monkeypatch.setattr(calibration, "run_job", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran a job")))
    res = calibration.run(False, tmp_path)  # --out elsewhere: nothing recorded there
    rec = next(r for r in recorded if r["key"] == calibration.job_key("demo", "rank_aware"))
    assert res.figures["demo/rank_aware/score"]["median"] == rec["metrics"][rec["headline"]]["score"]
    assert res.targets["preset_below_ceiling/demo/rank_aware"]["status"] == "measured"
    assert not (tmp_path / "calibration_runs.jsonl").exists()  # nothing new was run, so nothing appended
