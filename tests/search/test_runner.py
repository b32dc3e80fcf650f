"""search.runner pieces that need no running Ray: what a search says when its tracking server dies, and how Ray
Tune's log of a superseded state upload reads."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from search.compat import TUNE_STATE_LOGGER
from search.records.writer import TrackingServerDown
from search.runner import SearchOptions, _fit, scheduler_metric, summarize


class _DyingTuner:
    def fit(self):
        raise TrackingServerDown("MLflow tracking server http://127.0.0.1:5001 stopped answering during the search "
                                 "(cause: ConnectionRefusedError: [Errno 111] Connection refused)")


@pytest.mark.parametrize("storage, where", [(None, ""), ("s3://bucket/searches", " --storage s3://bucket/searches")])
def test_tracking_server_down_message_says_how_to_resume(storage, where):
    with pytest.raises(TrackingServerDown) as ei:
        _fit(_DyingTuner(), "mysearch", SearchOptions(storage=storage), "/x/ray_results/mysearch")
    msg = str(ei.value)
    assert msg.startswith("MLflow tracking server http://127.0.0.1:5001 stopped answering during the search; start it "
                          f"again, then run `blemore resume mysearch{where}`")
    assert msg.endswith("(cause: ConnectionRefusedError: [Errno 111] Connection refused)")
    assert len(msg) < 500  # the CLI prints the first 500 characters of a runtime error


# --- Ray Tune's superseded experiment-state upload (CI, 2026-12-02: a traceback on Ctrl-C although the state was kept)

_CI_ERROR = ("[Errno 2] Failed to open local file '/tmp/ray/session_2026-12-02_07-43-17_083494_18520/artifacts/"
             "2026-12-02_07-41-58/sigint/driver_artifacts/.381fe043-cf22-41cd-81d3-ef532ecf215d-tmp-searcher-state-"
             "2026-12-02_07-43-26.pkl'. Detail: [errno 2] No such file or directory")


def _log_failed_upload(exc: BaseException) -> None:
    """What Ray Tune's ``wait_for_sync`` does when the background upload raised."""
    try:
        raise exc
    except Exception:
        logging.getLogger(TUNE_STATE_LOGGER).error(
            "Saving experiment state to storage at '/x/ray_results/sigint' failed with exception: ", exc_info=True)


class _LoggingTuner:
    def __init__(self, exc):
        self.exc = exc

    def fit(self):
        _log_failed_upload(self.exc)
        return "results"


@pytest.fixture
def tune_log():
    log, buf = logging.getLogger(TUNE_STATE_LOGGER), io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield buf
    log.removeHandler(handler)
    log.setLevel(old_level)


def test_superseded_upload_is_one_warning_line_during_fit(tune_log):
    assert _fit(_LoggingTuner(FileNotFoundError(_CI_ERROR)), "sigint", SearchOptions(), "/x") == "results"
    out = tune_log.getvalue()
    assert "Traceback" not in out and out.count("\n") == 1, out
    assert out.startswith("WARNING Ray Tune: an experiment-state upload overlapped the next state write")
    assert ".381fe043-cf22-41cd-81d3-ef532ecf215d-tmp-searcher-state-2026-12-02_07-43-26.pkl" in out
    assert not logging.getLogger(TUNE_STATE_LOGGER).filters  # removed once fit returns


@pytest.mark.parametrize("exc", [
    FileNotFoundError("[Errno 2] Failed to open local file '/tmp/ray/x/driver_artifacts/searcher-state.pkl'"),
    PermissionError(_CI_ERROR),
    OSError("No space left on device"),
], ids=["missing-real-file", "permission", "disk-full"])
def test_other_failed_uploads_keep_their_traceback(tune_log, exc):
    _fit(_LoggingTuner(exc), "sigint", SearchOptions(), "/x")
    out = tune_log.getvalue()
    assert out.startswith("ERROR Saving experiment state to storage") and "Traceback" in out, out


def test_outside_a_search_ray_logs_are_untouched(tune_log):
    _log_failed_upload(FileNotFoundError(_CI_ERROR))
    assert "Traceback" in tune_log.getvalue()


# --- the objective comes from the space: ASHA and the summary never rank a Pareto search on `score`

SPACES = Path(__file__).resolve().parents[2] / "spaces"


@pytest.mark.parametrize("space_file, metric", [("full.yaml", "acc_presence"), ("baseline.yaml", "score")])
def test_asha_stops_trials_on_the_spaces_objective(space_file, metric, monkeypatch, tmp_path, capsys):
    import ray.tune.schedulers

    from search.runner import _build_tuner
    from search.space import load_space

    seen = {}

    class _ASHA(ray.tune.schedulers.FIFOScheduler):
        def __init__(self, **kw):
            super().__init__()
            seen.update(kw)

    monkeypatch.setattr(ray.tune.schedulers, "ASHAScheduler", _ASHA)
    space = load_space(SPACES / space_file)
    tuner, _ = _build_tuner(space, SearchOptions(scheduler="asha"), "x", str(tmp_path / "st"), str(tmp_path), 5,
                            1.0, 1, f"sqlite:///{tmp_path}/m.db")
    assert metric == scheduler_metric(space)
    if space.pareto:  # issue 20: a Pareto search is stopped by non-dominated sorting (search.pareto), not ASHA
        from search.pareto import ParetoASHAScheduler

        assert not seen and isinstance(tuner._local_tuner._tune_config.scheduler, ParetoASHAScheduler)
    else:
        assert seen["metric"] == metric


def _result(tid, pres, sal, final=True):
    return SimpleNamespace(metrics={"trial_id": tid, "acc_presence": pres, "acc_salience": sal,
                                    "score": (pres + sal) / 2, "final": final, "epoch": 3}, error=None, config={})


def test_summary_ranks_by_the_spaces_objective_not_score():
    results = [_result("a", 0.9, 0.1), _result("b", 0.95, 0.3), _result("c", 0.2, 0.9)]
    space = SimpleNamespace(params=[], metrics=("acc_salience",), pareto=False)
    assert [r["trial"] for r in summarize(results, space)] == ["c", "b", "a"]  # by score: b, c, a


def test_pareto_summary_lists_the_front_first_never_ranked_on_score():
    # by score the order would be c, b, e, a, d; d and e are dominated
    results = [_result("a", 0.9, 0.1), _result("b", 0.5, 0.95), _result("c", 0.6, 0.9), _result("d", 0.55, 0.35),
               _result("e", 0.4, 0.8)]
    space = SimpleNamespace(params=[], metrics=("acc_presence", "acc_salience"), pareto=True)
    rows = summarize(results, space)
    assert [(r["trial"], r["front"]) for r in rows] == [("a", "yes"), ("c", "yes"), ("b", "yes"), ("d", ""),
                                                         ("e", "")]


class _Orphan:
    """What an MLflow SQLite write cut by Ctrl-C leaves: a connection holding the store's write lock, reachable only
    from a reference cycle (so only the garbage collector closes it)."""

    def __init__(self, db: Path):
        import sqlite3

        self.me = self
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")  # the write lock


def test_clean_up_after_an_interrupt_frees_the_store_a_cut_write_left_locked(tmp_path, capsys):
    """The search's clean-up after Ctrl-C can write to the store (runs closed, name lock released) at once, not
    after MLflow's 20 s SQLite busy timeout ending in ``database is locked``."""
    import gc
    import time

    from mlflow.tracking import MlflowClient

    from search import runner

    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    eid = client.create_experiment("cut")
    closed: list[float] = []

    class _Tracker:
        def close(self):
            t0 = time.time()
            client.set_experiment_tag(eid, "closed", "yes")
            closed.append(time.time() - t0)

    lock = SimpleNamespace(release=lambda: None)
    gc.disable()  # only the clean-up may collect the orphan
    try:
        _Orphan(tmp_path / "m.db")
        with pytest.raises(KeyboardInterrupt):
            try:
                raise KeyboardInterrupt
            finally:
                runner._clean_up(_Tracker(), lock, on_cluster=False, ray_was_up=True)
    finally:
        gc.enable()
    assert "could not close" not in capsys.readouterr().err
    assert closed and closed[0] < 5.0 and client.get_experiment(eid).tags["closed"] == "yes"
