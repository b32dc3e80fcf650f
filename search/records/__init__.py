"""MLflow records of a search, written by ONE process: a Ray Tune callback on the driver.

docs/ARCHITECTURE.md section 6. Experiment = search name; one parent run per trial (tag ``tune_trial_id``); one child run per
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
* A local SQLite store is created atomically before the first MLflow call (:mod:`search.records.store`).
* A tracking server that stops answering mid-search (connection refused, timeout) stops the search at Tune's next
  step with :class:`TrackingServerDown` instead of losing records for hours; after the server is back,
  ``blemore resume`` re-runs the unfinished trials and :meth:`MLflowTracker.reconcile` records, exactly once,
  every trial that ended while the server was down (from Tune's stored results: learning curves, final metrics,
  artifacts, status).

Rooms of the package (the callback only routes Tune's hooks):

* :mod:`~search.records.naming`: run tags, run names, the UI's shared views and links (no MLflow call).
* :mod:`~search.records.store`: atomic creation of a local store, the search-name lock, the owner tag.
* :mod:`~search.records.runs`: the run index (trial -> parent run, (trial, fold) -> fold run, found by tag) and
  which runs this process owns.
* :mod:`~search.records.writer`: the writer thread (every MLflow call, in order) and :class:`TrackingServerDown`.
* :mod:`~search.records.recorder`: what each trial event writes; a restarted trial's runs replaced.
* :mod:`~search.records.upload`: a final checkpoint's artifacts and plots.
* :mod:`~search.records.replay`: trials that ended during an outage, recorded once after ``blemore resume``.
* :mod:`~search.records.closing`: this search's runs still RUNNING ended KILLED.
* :mod:`~search.records.callback`: :class:`MLflowTracker`, the Tune callback.
"""

from search.compat import quiet_mlflow_console
from search.defaults import default_tracking_uri, ui_base, ui_command
from search.records.naming import (
    ROLE_TAG,
    TRIAL_TAG,
    best_view_key,
    best_view_state,
    runs_link,
    trial_link,
    trial_number,
    trial_run_name,
    trial_view_key,
    trial_view_state,
    view_link,
)
from search.records.recorder import TrialInfo
from search.records.runs import get_or_create_experiment
from search.records.writer import TrackingServerDown, is_unreachable


def __getattr__(name: str):  # MLflowTracker on first use: it imports Ray Tune, which the light names here do not
    if name == "MLflowTracker":
        from search.records.callback import MLflowTracker

        return MLflowTracker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MLflowTracker", "TrackingServerDown", "TrialInfo", "ROLE_TAG", "TRIAL_TAG", "best_view_key",
           "best_view_state", "default_tracking_uri", "get_or_create_experiment", "is_unreachable",
           "quiet_mlflow_console", "runs_link", "trial_link", "trial_number", "trial_run_name", "trial_view_key",
           "trial_view_state", "ui_base", "ui_command", "view_link"]
