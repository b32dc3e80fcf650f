"""The tracking store's safety: atomic creation of a local SQLite store, and the search-name lock.

* :func:`ensure_sqlite_store`: a new ``sqlite:///`` store is built in a temporary file next to it, under a file
  lock, then renamed into place (``os.replace`` is atomic): Ctrl-C at any moment leaves either no store or a
  complete one, never a half-migrated file. An existing store is never migrated here (MLflow refuses an outdated
  schema and says ``mlflow db upgrade``; back the file up before running it).
* :class:`NameLock`: one live search per name per tracking store, whatever its Tune storage. The lock is an
  experiment tag ``blemore.lock.<token>`` holding the owner (host, pid, process start time, heartbeat); a second
  search writes its own entry, then looks: if any other live entry exists it removes its own and refuses (so two
  searches racing for a name can both refuse, never both run). An entry is stale when its process is gone (same
  host: pid check with the process start time) or its heartbeat is older than ``stale_after_s`` (another host);
  a stale entry is removed, and the runs its search left RUNNING are ended KILLED.
* Runs a search owns carry the tag :data:`OWNER_TAG` = the lock token, so that at the end the search closes only
  its own runs (:func:`owner_token`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from search.errors import InputError
from search.preflight import sqlite_path

LOCK_TAG_PREFIX = "blemore.lock."
#: run tag naming the search session (lock token) that owns a run
OWNER_TAG = "search_owner"
_ACTIVE: dict[str, str] = {}  # experiment name -> token of the lock this process holds


class NameInUse(InputError):
    """Another live search holds the name (exit 2; the message names the owner and the tracking URI)."""


def owner_token(experiment: str | None = None) -> str | None:
    """Token of the name lock this process holds (for ``experiment``, or the only one held), else None."""
    if experiment is not None:
        return _ACTIVE.get(experiment)
    return next(iter(_ACTIVE.values())) if len(_ACTIVE) == 1 else None


# ------------------------------------------------------------------------------------------------- store creation
@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_sqlite_store(tracking_uri: str) -> bool:
    """Create the SQLite store of ``tracking_uri`` atomically if it does not exist; returns True when created.

    The schema is built by MLflow in ``.<name>.tmp-<pid>`` next to the store while holding ``<store>.lock``
    (``fcntl.flock``; two processes creating the same store wait for each other), then renamed into place.
    Non-SQLite URIs are left alone (False).
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return False
    db = db.expanduser().resolve()
    if db.exists() and db.stat().st_size > 0:
        return False
    db.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(db.with_name(db.name + ".lock")):
        if db.exists() and db.stat().st_size > 0:
            return False
        tmp = db.with_name(f".{db.name}.tmp-{os.getpid()}")
        try:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            store = SqlAlchemyStore(f"sqlite:///{tmp}", (db.parent / "mlruns").as_uri())
            store.engine.dispose()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, db)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-journal"), tmp.with_name(tmp.name + "-wal")):
                with contextlib.suppress(OSError):
                    leftover.unlink()
    return True


# ------------------------------------------------------------------------------------------------- name lock
def _proc_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


class NameLock:
    """Lock on a search name in the tracking store (see the module docstring).

    Args:
        client: an ``MlflowClient`` of the store. experiment_id: the search's experiment. name: the search name.
        tracking_uri: for messages. heartbeat_s: how often the entry is refreshed. stale_after_s: age after
            which another host's entry counts as abandoned.
    """

    def __init__(self, client: Any, experiment_id: str, name: str, tracking_uri: str, heartbeat_s: float = 60.0,
                 stale_after_s: float = 600.0):
        self.client, self.exp_id, self.name, self.uri = client, experiment_id, name, tracking_uri
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.token = uuid.uuid4().hex[:16]
        self.key = LOCK_TAG_PREFIX + self.token
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
                      "started": time.time(), "heartbeat": time.time()}

    def _entries(self) -> dict[str, dict]:
        tags = self.client.get_experiment(self.exp_id).tags or {}
        out = {}
        for k, v in tags.items():
            if k.startswith(LOCK_TAG_PREFIX):
                try:
                    out[k] = json.loads(v)
                except ValueError:
                    out[k] = {}
        return out

    def is_stale(self, entry: dict) -> bool:
        """True when the entry's search is gone (see the module docstring)."""
        if not entry:
            return True
        if entry.get("host") == socket.gethostname():
            start = _proc_start(int(entry.get("pid", -1)))
            return start is None or (entry.get("proc_start") is not None
                                     and abs(start - float(entry["proc_start"])) > 1.0)
        return time.time() - float(entry.get("heartbeat", 0)) > self.stale_after_s

    def _drop_stale(self, key: str) -> None:
        with contextlib.suppress(Exception):
            self.client.delete_experiment_tag(self.exp_id, key)
        token = key[len(LOCK_TAG_PREFIX):]
        with contextlib.suppress(Exception):
            for run in self.client.search_runs([self.exp_id], filter_string=f"attributes.status = 'RUNNING' and "
                                               f"tags.{OWNER_TAG} = '{token}'", max_results=10000):
                self.client.set_terminated(run.info.run_id, status="KILLED")

    def acquire(self) -> NameLock:
        """Take the name, or raise :class:`NameInUse` naming the live owner.

        Raises:
            NameInUse: another live search holds the name.
        """
        for key, entry in self._entries().items():
            if key != self.key and self.is_stale(entry):
                self._drop_stale(key)
        self.client.set_experiment_tag(self.exp_id, self.key, json.dumps(self.owner))
        others = {k: e for k, e in self._entries().items() if k != self.key and not self.is_stale(e)}
        if others:
            with contextlib.suppress(Exception):
                self.client.delete_experiment_tag(self.exp_id, self.key)
            e = next(iter(others.values()))
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(e.get("started", 0))))
            raise NameInUse(f"--name {self.name}: a search of that name is running in {self.uri} (host "
                            f"{e.get('host')}, pid {e.get('pid')}, since {since}); wait for it to end, stop it, or "
                            "choose another --name")
        _ACTIVE[self.name] = self.token
        self._thread = threading.Thread(target=self._beat, name="name-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.owner["heartbeat"] = time.time()
            with contextlib.suppress(Exception):
                self.client.set_experiment_tag(self.exp_id, self.key, json.dumps(self.owner))

    def release(self) -> None:
        """Remove the entry (best effort: a failed removal is found stale later)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if _ACTIVE.get(self.name) == self.token:
            del _ACTIVE[self.name]
        with contextlib.suppress(Exception):
            self.client.delete_experiment_tag(self.exp_id, self.key)


__all__ = ["ensure_sqlite_store", "NameLock", "NameInUse", "owner_token", "OWNER_TAG", "LOCK_TAG_PREFIX"]
