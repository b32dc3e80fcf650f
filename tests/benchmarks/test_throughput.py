"""The throughput benchmark's own machinery (benchmarks/throughput.py), without Ray: the counted S3 store, the
join of trial timestamps, the storage and main-job verdicts. The benchmark itself runs in the quick suite
(tests/benchmarks/test_suite.py)."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import throughput as tp
from benchmarks._common import Result


def test_counting_s3_counts_uploaded_body_bytes_per_search_part():
    pytest.importorskip("moto")
    pytest.importorskip("pyarrow")
    from search.storage import Storage, write_bytes

    with tp.CountingS3() as s3:
        old = {k: os.environ.get(k) for k in s3.env}
        os.environ.update(s3.env)
        try:
            st = Storage("s3://blemore-bench/searches/x")
            write_bytes(st, "_train/oof/t1/a/epoch_00001.npz", b"a" * 50_000)
            write_bytes(st, "_train/t1-run/checkpoint_000000/model.pt", b"b" * 20_000)
            write_bytes(st, "t1_dir/result.json", b"c" * 3_000)
            write_bytes(st, "experiment_state.json", b"d" * 1_000)
            write_bytes(Storage("s3://blemore-bench/searches/other"), "f.bin", b"e" * 70_000)
            up = s3.uploaded("searches/x")
            stored = s3.stored("searches/x/_train", "/checkpoint_")
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    # bodies are counted as sent (chunked uploads add a few dozen bytes of framing), other prefixes are not
    assert 50_000 <= up["oof_shards"] < 51_000
    assert 20_000 <= up["train_runs"] < 21_000
    assert 3_000 <= up["tune_trials"] < 3_500
    assert 1_000 <= up["search"] < 1_500
    assert up["total"] == up["oof_shards"] + up["train_runs"] + up["tune_trials"] + up["search"] < 80_000
    assert stored == 20_000


def _write(d, name, rec):
    (d / f"{name}.json").write_text(json.dumps(rec))


def test_trial_timings_joins_trials_and_lead_workers_of_one_experiment(tmp_path):
    _write(tmp_path, "trial-a", {"trial_id": "a", "experiment": "e1", "start": 100.0, "end": 130.0, "pid": 1})
    _write(tmp_path, "trial-b", {"trial_id": "b", "experiment": "e1", "start": 135.0, "end": 160.0, "pid": 1})
    _write(tmp_path, "trial-z", {"trial_id": "z", "experiment": "e2", "start": 50.0, "end": 60.0, "pid": 9})
    for tid, t in (("a", 100.0), ("b", 135.0), ("z", 50.0)):
        _write(tmp_path, f"worker-{tid}0", {"trial_id": tid, "rank": 0, "enter": t + 4, "libs": t + 5,
                                              "imports": t + 6, "data": t + 7, "first_epoch": t + 9,
                                              "reports": [t + 9, t + 10, t + 12], "pid": 2, "end": t + 20,
                                              "report_calls": [t + 8.9, t + 9.75, t + 11.5],
                                              "cpu": [3.0, 4.5, 7.5]})
        _write(tmp_path, f"worker-{tid}1", {"trial_id": tid, "rank": 1, "enter": t + 50, "libs": 0, "imports": 0,
                                              "data": 0, "first_epoch": t + 90, "reports": [], "pid": 3, "end": 0})
    rows = tp.trial_timings(tmp_path, "e1")
    assert [r["trial_id"] for r in rows] == ["a", "b"]
    assert rows[0]["first_report"] == 9.0 and rows[0]["train_setup"] == 4.0 and rows[0]["imports"] == 2.0
    assert rows[0]["gap"] is None and rows[1]["gap"] == 5.0
    assert rows[1]["reports"] == [1.0, 2.0]
    # epochs 2.. only: trial a completed 2 epochs (3 reports, the last the final one), b was stopped after 3
    trials = [{"trial_id": "a", "epochs": 2}, {"trial_id": "b", "epochs": 3}, {"trial_id": "q", "epochs": 9}]
    assert tp.epoch_times(rows, trials) == [1.0, 1.0, 2.0]
    # the same epochs' time inside ray.train.report (return - call) and worker CPU seconds (consecutive reports)
    assert tp.epoch_times(rows, trials, "in_report") == pytest.approx([0.25, 0.25, 0.5])
    assert tp.epoch_times(rows, trials, "cpu") == pytest.approx([1.5, 1.5, 3.0])
    assert rows[1]["window"] == (135.0, 144.0, 160.0)


class _FakeS3:
    def __init__(self, up, final):
        self.up, self.final = up, final

    def uploaded(self, prefix):
        return self.up[prefix]

    def stored(self, prefix, contains=""):
        return self.final[prefix]


def test_storage_verdict_counts_the_trials_uploads_against_its_final_checkpoint():
    up = {"searches/s10": {"total": 9_000, "requests": 9, "oof_shards": 1_000, "train_runs": 2_000,
                           "tune_trials": 500, "search": 5_500},
          "searches/s40": {"total": 20_000, "requests": 9, "oof_shards": 4_000, "train_runs": 2_500,
                           "tune_trials": 600, "search": 12_900}}
    final = {"searches/s10/_train": 2_000, "searches/s40/_train": 2_500}
    searches = [{"name": "s10", "epochs": 10}, {"name": "s40", "epochs": 40}]
    driver = {"searches": [{"name": n, "trials": [{"error": None, "epochs": e}]} for n, e in (("s10", 10),
                                                                                              ("s40", 40))]}
    res = Result("x", quick=True)
    tp.record_storage(res, searches, _FakeS3(up, final), driver)
    t10, t40 = res.targets["storage/epochs=10/uploaded_over_final"], res.targets["storage/epochs=40/uploaded_over_final"]
    assert t10["measured"] == pytest.approx(3_500 / 2_000) and t10["holds"] is True      # search files excluded
    assert t40["measured"] == pytest.approx(7_100 / 2_500) and t40["holds"] is False


def test_main_job_record_is_reused_only_when_its_key_matches(tmp_path, monkeypatch):
    monkeypatch.setattr(tp, "DEFAULT_OUT", tmp_path / "none")
    tr = [{"score": 0.300, "epochs": 10}, {"score": 0.2, "epochs": 3}, {"score": 0.1, "epochs": 2}]
    tw = [{"score": 0.305, "epochs": 10}, {"score": 0.2, "epochs": 3},
          {"score": 0.15, "epochs": 1}]  # cut at another epoch: not compared
    runs = {"packed": {"trials_per_hour": 30.0, "best_score": 0.300, "trials_done": 3, "wall_s": 480.0, "trials": tr},
            "workers": {"trials_per_hour": 20.0, "best_score": 0.305, "trials_done": 2, "wall_s": 720.0,
                        "trials": tw}}
    rec = {"key": tp.main_job_key(), "recorded_utc": "t", "git": "g", "loadavg": [[1, 1, 1]], "budget": "b",
           "runs": runs}
    (tmp_path / tp.MAIN_JOB_RECORD).write_text(json.dumps(rec))
    res = Result("x", quick=True)
    tp.record_main_job(res, tmp_path)
    assert res.targets["main_job/trials_per_hour_packed_over_workers"]["measured"] == pytest.approx(1.5)
    assert res.targets["main_job/best_score_abs_diff"]["measured"] == pytest.approx(0.005)
    assert res.targets["main_job/best_score_abs_diff"]["holds"] is True
    # same seed: the n-th trials that ran the same epochs in both layouts are compared one to one
    assert res.figures["main_job/same_trial_score_abs_diff"]["samples"] == pytest.approx([0.0, 0.005])
    assert any("packed finished 3 trials, workers 2" in n for n in res.notes)
    (tmp_path / tp.MAIN_JOB_RECORD).write_text(json.dumps({**rec, "key": {**rec["key"], "num_samples": 99}}))
    res = Result("x", quick=True)
    tp.record_main_job(res, tmp_path)
    assert res.targets["main_job/trials_per_hour_packed_over_workers"]["status"].startswith("not measured: no record")


def test_worker_threads_follow_the_runners_plan():
    assert tp.worker_threads("packed", 2) == 2          # 1.99 CPU for the one worker -> 2 torch threads
    assert tp.worker_threads("packed", 8) == 5          # 5 folds at most 1 CPU each
    assert tp.worker_threads("workers", 8) == 1


def test_throughput_is_in_the_cpu_suite():
    from benchmarks.__main__ import BENCHMARKS, CPU_SUITE

    assert BENCHMARKS["throughput"] == "benchmarks.throughput" and "throughput" in CPU_SUITE


def test_references_run_once_per_model_and_thread_count_and_serve_both_layouts(tmp_path):
    searches = [{"model": m, "layout": lay, "space": f"/s/{m}-{lay}.yaml", "epochs": e}
                for m, e in (("baseline", 20), ("rank_aware", 6)) for lay in tp.LAYOUTS]
    specs = tp.reference_specs(searches, tmp_path, 2)       # packed: 2 torch threads on 2 CPUs, workers: 1
    assert sorted((s["key"], s["epochs"]) for s in specs) == [("baseline/1", 8), ("baseline/2", 8),
                                                             ("rank_aware/1", 6), ("rank_aware/2", 6)]
    measured = {"baseline/1": {"execution": "sequential", "epoch_s": [2.0, 1.0]},
                "baseline/2": {"execution": "fused", "epoch_s": [1.5, 0.5]},
                "rank_aware/1": {"execution": "sequential", "epoch_s": [5.0, 4.0]},
                "rank_aware/2": {"execution": "fused", "epoch_s": [3.0, 2.0]}}
    refs, first = tp.references(searches, 2, measured)
    assert refs[("rank_aware", "workers")]["epoch_s"] == [5.0, 4.0] and refs[("baseline", "packed")]["threads"] == 2
    assert refs[("baseline", "packed")]["epoch_s"] == [1.5, 0.5]
    assert first == {"baseline": 1.5, "rank_aware": 3.0}  # the packed layout's (start-up is measured on it)


def test_main_job_key_follows_the_space_content_not_its_comments(tmp_path, monkeypatch):
    space = tmp_path / "rank_aware.yaml"
    space.write_text("# a comment\nname: rank_aware\nbudget: {num_samples: 8}\n")
    monkeypatch.setattr(tp, "MAIN_JOB_SPACE", space)
    key = tp.main_job_key()
    space.write_text("# another comment, other layout\nname:   rank_aware\nbudget:\n  num_samples: 8\n")
    assert tp.main_job_key() == key
    space.write_text("name: rank_aware\nbudget: {num_samples: 9}\n")
    assert tp.main_job_key() != key


def test_per_epoch_overhead_against_the_in_process_reference(tmp_path):
    """record_layouts: overhead = trial epoch - median in-process epoch; the lead worker's time inside
    ray.train.report and its CPU seconds per epoch are recorded beside it."""
    _write(tmp_path, "trial-a", {"trial_id": "a", "experiment": "tp_baseline_packed", "start": 100.0, "end": 130.0,
                                 "pid": 1})
    # epochs 2..3 take 1.0 s each; inside report 0.01 s; worker CPU 1.7 CPU-s per epoch
    _write(tmp_path, "worker-a0", {"trial_id": "a", "rank": 0, "enter": 104.0, "libs": 105.0, "imports": 106.0,
                                   "data": 107.0, "first_epoch": 110.0, "reports": [110.0, 111.0, 112.0, 113.0],
                                   "report_calls": [109.99, 110.99, 111.99, 112.5], "cpu": [5.0, 6.7, 8.4, 9.0],
                                   "pid": 2, "end": 113.0})
    search = {"name": "tp_baseline_packed", "model": "baseline", "layout": "packed", "trials": 1, "epochs": 3}
    driver = {"searches": [{"name": search["name"], "wall_s": 60.0,
                            "trials": [{"trial_id": "a", "error": None, "epochs": 3, "fold_execution": "fused"}]}]}
    # the reference: 0.8 s and 1.6 CPU-s per epoch; its first epoch is left out
    refs = {("baseline", "packed"): {"epoch_s": [3.0, 0.8, 0.8], "epoch_cpu_s": [9.0, 1.6, 1.6], "threads": 2,
                                     "execution": "fused"}}
    res = Result("x", quick=True)
    tp.record_layouts(res, [search], driver, tmp_path, refs, 4.0, {"baseline": 0.5})
    assert res.figures["baseline/packed/epoch_overhead_ms"]["median"] == pytest.approx(200.0)
    assert res.figures["baseline/packed/epoch_in_report_ms"]["median"] == pytest.approx(10.0)
    assert res.figures["baseline/packed/epoch_cpu_s"]["median"] == pytest.approx(1.7)
    assert res.targets["epoch_overhead_ms/baseline/packed"]["holds"] is False


def test_contention_splits_the_overhead_into_the_others_cores_and_what_they_do_not_explain():
    """record_contention: slowdown = reference beside the load - alone; beyond the load = trial epoch - reference
    beside the load (not alone)."""
    res = Result("x", quick=True)
    res.figure("baseline/packed/epoch_s", [0.85, 0.95, 0.90], "s")
    res.figure("baseline/packed/epoch_overhead_ms", [300.0, 400.0, 350.0], "ms")
    measured = {"alone": {"epoch_s": [2.0, 0.55, 0.55, 0.56], "epoch_cpu_s": [3.0, 1.1, 1.1, 1.1]},
                "load": {"epoch_s": [2.0, 0.80, 0.84, 0.82], "epoch_cpu_s": [3.0, 1.3, 1.4, 1.35]},
                "cores": 0.44, "load_cores_used": 0.43}
    tp.record_contention(res, "baseline", measured)
    f = res.figures
    assert f["contention/epoch_slowdown_ms"]["median"] == pytest.approx(1000 * (0.82 - 0.55))
    assert f["baseline/packed/epoch_overhead_beyond_load_ms"]["median"] == pytest.approx(1000 * (0.90 - 0.82))
    assert f["contention/epoch_cpu_beside_load_s"]["median"] == pytest.approx(1.35)
    assert f["contention/load_cores"]["median"] == pytest.approx(0.44)
    assert any("270 ms slower" in n and "350 ms is 80 ms beyond" in n for n in res.notes), res.notes


def test_cpu_load_processes_are_gone_after_an_exception():
    import psutil

    with pytest.raises(RuntimeError), tp.cpu_load(0.2) as load:
        pids = [p.pid for p in load.procs]
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
        raise RuntimeError("the reference failed")
    assert all(p.poll() is not None for p in load.procs)  # killed and waited for: no process left behind
    assert load.wall_s > 0
