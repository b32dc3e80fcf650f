"""The process census of the throughput benchmark (benchmarks/_census.py, benchmarks/throughput.py part (h)):
process kinds from Ray's titles, CPU seconds over a time window, and the figures and note it gives."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from benchmarks import _census as census
from benchmarks import throughput as tp
from benchmarks._common import Result


def test_kind_is_the_ray_class_of_the_title_else_the_executable():
    assert census.kind_of("ray::TrainController.run", "python3") == "TrainController"
    assert census.kind_of("ray::RayTrainWorker", "ray::RayTrainWo") == "RayTrainWorker"
    assert census.kind_of("ray::IDLE", "python3") == census.IDLE
    assert census.kind_of("/usr/bin/raylet", "raylet") == "raylet"


def _rec(kind, created, samples):
    return {"kind": kind, "pid": 1, "created": created, "samples": [list(x) for x in samples]}


def test_cpu_in_a_window_interpolates_and_counts_born_and_exited_processes():
    recs = [
        _rec("A", 0.0, [(0.0, 10.0), (10.0, 20.0)]),            # 1 CPU-s per s throughout
        _rec("B", 4.0, [(5.0, 1.0), (6.0, 3.0)]),               # created in the window, exited after 6 s
        _rec("A", -5.0, [(0.0, 0.0), (10.0, 5.0)]),             # a second process of kind A: 0.5 CPU-s per s
        _rec("C", 20.0, [(21.0, 9.0)]),                         # created after the window
    ]
    used = census.cpu_in(recs, 2.0, 8.0)
    assert used["A"] == pytest.approx(6.0 + 3.0)
    assert used["B"] == pytest.approx(3.0)                      # from 0 at its creation to its last sample
    assert "C" not in used
    assert census.started_in(recs, 2.0, 8.0) == {"B": 1}


def test_census_sees_a_child_process_and_its_cpu_seconds():
    code = ("import time,sys\nt=time.process_time()\nwhile time.process_time()-t<0.6: pass\n"
            "print(time.process_time(), flush=True)\ntime.sleep(0.6)")
    with census.ProcessCensus(period=0.1) as c:
        t0 = time.time()
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        out, _ = child.communicate(timeout=60)
        t1 = time.time()
    own = float(out.strip())
    mine = [r for r in c.records if r["pid"] == child.pid and t0 - 0.5 <= r["created"] <= t1]
    assert len(mine) == 1, mine
    assert census.cpu_in(mine, t0 - 0.5, t1)[mine[0]["kind"]] == pytest.approx(own, abs=0.15)
    assert any(r["kind"] == census.DRIVER for r in c.records)   # this process


def test_record_census_figures_and_note(tmp_path):
    def write(name, rec):
        (tmp_path / f"{name}.json").write_text(json.dumps(rec))

    write("trial-a", {"trial_id": "a", "experiment": "cen", "start": 100.0, "end": 120.0, "pid": 1})
    write("worker-a", {"trial_id": "a", "rank": 0, "enter": 104.0, "libs": 105.0, "imports": 106.0, "data": 107.0,
                       "first_epoch": 110.0, "reports": [110.0, 111.0], "pid": 2, "end": 120.0})
    recs = [
        _rec(census.DRIVER, 0.0, [(100.0, 50.0), (110.0, 52.0), (120.0, 54.0)]),      # 2 CPU-s, then 0.2 cores
        _rec("TrainController", 101.0, [(102.0, 1.0), (110.0, 3.0), (120.0, 4.0)]),   # 3 CPU-s, then 0.1 cores
        _rec("RayTrainWorker", 103.0, [(104.0, 0.5), (110.0, 5.0), (120.0, 20.0)]),   # 5 CPU-s, then 1.5 cores
        _rec("SynchronizationActor", 105.0, [(106.0, 1.0), (120.0, 1.0)]),
    ]
    driver = {"searches": [{"name": "cen", "trials": [], "census": recs}]}
    res = Result("x", quick=True)
    tp.record_census(res, {"name": "cen", "epochs": 8}, driver, tmp_path)
    assert res.figures["census/processes_started_per_trial"]["median"] == 3
    assert res.figures["census/start_up_cpu_s"]["median"] == pytest.approx(2.0 + 3.0 + 5.0 + 1.0)
    assert res.figures["census/epochs_worker_cores"]["median"] == pytest.approx(1.5)
    assert res.figures["census/epochs_other_cores"]["median"] == pytest.approx(0.3)
    assert res.extra["census"]["started_per_trial"] == {"RayTrainWorker": 1, "SynchronizationActor": 1,
                                                        "TrainController": 1}
    note = res.notes[-1]
    assert "starts 3.0 processes" in note and "TrainController x1" in note and "11.0 CPU s" in note
    assert "worker used 1.50 cores and the others 0.30" in note


def test_a_pooled_worker_is_counted_under_the_actor_it_became(monkeypatch):
    import psutil

    # a pooled worker, then the controller; an exiting process shows no command line, only its cut name
    titles = iter([(["ray::IDLE"], "ray::IDLE"), (["ray::TrainController.run"], "ray::TrainContr"),
                   (["ray::IDLE"], "ray::IDLE"), ([], "ray::TrainContr")])

    class Proc:
        def __init__(self, cmdline, name):
            cpu = type("T", (), {"user": 1.0, "system": 0.5})()
            self.info = {"pid": 4242, "name": name, "cmdline": cmdline, "create_time": 7.0, "cpu_times": cpu}

    monkeypatch.setattr(psutil, "process_iter", lambda attrs: [Proc(*next(titles))])
    c = census.ProcessCensus(driver_pid=1)
    for _ in range(4):
        c.sample()
    (rec,) = c.records
    assert rec["kind"] == "TrainController" and rec["created"] == 7.0
    assert [s[1] for s in rec["samples"]] == [1.5, 1.5, 1.5, 1.5]
