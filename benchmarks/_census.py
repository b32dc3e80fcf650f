"""Process census of a search (benchmark-only, used by benchmarks/throughput.py): which processes a trial starts
and where the machine's CPU goes while it starts and while it trains.

A thread samples every process's CPU seconds (user + system, all threads; ``psutil``) every ``period`` seconds
and names it by its process title: Ray titles an actor's process ``ray::<Class>`` (``ray::<Class>.<method>`` while
a method runs; ``ray::IDLE`` for a pooled worker not yet used), so a process is counted under the last class it
showed while it could be read (an exiting process has no title; e.g. ``TrainController``, ``RayTrainWorker``, ``SynchronizationActor``, ``ImplicitFunc`` = Tune's trial
actor). The process running the search (Tune's driver, the MLflow callback and this sampler) is ``driver``.
The figures are what :func:`started_in` and :func:`cpu_in` read from the records over a trial's time windows
(:func:`benchmarks.throughput.trial_timings`); the sampler's own CPU is in ``driver``, and the last ``period``
seconds of a process that exits are missed (its CPU after its last sample).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

DRIVER = "driver"
IDLE = "IDLE"


def kind_of(cmdline0: str, name: str) -> str:
    """A process's kind from its title: ``"ray::TrainController.run"`` -> ``"TrainController"``,
    ``"ray::IDLE"`` -> ``"IDLE"``; any other process: its executable name (``raylet``, ``gcs_server``,
    ``python3``...)."""
    if cmdline0.startswith("ray::"):
        return cmdline0[len("ray::"):].split(".")[0].split()[0] or IDLE
    return name


class ProcessCensus:
    """Samples every process's CPU time every ``period`` s while active (a context manager).

    Attributes:
        records: one dict per process seen: ``kind`` (:func:`kind_of`, the last one other than ``IDLE``),
            ``pid``, ``created`` (epoch s), ``samples`` (list of ``[t, cpu_s]``, t in epoch s).

    Raises:
        ImportError: psutil missing (Ray depends on it).
    """

    def __init__(self, period: float = 0.5, driver_pid: int | None = None):
        import psutil  # noqa: F401 - fail here, not in the thread

        self.period = period
        self.driver_pid = os.getpid() if driver_pid is None else driver_pid
        self._procs: dict[tuple[int, float], dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-census", daemon=True)

    @property
    def records(self) -> list[dict[str, Any]]:
        return list(self._procs.values())

    def sample(self) -> None:
        """One sample of every process (also called by the thread)."""
        import psutil

        now = time.time()
        for p in psutil.process_iter(["pid", "name", "cmdline", "create_time", "cpu_times"]):
            info = p.info
            if info.get("cpu_times") is None or info.get("create_time") is None:
                continue  # gone or not ours to read
            key = (info["pid"], info["create_time"])
            rec = self._procs.get(key)
            title = (info.get("cmdline") or [""])[0] or ""  # empty for an exiting process: its kind stays
            kind = DRIVER if info["pid"] == self.driver_pid else kind_of(title, info.get("name") or "?")
            if rec is None:
                rec = self._procs[key] = {"kind": kind, "pid": info["pid"], "created": info["create_time"],
                                          "samples": []}
            elif title and kind != IDLE:
                rec["kind"] = kind
            rec["samples"].append([now, info["cpu_times"].user + info["cpu_times"].system])

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def __enter__(self) -> ProcessCensus:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _cpu_at(rec: dict[str, Any], t: float) -> float:
    """CPU seconds of one process at time ``t``: 0 before it was created, linear between samples, the first
    sample's value before it (a process seen late), the last one's after it (a process that exited)."""
    s = rec["samples"]
    if t <= rec["created"]:
        return 0.0
    if t <= s[0][0]:
        return s[0][1]
    for (t0, c0), (t1, c1) in zip(s, s[1:]):
        if t <= t1:
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
    return s[-1][1]


def cpu_in(records: list[dict[str, Any]], t0: float, t1: float) -> dict[str, float]:
    """CPU seconds per process kind spent between ``t0`` and ``t1`` (epoch s), kinds with none left out."""
    out: dict[str, float] = collections.defaultdict(float)
    for rec in records:
        if rec["samples"]:
            used = _cpu_at(rec, t1) - _cpu_at(rec, t0)
            if used > 0:
                out[rec["kind"]] += used
    return dict(out)


def started_in(records: list[dict[str, Any]], t0: float, t1: float) -> dict[str, int]:
    """How many processes of each kind were created between ``t0`` and ``t1`` (epoch s)."""
    return dict(collections.Counter(r["kind"] for r in records if t0 <= r["created"] <= t1))
