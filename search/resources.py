"""Resources of a search on Ray: the fold workers' device, the plan (how many trials run at once) and the per-node
checks before the first trial (docs/ARCHITECTURE.md sections 6 and 8).

* Device: a fold worker takes its device from Ray Train (``ray.train.torch.get_device()``, the GPU Ray assigned
  to it) when it reserved GPU (``--gpus-per-fold > 0``), and the CPU otherwise, even on a node with GPUs (Ray does
  not hide GPUs from zero-GPU workers, so a bare ``torch.cuda.is_available()`` probe would put every fold of every
  trial on ``cuda:0`` without Ray accounting for it).
* Plan: a trial = its Ray Train workers plus a trial actor of :data:`TRIAL_ACTOR_CPUS`. Fold layout ``packed``
  (the default): one worker trains all folds of the trial with ``--cpus-per-trial`` CPU + ``--gpus-per-trial``
  GPU, so ``--gpus-per-trial 0.1`` lets ten trials share a GPU. Layout ``workers``: ``n_folds`` workers of
  ``--cpus-per-fold`` CPU + ``--gpus-per-fold`` GPU. A fractional GPU share is packed per GPU: ``floor(1 /
  share)`` workers fit on one GPU (Ray never splits one worker's share across GPUs), so five folds x 0.2 GPU = one
  trial per GPU.
* Nodes: one task per alive node checks that the release is readable at ``--data`` there and, for a filesystem
  ``--storage``, that the node sees the driver's marker file in it (a path that is not shared is refused).
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: logical CPUs reserved for the (idle) Tune trial actor that drives one Ray Train run
TRIAL_ACTOR_CPUS = 0.01
#: a local search without --cpus-per-fold gives each fold worker at least this share: spaces/full.yaml asks for 16
#: trials at once (written for a cluster), which on 2 CPUs would otherwise start 80 fold processes of 0.02 CPU each
MIN_LOCAL_FOLD_CPUS = 0.19
_EPS = 1e-9


class ResourceError(ValueError):
    """A resource request that cannot work (bad combination of options, or more than the cluster has)."""


def check_device_options(train_device: str, gpus: float, flag: str = "--gpus-per-fold") -> None:
    """Reject device/GPU combinations that contradict each other, before Ray starts.

    Args:
        train_device: the config's ``train.device`` (``auto``, ``cpu``, ``cuda``).
        gpus: the GPU share of one worker (0 = CPU).
        flag: the option that gave it (``--gpus-per-fold`` or ``--gpus-per-trial``), named in errors.

    Raises:
        ResourceError: ``train.device: cpu`` with GPUs reserved; ``train.device: cuda`` without; a share above 1
            that is not a whole number of GPUs.
    """
    if gpus < 0:
        raise ResourceError(f"{flag}: must be >= 0, got {gpus}")
    if gpus > 1 and gpus != int(gpus):
        raise ResourceError(f"{flag}: above 1 it must be a whole number of GPUs, got {gpus}")
    if train_device == "cpu" and gpus > 0:
        raise ResourceError(f"train.device: 'cpu' contradicts {flag} {gpus:g} (GPUs would be "
                            f"reserved and left idle); use {flag} 0 or train.device: auto")
    if train_device == "cuda" and gpus <= 0:
        example = ("--gpus-per-trial 0.1 lets ten trials share one GPU" if flag == "--gpus-per-trial" else
                   "--gpus-per-fold 0.2 lets the five folds of a trial share one GPU")
        raise ResourceError(f"train.device: 'cuda' needs {flag} > 0 (Ray must reserve the GPU the folds use); "
                            f"e.g. {example}")


def fold_device(gpus_per_fold: float, ray_device: Any, cuda_available: Any = None) -> str:
    """The torch device of a fold worker.

    Args:
        gpus_per_fold: the GPU share the worker reserved.
        ray_device: ``ray.train.torch.get_device()`` of the worker (a ``torch.device``), or a callable returning
            it (only called when GPUs were reserved).
        cuda_available: callable telling whether this process's torch can use CUDA (default
            ``torch.cuda.is_available``; Ray reports ``cuda:N`` for an assigned GPU even when torch cannot use it).

    Returns:
        ``"cpu"`` when no GPU was reserved (whatever the node has), else the device Ray Train assigned
        (e.g. ``"cuda:0"``).

    Raises:
        RuntimeError: a GPU share was reserved but the worker's torch sees no CUDA device (a CPU build of torch,
            or logical GPUs that do not exist); names the share and the device Ray returned.
    """
    if gpus_per_fold <= 0:
        return "cpu"
    dev = ray_device() if callable(ray_device) else ray_device
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available
    if getattr(dev, "type", str(dev).split(":")[0]) != "cuda" or not cuda_available():
        raise RuntimeError(f"--gpus-per-fold {gpus_per_fold:g}: Ray reserved a GPU share for this fold worker on "
                           f"{socket.gethostname()}, but its torch has no CUDA device (ray.train.torch.get_device() "
                           f"= {dev}); install a CUDA build of torch on the GPU nodes or use --gpus-per-fold 0")
    return str(dev)


@dataclass(frozen=True)
class Plan:
    """How a search uses the cluster.

    Attributes:
        n_workers: Ray Train workers per trial: the number of folds (``workers`` layout) or 1 (``packed``).
        cpus_per_worker, gpus_per_worker: each worker's reservation (``packed``: the whole trial's).
        total_cpus, total_gpus: the cluster's logical resources when the plan was made.
        trials_at_once: concurrent trials (``max_concurrent_trials`` given to Tune).
        workers_per_gpu: workers that share one GPU (0 when no GPU is reserved).
        bound: what limits ``trials_at_once``: ``requested``, ``cpu`` or ``gpu``.
        folds_per_worker: folds each worker trains (1: ``workers`` layout; all folds: ``packed``).
    """

    n_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    total_cpus: float
    total_gpus: float
    trials_at_once: int
    workers_per_gpu: int
    bound: str
    folds_per_worker: int = 1

    @property
    def layout(self) -> str:
        """``"packed"`` (one worker trains every fold of a trial) or ``"workers"`` (one worker per fold)."""
        return "packed" if self.folds_per_worker > 1 else "workers"

    @property
    def cpus_per_fold(self) -> float:
        """CPUs per fold worker (``workers`` layout; for ``packed``, the trial's CPUs per fold it trains)."""
        return self.cpus_per_worker / self.folds_per_worker

    @property
    def folds_per_gpu(self) -> int:
        """``workers_per_gpu`` of a ``workers``-layout plan."""
        return self.workers_per_gpu

    def describe(self) -> str:
        """One line for the search's start-up output (per trial for ``packed``, per fold worker for ``workers``)."""
        per = f"{self.cpus_per_worker:g} CPU" + (f" + {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else "")
        cluster = f"cluster {self.total_cpus:g} CPU, {self.total_gpus:g} GPU"
        if self.layout == "packed":
            s = (f"plan: {self.trials_at_once} trial(s) at once ({self.bound}-bound), fold layout packed: one worker "
                 f"per trial trains its {self.folds_per_worker} folds with {per}; {cluster}")
            if self.gpus_per_worker:
                s += f"; {self.workers_per_gpu} trial(s) per GPU"
            return s
        s = (f"plan: {self.trials_at_once} trial(s) at once ({self.bound}-bound) x {self.n_workers} fold workers of "
             f"{per}; {cluster}")
        if self.gpus_per_worker:
            s += f"; {self.workers_per_gpu} fold worker(s) per GPU"
        return s


def folds_per_gpu(gpus_per_fold: float) -> int:
    """Workers one GPU holds: ``floor(1 / share)`` for a share <= 1 (0 for no GPU; 1 for whole GPUs)."""
    if gpus_per_fold <= 0:
        return 0
    if gpus_per_fold >= 1:
        return 1
    return int(math.floor(1.0 / gpus_per_fold + _EPS))


def plan_resources(resources: dict, n_workers: int, max_concurrent: int, cpus_per_worker: float | None,
                   gpus_per_worker: float, local: bool, folds_per_worker: int = 1) -> Plan:
    """How many trials run at once and what each Ray Train worker reserves.

    Args:
        resources: ``ray.cluster_resources()`` (keys ``CPU``, ``GPU``).
        n_workers: workers per trial (the folds for the ``workers`` layout, 1 for ``packed``).
        max_concurrent: the requested concurrent trials.
        cpus_per_worker: ``--cpus-per-fold`` / ``--cpus-per-trial``; None = local Ray: the CPUs shared evenly by
            the requested trials (at most 1 per fold trained, in steps of 0.01; fewer trials at once when a fold
            would get less than :data:`MIN_LOCAL_FOLD_CPUS`, packed or not), cluster: 1 per fold trained.
        gpus_per_worker: ``--gpus-per-fold`` / ``--gpus-per-trial``.
        local: True when the search started its own Ray (then the plan shrinks to what fits); on a cluster (which
            may grow by autoscaling) the requested number is kept and a note is printed by the caller.
        folds_per_worker: folds each worker trains (``packed``: every fold of the trial).

    Raises:
        ResourceError: one trial does not fit the (local) cluster: names the need and what the cluster has.
    """
    total_cpu = float(resources.get("CPU", 0.0))
    total_gpu = float(resources.get("GPU", 0.0))
    cpus = cpus_per_worker
    if cpus is None and not local:
        cpus = float(folds_per_worker)
    elif cpus is None:  # rather fewer trials at once than dozens of starved fold processes (memory: ~0.5 GiB each)
        per_trial_min = n_workers * folds_per_worker * MIN_LOCAL_FOLD_CPUS + TRIAL_ACTOR_CPUS
        conc = max(1, min(max_concurrent, int((total_cpu + _EPS) // per_trial_min)))
        share = (total_cpu - conc * TRIAL_ACTOR_CPUS) / (n_workers * conc)
        cpus = max(0.01, min(float(folds_per_worker), math.floor(100 * share) / 100))
    per_trial_cpu = n_workers * cpus + TRIAL_ACTOR_CPUS
    fit_cpu = int((total_cpu + _EPS) // per_trial_cpu)
    fit, bound = fit_cpu, "cpu"
    wpg = folds_per_gpu(gpus_per_worker)
    if gpus_per_worker > 0:
        gpu_slots = (int(total_gpu + _EPS) * wpg) if gpus_per_worker < 1 else int(total_gpu + _EPS) // int(gpus_per_worker)
        fit_gpu = gpu_slots // n_workers
        if fit_gpu < fit_cpu:
            fit, bound = fit_gpu, "gpu"
    if fit < 1 and local:
        unit = "folds" if folds_per_worker == 1 else "packed worker"
        need = f"{n_workers} {unit} x {cpus:g} CPU = {n_workers * cpus:g} CPU"
        if gpus_per_worker > 0:
            need += f" and {n_workers} {unit} x {gpus_per_worker:g} GPU ({wpg} per GPU)"
        flags = "--cpus-per-fold / --gpus-per-fold" if folds_per_worker == 1 else "--cpus-per-trial / --gpus-per-trial"
        raise ResourceError(f"one trial needs {need}; the Ray cluster has {total_cpu:g} CPU, {total_gpu:g} GPU "
                            f"(lower {flags})")
    if max_concurrent <= fit or not local:
        return Plan(n_workers, cpus, gpus_per_worker, total_cpu, total_gpu, max_concurrent, wpg, "requested",
                    folds_per_worker)
    return Plan(n_workers, cpus, gpus_per_worker, total_cpu, total_gpu, fit, wpg, bound, folds_per_worker)


# ---------------------------------------------------------------------------------------------------- node checks


def probe_node(data_dir: str, marker: str | None, token: str | None) -> dict:
    """Run ON a node: is the release readable at ``data_dir`` and does the node see the storage marker?

    Returns:
        ``{"host", "data_error", "storage_error"}`` (errors None when fine).
    """
    from blemore_core.data.release import TRAIN_METADATA

    out: dict[str, Any] = {"host": socket.gethostname(), "data_error": None, "storage_error": None}
    meta = Path(data_dir) / TRAIN_METADATA
    if not Path(data_dir).is_dir():
        out["data_error"] = f"--data {data_dir}: no such directory on this node"
    elif not os.access(meta, os.R_OK):
        out["data_error"] = f"--data {data_dir}: {meta} missing or unreadable on this node"
    if marker is not None:
        try:
            seen = Path(marker).read_text().strip()
        except OSError:
            seen = None
        if seen != token:
            out["storage_error"] = (f"--storage {Path(marker).parent}: this node does not see the driver's files "
                                    "there (a local path, not shared)")
    return out


def build_feature_cache(data_dir: str, encoder_sets: list[tuple[str, ...]]) -> dict:
    """Run ON a node: build (or validate) this node's feature cache of ``data_dir`` for every encoder set, train
    split and, where the release has it, test split (the domain term's target). The cache builds under its own
    file lock (:mod:`blemore_core.data.cache`), so concurrent builders on one node wait for one another, and later
    fold workers only memory-map it. Returns ``{"host", "seconds"}``."""
    import time

    from blemore_core.data import load_release

    t = time.perf_counter()
    for encs in encoder_sets:
        load_release(data_dir, encs, split="train", progress=False)
        try:
            load_release(data_dir, encs, split="test", progress=False)
        except (OSError, ValueError):
            pass  # no test split features: the domain term then targets the validation fold
    return {"host": socket.gethostname(), "seconds": time.perf_counter() - t}


def check_nodes(data_dir: str, storage: Any, timeout_s: float = 120.0,
                encoder_sets: list[tuple[str, ...]] | None = None, cache_timeout_s: float = 3600.0) -> list[dict]:
    """One task per alive Ray node (pinned with a hard node affinity) runs :func:`probe_node`.

    Args:
        data_dir: the release directory every node must read.
        storage: the search's :class:`search.storage.Storage`; a filesystem path must be the same shared
            directory on every node (an object-store URI needs no check here).
        timeout_s: how long to wait for the probes.
        encoder_sets: when given, after the probes pass, one more task per node other than the driver's (whose
            cache the driver built) runs :func:`build_feature_cache`, so no trial's fold workers build it.
        cache_timeout_s: how long to wait for those builds.

    Returns:
        One dict per node: ``node_id``, ``address``, ``host`` and the errors (all None when fine).

    Raises:
        ResourceError: a node cannot read the data or does not share the storage path (names every such node by
            address and id and the path); or a probe did not run within ``timeout_s``.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = token = None
    if storage.is_local:
        token = uuid.uuid4().hex
        Path(storage.uri).mkdir(parents=True, exist_ok=True)
        marker = str(Path(storage.uri) / f".blemore-node-check-{token[:12]}")
        Path(marker).write_text(token)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    probe = ray.remote(num_cpus=0)(probe_node)
    try:
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                              max_retries=0).remote(data_dir, marker, token) for n in nodes]
        try:
            outs = ray.get(refs, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise ResourceError(f"node check: not every node of the Ray cluster answered within {timeout_s:g} s "
                                "(a node without free capacity to start a worker process?)") from None
    finally:
        if marker is not None:
            Path(marker).unlink(missing_ok=True)
    rows, errs = [], []
    for n, o in zip(nodes, outs, strict=True):
        rows.append({"node_id": n["NodeID"], "address": n.get("NodeManagerAddress"), **o})
        for k in ("data_error", "storage_error"):
            if o[k]:
                errs.append(f"node {n.get('NodeManagerAddress')} ({n['NodeID'][:12]}): {o[k]}")
    if errs:
        hint = ("; use a shared filesystem path or an object store URI (s3://...) for --storage"
                if any("storage" in e for e in errs) else "")
        raise ResourceError("node check failed:\n  " + "\n  ".join(errs) + hint)
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in nodes if n["NodeID"] != here]
    if encoder_sets and others:
        build = ray.remote(num_cpus=0)(build_feature_cache)
        refs = [build.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                              max_retries=0).remote(data_dir, list(encoder_sets)) for n in others]
        print(f"building the feature cache of {data_dir} on {len(others)} other node(s)", flush=True)
        try:
            built = dict(zip([n["NodeID"] for n in others], ray.get(refs, timeout=cache_timeout_s), strict=True))
        except ray.exceptions.GetTimeoutError:
            raise ResourceError(f"node check: the feature caches were not built within {cache_timeout_s:g} s") from None
        except ray.exceptions.RayTaskError as e:
            raise ResourceError(f"node check: building the feature cache failed on a node: {e.cause!r}") from None
        for r in rows:
            r["cache_s"] = built.get(r["node_id"], {}).get("seconds")
    return rows


__all__ = ["TRIAL_ACTOR_CPUS", "ResourceError", "Plan", "check_device_options", "fold_device", "folds_per_gpu",
           "plan_resources", "probe_node", "check_nodes", "build_feature_cache"]

