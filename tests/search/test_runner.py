"""search.runner pieces that need no running Ray: what a search says when its tracking server dies, and how Ray
Tune's log of a superseded state upload reads."""

from __future__ import annotations

import io
import logging

import pytest

from search.compat import TUNE_STATE_LOGGER
from search.records.writer import TrackingServerDown
from search.runner import SearchOptions, _fit


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
