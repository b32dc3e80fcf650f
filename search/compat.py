"""Every assumption about third-party internals, in one place (each guarded by ``tests/search/test_compat.py``).

A Ray, MLflow or Optuna upgrade breaks, at most, what this module states; its tests say which assumption failed.
The ranges CI tests are bounded in ``pyproject.toml`` (README: "Testing a newer Ray, MLflow, Optuna or torch").

Ray (2.60):
* :data:`LOCAL_RAY_ENV` / :func:`bind_local_ray_to_loopback`: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is read into the
  private constant ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` when ray is imported, so it is set there too.
* :data:`RAY_TRAIN_ENV`: undocumented ``RAY_TRAIN_*`` switches of Ray Train v2 (``ray/train/v2/_internal/constants.py``)
  and :data:`RAY_TUNE_ENV` (``RAY_AIR_NEW_OUTPUT``, ``ray/air/constants.py``).
* :data:`TUNE_LOGGER_ENV` / :func:`tune_loggers`: ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS`` keeps Tune from adding
  its CSV and TensorBoard loggers (``ray/tune/utils/callback.py``); a ``LoggerCallback`` subclass is Tune's trial
  logger interface, and Tune's ResultGrid reads a trial's ``result.json`` (JSON lines) for its metrics table.
* :class:`SupersededUploadFilter`: the logger ``ray.tune.execution.experiment_state``, its message
  ``"Saving experiment state to storage at ..."`` and the searcher's temporary file ``.<uuid4>-tmp-<name>``.
* :func:`tune_results`: every result of a trial is a JSON line of ``result.json`` in the trial's folder
  (``ray.tune.result.EXPR_RESULT_FILE``).

MLflow (3.17):
* :data:`VIEW_TAG_PREFIX`: the UI's "Share" button stores a runs view as the experiment tag
  ``mlflow.sharedViewState.<key>``, opened by ``#/experiments/<id>/runs?viewStateShareKey=<key>``.
* :data:`EXPERIMENT_KIND_TAG` = :data:`EXPERIMENT_KIND`: the UI opens such an experiment on its runs table.
* :data:`MLFLOW_QUIET_ENV`: the switches of the "View run" console lines and of the artifact progress bars.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------------------------- Ray
#: environment of a local Ray: every Ray process binds to loopback (Ray's switch for single-machine clusters:
#: with it the node address is 127.0.0.1 and the GCS, raylet, workers and the driver listen on it only). Token
#: authentication: Ray >= 2.52 turns it on for a new local ``ray.init`` unless ``RAY_AUTH_MODE`` says otherwise
#: (it creates the token in ~/.ray/auth_token); setting the variable here, after ray's import, would desynchronise
#: the driver and the GCS, so it is left to Ray.
LOCAL_RAY_ENV: dict[str, str] = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

#: environment of the Ray processes of a search: lighter Ray Train controller (no preemption watcher, no
#: metrics agent callbacks), faster controller polling (Train's default 2 s health-check period quantises every
#: report and the end of each trial), no print patching.
RAY_TRAIN_ENV: dict[str, str] = {
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
}
#: Tune's classic reporter (the search's metric columns) instead of the new console output
RAY_TUNE_ENV: dict[str, str] = {"RAY_AIR_NEW_OUTPUT": "0"}
#: Tune adds a JSON, a CSV (``progress.csv``) and a TensorBoard (``events.out.tfevents.*``) logger unless this is
#: "1" (``ray/tune/utils/callback.py``, ``_create_default_callbacks``). The driver re-uploads every trial's folder at
#: every experiment sync (``ray/tune/execution/experiment_state.py``: the whole driver staging folder, about every
#: 10 s), so a file that gains a line per epoch costs bytes growing with the square of the epochs.
TUNE_LOGGER_ENV: dict[str, str] = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
#: a trial's result keys the trial folder's ``result.json`` leaves out: the per-fold records, which the trial's
#: epoch reports next to its OOF shards keep once per epoch (:mod:`search.oof_shards`)
LEAN_RESULT_DROP = ("folds",)


def tune_loggers() -> list:
    """Tune's trial loggers for a search: one, ``LatestResultLogger``, which keeps in the trial's folder a
    ``result.json`` of ONE line, the trial's latest result without :data:`LEAN_RESULT_DROP` (Tune's ResultGrid
    reads it; the learning curves are in the epoch reports of :mod:`search.oof_shards`), and ``params.json``
    (never a pickle). Tune's own loggers are switched off through :data:`TUNE_LOGGER_ENV` in this process (the
    driver builds them when ``fit`` starts; a user's own setting wins). What each experiment sync uploads per
    trial stays the same size whatever its epochs. Returns the loggers for ``RunConfig.callbacks``."""
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.utils.util import SafeFallbackEncoder

    for k, v in TUNE_LOGGER_ENV.items():
        os.environ.setdefault(k, v)

    class LatestResultLogger(JsonLoggerCallback):
        """``result.json`` = the trial's latest result (one JSON line, rewritten in place), ``params.json``. A
        JSON logger to Tune, so that Tune never adds its own next to it (a user who sets
        ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0`` gets the CSV and TensorBoard ones)."""

        def log_trial_start(self, trial: Any) -> None:
            self.update_config(trial, trial.config)

        def update_config(self, trial: Any, config: dict) -> None:
            trial.init_local_path()
            Path(trial.local_path, TUNE_PARAM_FILE).write_text(
                json.dumps(config, indent=2, sort_keys=True, cls=SafeFallbackEncoder))

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            trial.init_local_path()
            row = {k: v for k, v in result.items() if k not in LEAN_RESULT_DROP}
            Path(trial.local_path, TUNE_RESULT_FILE).write_text(json.dumps(row, cls=SafeFallbackEncoder) + "\n")

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            return None

    return [LatestResultLogger()]


def bind_local_ray_to_loopback() -> None:
    """Apply :data:`LOCAL_RAY_ENV` (a user's own setting wins) and the private constant Ray derived from it when
    it was imported (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``); call before a local ``ray.init``."""
    from ray._private import ray_constants

    for k, v in LOCAL_RAY_ENV.items():
        os.environ.setdefault(k, v)
    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] not in ("0", "false")


#: Ray Tune's atomic save (ray/tune/search/searcher.py, ray/tune/utils/util.py): ".<uuid4>-tmp-<name>", then rename
TUNE_TMP_FILE = re.compile(r"/\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-tmp-[^/'\"]+")
#: the logger of Tune's experiment-state uploads
TUNE_STATE_LOGGER = "ray.tune.execution.experiment_state"
#: the file of a trial's folder holding its results, one JSON object a line (Tune's JSON logger: every result;
#: :func:`tune_loggers`: the latest one)
TUNE_RESULT_FILE = "result.json"
#: the file of a trial's folder holding its config (Tune's ``EXPR_PARAM_FILE``)
TUNE_PARAM_FILE = "params.json"


class SupersededUploadFilter(logging.Filter):
    """Turns Ray Tune's traceback for a superseded experiment-state upload into one warning line.

    Ray Tune 2.60 (``ray/tune/execution/experiment_state.py``, ``sync_up_experiment_state``) writes the searcher state
    (a ``.<uuid>-tmp-...`` file, then a rename) *before* it waits for the previous background upload of the same
    folder. That upload can list the temporary file and then not find it; Tune logs the ``FileNotFoundError`` with a
    full traceback (seen on Ctrl-C), although the upload it launches right after carries the state, and the search
    resumes from it. Only that case is rewritten: any other failed upload keeps its traceback and level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if (isinstance(exc, FileNotFoundError) and str(record.msg).startswith("Saving experiment state")
                and (m := TUNE_TMP_FILE.search(str(exc)))):
            record.msg = ("Ray Tune: an experiment-state upload overlapped the next state write (its temporary file "
                          "%s was renamed meanwhile); the upload launched next carries the state")
            record.args = (m.group(0).rsplit("/", 1)[-1],)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


#: the logger of Tune's ResultGrid, which warns about trials that never reported (``ray/tune/analysis/...``)
TUNE_ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"


class NeverReportedFilter(logging.Filter):
    """Drops Ray Tune's warning "Failed to fetch metrics for N trial(s)" when every trial it lists never reported
    (its ``result.json`` and ``progress.csv`` "were not found": a trial cut by the time budget or Ctrl-C before its
    first epoch). The search's ending line counts those trials ("cut before a first result"); any other failure to
    read a trial's results keeps its warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not msg.startswith("Failed to fetch metrics for"):
            return True
        listed = [ln for ln in msg.splitlines()[1:] if ln.startswith("- ")]
        return not (listed and all("were not found" in ln for ln in listed))


#: Optuna's warning when a trial reports a step it reported before: a trial that finished after Tune's last state
#: save runs again on ``resume`` and reports its epochs again (Optuna keeps the first values; one line per epoch)
OPTUNA_STEP_REPORTED = r"The reported value is ignored because this `step=\d+` is already reported"


@contextlib.contextmanager
def one_line_superseded_uploads() -> Iterator[None]:
    """While the block runs (``tuner.fit()``): :class:`SupersededUploadFilter` on Tune's experiment-state logger,
    :class:`NeverReportedFilter` on its analysis logger, and Optuna's :data:`OPTUNA_STEP_REPORTED` warning
    ignored."""
    pairs = [(logging.getLogger(TUNE_STATE_LOGGER), SupersededUploadFilter()),
             (logging.getLogger(TUNE_ANALYSIS_LOGGER), NeverReportedFilter())]
    for log, flt in pairs:
        log.addFilter(flt)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=OPTUNA_STEP_REPORTED, category=UserWarning)
            yield
    finally:
        for log, flt in pairs:
            log.removeFilter(flt)


def tune_results(result: Any) -> list[dict]:
    """The results in Tune's ``result.json`` in the trial's storage folder (local path or object store, through the
    Result's ``filesystem`` and ``path``), in order: every result a trial reported for a search stored before
    :func:`tune_loggers` kept the latest only (the replay's fallback when a trial has no epoch reports); [] when it
    cannot be read. A line cut by an interruption is skipped."""
    try:
        with result.filesystem.open_input_stream(f"{result.path}/{TUNE_RESULT_FILE}") as f:
            text = f.read().decode()
    except Exception:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


# ---------------------------------------------------------------------------------------------------------- MLflow
#: experiment tag prefix of the MLflow UI's shared views (the UI's "Share" button writes the same tags); a link
#: ``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens the view stored under ``<prefix><key>``
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
#: MLflow 3 UI: an experiment tagged with this kind opens on its runs table (not the GenAI overview of traces)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: MLflow's switches of the two "View run / View experiment" lines printed when a run ends against a server, and
#: of the progress bar of every artifact read over HTTP
MLFLOW_QUIET_ENV: dict[str, str] = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
                                    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def quiet_mlflow_console() -> None:
    """Stop MLflow printing two "View run / View experiment" lines (and fetching the run again) each time a run
    ends against a tracking server (a search ends six runs per trial, and the console is the trial table's), and
    a progress bar for every small artifact read over HTTP (the report reads one per trial). A user who sets
    either variable of :data:`MLFLOW_QUIET_ENV` keeps their choice."""
    for k, v in MLFLOW_QUIET_ENV.items():
        os.environ.setdefault(k, v)


__all__ = ["LOCAL_RAY_ENV", "RAY_TRAIN_ENV", "RAY_TUNE_ENV", "TUNE_LOGGER_ENV", "tune_loggers", "bind_local_ray_to_loopback", "TUNE_TMP_FILE",
           "TUNE_STATE_LOGGER", "TUNE_RESULT_FILE", "TUNE_PARAM_FILE", "LEAN_RESULT_DROP", "SupersededUploadFilter", "one_line_superseded_uploads",
           "tune_results", "VIEW_TAG_PREFIX", "EXPERIMENT_KIND_TAG", "EXPERIMENT_KIND", "MLFLOW_QUIET_ENV",
           "quiet_mlflow_console"]
