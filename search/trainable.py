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
artifacts (resolved config, OOF Parquet, thresholds, metrics, fold weights, confusion counts, importances) into
a Ray Train checkpoint and reports the final metrics; the driver's MLflow callback (:mod:`search.tracking`)
reads them from there. Workers never talk to MLflow.

Reported metric keys (flat dict): ``epoch``, ``final`` (bool), ``score`` / ``acc_presence`` / ``acc_salience``
(per epoch: fold mean of each fold's best-so-far validation numbers, ``val`` protocol; final: fold mean of the
headline protocol), ``score_epoch`` (fold mean of the current epoch), ``fold{k}/<m>`` per fold, and in the final
report ``<protocol>/<m>_mean`` and ``_std``, ``fold{k}/<protocol>/<m>`` for m in acc_presence, acc_salience,
score, alpha, beta.
"""

from __future__ import annotations

import os
import shutil
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
# When Tune stops a trial (ASHA, time budget, Ctrl-C) it kills the trial actor and with it the Train controller it
# owns; the fold workers' placement group is then removed by Ray Train's own PlacementGroupCleaner (a detached
# actor that watches the controller through Ray's State API, which the dashboard serves: the runner starts a
# local Ray with the dashboard on 127.0.0.1, and the cluster scripts start every head with it).
# A trial's artifacts are written to a temporary directory on rank 0's node, persisted to the search's storage by
# ``ray.train.report(checkpoint=...)`` (Ray Train uploads it before returning), and the directory is then removed.


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
    cfg = Config.from_dict(loop_config["config"], source=f"{setup.space_path} (trial {loop_config['trial_id']})")
    cfg = _place(cfg, setup.gpus_per_fold)
    t_imports = time.time()
    data = load_data(cfg, setup.data_dir)
    t_data = time.time()
    folds = sorted(set(np.asarray(data.folds).tolist()))
    if len(folds) != world:
        raise ValueError(f"{setup.data_dir}: release has folds {folds}, but the trial runs {world} fold workers")
    fold = folds[rank]
    placed: list[Any] = [None] * world  # every fold's node id and device, recorded as run tags
    dist.all_gather_object(placed, dict(_NODE))
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
    for k, p in zip(folds, placed, strict=True):
        final[f"fold{k}/node_id"] = p["node_id"]
        final[f"fold{k}/device"] = p["device"]
    t0 = loop_config["t_trial_start"]
    final.update({  # start-up breakdown of rank 0, seconds since the trial function started
        "timing/worker_enter_s": t_enter - t0, "timing/imports_s": t_imports - t_enter, "timing/data_s": t_data - t_imports,
        "timing/first_epoch_s": (first_epoch[0] if first_epoch else t_fit) - t_data, "timing/fit_s": t_fit - t_data,
        "timing/finalize_s": time.time() - t_fit, "timing/total_s": time.time() - t0,
    })
    try:  # Ray Train persists the checkpoint to the search's storage before report() returns
        ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir))
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)


def _place(cfg: Any, gpus_per_fold: float) -> Any:
    """The fold worker's config with its device taken from Ray Train (:func:`search.resources.fold_device`): CPU
    when the worker reserved no GPU, else the GPU Ray assigned (made the current CUDA device)."""
    from search.resources import fold_device

    def ray_device() -> Any:
        import ray.train.torch

        return ray.train.torch.get_device()

    dev = fold_device(gpus_per_fold, ray_device)
    node = {"node_id": "", "device": dev}
    try:
        import ray

        node["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover - outside Ray
        pass
    _NODE.update(node)
    if dev.startswith("cuda"):
        import torch

        torch.cuda.set_device(dev)
        return cfg.override({"train.device": "cuda"})
    return cfg.override({"train.device": "cpu"})


#: node id and device of this fold worker process (set by :func:`_place`, reported per fold)
_NODE: dict[str, str] = {}


def _finalize(results: list[Any], cfg: Any, data: Any, setup: TrialSetup, trial_id: str) -> tuple[dict, str]:
    """Rank 0: all threshold protocols, final metrics and the artifact directory of the trial."""
    import numpy as np
    import torch

    from blemore_core.decoding import decode
    from blemore_core.labels import label_set_indices
    from blemore_core.results import oof_frame, write_json, write_parquet
    from blemore_core.train import assemble_oof, finalize_protocols

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

    out = Path(tempfile.mkdtemp(prefix=f"blemore-{trial_id}-"))
    cfg.to_yaml(out / "config.yaml")
    n = len(data.filenames)
    oof = assemble_oof(results, n)
    write_parquet(oof_frame(data.filenames, np.asarray(data.folds), oof), out / "oof.parquet")
    write_json({p: {"per_fold": [{"fold": r.fold, "alpha": row["alpha"], "beta": row["beta"]}
                                 for r, row in zip(results, metrics[p]["per_fold"], strict=True)]}
                for p in ("val", "train", "crossfit") if p in metrics}, out / "thresholds.json")
    write_json(metrics, out / "metrics.json")
    # confusion over the 16 label sets, headline protocol (each fold decoded with its own alpha, beta)
    truth = np.asarray(data.labels, dtype=np.float32)
    conf = np.zeros((16, 16), dtype=np.int64)
    for r, row in zip(results, metrics[headline]["per_fold"], strict=True):
        pred = decode(r.oof_probs, row["alpha"], row["beta"])
        np.add.at(conf, (label_set_indices(truth[r.val_idx]), label_set_indices(pred)), 1)
    write_json({"protocol": headline, "rows_truth_cols_pred": conf.tolist()}, out / "confusion.json")
    for r in results:
        torch.save(r.state_dict, out / f"fold{r.fold}.pt")
        write_json(r.history, out / f"history_fold{r.fold}.json")
    imps = {r.fold: r.importances for r in results if r.importances}
    if imps:
        write_json({str(k): v for k, v in imps.items()}, out / "importances.json")
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


def set_process_env() -> None:
    """Apply :data:`RAY_TRAIN_ENV` to this process (before ``ray.init`` so that local Ray workers inherit it)."""
    for k, v in RAY_TRAIN_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic reporter: our metric columns
