"""One search trial: a Ray Tune function trainable that runs one Ray Train ``DataParallelTrainer``.

docs/ARCHITECTURE.md section 6. Two fold layouts, chosen per search (``--fold-layout``, or ``fold_layout:`` in the space)::

    packed (default)                                   workers
    Tune trial actor: run_trial(config)                Tune trial actor: run_trial(config)
      -> DataParallelTrainer(num_workers=1,              -> FoldExchange actor (search.exchange, 0 CPU)
           {CPU: cpus_per_trial, GPU: gpus_per_trial})   -> DataParallelTrainer(num_workers=n_folds,
           worker: trial_worker(): every fold,                {CPU: cpus_per_fold, GPU: gpus_per_fold})
           LocalExchange, fused where possible               worker k: trial_worker(): fold k, RayExchange

Both workers run :func:`blemore_core.train.run_lockstep`, the loop of ``cross_validate`` (train an epoch,
evaluate, exchange the folds' probabilities, add to one :class:`blemore_core.selection.EpochCurves`, keep, report,
stop), so a trial gives ``blemore train``'s per-fold numbers for the same config, seed, device, thread count and
fold execution. ``packed`` starts one process and one CUDA context per trial instead of one per fold, and steps
folds with identical parameter shapes as one batched model (:mod:`blemore_core.fused`; the trial's records say
``fold_execution: fused|sequential``); ``workers`` is for models too big to share a device. The folds never
synchronise gradients, so no ``torch.distributed`` group (whose TCPStore would listen on every interface) is made;
the device comes from Ray Train (``ray.train.torch.get_device()``).

Each epoch the lead worker (the one holding the first fold) reports to Tune the objective ``score`` = the
fold-mean headline-protocol Score given the epochs so far, with ``acc_presence`` / ``acc_salience`` of that same
selection (a Pareto search's objectives), and writes that epoch's OOF probabilities as one shard
(:mod:`search.oof_shards`): storage traffic grows linearly with the epochs, and a trial stopped by ASHA leaves
every epoch it ran. ASHA, OptunaSearch, MLflow's ``score`` and the summary all see this one number. At the end the
fold results are gathered to the lead, which writes the artifacts into the final checkpoint (the model directory
of :func:`blemore_core.artifacts.write_cv_dir` plus ``oof_epochs.npz`` with every epoch, see :func:`_finalize`);
the driver's MLflow callback (:mod:`search.records`) reads them from the search's storage. Workers never talk to
MLflow.

Reported metrics (one dict per epoch, :func:`epoch_report`): ``epoch``, ``final`` (bool), ``headline``,
``score``, ``acc_presence``, ``acc_salience``, ``folds`` (a list of :class:`FoldRecord` as dicts, read back with
:meth:`FoldRecord.from_dict`), ``fold_execution``, ``oof_shards`` (the shard directory); the final report adds
``<protocol>/<m>_mean`` and ``_std``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blemore_core.names import FOLD_METRICS, PROTOCOLS
from search.compat import RAY_TRAIN_ENV  # the Ray Train switches live in compat (issue 19)

FINAL_METRICS: tuple[str, ...] = FOLD_METRICS
#: the per-epoch OOF probabilities of a trial (arrays ``probs`` float32 (N, 6, E), ``folds`` int64 (N,),
#: ``filenames`` str (N,)), in every checkpoint of the trial; read with ``np.load(path, allow_pickle=False)``
OOF_EPOCHS = "oof_epochs.npz"


@dataclass(frozen=True)
class FoldRecord:
    """One fold's numbers in a trial report, worker -> driver (a typed record, not keys parsed back).

    Attributes:
        fold: fold index.
        epoch: epochs trained so far.
        train_loss: mean training loss of the last epoch.
        lr: learning rate of the last epoch.
        own: the last epoch's own-fold threshold fit ``{score, acc_presence, acc_salience, alpha, beta}`` (the
            learning curve).
        protocols: ``{protocol: {epoch, alpha, beta, acc_presence, acc_salience, score}}``: each protocol's choice
            given the epochs so far (``val``, ``crossfit``; the final report adds ``train``).
        stopped: final report only: training ended by the trial-level stop before ``max_epochs``.
    """

    fold: int
    epoch: int
    train_loss: float
    lr: float
    own: dict[str, float] = field(default_factory=dict)
    protocols: dict[str, dict[str, float]] = field(default_factory=dict)
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what travels in the Tune result)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FoldRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def fold_records(result: dict[str, Any]) -> list[FoldRecord]:
    """The :class:`FoldRecord` list of a Tune result (empty when it has none)."""
    return [FoldRecord.from_dict(d) for d in result.get("folds") or []]


_DATA_MEMO: dict[tuple, Any] = {}


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a search needs besides its sampled parameters (pickled into the trainable).

    Attributes:
        base: the space's base config as a nested dict (``Config.to_dict()``).
        space_path: the search-space file (for error messages).
        data_dir: the release directory (already resolved: the demo release when the space names none).
        cpus_per_worker, gpus_per_worker: resources of each Ray Train worker (fractions allowed): per fold in the
            ``workers`` layout, per trial in ``packed``.
        storage: directory (or URI) where the Train runs of the trials write their checkpoints and OOF shards.
        debug: debugging knobs of the space (``debug.fail_trial``).
        max_epochs: epochs per fold.
        n_folds: folds per trial (the release's number of folds).
        fold_layout: ``"packed"`` (one worker trains every fold) or ``"workers"`` (one worker per fold).
    """

    base: dict
    space_path: str
    data_dir: str
    cpus_per_worker: float
    gpus_per_worker: float
    storage: str
    debug: dict
    max_epochs: int
    n_folds: int = 5
    fold_layout: str = "packed"

    @property
    def n_workers(self) -> int:
        """Ray Train workers of one trial."""
        return 1 if self.fold_layout == "packed" else self.n_folds


def torch_threads(cpus_per_worker: float) -> int:
    """Torch threads of a Ray Train worker: its CPU share rounded down, at least 1 (avoids oversubscription); a
    share within 0.05 of the next whole CPU counts as it (a plan's 1.99 CPU, 0.01 being the trial actor's, is 2)."""
    return max(1, int(cpus_per_worker + 0.05))


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
# A trial's artifacts are written to temporary directories on rank 0's node, persisted to the search's storage by
# ``ray.train.report(checkpoint=...)`` (Ray Train uploads them before returning), and the directories are then
# removed.


# ------------------------------------------------------------------------------------------------ worker side


def epoch_report(curves: Any, epoch_rows: dict[int, tuple[float, float]]) -> dict[str, Any]:
    """The Tune report of one epoch: the objective (fold-mean headline Score so far) and one record per fold.

    Args:
        curves: the trial's :class:`blemore_core.selection.EpochCurves` after adding this epoch.
        epoch_rows: ``{fold: (train_loss, lr)}`` of this epoch.
    """
    obj = curves.objective()
    recs = []
    for k in curves.run_folds:
        f = curves.own_fit(k, curves.epochs)
        protos = {p: c.as_dict() for p in curves.per_epoch_protocols() if (c := curves.choice(p, k)) is not None}
        recs.append(FoldRecord(fold=k, epoch=curves.epochs, train_loss=float(epoch_rows[k][0]),
                               lr=float(epoch_rows[k][1]),
                               own={m: float(getattr(f, m)) for m in FINAL_METRICS}, protocols=protos).to_dict())
    return {"epoch": curves.epochs, "final": False, "headline": curves.headline, "score": obj.score,
            "acc_presence": obj.acc_presence, "acc_salience": obj.acc_salience, "folds": recs}


def write_oof_epochs(curves: Any, data: Any, path: Path) -> Path:
    """Write :data:`OOF_EPOCHS` (see there) for the epochs of ``curves``; atomic (temporary file + rename)."""
    import numpy as np

    from search.oof_shards import write_oof_epochs_file

    return write_oof_epochs_file({"probs": curves.stack(), "folds": np.asarray(data.folds, dtype=np.int64),
                                  "filenames": np.asarray(data.filenames, dtype=str)}, path)


def trial_worker(loop_config: dict) -> None:
    """Ray Train worker body, both fold layouts: train this worker's folds in lock step with the trial's others.

    ``packed``: one worker, every fold, :class:`blemore_core.train.LocalExchange` (fused where the folds' models
    allow, :func:`blemore_core.train.fold_group`). ``workers``: worker k trains fold k and the folds exchange
    through the trial's :class:`search.exchange.FoldExchange` actor. Both run
    :func:`blemore_core.train.run_lockstep`, the loop of ``cross_validate``. The worker holding the first fold
    (rank 0) reports every epoch to Tune and persists that epoch's OOF probabilities and report (one shard,
    :mod:`search.oof_shards`), and at the end writes the trial's artifacts as the final checkpoint.

    Args:
        loop_config: ``{"setup": TrialSetup, "config": resolved Config dict, "trial_id": str, "trial_index": int,
            "exchange": FoldExchange actor handle or None (packed)}``.

    Raises:
        whatever the fold steps raise (e.g. ``NonFiniteLossError``); ``FloatingPointError`` for the
        ``debug.fail_trial`` knob; ValueError when the release's folds do not match the workers.
    """
    setup: TrialSetup = loop_config["setup"]
    saved_tmp, work_tmp = tempfile.tempdir, tempfile.mkdtemp(prefix="blemore-worker-")
    tempfile.tempdir = work_tmp  # whatever the trial's libraries put in the temporary folder goes with it
    try:
        _train_folds(loop_config, setup)
    finally:
        tempfile.tempdir = saved_tmp
        shutil.rmtree(work_tmp, ignore_errors=True)


def _train_folds(loop_config: dict, setup: TrialSetup) -> None:
    """The body of :func:`trial_worker` (run inside the worker's own temporary folder)."""
    import numpy as np
    import ray.train
    import torch

    from blemore_core.config import Config
    from blemore_core.train import LocalExchange, fold_group, new_curves, run_lockstep
    from search.exchange import RayExchange
    from search.oof_shards import ShardWriter
    from search.placement import PG_RESULT_KEY, current_placement_group_hex

    torch.set_num_threads(torch_threads(setup.cpus_per_worker))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    trial_id = loop_config["trial_id"]
    cfg = Config.from_dict(loop_config["config"], source=f"{setup.space_path} (trial {trial_id})")
    cfg = _place(cfg, setup.gpus_per_worker)
    data = load_data(cfg, setup.data_dir)
    folds = sorted(set(np.asarray(data.folds).tolist()))
    if world not in (1, len(folds)):
        raise ValueError(f"{setup.data_dir}: release has folds {folds}, but the trial runs {world} workers")
    mine = folds[rank::world]
    exchange = LocalExchange() if world == 1 else RayExchange(loop_config["exchange"], rank)
    placed = exchange.all_gather("placed", {k: dict(_NODE) for k in mine})  # every fold's node and device (tags)
    group = fold_group(cfg, data, mine)
    fail = setup.debug.get("debug.fail_trial")
    should_fail = fail is not None and loop_config.get("trial_index") == fail and rank == 0
    lead = rank == 0
    shards = ShardWriter(setup.storage, trial_id, data) if lead else None
    pg = ({PG_RESULT_KEY: current_placement_group_hex(), "fold_layout": setup.fold_layout,
           "fold_execution": group.execution} if lead else {})

    def on_epoch(curves: Any, rows: dict[int, tuple[float, float]]) -> None:
        if should_fail:
            raise FloatingPointError(f"debug.fail_trial={fail}: forced non-finite loss in fold {mine[0]}, epoch "
                                     f"{curves.epochs} (debugging knob)")
        if not lead:
            ray.train.report({})
            return
        report = epoch_report(curves, rows)
        shards.write(curves.epochs, curves.probs_at(curves.epochs), report)
        ray.train.report({**report, **pg, "oof_shards": shards.uri})

    curves = new_curves(cfg, data, folds)
    stopped = run_lockstep(group, curves, exchange, cfg.train.max_epochs, on_epoch)
    results = exchange.gather("final", {r.fold: r for r in group.finalize(curves, stopped)})
    if not lead:
        ray.train.report({})
        return
    final, out = _finalize([results[k] for k in folds], curves, cfg, data, trial_id)
    final.update(pg)
    final["oof_shards"] = shards.uri
    for k in folds:
        final[f"fold{k}/node_id"] = placed[k]["node_id"]
        final[f"fold{k}/device"] = placed[k]["device"]
    try:  # Ray Train persists the checkpoint to the search's storage before report() returns
        ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(out))
    finally:
        shutil.rmtree(Path(out).parent, ignore_errors=True)
    shards.delete()  # the final checkpoint holds every epoch (oof_epochs.npz)


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


def final_report(results: list[Any], curves: Any) -> dict[str, Any]:
    """The final Tune report: the objective (same quantity as every epoch's), all protocols' fold means and
    std, and one :class:`FoldRecord` per fold with every protocol's choice (``train`` included)."""
    from blemore_core.train import summarize_protocols

    metrics = summarize_protocols(results, curves)
    headline = metrics["headline"]
    obj = curves.objective()
    final: dict[str, Any] = {"epoch": curves.epochs, "final": True, "headline": headline, "score": obj.score,
                             "acc_presence": obj.acc_presence, "acc_salience": obj.acc_salience}
    for proto in PROTOCOLS:
        if proto in metrics:
            for m in FINAL_METRICS:
                final[f"{proto}/{m}_mean"] = metrics[proto]["mean"][m]
                final[f"{proto}/{m}_std"] = metrics[proto]["std"][m]
    recs = []
    for r in sorted(results, key=lambda r: r.fold):
        h = r.history[-1]
        recs.append(FoldRecord(
            fold=r.fold, epoch=r.epochs_run, train_loss=float(h["train_loss"]), lr=float(h["lr"]),
            own={m: float(h["val_score"] if m == "score" else h[m]) for m in FINAL_METRICS},
            protocols={p: dict(v) for p, v in r.thresholds.items()}, stopped=bool(r.stopped)).to_dict())
    final["folds"] = recs
    return final


def _finalize(results: list[Any], curves: Any, cfg: Any, data: Any, trial_id: str) -> tuple[dict, str]:
    """Rank 0: the final report and the artifact directory of the trial: the model directory of
    :func:`blemore_core.artifacts.write_cv_dir` (also ``model.json`` and ``pooled`` thresholds) plus
    :data:`OOF_EPOCHS`.

    Artifacts: ``config.yaml``; ``oof.parquet`` (filename, fold, p_ang..p_neu at each fold's headline-selected
    epoch); :data:`OOF_EPOCHS` (every epoch); ``thresholds.json`` (``{protocol: {"per_fold": [{fold, epoch,
    alpha, beta}]}}``); ``metrics.json`` (:func:`blemore_core.results.metrics_document`: per protocol per fold
    and mean/std, selected epochs per fold and protocol); ``confusion.json`` (headline); ``fold{k}.pt`` (headline
    weights with their config, :func:`blemore_core.artifacts.save_weights`), ``history_fold{k}.json``;
    ``importances.json`` and per-clip ``imp_<encoder>`` OOF columns (rank-aware).
    """
    from blemore_core.train import summarize_protocols

    results = sorted(results, key=lambda r: r.fold)
    metrics = summarize_protocols(results, curves)
    final = final_report(results, curves)

    from blemore_core.artifacts import write_cv_dir

    out = Path(tempfile.mkdtemp(prefix=f"blemore-{trial_id}-")) / "model"
    write_cv_dir(out, cfg, results, metrics, data, info={"trial_id": trial_id},
                 writers={OOF_EPOCHS: lambda path: write_oof_epochs(curves, data, path)})
    return final, str(out)


# ------------------------------------------------------------------------------------------------ trial side


def run_trial(config: dict, setup: TrialSetup) -> None:
    """Tune function trainable: resolve the trial's Config and run its folds as one Ray Train run.

    Args:
        config: the sampled parameters ``{dotted key: value}`` (from OptunaSearch).
        setup: see :class:`TrialSetup` (bound with ``tune.with_parameters``).

    Raises:
        ray.train.TrainingFailedError: when a fold worker fails (Tune then retries per its FailureConfig).
    """
    import ray.train
    import ray.tune
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from search.exchange import close_exchange, make_exchange
    from search.space import trial_config

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(setup.base, config, source=f"{setup.space_path} (trial {trial_id})")
    resources = {"CPU": setup.cpus_per_worker}
    if setup.gpus_per_worker > 0:
        resources["GPU"] = setup.gpus_per_worker
    exchange = make_exchange(setup.n_workers) if setup.n_workers > 1 else None
    trainer = DataParallelTrainer(
        trial_worker,
        train_loop_config={"setup": setup, "config": cfg.to_dict(), "trial_id": trial_id,
                           "trial_index": config.get("debug.trial_index"), "exchange": exchange},
        scaling_config=ray.train.ScalingConfig(
            num_workers=setup.n_workers, use_gpu=setup.gpus_per_worker > 0, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"{trial_id}-{uuid.uuid4().hex[:8]}",
            storage_path=setup.storage,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=0),  # retries are Tune's (search --max-failures)
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),  # the final artifacts only
        ),
    )
    try:
        trainer.fit()
    finally:
        if exchange is not None:
            close_exchange(exchange)


def set_process_env() -> None:
    """Apply :data:`RAY_TRAIN_ENV` to this process (before ``ray.init`` so that local Ray workers inherit it)."""
    for k, v in RAY_TRAIN_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic reporter: our metric columns
