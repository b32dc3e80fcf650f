"""The run index of a search: the experiment, and the parent and fold runs of each trial found (or created) by tag,
so that a retried or resumed trial reuses its runs; the runs' ownership (name-lock token, :mod:`search.records.store`).

Only the writer thread of :class:`search.records.callback.MLflowTracker` (and the driver before and after
``Tuner.fit``) calls it: the maps are not locked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blemore_core.names import DEFAULT_OBJECTIVE
from search.compat import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, VIEW_TAG_PREFIX, quiet_mlflow_console
from search.records.naming import (
    OBJECTIVES_TAG,
    ROLE_TAG,
    TRIAL_TAG,
    best_view_key,
    best_view_state,
    fold_run_name,
    trial_number,
    trial_run_name,
    trial_view_key,
    trial_view_state,
)
from search.records.store import OWNER_TAG, ensure_sqlite_store, owner_token

#: run ids this process created or reopened (ended KILLED by :func:`search.records.closing.close_runs`)
OWNED: set[str] = set()


def get_or_create_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """Experiment id of ``name`` (restored if deleted); created (artifacts next to a local SQLite store in
    ``mlruns/``) if missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri[len("sqlite:///"):]).parent / "mlruns").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently
        return client.get_experiment_by_name(name).experiment_id


class RunIndex:
    """The experiment of a search and its runs by trial (and fold); the MLflow client is made on first use.

    Args:
        tracking_uri: MLflow tracking URI (a new local SQLite store is created atomically on first use).
        experiment: experiment name (the search name).
        search_tags: extra tags of every run (space file, search name).
        searched: the searched keys, in the order run names show them.
    """

    def __init__(self, tracking_uri: str, experiment: str, search_tags: dict[str, str], searched: list[str]):
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.search_tags, self.searched = search_tags, searched
        self._client: Any = None
        self.exp_id: str | None = None
        self.parents: dict[str, str] = {}  # trial id -> parent run id
        self.children: dict[tuple[str, int], str] = {}  # (trial id, fold) -> fold run id
        self._numbers: dict[str, int] = {}
        self._next_number: int | None = None

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` (creating the store and the experiment on first use)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            ensure_sqlite_store(self.tracking_uri)  # atomic: Ctrl-C never leaves a half-made schema
            quiet_mlflow_console()
            self._client = MlflowClient(self.tracking_uri)
            self.exp_id = get_or_create_experiment(self._client, self.experiment, self.tracking_uri)
        return self._client

    def ensure_store(self, objectives: tuple[str, ...] = (DEFAULT_OBJECTIVE,)) -> str:
        """Create the store and the experiment now; tag its kind, its ``objectives`` (:data:`OBJECTIVES_TAG`) and
        its best-first view by the first objective; returns its id."""
        metric = objectives[0]
        self.client.set_experiment_tag(self.exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        self.client.set_experiment_tag(self.exp_id, OBJECTIVES_TAG, ",".join(objectives))
        self.client.set_experiment_tag(self.exp_id, VIEW_TAG_PREFIX + best_view_key(metric),
                                       json.dumps(best_view_state(metric)))
        return str(self.exp_id)

    def run_name(self, trial: Any) -> str:
        """The parent run's name of ``trial`` (see :func:`~search.records.naming.trial_run_name`). Tune's trial ids
        carry no counter when a searcher names them, so the number is the trial's order of creation in the
        experiment (1, 2, ...), counted from the store, hence stable across resumes."""
        n = trial_number(trial.trial_id)
        if n is None:
            if trial.trial_id not in self._numbers:
                if self._next_number is None:
                    self._next_number = 1 + len(self.search(f"tags.{ROLE_TAG} = 'parent'", 50000))
                self._numbers[trial.trial_id] = self._next_number
                self._next_number += 1
            n = self._numbers[trial.trial_id]
        return trial_run_name(trial.trial_id, {k: v for k, v in trial.config.items() if not k.startswith("debug.")},
                              self.searched or None, number=n)

    def fold_run_name(self, trial: Any, fold: int) -> str:
        """A fold run's name (see :func:`~search.records.naming.fold_run_name`)."""
        return fold_run_name(self.run_name(trial), fold)

    def search(self, filter_string: str, max_results: int) -> list:
        """Runs of the experiment matching an MLflow ``filter_string``."""
        return self.client.search_runs([self.exp_id], filter_string=filter_string, max_results=max_results)

    def _find(self, trial_id: str, fold: int | None) -> str | None:
        f = f"tags.{TRIAL_TAG} = '{trial_id}' and tags.{ROLE_TAG} = '{'parent' if fold is None else 'fold'}'"
        if fold is not None:
            f += f" and tags.fold = '{fold}'"
        runs = self.search(f, 5)
        return runs[0].info.run_id if runs else None

    def parent(self, trial: Any) -> str:
        """The parent run id of ``trial`` (found by tag and reopened, else created with its view)."""
        tid = trial.trial_id
        if tid not in self.parents:
            run_id = self._find(tid, None)
            if run_id is None:
                tags = {TRIAL_TAG: tid, ROLE_TAG: "parent", "mlflow.runName": self.run_name(trial), **self.search_tags}
                run_id = self.client.create_run(self.exp_id, tags={**tags, **self.owner_tags()}).info.run_id
                self.client.set_experiment_tag(self.exp_id, VIEW_TAG_PREFIX + trial_view_key(tid),
                                               json.dumps(trial_view_state(tid)))
            else:
                self._reopen(run_id)
            OWNED.add(run_id)
            self.parents[tid] = run_id
        return self.parents[tid]

    def child(self, trial: Any, fold: int) -> str:
        """The run id of ``trial``'s fold ``fold`` (found by tag and reopened, else created under the parent)."""
        key = (trial.trial_id, fold)
        if key not in self.children:
            parent = self.parent(trial)
            run_id = self._find(trial.trial_id, fold)
            if run_id is None:
                tags = {TRIAL_TAG: trial.trial_id, ROLE_TAG: "fold", "fold": str(fold), "mlflow.parentRunId": parent,
                        "mlflow.runName": self.fold_run_name(trial, fold), **self.search_tags}
                run_id = self.client.create_run(self.exp_id, tags={**tags, **self.owner_tags()}).info.run_id
                self.client.log_param(run_id, "fold", fold)
            else:
                self._reopen(run_id)
            OWNED.add(run_id)
            self.children[key] = run_id
        return self.children[key]

    def trial_runs(self, trial_id: str) -> list[str]:
        """The known run ids of a trial: its parent (when known) and its fold runs."""
        own = [self.parents[trial_id]] if trial_id in self.parents else []
        return own + [r for (t, _), r in self.children.items() if t == trial_id]

    def forget(self, trial_id: str) -> None:
        """Drop a trial's run ids from the maps (its runs ended or were deleted)."""
        self.parents.pop(trial_id, None)
        for key in [k for k in self.children if k[0] == trial_id]:
            self.children.pop(key)

    def delete(self, run_id: str, running: bool = True) -> None:
        """End ``run_id`` KILLED (when ``running``), then delete it (restorable in MLflow)."""
        if running:
            self.client.set_terminated(run_id, status="KILLED")
        self.client.delete_run(run_id)
        OWNED.discard(run_id)

    def owner_tags(self) -> dict[str, str]:
        """The run tag naming this search's name-lock token (empty when no lock is held)."""
        tok = owner_token(self.experiment)
        return {OWNER_TAG: tok} if tok else {}

    def _reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")
        for k, v in self.owner_tags().items():
            self.client.set_tag(run_id, k, v)


__all__ = ["OWNED", "RunIndex", "get_or_create_experiment"]
