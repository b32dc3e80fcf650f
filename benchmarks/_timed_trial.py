"""Benchmark-only wrappers that time a production search trial from outside (used by benchmarks/startup.py).

``timed_run_trial`` replaces ``search.trainable.run_trial`` in the driver (so Tune runs it), records when the
trial function starts in its actor, swaps in :func:`timed_fold_worker` for the Train workers and calls the
production ``run_trial``. ``timed_fold_worker`` records when the worker function is entered, times the worker's
imports and the data load itself (``search.trainable.load_data``, which memoises, so the production worker then
reuses it), wraps ``ray.train.report`` to note when each epoch's report was called and returned and the worker
process's CPU seconds then (the first return ends the first epoch: training pass, validation forward, exchange, OOF
shard, report; this holds for every fold layout and fold execution, fused included), and runs the production
``trial_worker`` unchanged. Timestamps (``time.time()``, one machine) go to ``$BLEMORE_BENCH_TIMING_DIR`` as one
JSON file per process; trial records carry the Tune experiment name, so one timing folder serves several searches. Nothing here changes what a trial computes.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

ENV = "BLEMORE_BENCH_TIMING_DIR"
from search import trainable as _trainable  # noqa: E402

#: the production trial function, taken before the driver swaps in :func:`timed_run_trial`
PRODUCTION_RUN_TRIAL = _trainable.run_trial


def _write(kind: str, rec: dict) -> None:
    d = os.environ.get(ENV)
    if d:
        Path(d, f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:6]}.json").write_text(json.dumps(rec))


def timed_fold_worker(loop_config: dict) -> None:
    """Production ``trial_worker`` with start-up timestamps taken around it."""
    t_enter = time.time()
    import numpy  # noqa: F401
    import ray.train
    import torch  # noqa: F401

    t_lib = time.time()
    from blemore_core.config import Config
    from blemore_core.train import FoldTrainer  # noqa: F401
    from search import trainable

    t_imports = time.time()
    setup = loop_config["setup"]
    torch.set_num_threads(trainable.torch_threads(setup.cpus_per_worker))
    cfg = Config.from_dict(loop_config["config"])
    trainable.load_data(cfg, setup.data_dir)
    t_data = time.time()
    rank = ray.train.get_context().get_world_rank()
    reports: list[float] = []
    calls: list[float] = []  # when each report was called: returned - called = the time spent inside Ray Train
    cpu: list[float] = []  # this process's CPU seconds (every thread) when each report returned
    production_report = ray.train.report

    def report(*args, **kwargs):
        calls.append(time.time())
        out = production_report(*args, **kwargs)
        reports.append(time.time())
        cpu.append(time.process_time())
        return out

    ray.train.report = report  # trial_worker looks it up on the module at each call
    try:
        trainable.trial_worker(loop_config)
    finally:
        ray.train.report = production_report
        _write("worker", {"trial_id": loop_config["trial_id"], "rank": rank, "enter": t_enter, "libs": t_lib,
                          "imports": t_imports, "data": t_data, "first_epoch": reports[0] if reports else None,
                          "reports": reports, "report_calls": calls, "cpu": cpu, "pid": os.getpid(),
                          "end": time.time()})


def timed_run_trial(config: dict, setup) -> None:
    """Production ``run_trial`` with the trial function's start and end recorded."""
    t0 = time.time()
    from ray import tune

    from search import trainable

    trainable.trial_worker = timed_fold_worker  # run_trial reads the module attribute when it builds the trainer
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    try:
        PRODUCTION_RUN_TRIAL(config, setup)
    finally:
        _write("trial", {"trial_id": trial_id, "experiment": ctx.get_experiment_name(), "start": t0,
                         "end": time.time(), "pid": os.getpid()})


def timed_local_run_trial(config: dict, setup) -> None:
    """Prototype of a warm trial (issue 22 item 5; benchmarks/throughput.py): the packed trial executed by Ray
    Train's local mode (``ScalingConfig(num_workers=0)``: Ray Train's ``LocalController`` runs the production
    ``trial_worker`` in the Tune trial actor itself, so no Train controller or worker process starts), with the
    worker's reports forwarded to Tune (``ray.tune.report``, which persists the final checkpoint into the trial's
    Tune folder). Ray Train V2 refuses ``ray.train.report`` and ``ray.train.get_context`` inside a Tune function
    (a DeprecationWarning, ray-project/ray#49454), local mode included, so the prototype routes both around that
    guard: what runs is the packed loop in the Tune actor, with Ray Train reduced to a function call. Under Tune's
    ``reuse_actors=True`` a trial then starts no process at all: the actor's imports and memoised data serve the
    next trial. Timestamps as :func:`timed_run_trial`; packed layout only."""
    t0 = time.time()
    import ray.train
    import ray.tune
    from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from search.space import trial_config

    ctx = ray.tune.get_context()
    trial_id = ctx.get_trial_id()
    cfg = trial_config(setup.base, config, source=f"{setup.space_path} (trial {trial_id})")

    from ray.train.v2._internal.execution.train_fn_utils import get_train_fn_utils

    # Ray Train V2 refuses ray.train.report / get_context inside a Tune function (DeprecationWarning, ray#49454),
    # local mode included: the prototype reaches the local controller's context directly and reports through Tune
    def report(metrics, checkpoint=None, *args, **kwargs):
        if metrics:  # Tune persists the checkpoint (its own Checkpoint class) into the trial's Tune folder
            ray.tune.report(metrics, checkpoint=None if checkpoint is None else
                            ray.tune.Checkpoint.from_directory(checkpoint.path))

    production = (ray.train.report, ray.train.get_context, LocalTrainFnUtils.report)
    ray.train.report, ray.train.get_context = report, lambda: get_train_fn_utils().get_context()
    LocalTrainFnUtils.report = lambda self, metrics, checkpoint=None, *a, **k: report(metrics, checkpoint)
    try:
        DataParallelTrainer(
            timed_fold_worker,
            train_loop_config={"setup": setup, "config": cfg.to_dict(), "trial_id": trial_id,
                               "trial_index": config.get("debug.trial_index"), "exchange": None},
            scaling_config=ray.train.ScalingConfig(num_workers=0),
            run_config=ray.train.RunConfig(name=f"{trial_id}-{uuid.uuid4().hex[:8]}", storage_path=setup.storage),
        ).fit()
    finally:
        ray.train.report, ray.train.get_context, LocalTrainFnUtils.report = production
        _write("trial", {"trial_id": trial_id, "experiment": ctx.get_experiment_name(), "start": t0,
                         "end": time.time(), "pid": os.getpid()})
