"""One search trial: a Ray Tune function trainable that runs a Ray Train ``TorchTrainer`` with one worker per fold.

DESIGN.md section 6. Layout of a trial::

    Tune trial actor: run_trial(config)
        -> TorchTrainer(num_workers = number of folds, resources_per_worker = {CPU: cpus_per_fold, GPU: ...})
             worker rank k: fold_worker(): fit_fold(cfg, data, fold k, on_epoch=...)   (no DDP: folds are independent)
        -> ray.tune.integration.ray_train.TuneReportCallback forwards rank 0's reports to Tune

Each epoch every worker joins one gloo ``all_gather`` of a small per-fold metric vector, so every rank sees all
folds, and rank 0 reports the fold means to Tune (ASHA then stops a poor trial for all folds at once: the trial
actor is stopped, which tears down the Train controller and its workers, which it owns). Folds that stop early
(patience) keep joining the per-epoch collectives with their final numbers until every fold is done, so the
collectives and ``ray.train.report`` barriers stay aligned. At the end the fold results are gathered to rank 0
(``torch.distributed.gather_object``), which runs :func:`blemore_core.train.finalize_protocols`, writes the
artifacts (resolved config, OOF Parquet, thresholds, metrics, fold weights, confusion counts, importances: the
model directory of :func:`blemore_core.artifacts.write_cv_dir`) into a Ray Train checkpoint and reports the final
metrics; the driver's MLflow callback (:mod:`search.tracking`) reads them from there. Workers never talk to MLflow.

Reported metric keys (flat dict): ``epoch``, ``final`` (bool), ``score`` / ``acc_presence`` / ``acc_salience``
(per epoch: fold mean of each fold's best-so-far validation numbers, ``val`` protocol; final: fold mean of the
headline protocol), ``score_epoch`` (fold mean of the current epoch), ``fold{k}/<m>`` per fold, and in the final
report ``<protocol>/<m>_mean`` and ``_std``, ``fold{k}/<protocol>/<m>`` for m in acc_presence, acc_salience,
score, alpha, beta.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: per-fold values exchanged every epoch, in this order
STEP_FIELDS: tuple[str, ...] = (
    "active", "epoch", "score", "best_score", "acc_presence", "acc_salience", "alpha", "beta", "train_loss", "lr",
)
FINAL_METRICS: tuple[str, ...] = ("acc_presence", "acc_salience", "score", "alpha", "beta")
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

_DATA_MEMO: dict[tuple, Any] = {}


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a search needs besides its sampled parameters (pickled into the trainable).

    Attributes:
        base: the space's base config as a nested dict (``Config.to_dict()``).
        space_path: the search-space file (for error messages).
        data_dir: the release directory (already resolved: the demo release when the space names none).
        cpus_per_fold, gpus_per_fold: resources of each fold worker (fractions allowed).
        storage: directory (or URI) where the Train runs of the trials write their checkpoints.
        debug: debugging knobs of the space (``debug.fail_trial``).
        max_epochs: epochs per fold.
        n_folds: fold workers per trial (the release's number of folds).
    """

    base: dict
    space_path: str
    data_dir: str
    cpus_per_fold: float
    gpus_per_fold: float
    storage: str
    debug: dict
    max_epochs: int
    n_folds: int = 5


def torch_threads(cpus_per_fold: float) -> int:
    """Threads per fold worker: the worker's CPU share rounded down, at least 1 (avoids oversubscription)."""
    return max(1, int(cpus_per_fold))


def load_data(cfg: Any, root: str) -> Any:
    """``blemore_core.train.prepare_data`` memoised per process (the Arrow cache is memory-mapped, so this is
    cheap once the driver has built the cache)."""
    from blemore_core.train import prepare_data

    key = (str(root), tuple(cfg.data.encoders), cfg.data.features, cfg.loss.domain > 0 and cfg.data.domain_target)
    if key not in _DATA_MEMO:
        _DATA_MEMO[key] = prepare_data(cfg, root, progress=False)
    return _DATA_MEMO[key]


# ------------------------------------------------------------------------------------------------ clean-up
# When Tune stops a trial (ASHA, time budget, Ctrl-C) it kills the trial actor; Ray then kills the Train controller
# and the fold workers it owns, but the workers' placement group lives on (it belongs to the job, and Ray Train's
# own PlacementGroupCleaner needs the State API, i.e. a dashboard, which a local search does not start). So rank 0
# records its placement group in Ray's GCS key-value store and the driver removes it when the trial ends
# (search.runner.PlacementGroupJanitor). A trial that ends normally has released it already: then this is a no-op.

PG_KEY_PREFIX = "blemore_pg:"


def register_placement_group(trial_id: str) -> None:
    """Record the current worker's placement group under the trial id (GCS internal KV)."""
    import ray
    from ray.experimental import internal_kv

    pg = ray.util.get_current_placement_group()
    if pg is not None:
        internal_kv._internal_kv_put(PG_KEY_PREFIX + trial_id, pg.id.hex(), overwrite=True)


def release_placement_group(trial_id: str) -> bool:
    """Remove the recorded placement group of ``trial_id`` if it still holds resources; True when removed."""
    import ray
    from ray._raylet import PlacementGroupID
    from ray.experimental import internal_kv
    from ray.util.placement_group import PlacementGroup

    key = PG_KEY_PREFIX + trial_id
    raw = internal_kv._internal_kv_get(key)
    if not raw:
        return False
    internal_kv._internal_kv_del(key)
    pg_hex = raw.decode() if isinstance(raw, bytes) else str(raw)
    state = ray.util.placement_group_table().get(pg_hex, {}).get("state")
    if state in (None, "REMOVED"):
        return False
    ray.util.remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_hex))))
    return True


# ------------------------------------------------------------------------------------------------ worker side


class _Stepper:
    """Lock-step exchange of per-fold epoch metrics over gloo; rank 0 turns them into one Tune report."""

    def __init__(self, rank: int, world: int, folds: list[int]):
        self.rank, self.world, self.folds = rank, world, folds
        self.step = 0

    def exchange(self, row: list[float]) -> Any:
        import torch
        import torch.distributed as dist

        mine = torch.tensor(row, dtype=torch.float64)
        rows = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(rows, mine)
        return torch.stack(rows).numpy()  # (world, len(STEP_FIELDS))

    def report(self, table: Any) -> None:
        import ray.train

        self.step += 1
        metrics: dict[str, Any] = {}
        if self.rank == 0:
            col = {f: table[:, i] for i, f in enumerate(STEP_FIELDS)}
            metrics = {
                "epoch": self.step,
                "final": False,
                "score": float(col["best_score"].mean()),
                "score_epoch": float(col["score"].mean()),
                "acc_presence": float(col["acc_presence"].mean()),
                "acc_salience": float(col["acc_salience"].mean()),
                "active_folds": int(col["active"].sum()),
            }
            for r, k in enumerate(self.folds):
                for f in STEP_FIELDS:
                    metrics[f"fold{k}/{f}"] = float(col[f][r])
        ray.train.report(metrics)


def fold_worker(loop_config: dict) -> None:
    """Ray Train worker body: train fold ``folds[world_rank]`` and take part in the per-epoch exchange.

    Args:
        loop_config: ``{"setup": TrialSetup, "config": resolved Config dict, "trial_id": str}``.

    Raises:
        whatever ``fit_fold`` raises (e.g. ``NonFiniteLossError``); ``FloatingPointError`` for the
        ``debug.fail_trial`` knob.
    """
    t_enter = time.time()
    import numpy as np
    import ray.train
    import torch
    import torch.distributed as dist

    setup: TrialSetup = loop_config["setup"]
    torch.set_num_threads(torch_threads(setup.cpus_per_fold))
    from blemore_core.config import Config
    from blemore_core.train import fit_fold

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if rank == 0:
        register_placement_group(loop_config["trial_id"])
    cfg = Config.from_dict(loop_config["config"], source=f"{setup.space_path} (trial {loop_config['trial_id']})")
    t_imports = time.time()
    data = load_data(cfg, setup.data_dir)
    t_data = time.time()
    folds = sorted(set(np.asarray(data.folds).tolist()))
    if len(folds) != world:
        raise ValueError(f"{setup.data_dir}: release has folds {folds}, but the trial runs {world} fold workers")
    fold = folds[rank]
    stepper = _Stepper(rank, world, folds)
    fail = setup.debug.get("debug.fail_trial")
    should_fail = fail is not None and loop_config.get("trial_index") == fail and rank == 0

    first_epoch: list[float] = []

    def on_epoch(rec: Any) -> bool:
        if not first_epoch:
            first_epoch.append(time.time())
        if should_fail:
            raise FloatingPointError(
                f"debug.fail_trial={fail}: forced non-finite loss in fold {fold}, epoch {rec.epoch} (debugging knob)"
            )
        row = [1.0, rec.epoch, rec.val_score, rec.best_score, rec.acc_presence, rec.acc_salience, rec.alpha,
               rec.beta, rec.train_loss, rec.lr]
        stepper.report(stepper.exchange(row))
        return False

    res = fit_fold(cfg, data, fold, on_epoch=on_epoch)
    t_fit = time.time()
    v = res.thresholds["val"]
    done = [0.0, res.epochs_run, v["score"], v["score"], v["acc_presence"], v["acc_salience"], v["alpha"], v["beta"],
            res.history[-1]["train_loss"] if res.history else float("nan"), 0.0]
    while True:  # keep the collectives aligned until every fold is done
        table = stepper.exchange(done)
        if table[:, 0].sum() == 0:
            break
        stepper.report(table)

    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(res, gathered, dst=0)
    if rank != 0:
        ray.train.report({})
        return
    final, ckpt_dir = _finalize(gathered, cfg, data, setup, loop_config["trial_id"])
    final["epoch"] = stepper.step
    t0 = loop_config["t_trial_start"]
    final.update({  # start-up breakdown of rank 0, seconds since the trial function started
        "timing/worker_enter_s": t_enter - t0, "timing/imports_s": t_imports - t_enter, "timing/data_s": t_data - t_imports,
        "timing/first_epoch_s": (first_epoch[0] if first_epoch else t_fit) - t_data, "timing/fit_s": t_fit - t_data,
        "timing/finalize_s": time.time() - t_fit, "timing/total_s": time.time() - t0,
    })
    ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir))


def _finalize(results: list[Any], cfg: Any, data: Any, setup: TrialSetup, trial_id: str) -> tuple[dict, str]:
    """Rank 0: all threshold protocols, final metrics and the artifact directory of the trial."""
    from blemore_core.train import finalize_protocols

    results = sorted(results, key=lambda r: r.fold)
    metrics = finalize_protocols(results, data, cfg)
    headline = metrics["headline"]
    final: dict[str, Any] = {"final": True, "headline": headline}
    for proto in ("val", "train", "crossfit"):
        if proto not in metrics:
            continue
        for m in FINAL_METRICS:
            final[f"{proto}/{m}_mean"] = metrics[proto]["mean"][m]
            final[f"{proto}/{m}_std"] = metrics[proto]["std"][m]
        for r, row in zip(results, metrics[proto]["per_fold"], strict=True):
            for m in FINAL_METRICS:
                final[f"fold{r.fold}/{proto}/{m}"] = float(row[m])
    for m in ("acc_presence", "acc_salience", "score"):
        final[m] = metrics[headline]["mean"][m]
    for r in results:
        final[f"fold{r.fold}/best_epoch"] = r.best_epoch
        final[f"fold{r.fold}/epochs_run"] = r.epochs_run
        final[f"fold{r.fold}/stopped"] = bool(r.stopped)

    from blemore_core.artifacts import write_cv_dir

    out = Path(tempfile.mkdtemp(prefix=f"blemore-{trial_id}-")) / "model"
    write_cv_dir(out, cfg, results, metrics, data, info={"trial_id": trial_id})
    return final, str(out)


# ------------------------------------------------------------------------------------------------ trial side


def run_trial(config: dict, setup: TrialSetup) -> None:
    """Tune function trainable: resolve the trial's Config and run its folds as one TorchTrainer.

    Args:
        config: the sampled parameters ``{dotted key: value}`` (from OptunaSearch).
        setup: see :class:`TrialSetup` (bound with ``tune.with_parameters``).

    Raises:
        ray.train.TrainingFailedError: when a fold worker fails (Tune then retries per its FailureConfig).
    """
    import ray.train
    import ray.tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from blemore_core.config import Config

    t_start = time.time()
    trial_id = ray.tune.get_context().get_trial_id()
    params = {k: v for k, v in config.items() if not k.startswith("debug.")}
    cfg = Config.from_dict(setup.base, source=setup.space_path).override(
        params, source=f"{setup.space_path} (trial {trial_id})"
    )
    n_folds = setup.n_folds
    resources = {"CPU": setup.cpus_per_fold}
    if setup.gpus_per_fold > 0:
        resources["GPU"] = setup.gpus_per_fold
    trainer = TorchTrainer(
        fold_worker,
        train_loop_config={"setup": setup, "config": cfg.to_dict(), "trial_id": trial_id, "t_trial_start": t_start,
                           "trial_index": config.get("debug.trial_index")},
        torch_config=TorchConfig(backend="gloo"),  # small CPU collectives only; folds never sync gradients
        scaling_config=ray.train.ScalingConfig(
            num_workers=n_folds, use_gpu=setup.gpus_per_fold > 0, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"{trial_id}-{uuid.uuid4().hex[:8]}",
            storage_path=setup.storage,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=0),  # retries are Tune's (search --max-failures)
        ),
    )
    trainer.fit()


def read_checkpoint_dir(path: str, dest: str | None = None) -> Path:
    """A local directory with the artifacts of a trial's final checkpoint (``path`` may be a URI)."""
    if "://" not in path and Path(path).is_dir():
        return Path(path)
    import ray.train

    return Path(ray.train.Checkpoint(path).to_directory(dest or tempfile.mkdtemp(prefix="blemore-ckpt-")))


def set_process_env() -> None:
    """Apply :data:`RAY_TRAIN_ENV` to this process (before ``ray.init`` so that local Ray workers inherit it)."""
    for k, v in RAY_TRAIN_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic reporter: our metric columns
