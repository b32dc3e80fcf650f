"""Benchmark-only wrappers that time a production search trial from outside (used by benchmarks/startup.py).

``timed_run_trial`` replaces ``search.trainable.run_trial`` in the driver (so Tune runs it), records when the
trial function starts in its actor, swaps in :func:`timed_fold_worker` for the Train workers and calls the
production ``run_trial``. ``timed_fold_worker`` records when the worker function is entered, times the worker's
imports and the data load itself (``search.trainable.load_data``, which memoises, so the production worker then
reuses it), wraps ``FoldTrainer.evaluate`` to note the end of the first epoch (training pass + validation forward), and runs the production
``trial_worker`` unchanged. Timestamps (``time.time()``, one machine) go to ``$BLEMORE_BENCH_TIMING_DIR`` as one
JSON file per process. Nothing here changes what a trial computes.
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
    first: list[float] = []
    from blemore_core import train as core_train

    orig = core_train.FoldTrainer.evaluate

    def evaluate(self):
        out = orig(self)
        if not first:
            first.append(time.time())
        return out

    core_train.FoldTrainer.evaluate = evaluate
    try:
        trainable.trial_worker(loop_config)
    finally:
        core_train.FoldTrainer.evaluate = orig
        _write("worker", {"trial_id": loop_config["trial_id"], "rank": rank, "enter": t_enter, "libs": t_lib,
                          "imports": t_imports, "data": t_data, "first_epoch": first[0] if first else None,
                          "end": time.time()})


def timed_run_trial(config: dict, setup) -> None:
    """Production ``run_trial`` with the trial function's start and end recorded."""
    t0 = time.time()
    from ray import tune

    from search import trainable

    trainable.trial_worker = timed_fold_worker  # run_trial reads the module attribute when it builds the trainer
    trial_id = tune.get_context().get_trial_id()
    try:
        PRODUCTION_RUN_TRIAL(config, setup)
    finally:
        _write("trial", {"trial_id": trial_id, "start": t0, "end": time.time()})
