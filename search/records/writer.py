"""ONE writer thread per tracker performs every MLflow call of a search, in order; it notices a tracking server
that stopped answering.

Tune calls the callback's hooks on its driver loop; MLflow writes (SQLite: ~0.1-0.3 s per call) would stall it, so
each hook enqueues its work here. A write that finds the server unreachable marks the writer *down*: later writes
are dropped (``blemore resume`` records them again, :mod:`search.records.replay`) and the callback stops the search
at Tune's next step with :class:`TrackingServerDown`. Any other failed write only warns: tracking never breaks a
search.
"""

from __future__ import annotations

import queue
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from search.errors import exception_chain

_LIVE: weakref.WeakSet = weakref.WeakSet()  # writers of this process whose thread was started


class TrackingServerDown(RuntimeError):
    """The MLflow tracking server stopped answering during a search (connection refused or timed out after MLflow's
    retries, :data:`search.preflight.MLFLOW_HTTP_ENV`); the search stops so that no more records are lost."""


def is_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from or during) says the tracking server cannot be reached:
    ``requests``' ConnectionError, Timeout or RetryError (retries used up on 5xx answers), or an OSError of the
    connection. A server that answers with an error (bad request, missing run) is not unreachable."""
    import requests

    kinds = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError,
             ConnectionError, TimeoutError)
    return any(isinstance(x, kinds) for x in exception_chain(exc))


def root_cause(exc: BaseException) -> str:
    """``"<type>: <message>"`` of the innermost exception ``exc`` was raised from or during, cut to 160 chars."""
    root = exception_chain(exc)[-1]
    return f"{type(root).__name__}: {' '.join(str(root).split())}"[:160]


class Writer:
    """A queue of MLflow writes and the daemon thread ``mlflow-writer`` that performs them in order.

    Args:
        tracking_uri: the store written to (named in messages).
        experiment: the experiment written to (writers of the same store and experiment are *siblings*).
    """

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.down: str | None = None  # why the tracking server is considered down (see TrackingServerDown)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` (the thread starts on the first write)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)
            self._thread.start()
            _LIVE.add(self)
        self._queue.put((fn, args))

    def _run(self) -> None:
        while True:
            fn, args = self._queue.get()
            try:
                if fn is None:
                    return
                if self.down is None:  # once the server is down, queued writes are dropped (replay redoes them)
                    fn(*args)
            except Exception as e:
                if is_unreachable(e):  # the search stops at Tune's next step (MLflowTracker.on_step_begin)
                    self.down = root_cause(e)
                    print(f"error: MLflow tracking server {self.tracking_uri} is not answering ({self.down}); "
                          "stopping the search", file=sys.stderr)
                else:  # never let a tracking problem break the search; say what was lost
                    print(f"warning: MLflow tracking ({getattr(fn, '__name__', fn)}): {e!r}", file=sys.stderr)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued write is done."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()

    def stop(self) -> None:
        """Finish the queued writes and end the thread."""
        self.flush()
        if self._thread is not None and self._thread.is_alive():
            self._queue.put((None, ()))
            self._thread.join(timeout=60)
        self._thread = None

    def siblings(self) -> list[Writer]:
        """The live writers of this process on the same store and experiment (e.g. the one of the callback Tune
        unpickled on resume, which holds queued writes), then this one."""
        return [w for w in list(_LIVE) if w is not self and w.experiment == self.experiment
                and w.tracking_uri == self.tracking_uri] + [self]


def stop_all() -> None:
    """Finish the queued writes of every live writer of this process and end their threads."""
    for w in list(_LIVE):
        w.stop()


__all__ = ["TrackingServerDown", "is_unreachable", "root_cause", "Writer", "stop_all"]
