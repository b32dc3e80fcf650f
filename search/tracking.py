"""MLflow records of a search, written by ONE process: a Ray Tune callback on the driver.

DESIGN.md section 6. Experiment = search name; one parent run per trial (tag ``tune_trial_id``); one child run per
fold (tags ``tune_trial_id``, ``fold``). Runs are found again by these tags, so a retried or resumed trial
reuses its runs: exactly one parent run per trial across retries and resumes. Workers never talk to MLflow.

* Parent: params = ``Config.flat()`` of the resolved config; metrics per epoch ``epoch/<m>`` (the objective: fold
  mean of the headline protocol's choices given the epochs so far, step = epoch) and at the end ``acc_presence``,
  ``acc_salience``, ``score`` (the same objective, so ``score`` = mean of the fold runs' ``score``) plus
  ``<protocol>/<m>_mean`` / ``_std``; artifacts: ``config.yaml``, ``oof.parquet`` (one row per training clip),
  ``oof_epochs.npz`` (per-epoch OOF probabilities),
  ``thresholds.json``, ``metrics.json``, ``plots/confusion.png``, ``plots/importances.png`` (rank-aware).
* Child (fold k): learning curves ``epoch/<m>`` (own-fold fit of each epoch, step = epoch); final
  ``acc_presence``, ``acc_salience``, ``score``, ``alpha``, ``beta`` (headline protocol) and ``<protocol>/<m>``,
  ``<protocol>/epoch``, ``best_epoch`` (the headline's epoch); artifacts
  ``fold{k}.pt`` (state dict) and ``history.json``.
* A trial stopped by the scheduler keeps the metrics of its last epoch (the same objective) and gets the tag
  ``stopped_early=true``; a failed trial's runs end FAILED with the error text in the tag ``error``; after the
  search (also on Ctrl-C or a crash) :meth:`MLflowTracker.close` ends the runs of THIS search still RUNNING as
  KILLED (runs this process created or reopened, or tagged with its name-lock token; a concurrent search's runs
  are never touched).
* A trial that starts over (interrupted, then restarted from epoch 1 by a retry or ``resume``) gets fresh runs:
  the previous attempt's runs are deleted when the new attempt reports an epoch already recorded, so its learning
  curves are replaced, never duplicated (exactly one active parent run per trial).
* A local SQLite store is created atomically before the first MLflow call (:mod:`search.mlflow_store`).
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback

TRIAL_TAG = "tune_trial_id"
ROLE_TAG = "role"
FOLD_METRICS = ("acc_presence", "acc_salience", "score", "alpha", "beta")
_ERROR_TAG_MAX = 4900
_LIVE: weakref.WeakSet = weakref.WeakSet()  # trackers of this process with a writer thread
_OWNED: set[str] = set()  # run ids this process created or reopened (closed by MLflowTracker.close)


def default_tracking_uri(workdir: str | Path = ".") -> str:
    """``sqlite:///<workdir>/mlflow.db`` (artifacts in ``<workdir>/mlruns``), which ``mlflow ui`` opens with
    ``--backend-store-uri`` set to the same URI."""
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def ui_command(tracking_uri: str) -> str:
    """The shell command that opens the MLflow UI on this store (loopback only)."""
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def get_or_create_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """Experiment id of ``name``; created (artifacts next to a local SQLite store in ``mlruns/``) if missing."""
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


@dataclass(frozen=True)
class TrialInfo:
    """What the tracker needs of a Tune trial, copied when a hook fires (the writer thread runs later)."""

    trial_id: str
    name: str
    config: dict
    error_file: str | None
    num_failures: int

    @classmethod
    def of(cls, trial: Any) -> TrialInfo:
        return cls(str(trial.trial_id), str(trial), dict(trial.config or {}), getattr(trial, "error_file", None),
                   int(getattr(trial, "num_failures", 0) or 0))

    def __str__(self) -> str:
        return self.name


class MLflowTracker(Callback):
    """Tune callback that mirrors trials into MLflow (see the module docstring).

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name (the search name).
        base: the space's base config (``Config.to_dict()``); a trial's config is base + its sampled params.
        search_tags: extra tags for every run (space file, search name).
    """

    def __init__(self, tracking_uri: str, experiment: str, base: dict, search_tags: dict[str, str] | None = None):
        self.tracking_uri = tracking_uri
        self.base = base
        self.experiment = experiment
        self.search_tags = dict(search_tags or {})
        self._client = None
        self._exp_id: str | None = None
        self._parents: dict[str, str] = {}
        self._children: dict[tuple[str, int], str] = {}
        self._final_seen: set[str] = set()
        self._last: dict[str, dict] = {}
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._fresh_checked: set[str] = set()

    def __getstate__(self) -> dict:  # the callback is pickled into Tune's experiment state
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "base": self.base,
                "search_tags": self.search_tags}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    # ------------------------------------------------------------------ plumbing
    # Tune calls the hooks on its driver loop; MLflow writes (SQLite: ~0.1-0.3 s per call) would stall it, so each
    # hook enqueues its work and ONE writer thread of the driver process performs every MLflow call, in order.
    def _submit(self, fn: Any, *args: Any) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._writer, name="mlflow-writer", daemon=True)
            self._thread.start()
            _LIVE.add(self)
        self._queue.put((fn, args))

    def _writer(self) -> None:
        while True:
            fn, args = self._queue.get()
            try:
                if fn is None:
                    return
                fn(*args)
            except Exception as e:  # never let tracking break the search; say what was lost
                print(f"warning: MLflow tracking ({getattr(fn, '__name__', fn)}): {e!r}", file=sys.stderr)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued MLflow write is done."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            from search.mlflow_store import ensure_sqlite_store

            ensure_sqlite_store(self.tracking_uri)  # atomic: Ctrl-C never leaves a half-made schema

            self._client = MlflowClient(self.tracking_uri)
            self._exp_id = get_or_create_experiment(self._client, self.experiment, self.tracking_uri)
        return self._client

    def ensure_store(self) -> str:
        """Create the tracking store (SQLite schema, artifact folder) and the experiment now; returns its id.

        Called by the runner before the search starts, so that ``mlflow ui`` opened at any moment of the search
        finds a complete store (otherwise the first trial's writes would create the schema while the UI reads it).
        """
        _ = self.client
        return str(self._exp_id)

    def _find(self, trial_id: str, fold: int | None) -> str | None:
        f = f"tags.{TRIAL_TAG} = '{trial_id}' and tags.{ROLE_TAG} = '{'parent' if fold is None else 'fold'}'"
        if fold is not None:
            f += f" and tags.fold = '{fold}'"
        runs = self.client.search_runs([self._exp_id], filter_string=f, max_results=5)
        return runs[0].info.run_id if runs else None

    def _parent(self, trial: Any) -> str:
        tid = trial.trial_id
        if tid not in self._parents:
            run_id = self._find(tid, None)
            if run_id is None:
                tags = {TRIAL_TAG: tid, ROLE_TAG: "parent", "mlflow.runName": str(trial), **self.search_tags}
                run_id = self.client.create_run(self._exp_id, tags={**tags, **self._owner_tags()}).info.run_id
            else:
                self.client.update_run(run_id, status="RUNNING")
                self._claim(run_id)
            _OWNED.add(run_id)
            self._parents[tid] = run_id
        return self._parents[tid]

    def _child(self, trial: Any, fold: int) -> str:
        key = (trial.trial_id, fold)
        if key not in self._children:
            parent = self._parent(trial)
            run_id = self._find(trial.trial_id, fold)
            if run_id is None:
                tags = {TRIAL_TAG: trial.trial_id, ROLE_TAG: "fold", "fold": str(fold),
                        "mlflow.parentRunId": parent, "mlflow.runName": f"{trial}-fold{fold}", **self.search_tags}
                run_id = self.client.create_run(self._exp_id, tags={**tags, **self._owner_tags()}).info.run_id
                self.client.log_param(run_id, "fold", fold)
            else:
                self.client.update_run(run_id, status="RUNNING")
                self._claim(run_id)
            _OWNED.add(run_id)
            self._children[key] = run_id
        return self._children[key]

    def _owner_tags(self) -> dict[str, str]:
        from search.mlflow_store import OWNER_TAG, owner_token

        tok = owner_token(self.experiment)
        return {OWNER_TAG: tok} if tok else {}

    def _claim(self, run_id: str) -> None:
        for k, v in self._owner_tags().items():
            self.client.set_tag(run_id, k, v)

    def _replace_if_restarted(self, trial: Any, step: int) -> None:
        """On a trial's first result in this process: if its parent run already holds ``epoch/score`` at a step
        >= ``step`` (the trial started over), delete the previous attempt's runs and open fresh ones (tags such
        as ``retries`` carried over, params logged again), so that no metric step is recorded twice."""
        tid = trial.trial_id
        if tid in self._fresh_checked:
            return
        self._fresh_checked.add(tid)
        old = self._parent(trial)
        hist = self.client.get_metric_history(old, "epoch/score")
        if not hist or max(m.step for m in hist) < step:
            return  # a fresh trial, or one continuing from a checkpoint past its recorded epochs
        keep = {k: v for k, v in self.client.get_run(old).data.tags.items() if not k.startswith("mlflow.")
                or k == "mlflow.runName"}
        olds = [old] + [r.info.run_id for r in self.client.search_runs(
            [self._exp_id], filter_string=f"tags.{TRIAL_TAG} = '{tid}' and tags.{ROLE_TAG} = 'fold'", max_results=100)]
        for run_id in olds:
            self.client.set_terminated(run_id, status="KILLED")
            self.client.delete_run(run_id)
            _OWNED.discard(run_id)
        self._parents.pop(tid, None)
        for key in [k for k in self._children if k[0] == tid]:
            self._children.pop(key)
        new = self._parent(trial)
        for k, v in keep.items():
            if k not in (TRIAL_TAG, ROLE_TAG):
                self.client.set_tag(new, k, v)
        self._start(trial)

    def _log(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(ms), 900):
            self.client.log_batch(run_id, metrics=ms[i : i + 900])

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self._start, TrialInfo.of(trial))

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self._parent, TrialInfo.of(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._submit(self._result, TrialInfo.of(trial), dict(result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self._complete, TrialInfo.of(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self._error, TrialInfo.of(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self._recover, TrialInfo.of(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()

    # ------------------------------------------------------------------ writer-thread work
    def _start(self, trial: TrialInfo) -> None:
        run_id = self._parent(trial)
        self._final_seen.discard(trial.trial_id)
        try:
            from blemore_core.config import Config

            params = {k: v for k, v in trial.config.items() if not k.startswith("debug.")}
            cfg = Config.from_dict(self.base).override(params)
            from mlflow.entities import Param

            existing = self.client.get_run(run_id).data.params
            params = [Param(k, str(v)) for k, v in cfg.flat().items() if k not in existing]
            for i in range(0, len(params), 90):
                self.client.log_batch(run_id, params=params[i : i + 90])
        except Exception as e:  # never let tracking break the search
            self.client.set_tag(run_id, "params_error", str(e)[:500])

    def _result(self, trial: TrialInfo, result: dict) -> None:
        from search.trainable import fold_records

        recs = fold_records(result)
        if result.get("final"):
            self._log_final(trial, result, recs)
            return
        self._last[trial.trial_id] = result
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self._replace_if_restarted(trial, step)
        self._log(self._parent(trial), {f"epoch/{m}": result.get(m) for m in
                                        ("score", "acc_presence", "acc_salience")}, step)
        headline = result.get("headline", "crossfit")
        for r in recs:  # learning curve (own-fold fit of this epoch) and the headline choice so far
            m = {f"epoch/{k}": v for k, v in r.own.items()}
            m.update({"epoch/train_loss": r.train_loss, "epoch/lr": r.lr})
            if headline in r.protocols:
                m[f"epoch/{headline}_score"] = r.protocols[headline]["score"]
            self._log(self._child(trial, r.fold), m, r.epoch)

    def _log_fold(self, trial: Any, rec: Any, headline: str) -> dict[str, float]:
        """Log a fold's protocols (``<protocol>/<m>``, headline ones also bare) to its child run."""
        m: dict[str, float] = {}
        for proto, row in rec.protocols.items():
            m.update({f"{proto}/{x}": row.get(x) for x in (*FOLD_METRICS, "epoch")})
        m.update({x: rec.protocols.get(headline, {}).get(x) for x in FOLD_METRICS})
        m["best_epoch"] = rec.protocols.get(headline, {}).get("epoch")
        m["epochs_run"] = rec.epoch
        self._log(self._child(trial, rec.fold), m)
        return m

    def _log_final(self, trial: Any, result: dict, recs: list) -> None:
        parent = self._parent(trial)
        headline = result.get("headline", "crossfit")
        pm = {m: result[m] for m in ("acc_presence", "acc_salience", "score")}
        pm.update({k: v for k, v in result.items() if k.count("/") == 1 and k.endswith(("_mean", "_std"))})
        self._log(parent, pm)
        self.client.set_tag(parent, "headline_protocol", headline)
        for r in recs:
            self._log_fold(trial, r, headline)
            self.client.set_tag(self._child(trial, r.fold), "stopped_early", str(bool(r.stopped)).lower())
        folds = [r.fold for r in recs]
        ckpt = result.get("checkpoint_path")
        if ckpt:
            try:
                self._log_artifacts(parent, trial, ckpt, folds)
            except Exception as e:  # artifacts are best effort; the metrics are already recorded
                self.client.set_tag(parent, "artifact_error", str(e)[:_ERROR_TAG_MAX])
        self._final_seen.add(trial.trial_id)

    def _log_artifacts(self, parent: str, trial: Any, ckpt: str, folds: list[int]) -> None:
        from search import plots
        from search.trainable import read_checkpoint_dir

        d = read_checkpoint_dir(ckpt)
        for name in ("config.yaml", "oof.parquet", "oof_epochs.npz", "thresholds.json", "metrics.json",
                     "importances.json", "confusion.json"):
            if (d / name).is_file():
                self.client.log_artifact(parent, str(d / name))
        with tempfile.TemporaryDirectory() as tmp:
            pngs = []
            if (d / "confusion.json").is_file():
                pngs.append(plots.confusion_plot(d / "confusion.json", Path(tmp) / "confusion.png"))
            if (d / "importances.json").is_file():
                pngs.append(plots.importance_plot(d / "importances.json", Path(tmp) / "importances.png"))
            for p in pngs:
                self.client.log_artifact(parent, str(p), artifact_path="plots")
        for k in folds:
            child = self._child(trial, k)
            for name in (f"fold{k}.pt", f"history_fold{k}.json"):
                if (d / name).is_file():
                    self.client.log_artifact(child, str(d / name))

    def _end(self, trial: Any, status: str, tags: dict[str, str]) -> None:
        ids = [self._parent(trial)] + [r for (t, _), r in self._children.items() if t == trial.trial_id]
        for run_id in ids:
            for k, v in tags.items():
                self.client.set_tag(run_id, k, v)
            self.client.set_terminated(run_id, status=status)
        self._parents.pop(trial.trial_id, None)
        for key in [k for k in self._children if k[0] == trial.trial_id]:
            self._children.pop(key)

    def _complete(self, trial: TrialInfo) -> None:
        tid = trial.trial_id
        stopped = tid not in self._final_seen
        if stopped:  # stopped by the scheduler: the last epoch's numbers (the same objective) are the record
            from search.trainable import fold_records

            last = self._last.get(tid, {})
            headline = last.get("headline", "crossfit")
            for r in fold_records(last):
                self._log_fold(trial, r, headline)
            if last:
                self._log(self._parent(trial), {m: last.get(m) for m in ("acc_presence", "acc_salience", "score")})
        self._end(trial, "FINISHED", {"stopped_early": str(stopped).lower(), "trial_status": "stopped" if stopped
                                      else "completed"})

    def _error(self, trial: TrialInfo) -> None:
        text = ""
        try:
            if trial.error_file and os.path.exists(trial.error_file):
                text = Path(trial.error_file).read_text()
        except Exception:
            pass
        text = text or "trial failed (no error file)"
        self._end(trial, "FAILED", {"error": text[-_ERROR_TAG_MAX:], "trial_status": "error",
                                    "num_failures": str(trial.num_failures)})

    def _recover(self, trial: TrialInfo) -> None:
        self.client.set_tag(self._parent(trial), "retries", str(trial.num_failures))

    def stop_writer(self) -> None:
        """Finish the queued writes and end the writer thread."""
        self.flush()
        if self._thread is not None and self._thread.is_alive():
            self._queue.put((None, ()))
            self._thread.join(timeout=60)
        self._thread = None

    def close(self) -> int:
        """Finish the queued writes, then end as KILLED the runs of THIS search still RUNNING (created or reopened
        by this process, or tagged with its name-lock token); returns how many were ended."""
        from search.mlflow_store import OWNER_TAG, owner_token

        for t in list(_LIVE):  # e.g. the callback instance Tune unpickled on resume
            t.stop_writer()
        self.stop_writer()
        n = 0
        mine = "attributes.status = 'RUNNING'"
        tok = owner_token(self.experiment)
        runs = {r.info.run_id: r for r in self.client.search_runs([self._exp_id], filter_string=mine,
                                                                   max_results=10000)}
        for run_id, run in runs.items():
            if run_id in _OWNED or (tok and run.data.tags.get(OWNER_TAG) == tok):
                self.client.set_terminated(run_id, status="KILLED")
                _OWNED.discard(run_id)
                n += 1
        self._parents.clear()
        self._children.clear()
        return n
