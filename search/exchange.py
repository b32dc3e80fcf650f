"""The fold workers' exchange: one small Ray actor per trial through which the folds share per-epoch results.

docs/ARCHITECTURE.md section 6: each epoch, every fold's validation probabilities are gathered so that all folds take the
same decisions (kept epochs, stopping), and at the end the fold results are gathered on rank 0, which writes the
trial's artifacts. The folds never synchronise gradients, so a ``torch.distributed`` process group (and the
TCPStore rendezvous server it starts, which listens on every interface of the rank-0 node) is not needed: the
exchange goes through Ray's own object transfer, which binds where Ray binds (127.0.0.1 for a local search).

Used only by the ``workers`` fold layout (a ``packed`` trial holds every fold in one process and exchanges
nothing). Usage (``search.trainable``)::

    exchange = make_exchange(world_size)          # in the Tune trial actor, before the Train workers start
    ex = RayExchange(exchange, rank)              # in each fold worker: the lock-step driver's Exchange
    rows = ex.all_gather(("epoch", 3), {fold: obj})   # every fold's object, in every worker
    res = ex.gather("final", {fold: obj})         # rank 0: every fold's object; other ranks: None

The actor is owned by the trial actor that created it, so it dies with the trial (Ray's ownership); the trial
also kills it when its Train run returns (:func:`close_exchange`). It reserves no CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any


class FoldExchange:
    """Rendezvous of ``world_size`` fold workers, keyed by step (an async Ray actor; see :func:`make_exchange`).

    Each key is one collective step: every rank deposits its object once; :meth:`all_gather` returns the list
    (index = rank) to every rank once all have deposited, :meth:`gather` returns it to ``dst`` only. A step's
    objects are dropped as soon as every waiting rank has its answer, so the actor holds at most a few steps.

    Args:
        world_size: number of fold workers (>= 1).

    Raises:
        ValueError: ``world_size`` < 1; a rank outside ``0..world_size-1``; a rank depositing twice under one key.
    """

    def __init__(self, world_size: int) -> None:
        if int(world_size) < 1:
            raise ValueError(f"FoldExchange: world_size must be >= 1, got {world_size!r}")
        self._world = int(world_size)
        self._steps: dict[Hashable, dict[str, Any]] = {}

    def _deposit(self, key: Hashable, rank: int, obj: Any, waiting: int) -> dict[str, Any]:
        if not 0 <= rank < self._world:
            raise ValueError(f"FoldExchange: rank {rank} outside 0..{self._world - 1}")
        step = self._steps.get(key)
        if step is None:
            step = self._steps[key] = {"items": [None] * self._world, "seen": set(), "left": waiting,
                                       "done": asyncio.Event()}
        if rank in step["seen"]:
            raise ValueError(f"FoldExchange: rank {rank} deposited twice under step {key!r}")
        step["seen"].add(rank)
        step["items"][rank] = obj
        if len(step["seen"]) == self._world:
            step["done"].set()
        return step

    async def _collect(self, key: Hashable, step: dict[str, Any]) -> list[Any]:
        await step["done"].wait()
        items = step["items"]
        step["left"] -= 1
        if step["left"] == 0:
            self._steps.pop(key, None)
        return items

    async def all_gather(self, key: Hashable, rank: int, obj: Any) -> list[Any]:
        """Deposit ``obj`` for ``rank`` and return every rank's object (index = rank) once all have deposited."""
        step = self._deposit(key, rank, obj, waiting=self._world)
        return await self._collect(key, step)

    async def gather(self, key: Hashable, rank: int, obj: Any, dst: int = 0) -> list[Any] | None:
        """Deposit ``obj``; rank ``dst`` gets the list of every rank's object, the other ranks ``None`` at once."""
        step = self._deposit(key, rank, obj, waiting=1)
        if rank != dst:
            return None
        return await self._collect(key, step)

    def pending(self) -> int:
        """Number of steps still held (for tests: 0 after a complete exchange)."""
        return len(self._steps)


def make_exchange(world_size: int) -> Any:
    """Start the trial's :class:`FoldExchange` actor (0 CPU, on this node when it can) and return its handle.

    Must run inside a Ray worker or driver (the Tune trial actor). Raises whatever ``ray`` raises when no
    cluster is connected."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = ray.remote(num_cpus=0, max_restarts=0)(FoldExchange)
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    return actor.options(scheduling_strategy=here).remote(world_size)


def close_exchange(handle: Any) -> None:
    """Kill the exchange actor (idempotent; a dead actor is fine)."""
    import ray

    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def all_gather(handle: Any, key: Hashable, rank: int, obj: Any) -> list[Any]:
    """Blocking :meth:`FoldExchange.all_gather` through the actor ``handle``."""
    import ray

    return ray.get(handle.all_gather.remote(key, rank, obj))


def gather(handle: Any, key: Hashable, rank: int, obj: Any, dst: int = 0) -> list[Any] | None:
    """Blocking :meth:`FoldExchange.gather` through the actor ``handle``."""
    import ray

    return ray.get(handle.gather.remote(key, rank, obj, dst))


class RayExchange:
    """The :class:`blemore_core.train.Exchange` of a ``workers``-layout trial: one fold per Ray Train worker,
    joined through the trial's :class:`FoldExchange` actor.

    Args:
        handle: the actor (:func:`make_exchange`); rank: this worker's world rank (rank 0 is the lead).
    """

    def __init__(self, handle: Any, rank: int) -> None:
        self.handle, self.rank = handle, int(rank)

    def all_gather(self, key: Hashable, local: dict[int, Any]) -> dict[int, Any]:
        """Every fold's object in every worker: the workers' ``{fold: obj}`` dicts merged."""
        merged: dict[int, Any] = {}
        for part in all_gather(self.handle, key, self.rank, dict(local)):
            merged.update(part)
        return merged

    def gather(self, key: Hashable, local: dict[int, Any]) -> dict[int, Any] | None:
        """Every fold's object on rank 0 (merged), ``None`` on the other ranks."""
        parts = gather(self.handle, key, self.rank, dict(local), dst=0)
        if parts is None:
            return None
        merged: dict[int, Any] = {}
        for part in parts:
            merged.update(part)
        return merged
