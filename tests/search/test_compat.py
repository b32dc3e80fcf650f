"""One test per third-party assumption of search/compat.py: a Ray or MLflow upgrade that breaks one fails here,
naming it (README: "Testing a newer Ray, MLflow, Optuna or torch")."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pyarrow.fs
import pytest

from search import compat


def _source_of(package: str) -> str:
    """The text of every .py file of an installed package (its internals the compat module names)."""
    import importlib

    root = Path(importlib.import_module(package).__file__).parent
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*.py"))


def test_ray_derives_the_private_cluster_constant_from_the_loopback_switch(monkeypatch):
    from ray._private import ray_constants

    (env_key,) = compat.LOCAL_RAY_ENV
    assert env_key in inspect.getsource(ray_constants)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # undone after the test
    monkeypatch.delenv(env_key, raising=False)
    compat.bind_local_ray_to_loopback()
    assert ray_constants.ENABLE_RAY_CLUSTER is False


@pytest.mark.parametrize("key", sorted(compat.RAY_TRAIN_ENV))
def test_ray_train_still_reads_each_switch(key):
    assert f'"{key}"' in _source_of("ray.train"), f"Ray Train no longer reads {key}"


def test_ray_tune_still_reads_the_output_switch():
    from ray.air import constants

    assert set(compat.RAY_TUNE_ENV) <= set(inspect.getsource(constants).replace('"', " ").split())


def test_ray_still_logs_and_names_the_tmp_file_the_way_the_filter_expects():
    """The logger name, the message and the temporary-file naming SupersededUploadFilter relies on."""
    from ray.tune.execution import experiment_state
    from ray.tune.search import searcher

    assert experiment_state.logger.name == compat.TUNE_STATE_LOGGER
    src = inspect.getsource(experiment_state._ExperimentCheckpointManager.sync_up_experiment_state)
    assert '"Saving experiment state to storage at "' in src
    assert src.index("save_fn()") < src.index("wait_for_sync()")  # the write before the wait: the race itself
    assert 'f".{str(uuid.uuid4())}-tmp-{file_name}"' in inspect.getsource(searcher)


def test_tune_keeps_every_result_as_a_json_line_of_result_json(tmp_path):
    from types import SimpleNamespace

    from ray.tune.result import EXPR_RESULT_FILE

    assert compat.TUNE_RESULT_FILE == EXPR_RESULT_FILE
    (tmp_path / EXPR_RESULT_FILE).write_text(json.dumps({"epoch": 1}) + "\n" + '{"epoch": 2, "sco')  # cut line
    res = SimpleNamespace(path=str(tmp_path), filesystem=pyarrow.fs.LocalFileSystem())
    assert compat.tune_results(res) == [{"epoch": 1}]
    assert compat.tune_results(SimpleNamespace(path=str(tmp_path / "gone"), filesystem=res.filesystem)) == []


def test_tune_adds_only_the_json_logger_when_its_switch_is_set(monkeypatch):
    """With :data:`TUNE_LOGGER_ENV` Tune's default callbacks add neither the CSV nor the TensorBoard logger; the
    JSON logger of :func:`tune_loggers` is the only trial logger (its ``result.json`` is what replay reads)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback
    from ray.tune.utils.callback import _create_default_callbacks

    for k in compat.TUNE_LOGGER_ENV:
        monkeypatch.delenv(k, raising=False)
    loggers = compat.tune_loggers()
    made = _create_default_callbacks(list(loggers), metric="score", mode="max")
    kinds = [type(c) for c in made if isinstance(c, LoggerCallback)]
    assert kinds == [type(loggers[0])] and issubclass(kinds[0], JsonLoggerCallback), kinds
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")  # a user's own choice is kept
    compat.tune_loggers()
    made = _create_default_callbacks(list(loggers), metric="score", mode="max")
    assert any(isinstance(c, CSVLoggerCallback) for c in made)


def test_trial_folder_keeps_the_latest_result_only_so_each_sync_uploads_the_same_bytes(tmp_path):
    """The search's trial logger rewrites ``result.json`` as ONE line, the latest result without the per-fold
    records (Tune's ResultGrid still reads it), and writes ``params.json``, never a pickle: what an experiment
    sync uploads per trial does not grow with its epochs (issue 22 item 4)."""
    from types import SimpleNamespace

    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis

    (logger,) = compat.tune_loggers()
    trial = SimpleNamespace(local_path=str(tmp_path), config={"train.lr": 0.01}, init_local_path=lambda: None)
    logger.log_trial_start(trial)
    sizes = []
    for epoch in range(1, 41):
        folds = [{"fold": k, "epoch": epoch, "own": {"acc_presence": 0.5}} for k in range(5)]
        logger.log_trial_result(epoch, trial, {"epoch": epoch, "score": 0.1 * epoch, "folds": folds,
                                               "trial_id": "t1"})
        sizes.append((tmp_path / compat.TUNE_RESULT_FILE).stat().st_size)
    lines = (tmp_path / compat.TUNE_RESULT_FILE).read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"epoch": 40, "score": pytest.approx(4.0), "trial_id": "t1"}]
    assert max(sizes) < 2 * min(sizes), sizes  # one line however many epochs: not a line per epoch
    assert json.loads((tmp_path / compat.TUNE_PARAM_FILE).read_text()) == {"train.lr": 0.01}
    assert sorted(p.name for p in tmp_path.iterdir()) == [compat.TUNE_PARAM_FILE, compat.TUNE_RESULT_FILE]
    storage = SimpleNamespace(trial_fs_path=str(tmp_path), storage_filesystem=pyarrow.fs.LocalFileSystem())
    df = ExperimentAnalysis._fetch_trial_dataframe(None, SimpleNamespace(last_result={"epoch": 40}, storage=storage))
    assert list(df["epoch"]) == [40]  # Tune reads the one line as the trial's metrics table


def _ui_bundle() -> str:
    import mlflow

    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    return "\n".join(p.read_text(errors="replace") for p in build.glob("*.js"))


def test_mlflow_ui_opens_shared_views_from_experiment_tags_and_knows_the_experiment_kind():
    ui = _ui_bundle()
    assert compat.VIEW_TAG_PREFIX in ui and "viewStateShareKey" in ui
    assert compat.EXPERIMENT_KIND_TAG in ui and compat.EXPERIMENT_KIND in ui


def test_mlflow_still_has_the_console_switches(monkeypatch):
    import mlflow.environment_variables as ev

    for key in compat.MLFLOW_QUIET_ENV:
        assert hasattr(ev, key), f"MLflow no longer reads {key}"
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")  # a user's choice is kept
    compat.quiet_mlflow_console()
    assert ev.MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get() is True
    assert ev.MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() is True


def test_tune_warns_about_never_reported_trials_the_way_the_filter_expects():
    """The analysis logger and its message (a trial whose result.json and progress.csv 'were not found'), and the
    filter: such warnings are dropped, a warning that also lists another failure is kept, other records pass."""
    import logging

    from ray.tune.analysis import experiment_analysis as ea

    src = inspect.getsource(ea)
    assert ea.logger.name == compat.TUNE_ANALYSIS_LOGGER
    assert 'f"Failed to fetch metrics for {len(failures)} trial(s)' in src and "were not found at" in src

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord(compat.TUNE_ANALYSIS_LOGGER, logging.WARNING, __file__, 1, msg, None, None)

    f = compat.NeverReportedFilter()
    cut = "- run_trial_a: FileNotFoundError('result.json and progress.csv were not found at /s/a')"
    other = "- run_trial_b: OSError('permission denied')"
    assert not f.filter(rec(f"Failed to fetch metrics for 1 trial(s):\n{cut}"))
    assert f.filter(rec(f"Failed to fetch metrics for 2 trial(s):\n{cut}\n{other}"))
    assert f.filter(rec("something else"))


def test_a_repeated_step_report_is_quiet_during_the_search_only():
    """A trial re-run on resume reports its epochs again: Optuna's "already reported" warning (one per epoch) is
    ignored while ``tuner.fit()`` runs, and only that warning; outside the block it is Optuna's default again."""
    import warnings

    import optuna

    from search import compat

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    trial = study.ask()
    trial.report(0.1, step=1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with compat.one_line_superseded_uploads():
            trial.report(0.2, step=1)
            warnings.warn("another warning", UserWarning, stacklevel=1)
        trial.report(0.3, step=1)
    msgs = [str(w.message) for w in seen]
    assert "another warning" in msgs
    assert sum("is already reported" in m for m in msgs) == 1, msgs  # the one after the block
