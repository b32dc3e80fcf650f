"""The tracking store's safety (issue 11): atomic SQLite creation, the search-name lock, closing only owned runs,
fresh runs for a restarted trial."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from blemore_core.config import Config
from search.preflight import sqlite_store_problem
from search.records import store as mlflow_store
from search.records.callback import MLflowTracker
from search.records.runs import get_or_create_experiment
from search.records.store import LOCK_TAG_PREFIX, NameInUse, NameLock, ensure_sqlite_store


def test_store_created_atomically_and_interruption_leaves_nothing(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    import mlflow.store.tracking.sqlalchemy_store as sas

    real = sas.SqlAlchemyStore

    class interrupted(real):  # noqa: N801
        def __init__(self, *a, **k):
            super().__init__(*a, **k)  # the schema is built in the temp file...
            self.engine.dispose()
            raise KeyboardInterrupt  # ...and Ctrl-C comes before the rename

    monkeypatch.setattr(sas, "SqlAlchemyStore", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_sqlite_store(uri)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db.lock"]  # no store, no temp file
    monkeypatch.setattr(sas, "SqlAlchemyStore", real)
    assert ensure_sqlite_store(uri) is True
    assert sqlite_store_problem(tmp_path / "mlflow.db") is None
    assert ensure_sqlite_store(uri) is False  # existing store: left alone
    assert MlflowClient(uri).get_experiment_by_name("Default") is not None


def _lock(uri, name="s", **kw):
    c = MlflowClient(uri)
    ensure_sqlite_store(uri)
    return NameLock(c, get_or_create_experiment(c, name, uri), name, uri, **kw)


def test_second_live_search_of_the_name_is_refused_then_allowed_after_release(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = _lock(uri).acquire()
    # a second search (another process of this host, alive: the pytest process's parent) wants the same name
    second = _lock(uri)
    second.owner["pid"], second.owner["proc_start"] = os.getppid(), mlflow_store._proc_start(os.getppid())
    first.owner["pid"] = os.getpid()
    with pytest.raises(NameInUse, match=r"--name s: a search of that name is running in sqlite:.*pid \d+"):
        second.acquire()
    tags = MlflowClient(uri).get_experiment(first.exp_id).tags
    assert [k for k in tags if k.startswith(LOCK_TAG_PREFIX)] == [first.key]  # the loser left no entry
    first.release()
    second.acquire()
    second.release()
    assert not [k for k in MlflowClient(uri).get_experiment(first.exp_id).tags if k.startswith(LOCK_TAG_PREFIX)]


def test_stale_lock_of_a_dead_process_is_taken_over_and_its_runs_killed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = _lock(uri)
    stale.owner["pid"] = int(dead.stdout)
    c = stale.client
    c.set_experiment_tag(stale.exp_id, stale.key, json.dumps(stale.owner))  # left by a killed search
    run = c.create_run(stale.exp_id, tags={mlflow_store.OWNER_TAG: stale.token}).info.run_id
    other = c.create_run(stale.exp_id, tags={mlflow_store.OWNER_TAG: "someone-else"}).info.run_id
    lock = _lock(uri).acquire()
    lock.release()
    assert c.get_run(run).info.status == "KILLED" and c.get_run(other).info.status == "RUNNING"
    # another host's entry is stale only when its heartbeat is old
    remote = {"host": "elsewhere", "pid": 1, "heartbeat": 0.0}
    assert lock.is_stale(remote) and not lock.is_stale({**remote, "heartbeat": __import__("time").time()})


class _Trial:
    def __init__(self, tid):
        self.trial_id, self.config, self.error_file, self.num_failures = tid, {"train.lr": 0.001}, None, 0

    def __str__(self):
        return f"run_trial_{self.trial_id}"


def test_close_ends_only_this_searchs_runs(tmp_path, epoch_report):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tr = MLflowTracker(uri, "shared", base=Config().to_dict())
    exp = tr.ensure_store()
    foreign = tr.client.create_run(exp, tags={"role": "parent"}).info.run_id  # a concurrent search's live run
    t = _Trial("aaa")
    tr.on_trial_start(0, [], t)
    tr.on_trial_result(0, [], t, epoch_report(1, 0))
    tr.flush()
    assert tr.close() == 6
    assert tr.client.get_run(foreign).info.status == "RUNNING"


def test_restarted_trial_gets_fresh_runs_without_duplicate_steps(tmp_path, epoch_report):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tr = MLflowTracker(uri, "restart", base=Config().to_dict())
    t = _Trial("bbb")
    tr.on_trial_start(0, [], t)
    for ep in (1, 2):
        tr.on_trial_result(0, [], t, epoch_report(ep, ep))
    tr.flush()
    tr.client.set_tag(tr.index.parents["bbb"], "retries", "1")
    again = MLflowTracker(uri, "restart", base=Config().to_dict())  # the resumed driver; the trial starts over
    again.on_trial_start(0, [], t)
    for ep in (1, 2, 3):
        again.on_trial_result(0, [], t, epoch_report(ep, 10 + ep))
    again.flush()
    runs = again.client.search_runs([again.exp_id], max_results=100)
    parents = [r for r in runs if r.data.tags["role"] == "parent"]
    folds = [r for r in runs if r.data.tags["role"] == "fold"]
    assert len(parents) == 1 and len(folds) == 5
    assert parents[0].data.tags.get("retries") == "1" and parents[0].data.params  # carried over, params again
    for r in parents + folds:
        for key in ("epoch/score",):
            steps = [m.step for m in again.client.get_metric_history(r.info.run_id, key)]
            assert sorted(steps) == [1, 2, 3], (r.data.tags["mlflow.runName"], steps)
    again.close()
