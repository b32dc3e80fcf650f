"""Memory of a trial's fold workers running at once on one node (used by :mod:`benchmarks.data`).

Importable (not ``python -c`` code) because the workers are started with multiprocessing's ``spawn``, which
imports the target function by module name in each child.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from typing import Any


def _work(fold: int, barrier: Any, q: Any, preset: str, root: str, epochs: int, threads: int) -> None:
    import psutil
    import torch

    torch.set_num_threads(threads)
    from blemore_core.config import Config
    from blemore_core.train import FoldTrainer, prepare_data

    cfg = Config.from_yaml(preset).override({"train.max_epochs": epochs, "train.patience": 0, "train.device": "cpu"})
    t = time.perf_counter()
    data = prepare_data(cfg, root, progress=False)
    t_data = time.perf_counter() - t
    tr = FoldTrainer(cfg, data, fold)
    for _ in range(epochs):
        tr.train_epoch()
        tr.evaluate()
    barrier.wait()  # every fold holds its inputs now: shared pages are split between all of them
    m = psutil.Process().memory_full_info()
    q.put({"fold": fold, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "pss_gib": m.pss / 2**30, "private_gib": (m.rss - m.shared) / 2**30, "data_s": t_data})
    barrier.wait()


def _collect(q: Any, ps: list, timeout: float) -> list[dict]:
    """One row per process from ``q``; raises RuntimeError as soon as a process has died without its row (its
    traceback is on stderr) instead of waiting out ``timeout`` seconds, and on the timeout itself."""
    import queue

    rows: list[dict] = []
    t_end = time.monotonic() + timeout
    while len(rows) < len(ps):
        try:
            rows.append(q.get(timeout=1.0))
            continue
        except queue.Empty:
            pass
        dead = [(i, p.exitcode) for i, p in enumerate(ps) if p.exitcode not in (None, 0)]
        if dead:
            raise RuntimeError(f"fold worker(s) {', '.join(f'{i} (exit code {c})' for i, c in dead)} died before "
                               "reporting their memory (traceback above)")
        if time.monotonic() > t_end:
            raise RuntimeError(f"fold workers did not report their memory within {timeout:.0f} s")
    return rows


def measure(preset: str, root: str, n: int = 5, epochs: int = 1, threads: int = 1) -> dict:
    """Folds 0..n-1 of ``preset`` on the release ``root``, each in its own fresh process, all at once (Linux: PSS
    from /proc/<pid>/smaps_rollup through psutil). Returns per-fold rows and the maxima / sum in GiB."""
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(n), ctx.Queue()
    ps = [ctx.Process(target=_work, args=(k, barrier, q, preset, root, epochs, threads)) for k in range(n)]
    for p in ps:
        p.start()
    try:
        rows = _collect(q, ps, timeout=1500)
    finally:
        for p in ps:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return {"folds": sorted(rows, key=lambda r: r["fold"]),
            "max_pss_gib": max(r["pss_gib"] for r in rows), "sum_pss_gib": sum(r["pss_gib"] for r in rows),
            "max_peak_rss_gib": max(r["peak_rss_gib"] for r in rows),
            "max_private_gib": max(r["private_gib"] for r in rows), "data_s": max(r["data_s"] for r in rows)}
