"""Placement groups of ended trials: a public-API backstop to Ray Train's own clean-up (docs/ARCHITECTURE.md section 6).

Each trial's fold workers run in one Ray Train placement group (``n_folds`` bundles of ``cpus_per_fold`` CPU and
``gpus_per_fold`` GPU). Fold rank 0 reports the group's id with every result (:data:`PG_RESULT_KEY`); the driver's
:class:`ReleaseEndedTrials` removes a group still held after its trial ended.
"""

from __future__ import annotations

import sys
import time
import weakref
from typing import Any

from ray.tune import Callback

#: key of a trial's Tune results that names its fold workers' placement group (hex id, set by fold rank 0)
PG_RESULT_KEY = "placement_group"


def current_placement_group_hex() -> str:
    """Hex id of the placement group this worker runs in ("" outside one); reported by fold rank 0 with every
    result so that :class:`ReleaseEndedTrials` knows each trial's group."""
    import ray.util

    pg = ray.util.get_current_placement_group()
    return "" if pg is None else pg.id.hex()


#: the callbacks of this process (the one Tune holds may be the one it unpickled on resume)
_LIVE: weakref.WeakSet = weakref.WeakSet()


def release_all_live() -> None:
    """Release every group reported to any live :class:`ReleaseEndedTrials` of this process (the runner calls it
    when a search ends, also by an exception such as a dead tracking server or Ctrl-C: Tune's graceful stop of a
    trial aborts its Train controller, which tells Ray Train's cleaner to stand down before it removes the group
    itself; when the trial actor is killed in between, the group stayed reserved after the search's job ended,
    seen to block the resumed search's first trial on a two-node cluster)."""
    for cb in list(_LIVE):
        cb.release_all()


class ReleaseEndedTrials(Callback):
    """Driver-side Tune callback, a backstop to Ray Train's own clean-up: when a trial has ended (completed, stopped
    by the scheduler, errored, or failed and about to be retried), the placement groups its fold workers ran in are removed if still held
    ``grace_s`` seconds later; at the end of the experiment, at once.

    Why: Ray Train removes a run's placement group when its controller shuts down, and a detached
    ``PlacementGroupCleaner`` removes it when the controller dies (Tune stops a trial by killing its actor, which
    the controller fate-shares with), polling the State API; under load that poll lags or the controller dies
    mid-shutdown after the cleaner was told to stop, and the group (``n_folds x cpus_per_fold`` CPUs) stays
    reserved until the job ends, starving later trials (measured: 1.95 CPUs still held 20 s after an ASHA search
    on 2 busy cores). Only the groups reported by this search's own trials are touched (a shared cluster's other
    jobs never are), a retried trial's new group only after that attempt ends, and only public Ray APIs are used
    (``ray.util.placement_group_table``, ``ray.util.remove_placement_group``, ``ray.PlacementGroupID``).

    Args:
        grace_s: seconds Ray Train gets to release a group itself before this callback does.
    """

    def __init__(self, grace_s: float = 10.0) -> None:
        self.grace_s = grace_s
        self.released: list[str] = []
        self._groups: dict[str, set[str]] = {}
        self._due: list[tuple[float, str]] = []
        _LIVE.add(self)

    def __getstate__(self) -> dict:  # pickled into Tune's experiment state: configuration only
        return {"grace_s": self.grace_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        pg = result.get(PG_RESULT_KEY)
        if pg:
            self._groups.setdefault(str(trial.trial_id), set()).add(str(pg))

    def _ended(self, trial: Any) -> None:
        due = time.monotonic() + self.grace_s
        self._due.extend((due, pg) for pg in sorted(self._groups.pop(str(trial.trial_id), ())))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)  # the failed attempt's group; the retry reports its own

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        for due, pg in [d for d in self._due if d[0] <= now]:
            self._due.remove((due, pg))
            self._release(pg)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.release_all()

    def release_all(self) -> None:
        """The search is over (at its end, or ended by an exception: Tune then calls no end hook, see
        :func:`release_all_live`): every group any of its trials reported goes now, running trials' included."""
        for groups in self._groups.values():
            self._due.extend((0.0, pg) for pg in sorted(groups))
        self._groups.clear()
        for _, pg in self._due:
            self._release(pg)
        self._due.clear()

    def _release(self, pg_hex: str) -> bool:
        """Remove the group ``pg_hex`` if it is still held; True when this call removed it."""
        import ray
        from ray.util.placement_group import PlacementGroup

        try:
            pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_hex)))
            if ray.util.placement_group_table(pg).get("state", "REMOVED") == "REMOVED":
                return False
        except Exception as e:  # best effort: the search goes on; say what stays reserved
            print(f"warning: could not release placement group {pg_hex}: {e!r}", file=sys.stderr)
            return False
        if not _remove(pg_hex):
            return False
        self.released.append(pg_hex)
        return True


# ------------------------------------------------------------------------------------------------ a driver's groups
#: file next to the search's manifest listing the Ray jobs that have driven the search (see :func:`release_earlier_drivers`)
DRIVERS_FILE = "ray_drivers.json"


def _job_hex() -> str:
    import ray

    return ray.get_runtime_context().get_job_id()


def _cluster_key() -> str:
    """Node id of the connected cluster's head: a restarted cluster (whose job ids start over) has a new one."""
    import ray

    heads = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})]
    return heads[0] if heads else ""


def job_groups(job_hex: str) -> list[str]:
    """Hex ids of the placement groups that Ray job ``job_hex`` created and that are still held (any state but
    REMOVED). A placement group's id ends with the id of the job that created it (``ray.PlacementGroupID.of(job)``),
    also for groups created inside that job's actors, e.g. a Train controller's fold workers' group."""
    import ray

    tail = job_hex.lower()
    return sorted(pg for pg, row in ray.util.placement_group_table().items()
                  if pg.lower().endswith(tail) and row.get("state") != "REMOVED")


def _remove(pg_hex: str) -> bool:
    """Remove placement group ``pg_hex``; False (with a warning naming it) when Ray refused."""
    import ray
    from ray.util.placement_group import PlacementGroup

    try:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_hex))))
    except Exception as e:  # best effort: say what stays reserved
        print(f"warning: could not release placement group {pg_hex}: {e!r}", file=sys.stderr)
        return False
    return True


def release_job_groups(job_hex: str | None = None, settle_s: float = 3.0) -> list[str]:
    """Remove every placement group still held that Ray job ``job_hex`` (default: this driver's job) created; called
    when a search's driver is done with the cluster (its trials stopped), so nothing it reserved outlives it.

    Why: a trial stopped while its Train controller was still creating the fold workers' group (e.g. the search ended
    by a dead tracking server right after a trial started) can leave that group registered after its creator died;
    Ray's own clean-up then never removes it, and a resumed search's trials wait for its CPUs forever. The table is
    read twice, ``settle_s`` apart, so that a creation request still in flight is caught. Only call it from a driver
    that owns its job (a search started by ``blemore``, not a notebook's Ray session, whose own groups share the
    job id). Returns the ids removed.
    """
    job_hex = job_hex or _job_hex()
    removed: list[str] = []
    for i in range(2):
        if i:
            time.sleep(settle_s)
        removed += [pg for pg in job_groups(job_hex) if pg not in removed and _remove(pg)]
    return removed


def release_earlier_drivers(storage: Any, name: str) -> list[str]:
    """On resume: remove the placement groups still held by earlier Ray jobs that drove search ``name`` on this
    cluster (listed in ``<storage>/<name>/ray_drivers.json``), then add this job to the list. Those jobs are over:
    the search's name lock (:class:`search.records.store.NameLock`) admits one live driver per name, and this is
    it. Covers a driver that was killed before it could release its own groups (:func:`release_job_groups`).
    Returns the ids removed; never raises (a warning says what could not be read or written)."""
    import json

    from search.storage import read_text, write_text

    removed: list[str] = []
    try:
        here, job = _cluster_key(), _job_hex()
        text = read_text(storage, f"{name}/{DRIVERS_FILE}")
        rows = json.loads(text) if text else []
        rows = [r for r in rows if isinstance(r, dict)]
        for r in rows:
            if r.get("cluster") == here and r.get("job") and r["job"] != job:
                removed += [pg for pg in job_groups(str(r["job"])) if _remove(pg)]
        if removed:
            print(f"released {len(removed)} placement group(s) an earlier driver of search {name!r} left reserved",
                  file=sys.stderr)
        rows = [r for r in rows if r.get("cluster") == here][-50:] + [{"cluster": here, "job": job}]
        write_text(storage, f"{name}/{DRIVERS_FILE}", json.dumps(rows, indent=1))
    except Exception as e:  # noqa: BLE001 - best effort: the search runs either way
        print(f"warning: could not check the placement groups of earlier drivers of {name!r}: {e!r}", file=sys.stderr)
    return removed
