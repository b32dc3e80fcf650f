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
* A tracking server that stops answering mid-search (connection refused, timeout) stops the search at Tune's next
  step with :class:`TrackingServerDown` instead of losing records for hours; after the server is back,
  ``blemore resume`` re-runs the unfinished trials and :meth:`MLflowTracker.reconcile` records, exactly once,
  every trial that ended while the server was down (from Tune's stored results: learning curves, final metrics,
  artifacts, status).
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

from search.safety import mask_uri

TRIAL_TAG = "tune_trial_id"
ROLE_TAG = "role"
FOLD_METRICS = ("acc_presence", "acc_salience", "score", "alpha", "beta")
_ERROR_TAG_MAX = 4900
_LIVE: weakref.WeakSet = weakref.WeakSet()  # trackers of this process with a writer thread
_OWNED: set[str] = set()  # run ids this process created or reopened (closed by MLflowTracker.close)


def quiet_mlflow_console() -> None:
    """Stop MLflow printing two "View run / View experiment" lines (and fetching the run again) each time a run
    ends against a tracking server (a search ends six runs per trial, and the console is the trial table's), and
    a progress bar for every small artifact read over HTTP (the report reads one per trial). A user who sets
    ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`` or ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` keeps their choice."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def default_tracking_uri(workdir: str | Path = ".") -> str:
    """``sqlite:///<workdir>/mlflow.db`` (artifacts in ``<workdir>/mlruns``), which ``mlflow ui`` opens with
    ``--backend-store-uri`` set to the same URI."""
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def ui_command(tracking_uri: str) -> str:
    """The shell command that opens the MLflow UI on this store (loopback only)."""
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


#: MLflow 3 UI: an experiment tagged with this kind opens on its runs table (not the GenAI overview of traces)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: metric columns shown in the runs view link (besides the objective, which it is sorted by)
LINK_COLUMNS = ("score", "acc_presence", "acc_salience")
_ABBREV = {"top_n": "top", "learning_rate": "lr", "weight_decay": "wd", "batch_size": "bs", "latent_dim": "d",
           "shared_dim": "ds", "dropout": "drop", "max_epochs": "ep"}


def trial_number(trial_id: str) -> int | None:
    """The counter Tune puts at the end of a trial id (``"4f2c1_00003"`` -> 3); None when there is none."""
    head, sep, tail = str(trial_id).rpartition("_")
    return int(tail) if sep and head and tail.isdigit() else None  # a bare hex id may be all digits: not a counter


def _fmt_value(key: str, v: Any) -> str:
    short = _ABBREV.get(key.rsplit(".", 1)[-1], key.rsplit(".", 1)[-1])
    if isinstance(v, bool):
        return f"{short}={'y' if v else 'n'}"
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "+".join(str(x) for x in v)
    if isinstance(v, int):
        return f"{short}{v}" if short != key.rsplit(".", 1)[-1] or len(short) <= 4 else f"{short}={v}"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
            mant, exp = f"{v:.1e}".split("e")
            return f"{short}={mant}e{int(exp)}"
        return f"{short}={v:.3g}"
    return f"{short}={v}"


def trial_run_name(trial_id: str, config: dict, searched: list[str] | None = None, number: int | None = None) -> str:
    """A parent run's name that says what the trial is: its number and the searched values, e.g.
    ``t03 rank_aware top3 lr=1.1e-3`` (``searched`` orders the keys; default: the config's own order). The number
    is ``number`` when given, else the counter at the end of Tune's trial id (``..._00003``), else the id itself."""
    n = number if number is not None else trial_number(trial_id)
    head = f"t{n:02d}" if n is not None else str(trial_id)
    keys = [k for k in (searched or list(config)) if k in config and not k.startswith("debug.")]
    return " ".join([head] + [_fmt_value(k, config[k]) for k in keys])


def ui_base(tracking_uri: str) -> str:
    """The MLflow UI address of a store: the server itself for an http(s) URI, else the address of
    :func:`ui_command` (``http://127.0.0.1:5000``)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


#: experiment tag prefix of the MLflow UI's shared views (the UI's "Share" button writes the same tags); a link
#: ``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens the view stored under ``<prefix><key>``
VIEW_TAG_PREFIX = "mlflow.sharedViewState."


def best_view_key(metric: str = "score") -> str:
    """Shared-view key of the search's trial runs sorted by ``metric``, best first."""
    return f"blemore-best-{metric}"


def trial_view_key(trial_id: str) -> str:
    """Shared-view key of one trial's fold runs."""
    return f"blemore-trial-{trial_id}"


def best_view_state(metric: str = "score") -> dict:
    """The runs view of the trials (parent runs) sorted by ``metric`` (best first), key metric columns selected."""
    return {"searchFilter": f"tags.{ROLE_TAG} = 'parent'", "orderByKey": f"metrics.`{metric}`", "orderByAsc": False,
            "selectedColumns": [f"metrics.`{m}`" for m in dict.fromkeys([metric, *LINK_COLUMNS])]}


def trial_view_state(trial_id: str) -> dict:
    """The runs view of one trial's fold runs in fold order, with ACC_presence, ACC_salience, Score, the presence
    threshold alpha, the salience threshold beta (headline protocol) and the node each fold ran on."""
    return {"searchFilter": f"tags.{TRIAL_TAG} = '{trial_id}' and tags.{ROLE_TAG} = 'fold'",
            "orderByKey": "params.`fold`", "orderByAsc": True,
            "selectedColumns": [f"metrics.`{m}`" for m in FOLD_METRICS] + ["tags.`node_id`"]}


def view_link(tracking_uri: str, experiment_id: str, key: str) -> str:
    """Link to a shared view of the experiment's runs (MLflow 3 UI)."""
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}"


def runs_link(tracking_uri: str, experiment_id: str, metric: str = "score") -> str:
    """Direct link to the search's trials sorted by the objective (best first) with the key metric columns selected
    (the view is stored as an experiment tag by :meth:`MLflowTracker.ensure_store`)."""
    return view_link(tracking_uri, experiment_id, best_view_key(metric))


def trial_link(tracking_uri: str, experiment_id: str, trial_id: str) -> str:
    """Direct link to one trial's fold runs (the view is stored when the trial's run is created)."""
    return view_link(tracking_uri, experiment_id, trial_view_key(trial_id))


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


class TrackingServerDown(RuntimeError):
    """The MLflow tracking server stopped answering during a search (connection refused or timed out after MLflow's
    retries, :data:`search.preflight.MLFLOW_HTTP_ENV`); the search stops so that no more records are lost."""


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first (cycles cut)."""
    out: list[BaseException] = []
    x: BaseException | None = exc
    while x is not None and all(x is not y for y in out):
        out.append(x)
        x = x.__cause__ or x.__context__
    return out


def is_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from or during) says the tracking server cannot be reached:
    ``requests``' ConnectionError, Timeout or RetryError (retries used up on 5xx answers), or an OSError of the
    connection. A server that answers with an error (bad request, missing run) is not unreachable."""
    import requests

    kinds = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError,
             ConnectionError, TimeoutError)
    return any(isinstance(x, kinds) for x in _chain(exc))


def _root_cause(exc: BaseException) -> str:
    """``"<type>: <message>"`` of the innermost exception ``exc`` was raised from or during, cut to 160 chars."""
    root = _chain(exc)[-1]
    return f"{type(root).__name__}: {' '.join(str(root).split())}"[:160]


def _stored_results(result: Any) -> list[dict]:
    """Every result a trial reported, in order, from Tune's ``result.json`` in the trial's storage folder (local path
    or object store, through the Result's filesystem); [] when it cannot be read."""
    import json

    try:
        with result.filesystem.open_input_stream(f"{result.path}/result.json") as f:
            text = f.read().decode()
    except Exception:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by the interruption
    return rows


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

    def __init__(self, tracking_uri: str, experiment: str, base: dict, search_tags: dict[str, str] | None = None,
                 storage: str | None = None, searched: list[str] | None = None, metric: str = "score"):
        self.tracking_uri = tracking_uri
        self.base = base
        self.experiment = experiment
        self.search_tags = dict(search_tags or {})
        self.storage = storage
        self.searched = list(searched or [])
        self.metric = metric
        self._client = None
        self._exp_id: str | None = None
        self._numbers: dict[str, int] = {}
        self._next_number: int | None = None
        self._parents: dict[str, str] = {}
        self._children: dict[tuple[str, int], str] = {}
        self._final_seen: set[str] = set()
        self._last: dict[str, dict] = {}
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._fresh_checked: set[str] = set()
        self.down: str | None = None  # why the tracking server is considered down (see TrackingServerDown)

    def __getstate__(self) -> dict:  # the callback is pickled into Tune's experiment state
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "base": self.base,
                "search_tags": self.search_tags, "storage": self.storage, "searched": self.searched,
                "metric": self.metric}

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
                if self.down is None:  # once the server is down, queued writes are dropped (reconcile redoes them)
                    fn(*args)
            except Exception as e:
                if is_unreachable(e):  # the search stops at Tune's next step (on_step_begin)
                    self.down = _root_cause(e)
                    print(f"error: MLflow tracking server {self.tracking_uri} is not answering ({self.down}); "
                          "stopping the search", file=sys.stderr)
                else:  # never let a tracking problem break the search; say what was lost
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
            quiet_mlflow_console()
            self._client = MlflowClient(self.tracking_uri)
            self._exp_id = get_or_create_experiment(self._client, self.experiment, self.tracking_uri)
        return self._client

    def ensure_store(self) -> str:
        """Create the tracking store (SQLite schema, artifact folder) and the experiment now; returns its id.

        Called by the runner before the search starts, so that ``mlflow ui`` opened at any moment of the search
        finds a complete store (otherwise the first trial's writes would create the schema while the UI reads it).
        """
        _ = self.client
        import json

        self.client.set_experiment_tag(self._exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        self.client.set_experiment_tag(self._exp_id, VIEW_TAG_PREFIX + best_view_key(self.metric),
                                       json.dumps(best_view_state(self.metric)))
        return str(self._exp_id)

    def describe_experiment(self, text: str) -> None:
        """Set the experiment's description (the UI shows it above the runs; Markdown)."""
        self.client.set_experiment_tag(self._exp_id, "mlflow.note.content", mask_uri(text))

    def run_name(self, trial: Any) -> str:
        """The parent run's name of ``trial`` (see :func:`trial_run_name`). Tune's trial ids carry no counter when a
        searcher names them, so the number is the trial's order of creation in the experiment (1, 2, ...), counted
        from the store, hence stable across resumes."""
        n = trial_number(trial.trial_id)
        if n is None:
            if trial.trial_id not in self._numbers:
                if self._next_number is None:
                    self._next_number = 1 + len(self.client.search_runs(
                        [self._exp_id], filter_string=f"tags.{ROLE_TAG} = 'parent'", max_results=50000))
                self._numbers[trial.trial_id] = self._next_number
                self._next_number += 1
            n = self._numbers[trial.trial_id]
        return trial_run_name(trial.trial_id, {k: v for k, v in trial.config.items() if not k.startswith("debug.")},
                              self.searched or None, number=n)

    def fold_run_name(self, trial: Any, fold: int) -> str:
        """A fold run's name: the trial's number, the fold, then the searched values (``t03 fold2 rank_aware ...``),
        so the fold stays visible when the UI truncates long names."""
        head, _, rest = self.run_name(trial).partition(" ")
        return f"{head} fold{fold} {rest}".rstrip()

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
                tags = {TRIAL_TAG: tid, ROLE_TAG: "parent", "mlflow.runName": self.run_name(trial),
                        **self.search_tags}
                run_id = self.client.create_run(self._exp_id, tags={**tags, **self._owner_tags()}).info.run_id
                import json

                self.client.set_experiment_tag(self._exp_id, VIEW_TAG_PREFIX + trial_view_key(tid),
                                               json.dumps(trial_view_state(tid)))
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
                        "mlflow.parentRunId": parent, "mlflow.runName": self.fold_run_name(trial, fold),
                        **self.search_tags}
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
    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """Stop the search (Tune ends its loop and re-raises) once a write found the tracking server down.

        Raises:
            TrackingServerDown: naming the tracking URI and the connection error.
        """
        if self.down is not None:
            raise TrackingServerDown(f"MLflow tracking server {self.tracking_uri} stopped answering during the search "
                                     f"(cause: {self.down})")

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
            from mlflow.entities import Param

            from search.space import trial_config

            cfg = trial_config(self.base, trial.config, source=f"trial {trial.trial_id}")

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
            child = self._child(trial, r.fold)
            self.client.set_tag(child, "stopped_early", str(bool(r.stopped)).lower())
            for tag in ("node_id", "device"):  # where the fold worker ran (search.trainable._place)
                if result.get(f"fold{r.fold}/{tag}"):
                    self.client.set_tag(child, tag, str(result[f"fold{r.fold}/{tag}"]))
        folds = [r.fold for r in recs]
        if folds and result.get(f"fold{min(folds)}/node_id"):  # rank 0 = the first fold: it wrote the artifacts
            self.client.set_tag(parent, "rank0_node_id", str(result[f"fold{min(folds)}/node_id"]))
        ckpt = result.get("checkpoint_path")
        if ckpt:
            try:
                self._log_artifacts(parent, trial, ckpt, folds)
            except Exception as e:  # artifacts are best effort; the metrics are already recorded
                self.client.set_tag(parent, "artifact_error", mask_uri(str(e))[:_ERROR_TAG_MAX])
        self._final_seen.add(trial.trial_id)

    def _log_artifacts(self, parent: str, trial: Any, ckpt: str, folds: list[int]) -> None:
        import shutil

        from search.storage import download_checkpoint, resolve_storage

        # from the search's storage (shared filesystem or object store), never from the worker's disk
        d = download_checkpoint(resolve_storage(self.storage), ckpt) if self.storage else Path(ckpt)
        try:
            self._log_artifact_dir(parent, trial, d, folds)
        finally:
            if self.storage:
                shutil.rmtree(d, ignore_errors=True)

    def _log_artifact_dir(self, parent: str, trial: Any, d: Path, folds: list[int]) -> None:
        from search import plots

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
                self.client.set_tag(run_id, k, mask_uri(v))  # an error's text may quote a URI with credentials
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

    def _siblings(self) -> list[MLflowTracker]:
        """This tracker and the live ones of this process writing the same experiment to the same store (the
        instance Tune unpickled on resume, whose writer thread holds the queued writes)."""
        return [t for t in list(_LIVE) if t is not self and t.experiment == self.experiment
                and t.tracking_uri == self.tracking_uri] + [self]

    def reconcile(self, results: Any) -> int:
        """Record, exactly once, every trial of ``results`` (Tune's ResultGrid after ``fit``) that ended but whose
        parent run is missing or was never ended with a ``trial_status`` (it ended while the tracking server was
        down, or its records were queued when the driver died): its params, learning curves (replayed from Tune's
        stored ``result.json``; an earlier partial attempt's runs are replaced, see :meth:`_replace_if_restarted`),
        final metrics and artifacts, then its status. Returns how many trials were recorded now."""
        mine = self._siblings()
        for t in mine:  # the Tune callback's queued writes land first
            t.flush()
        if any(t.down is not None for t in mine):
            return 0
        parents = self.client.search_runs([self._exp_id], filter_string=f"tags.{ROLE_TAG} = 'parent'",
                                          max_results=50000)
        done = {r.data.tags.get(TRIAL_TAG) for r in parents
                if r.info.status != "RUNNING" and "trial_status" in r.data.tags}
        self._drop_forgotten(parents, {str(m["trial_id"]) for res in results if (m := res.metrics or {}).get("trial_id")})
        n = 0
        for res in results:
            m = dict(res.metrics or {})
            tid = m.get("trial_id")
            if not tid or tid in done or getattr(res, "error", None) is not None:
                continue
            info = TrialInfo(str(tid), f"trial {tid}", dict(res.config or {}), None, 0)
            self._start(info)
            for r in _stored_results(res):
                if not r.get("final") and r.get("trial_id", tid) == tid:
                    self._result(info, r)
            if m.get("final"):
                self._result(info, m)
            else:  # stopped by the scheduler: its last epoch is the record (see _complete)
                self._last[str(tid)] = m
            self._complete(info)
            n += 1
        if n:
            print(f"MLflow: recorded {n} trial(s) that ended while the tracking server was not reachable",
                  file=sys.stderr)
        return n

    def _drop_forgotten(self, parents: list, known: set[str]) -> int:
        """Delete the runs of attempts the search will never finish: a parent never ended (no ``trial_status``) whose
        trial Tune does not know (it started after Tune's last saved state when the driver died, so the resumed
        search ran another trial in its place), with its fold runs; deleted runs stay restorable in MLflow.
        Returns how many trials were dropped."""
        gone = {r.data.tags.get(TRIAL_TAG) for r in parents if "trial_status" not in r.data.tags
                and r.data.tags.get(TRIAL_TAG) not in known}
        gone.discard(None)
        for tid in sorted(gone):
            for r in self.client.search_runs([self._exp_id], filter_string=f"tags.{TRIAL_TAG} = '{tid}'",
                                             max_results=1000):
                if r.info.status == "RUNNING":
                    self.client.set_terminated(r.info.run_id, status="KILLED")
                self.client.delete_run(r.info.run_id)
                _OWNED.discard(r.info.run_id)
        if gone:
            print(f"MLflow: deleted the runs of {len(gone)} interrupted attempt(s) the resumed search does not "
                  f"continue ({', '.join(sorted(gone))})", file=sys.stderr)
        return len(gone)

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
        if any(t.down is not None for t in self._siblings()):
            return 0  # the server is down: its runs stay as they are until `blemore resume` reconciles them
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
