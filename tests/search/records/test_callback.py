"""MLflowTracker with stand-in Tune trials (no Ray): early-stopped, failed and resumed trials, closing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from blemore_core.config import Config
from search.records.callback import MLflowTracker
from search.records.recorder import TrialRecorder


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    error_file: str | None = None
    num_failures: int = 0

    def __str__(self) -> str:
        return f"run_trial_{self.trial_id}"


@pytest.fixture
def tracker(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return MLflowTracker(uri, "unit", base=Config().to_dict(), search_tags={"search": "unit"})


def _runs(tracker, trial_id=None):
    tracker.flush()
    runs = tracker.client.search_runs([tracker.exp_id], max_results=100)
    if trial_id:
        runs = [r for r in runs if r.data.tags["tune_trial_id"] == trial_id]
    return ([r for r in runs if r.data.tags["role"] == "parent"], [r for r in runs if r.data.tags["role"] == "fold"])


def test_stopped_trial_recorded_with_metrics_at_stop(tracker, epoch_report):
    rng = np.random.default_rng(0)
    t = FakeTrial("aaa", {"train.lr": 0.002, "model.fusion": "attention"})
    tracker.on_trial_start(0, [], t)
    last = None
    for e in (1, 2):
        last = epoch_report(e, rng)
        tracker.on_trial_result(0, [], t, last)
    tracker.on_trial_complete(0, [], t)  # no final report: stopped by the scheduler
    parents, folds = _runs(tracker, "aaa")
    assert len(parents) == 1 and len(folds) == 5
    p = parents[0]
    assert p.info.status == "FINISHED" and p.data.tags["stopped_early"] == "true"
    assert p.data.params["train.lr"] == "0.002" and p.data.params["model.fusion"] == "attention"
    for f in folds:
        k = int(f.data.tags["fold"])
        want = last["folds"][k]["protocols"]["crossfit"]  # the headline choice at the stop
        assert f.data.metrics["score"] == pytest.approx(want["score"], abs=1e-12)
        assert f.data.metrics["alpha"] == pytest.approx(want["alpha"], abs=1e-12)
        assert f.data.metrics["best_epoch"] == want["epoch"]
        assert f.data.metrics["val/score"] == pytest.approx(last["folds"][k]["protocols"]["val"]["score"])
        assert [h.step for h in tracker.client.get_metric_history(f.info.run_id, "epoch/score")] == [1, 2]
    for m in ("score", "acc_presence", "acc_salience"):
        assert p.data.metrics[m] == pytest.approx(np.mean([f.data.metrics[m] for f in folds]), abs=1e-9)
        assert p.data.metrics[m] == pytest.approx(last[m], abs=1e-12)  # what Tune (and Optuna) saw last


def test_failed_trial_ends_failed_with_error_tag(tracker, tmp_path, epoch_report):
    err = tmp_path / "error.txt"
    err.write_text("Traceback ...\nFloatingPointError: non-finite loss")
    t = FakeTrial("bbb", {"train.lr": 0.001}, error_file=str(err), num_failures=2)
    tracker.on_trial_start(0, [], t)
    tracker.on_trial_result(0, [], t, epoch_report(1, np.random.default_rng(1)))
    tracker.on_trial_recover(0, [], t)
    tracker.on_trial_start(0, [], t)  # the retry reuses the runs
    tracker.on_trial_error(0, [], t)
    parents, folds = _runs(tracker, "bbb")
    assert len(parents) == 1 and len(folds) == 5
    assert all(r.info.status == "FAILED" for r in parents + folds)
    assert "non-finite loss" in parents[0].data.tags["error"]


def test_resumed_tracker_reuses_runs_and_close_ends_running(tracker, epoch_report):
    t = FakeTrial("ccc", {"train.lr": 0.001})
    tracker.on_trial_start(0, [], t)
    tracker.on_trial_result(0, [], t, epoch_report(1, np.random.default_rng(2)))
    tracker.flush()
    # the driver dies; a new process (resume) builds a new tracker from the pickled state
    import pickle

    again = pickle.loads(pickle.dumps(tracker))
    again.on_trial_start(0, [], t)
    again.on_trial_result(0, [], t, epoch_report(1, np.random.default_rng(3)))
    parents, folds = _runs(again, "ccc")
    assert len(parents) == 1 and len(folds) == 5
    assert again.close() == 6
    parents, folds = _runs(again, "ccc")
    assert all(r.info.status == "KILLED" for r in parents + folds)


def test_resumed_trial_that_reports_fewer_folds_ends_every_fold_run(tracker, epoch_report):
    """A fold run opened by an earlier process of a resumed search, to which this process never reports, still
    ends with the trial (not left RUNNING, not KILLED at close)."""
    t = FakeTrial("ddd", {"train.lr": 0.001})
    tracker.on_trial_start(0, [], t)
    tracker.on_trial_result(0, [], t, epoch_report(1, np.random.default_rng(4)))
    tracker.flush()
    import pickle

    again = pickle.loads(pickle.dumps(tracker))
    rep = epoch_report(2, np.random.default_rng(5))
    rep["folds"] = rep["folds"][:2]  # only folds 0 and 1 report after the resume
    again.on_trial_start(0, [], t)
    again.on_trial_result(0, [], t, rep)
    again.on_trial_complete(0, [], t)
    parents, folds = _runs(again, "ddd")
    assert len(parents) == 1 and len(folds) == 5
    assert [(r.data.tags["fold"], r.info.status, r.data.tags.get("trial_status")) for r in folds] == \
        [(r.data.tags["fold"], "FINISHED", "stopped") for r in folds]
    assert again.close() == 0


def test_ensure_store_creates_schema_and_experiment_before_any_trial(tracker, tmp_path):
    from mlflow.tracking import MlflowClient

    assert not (tmp_path / "mlflow.db").exists()
    exp_id = tracker.ensure_store()
    assert (tmp_path / "mlflow.db").exists()
    # a second process (the `mlflow ui` a user opens) sees the experiment, with no run yet
    reader = MlflowClient(tracker.tracking_uri)
    exp = reader.get_experiment_by_name("unit")
    assert exp is not None and exp.experiment_id == exp_id
    assert reader.search_runs([exp_id]) == []
    assert tracker.ensure_store() == exp_id  # idempotent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_stops_the_search_at_the_next_step(tmp_path, monkeypatch, epoch_report):
    """A tracking server that does not answer (nothing listens on the port): the first write marks the tracker
    down, later writes are dropped (no retries for hours), and Tune's next step raises TrackingServerDown naming
    the URI. A write that fails for another reason only warns."""
    from search.records.writer import TrackingServerDown

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://127.0.0.1:{_free_port()}"
    tr = MLflowTracker(uri, "down", base=Config().to_dict())
    tr.on_step_begin(0, [])  # nothing written yet: nothing to say
    t = FakeTrial("ddd", {"train.lr": 0.001})
    tr.on_trial_start(0, [], t)
    tr.flush()
    assert tr.down == "ConnectionRefusedError: [Errno 111] Connection refused", tr.down
    calls = []
    monkeypatch.setattr(TrialRecorder, "result", lambda self, *a: calls.append(a))
    tr.on_trial_result(0, [], t, epoch_report(1, 0))
    tr.flush()
    assert calls == []  # dropped: the server is down
    with pytest.raises(TrackingServerDown, match=rf"MLflow tracking server {uri} stopped answering"):
        tr.on_step_begin(1, [])
    assert tr.close() == 0  # no calls to a dead server at the end either


def test_other_write_errors_only_warn(tracker, monkeypatch, capsys):
    t = FakeTrial("eee", {"train.lr": 0.001})

    def bad(self, trial):
        raise ValueError("not a connection problem")

    monkeypatch.setattr(TrialRecorder, "start", bad)
    tracker.on_trial_start(0, [], t)
    tracker.flush()
    assert tracker.down is None
    tracker.on_step_begin(0, [])
    assert "warning: MLflow tracking (bad)" in capsys.readouterr().err


def _stored_trial(tmp_path, tid: str, reports: list[dict], config: dict):
    """A stand-in for one entry of Tune's ResultGrid: last result, config, and result.json in its folder."""
    import json
    from types import SimpleNamespace

    import pyarrow.fs

    d = tmp_path / f"trial_{tid}"
    d.mkdir()
    rows = [dict(r, trial_id=tid) for r in reports]
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return SimpleNamespace(metrics=rows[-1], config=config, path=str(d), filesystem=pyarrow.fs.LocalFileSystem(),
                           error=None)


def test_reconcile_records_trials_that_ended_while_the_server_was_down(tracker, tmp_path, epoch_report):
    """After a resume, every ended trial is recorded exactly once: a fully recorded trial is left alone, a trial
    whose final report and end were lost is completed (its partial curves replaced, not doubled), a trial never
    recorded (stopped by ASHA) is created with its last epoch as the record, the runs of an attempt the resumed
    search does not know are deleted; a second reconcile does nothing."""
    rng = np.random.default_rng(5)
    final = lambda e: dict(epoch_report(e, rng), final=True)  # noqa: E731
    a = [epoch_report(1, rng), final(2)]
    b = [epoch_report(1, rng), epoch_report(2, rng), final(3)]
    c = [epoch_report(1, rng)]
    ta, tb = FakeTrial("ta", {"train.lr": 0.001}), FakeTrial("tb", {"train.lr": 0.002})
    tracker.on_trial_start(0, [], ta)
    for r in a:
        tracker.on_trial_result(0, [], ta, dict(r, trial_id="ta"))
    tracker.on_trial_complete(0, [], ta)
    tracker.on_trial_start(0, [], tb)
    tracker.on_trial_result(0, [], tb, dict(b[0], trial_id="tb"))  # then the server went down
    tz = FakeTrial("tz", {"train.lr": 0.004})  # started after Tune's last saved state: the resume never knows it
    tracker.on_trial_start(0, [], tz)
    tracker.on_trial_result(0, [], tz, dict(epoch_report(1, rng), trial_id="tz"))
    tracker.flush()
    results = [_stored_trial(tmp_path, "ta", a, ta.config), _stored_trial(tmp_path, "tb", b, tb.config),
               _stored_trial(tmp_path, "tc", c, {"train.lr": 0.003})]
    again = MLflowTracker(tracker.tracking_uri, "unit", base=Config().to_dict(), search_tags={"search": "unit"})
    assert again.reconcile(results) == 2
    for tid, reports, stopped in (("ta", a, False), ("tb", b, False), ("tc", c, True)):
        parents, folds = _runs(again, tid)
        assert len(parents) == 1 and len(folds) == 5, tid
        p = parents[0]
        assert p.info.status == "FINISHED" and p.data.tags["stopped_early"] == str(stopped).lower(), tid
        assert p.data.metrics["score"] == pytest.approx(reports[-1]["score"], abs=1e-12), tid
        steps = [h.step for h in again.client.get_metric_history(p.info.run_id, "epoch/score")]
        assert steps == [r["epoch"] for r in reports if not r.get("final")], (tid, steps)
    assert _runs(again, "tz") == ([], [])  # the forgotten attempt's runs are deleted (restorable in MLflow)
    assert again.reconcile(results) == 0
    assert len(_runs(again)[0]) == 3


def test_reconcile_replays_the_learning_curves_from_the_epoch_reports(tracker, tmp_path, epoch_report):
    """A trial that ended while the server was down is replayed from the epoch reports its attempt stored next to
    its OOF shards, every epoch once, in the parent and in each fold run, although Tune's ``result.json`` holds
    its latest result only (the search's trial logger, :func:`search.compat.tune_loggers`)."""
    import json
    from types import SimpleNamespace

    import pyarrow.fs

    from search.oof_shards import ShardWriter

    rng = np.random.default_rng(11)
    reports = [epoch_report(e, rng) for e in (1, 2, 3)]
    data = SimpleNamespace(folds=np.arange(10) % 5, filenames=[f"A{i}_hap_int1_ver1" for i in range(10)])
    shards = ShardWriter(str(tmp_path / "_train"), "tr", data)
    for r in reports:
        shards.write(r["epoch"], np.full((10, 6), 1 / 6, np.float32), r)
    last = dict(reports[-1], trial_id="tr", oof_shards=shards.uri)  # stopped by ASHA after epoch 3
    d = tmp_path / "trial_tr"
    d.mkdir()
    (d / "result.json").write_text(json.dumps({k: v for k, v in last.items() if k != "folds"}) + "\n")
    res = SimpleNamespace(metrics=last, config={"train.lr": 0.001}, path=str(d),
                          filesystem=pyarrow.fs.LocalFileSystem(), error=None)
    again = MLflowTracker(tracker.tracking_uri, "unit", base=Config().to_dict(), search_tags={"search": "unit"})
    assert again.reconcile([res]) == 1
    parents, folds = _runs(again, "tr")
    assert len(parents) == 1 and len(folds) == 5
    steps = [h.step for h in again.client.get_metric_history(parents[0].info.run_id, "epoch/score")]
    assert steps == [1, 2, 3]
    for f in folds:
        k = int(f.data.tags["fold"])
        hist = again.client.get_metric_history(f.info.run_id, "epoch/score")
        assert [h.step for h in hist] == [1, 2, 3]
        assert [h.value for h in hist] == pytest.approx([r["folds"][k]["own"]["score"] for r in reports])


def _reported_trial(tracker, tid: str, seed: int, epoch_report) -> tuple[FakeTrial, list[dict]]:
    """A trial started and reported two epochs (the second final) to ``tracker``; returns it and its reports."""
    rng = np.random.default_rng(seed)
    reports = [epoch_report(1, rng), dict(epoch_report(2, rng), final=True)]
    t = FakeTrial(tid, {"train.lr": 0.001})
    tracker.on_trial_start(0, [], t)
    for r in reports:
        tracker.on_trial_result(0, [], t, dict(r, trial_id=tid))
    return t, reports


def test_server_dying_while_a_trial_ends_leaves_it_to_the_resume(tracker, tmp_path, epoch_report):
    """The server dies in the middle of a trial's end writes (after two fold runs were ended): the parent run is
    ended last, so it is still RUNNING and the resume records the trial again; every one of its runs ends
    FINISHED, five fold runs."""
    t, reports = _reported_trial(tracker, "te", 6, epoch_report)
    tracker.flush()
    client = tracker.client
    real, ended = client.set_terminated, []

    def dies_after_two(run_id, *a, **k):
        if len(ended) == 2:
            import requests

            raise requests.exceptions.ConnectionError("server killed")
        ended.append(run_id)
        return real(run_id, *a, **k)

    client.set_terminated = dies_after_two
    tracker.on_trial_complete(0, [], t)
    tracker.flush()
    client.set_terminated = real
    assert tracker.down is not None and len(ended) == 2
    parents, _ = _runs(tracker, "te")
    assert parents[0].info.run_id not in ended and parents[0].info.status == "RUNNING"
    from search.records import writer

    tracker.writer.stop()
    writer._LIVE.discard(tracker.writer)  # that driver process died; the resume runs in a new one
    again = MLflowTracker(tracker.tracking_uri, "unit", base=Config().to_dict(), search_tags={"search": "unit"})
    assert again.reconcile([_stored_trial(tmp_path, "te", reports, t.config)]) == 1
    parents, folds = _runs(again, "te")
    assert len(parents) == 1 and len(folds) == 5
    assert all(r.info.status == "FINISHED" and r.data.tags["trial_status"] == "completed" for r in parents + folds)


def test_reconcile_ends_the_runs_left_running_of_a_trial_already_recorded(tracker, tmp_path, epoch_report):
    """A store written before parents were ended last: the parent ended ``completed``, one fold run still RUNNING.
    The resume ends that run with the parent's status and trial_status and records nothing again."""
    t, reports = _reported_trial(tracker, "tf", 7, epoch_report)
    tracker.on_trial_complete(0, [], t)
    parents, folds = _runs(tracker, "tf")
    tracker.client.update_run(folds[0].info.run_id, status="RUNNING")
    again = MLflowTracker(tracker.tracking_uri, "unit", base=Config().to_dict(), search_tags={"search": "unit"})
    assert again.reconcile([_stored_trial(tmp_path, "tf", reports, t.config)]) == 0
    parents, folds2 = _runs(again, "tf")
    assert sorted(f.info.run_id for f in folds2) == sorted(f.info.run_id for f in folds)
    assert all(r.info.status == "FINISHED" and r.data.tags["trial_status"] == "completed" for r in parents + folds2)


def test_trial_params_with_an_encoder_set_choice_are_logged(tracker):
    """Tune's trial config holds an encoder set as the plain string Optuna sampled; the parent run's params are
    the resolved config's (the list), and no params_error tag is left."""
    t = FakeTrial("enc", {"data.encoders": "imagebind+wavlm", "train.lr": 0.002})
    tracker.on_trial_start(0, [], t)
    parents, _ = _runs(tracker, "enc")
    p = parents[0]
    assert "params_error" not in p.data.tags, p.data.tags.get("params_error")
    assert p.data.params["data.encoders"] == "imagebind,wavlm"  # Config.flat()'s rendering of the list


@pytest.mark.slow
def test_no_run_url_lines_against_a_tracking_server(tmp_path, epoch_report, capfd, monkeypatch, mlflow_server):
    """Against `mlflow server` (127.0.0.1) MLflow prints "View run ... / View experiment ..." each time a run ends
    (six per trial here); the search's console is the trial table's, so the tracker turns that off."""
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    uri = mlflow_server(f"sqlite:///{tmp_path}/srv.db", tmp_path / "art")
    tr = MLflowTracker(uri, "http", base=Config().to_dict(), search_tags={"search": "http"})
    t = FakeTrial("hhh", {"train.lr": 0.002})
    tr.on_trial_start(0, [], t)
    tr.on_trial_result(0, [], t, epoch_report(1, 0))
    tr.on_trial_complete(0, [], t)
    parents, folds = _runs(tr, "hhh")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(folds) == 5
    tr.close()
    out = capfd.readouterr().out
    assert "View run" not in out and "View experiment" not in out, out[-2000:]


def test_stopped_trial_gets_every_epoch_from_its_shards_and_the_fold_tags(tracker, epoch_report, tmp_path):
    """A trial stopped by the scheduler has no final checkpoint: its parent run gets ``oof_epochs.npz`` assembled
    once from the trial's per-epoch OOF shards (every epoch it ran), and the fold layout / execution tags."""
    import types

    from search.oof_shards import ShardWriter

    rng = np.random.default_rng(1)
    data = types.SimpleNamespace(folds=np.arange(12) % 5, filenames=[f"A{i}_hap_int1_ver1" for i in range(12)])
    shards = ShardWriter(str(tmp_path / "_train"), "bbb", data)
    probs = [rng.random((12, 6)).astype(np.float32) for _ in range(3)]
    t = FakeTrial("bbb", {"train.lr": 0.002})
    tracker.on_trial_start(0, [], t)
    for e in (1, 2, 3):
        shards.write(e, probs[e - 1])
        rep = epoch_report(e, rng)
        rep.update(oof_shards=shards.uri, fold_layout="packed", fold_execution="fused")
        tracker.on_trial_result(0, [], t, rep)
    tracker.on_trial_complete(0, [], t)
    parents, _ = _runs(tracker, "bbb")
    p = parents[0]
    assert (p.data.tags["fold_layout"], p.data.tags["fold_execution"]) == ("packed", "fused")
    assert "artifact_error" not in p.data.tags
    local = tracker.client.download_artifacts(p.info.run_id, "oof_epochs.npz", str(tmp_path / "dl"))
    z = np.load(local, allow_pickle=False)
    np.testing.assert_array_equal(z["probs"], np.stack(probs, axis=2))
    np.testing.assert_array_equal(z["folds"], data.folds)


def test_trials_cut_by_the_time_budget_are_tagged_cut_and_named_so(tracker, tmp_path, epoch_report, capsys):
    """A search that ended by its time budget: a trial Tune cut before it ended (never completed in the callback)
    is recorded with its params and tagged trial_status=cut (not stopped), and the console says the budget cut it,
    not that the tracking server was down; an ASHA-stopped trial keeps trial_status=stopped."""
    rng = np.random.default_rng(7)
    ts = FakeTrial("ts", {"train.lr": 0.001})
    tracker.on_trial_start(0, [], ts)
    tracker.on_trial_result(0, [], ts, dict(epoch_report(1, rng), trial_id="ts"))
    tracker.on_trial_complete(0, [], ts)  # stopped by the scheduler
    tc = FakeTrial("tc", {"train.lr": 0.003})
    tracker.on_trial_start(0, [], tc)
    c = [epoch_report(1, rng)]
    tracker.on_trial_result(0, [], tc, dict(c[0], trial_id="tc"))  # then the budget ran out: no end seen
    tracker.flush()
    capsys.readouterr()
    assert tracker.reconcile([_stored_trial(tmp_path, "tc", c, tc.config)], cut=True) == 1
    err = capsys.readouterr().err
    assert "cut by the time budget" in err and "not reachable" not in err
    (p_cut,), _ = _runs(tracker, "tc")
    (p_stop,), _ = _runs(tracker, "ts")
    assert p_cut.data.tags["trial_status"] == "cut" and p_cut.data.params["train.lr"] == "0.003"
    assert p_stop.data.tags["trial_status"] == "stopped"
