"""The Ray Tune callback that mirrors a search's trials into MLflow (the layout: :mod:`search.records`)."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from blemore_core.names import DEFAULT_OBJECTIVE
from search.records.closing import close_runs
from search.records.recorder import TrialInfo, TrialRecorder
from search.records.replay import replay
from search.records.runs import RunIndex
from search.records.writer import TrackingServerDown, Writer, stop_all
from search.safety import mask_uri


class MLflowTracker(Callback):
    """Tune callback: each hook queues its trial's writes on the writer thread (:mod:`search.records.writer`).

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name (the search name).
        base: the space's base config (``Config.to_dict()``); a trial's config is base + its sampled params.
        search_tags: extra tags for every run (space file, search name).
        storage: the search's storage URI (artifacts are read from it); None: checkpoints are local folders.
        searched: the searched keys (the order run names show them).
        metric: the objective the best-first view of the trials is sorted by (the space's first metric).
        objectives: every objective of the search (default ``[metric]``), recorded on the experiment.
    """

    def __init__(self, tracking_uri: str, experiment: str, base: dict, search_tags: dict[str, str] | None = None,
                 storage: str | None = None, searched: list[str] | None = None, metric: str = DEFAULT_OBJECTIVE,
                 objectives: list[str] | None = None):
        self.tracking_uri, self.experiment, self.base = tracking_uri, experiment, base
        self.search_tags, self.storage = dict(search_tags or {}), storage
        self.searched, self.metric, self.objectives = list(searched or []), metric, list(objectives or [metric])
        self.index = RunIndex(tracking_uri, experiment, self.search_tags, self.searched)
        self.recorder = TrialRecorder(self.index, base, storage)
        self.writer = Writer(tracking_uri, experiment)

    def __getstate__(self) -> dict:  # the callback is pickled into Tune's experiment state
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "base": self.base,
                "search_tags": self.search_tags, "storage": self.storage, "searched": self.searched,
                "metric": self.metric, "objectives": self.objectives}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` of the store (created, with the experiment, on first use)."""
        return self.index.client

    @property
    def exp_id(self) -> str | None:
        """The experiment's id (None before the first MLflow call)."""
        return self.index.exp_id

    @property
    def down(self) -> str | None:
        """Why the tracking server is considered down (the root cause), or None."""
        return self.writer.down

    def ensure_store(self) -> str:
        """Create the tracking store (SQLite schema, artifact folder) and the experiment now; returns its id.

        Called by the runner before the search starts, so that ``mlflow ui`` opened at any moment of the search
        finds a complete store (otherwise the first trial's writes would create the schema while the UI reads it).
        """
        return self.index.ensure_store((self.metric, *[m for m in self.objectives if m != self.metric]))

    def describe_experiment(self, text: str) -> None:
        """Set the experiment's description (the UI shows it above the runs; Markdown)."""
        self.client.set_experiment_tag(self.exp_id, "mlflow.note.content", mask_uri(text))

    def flush(self) -> None:
        """Wait until every queued MLflow write is done."""
        self.writer.flush()

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
        self.writer.submit(self.recorder.start, TrialInfo.of(trial))

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.submit(self.index.parent, TrialInfo.of(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.writer.submit(self.recorder.result, TrialInfo.of(trial), dict(result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.submit(self.recorder.complete, TrialInfo.of(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.submit(self.recorder.error, TrialInfo.of(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.submit(self.recorder.recover, TrialInfo.of(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()

    # ------------------------------------------------------------------ after the search
    def reconcile(self, results: Any, cut: bool = False) -> int:
        """Record, exactly once, every trial of ``results`` (Tune's ResultGrid after ``fit``) that ended while the
        tracking server was down, or whose records were queued when the driver died (:func:`replay`); nothing
        while the server is down. ``cut``: the search ended by its time budget (see :func:`replay`). Returns how
        many trials were recorded now."""
        mine = self.writer.siblings()
        for w in mine:  # the Tune callback's queued writes land first
            w.flush()
        if any(w.down is not None for w in mine):
            return 0
        return replay(self.recorder, results, cut=cut)

    def close(self) -> int:
        """Finish the queued writes, then end as KILLED the runs of THIS search still RUNNING (created or reopened
        by this process, or tagged with its name-lock token; :func:`close_runs`); returns how many were ended
        (0, touching nothing, while the server is down: ``blemore resume`` reconciles them)."""
        stop_all()  # e.g. the callback instance Tune unpickled on resume
        self.writer.stop()
        if any(w.down is not None for w in self.writer.siblings()):
            return 0
        return close_runs(self.index)


__all__ = ["MLflowTracker"]
