"""Shared machinery of the benchmark suite: the result record, timing with repeats, machine/version info.

Every benchmark builds one :class:`Result` and writes it as ``<out>/<name>.json``. Schema (checked by
tests/benchmarks/test_suite.py)::

    {"name": str, "schema_version": 1, "quick": bool, "started_utc": str, "wall_s": float,
     "machine": {"hostname", "platform", "cpu", "cpu_count", "affinity_cpus", "memory_gib", "cuda": null | {...}},
     "versions": {"python", "torch", "numpy", "ray", "optuna", "mlflow", "blemore_git"},
     "inputs": {...free-form: profile, sizes, epochs...},
     "figures": {name: {"unit": str, "median": float, "spread": float, "min": float, "max": float,
                        "repeats": int, "samples": [float], "note": str}},
     "targets": {name: {"measured": float | null, "target": str, "holds": bool | null, "reference": str,
                        "status": "measured" | "not measured: <why>"}},
     "notes": [str]}

``spread`` is the half-width of the interquartile range over the repeats (0 for a single sample). Every ratio is
taken against a reference measured in the same run (the machine is shared; absolute times are noisy).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = 1
DEFAULT_OUT = ROOT / "benchmarks" / "results"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """Host, CPU, cores, memory and CUDA device (None when there is none)."""
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    cuda = None
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            cuda = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
                    "cuda_version": torch.version.cuda}
    except Exception:  # noqa: BLE001 - a broken CUDA install is reported as no CUDA
        cuda = None
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)), "memory_gib": mem,
            "cuda": cuda}


def versions() -> dict:
    """Versions of Python, the libraries measured, and the git commit of the checkout."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for mod in ("torch", "numpy", "ray", "optuna", "mlflow"):
        try:
            out[mod] = version(mod)  # from the installed metadata: no import (ray, mlflow take seconds)
        except PackageNotFoundError:
            out[mod] = None
    try:
        out["blemore_git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["blemore_git"] = None
    return out


def summarise(samples: list[float]) -> dict:
    """Median, IQR half-width ("spread"), min, max of ``samples``."""
    s = sorted(float(x) for x in samples)
    if not s:
        raise ValueError("summarise: no samples")
    if len(s) >= 2:
        q = statistics.quantiles(s, n=4, method="inclusive")
        spread = (q[2] - q[0]) / 2
    else:
        spread = 0.0
    return {"median": statistics.median(s), "spread": spread, "min": s[0], "max": s[-1], "repeats": len(s),
            "samples": s}


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> tuple[list[float], Any]:
    """Seconds of ``repeats`` calls of ``fn`` (after ``warmup`` untimed calls) and the last return value."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


class Result:
    """One benchmark's record: inputs, figures (median and spread over repeats), targets, notes."""

    def __init__(self, name: str, quick: bool):
        self.name, self.quick = name, quick
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.t0 = time.perf_counter()
        self.inputs: dict[str, Any] = {}
        self.figures: dict[str, dict] = {}
        self.targets: dict[str, dict] = {}
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}

    def figure(self, name: str, samples: list[float] | float, unit: str, note: str = "") -> dict:
        """Record a figure from its repeats (a single float is one sample)."""
        samples = [samples] if isinstance(samples, (int, float)) else list(samples)
        self.figures[name] = {"unit": unit, **summarise(samples), "note": note}
        return self.figures[name]

    def target(self, name: str, measured: float | None, op: str, bound: float, reference: str,
               not_measured: str | None = None) -> dict:
        """Record a target: ``measured op bound`` (op one of >=, <=, <, >), or why it was not measured."""
        ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
               "<": lambda a, b: a < b}
        if op not in ops:
            raise ValueError(f"target {name}: unknown op {op!r}")
        if not_measured or measured is None:
            rec = {"measured": None, "target": f"{op} {bound}", "holds": None, "reference": reference,
                   "status": f"not measured: {not_measured or 'no value'}"}
        else:
            rec = {"measured": float(measured), "target": f"{op} {bound}", "holds": bool(ops[op](measured, bound)),
                   "reference": reference, "status": "measured"}
        self.targets[name] = rec
        return rec

    def to_dict(self) -> dict:
        return {"name": self.name, "schema_version": SCHEMA_VERSION, "quick": self.quick,
                "started_utc": self.started, "wall_s": round(time.perf_counter() - self.t0, 2),
                "machine": machine(), "versions": versions(), "inputs": self.inputs, "figures": self.figures,
                "targets": self.targets, "notes": self.notes, **({"details": self.extra} if self.extra else {})}

    def write(self, out: Path) -> Path:
        """Write ``<out>/<name>.json`` atomically (tmp file, then rename); the figures indented, the ``details``
        (per-trial records, often megabytes) on one compact line at the end."""
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}.json"
        tmp = path.with_suffix(f".json.tmp-{os.getpid()}")
        doc = self.to_dict()
        details = doc.pop("details", None)
        text = json.dumps(doc, indent=2, default=_json_default)
        if details is not None:
            text = (text[:-2] + ',\n  "details": '
                    + json.dumps(details, default=_json_default, separators=(",", ":")) + "\n}")
        tmp.write_text(text + "\n")
        os.replace(tmp, path)
        return path


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cache_root() -> Path:
    """``$BLEMORE_CACHE`` or ``~/.cache/blemore`` (where generated releases are kept between runs)."""
    env = os.environ.get("BLEMORE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "blemore"


def release(profile: str, encoders: list[str] | None = None, seed: int = 0) -> Path:
    """A synthetic release of ``profile`` with ``encoders`` (all when None), generated once then reused.

    Kept under ``<cache>/synthetic/bench-<profile>-seed<seed>-g<generator version>-<encoders>``.
    """
    from blemore_core.data import generate_release
    from blemore_core.data.synth import GENERATOR_VERSION, _current

    tag = "all" if encoders is None else "-".join(sorted(encoders))
    root = cache_root() / "synthetic" / f"bench-{profile}-seed{seed}-g{GENERATOR_VERSION}-{tag}"
    if _current(root):
        return root
    import fcntl

    keys = sorted(encoders) if encoders is not None else None
    root.parent.mkdir(parents=True, exist_ok=True)
    # concurrent benchmark jobs (e.g. calibration jobs started in parallel) serialise here: without the lock each
    # regenerated the release and replaced the directory under the others' feature caches (seen on the H100)
    with open(root.parent / f"{root.name}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if not _current(root):
                if profile == "full" and keys and len(keys) > 1 and len(os.sched_getaffinity(0)) >= 4:
                    _generate_parallel(root, profile, seed, keys)
                else:
                    generate_release(root, profile, seed=seed, encoders=keys, progress=False,
                                     overwrite=root.exists())
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return root


def _generate_parallel(root: Path, profile: str, seed: int, keys: list[str]) -> None:
    """One process per encoder (the generator gives the same bytes per encoder whatever the subset), then the
    feature folders are moved into one release, which appears by one rename."""
    import shutil
    import uuid
    from concurrent.futures import ProcessPoolExecutor

    from blemore_core.data import generate_release

    work = root.parent / f".{root.name}.parts-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        with ProcessPoolExecutor(max_workers=min(len(keys), len(os.sched_getaffinity(0)))) as ex:
            futs = [ex.submit(generate_release, work / k, profile, seed, [k], False) for k in keys]
            for f in futs:
                f.result()
        first = work / keys[0]
        for k in keys[1:]:
            for split_dir in (work / k).iterdir():
                if split_dir.is_dir():
                    for enc_dir in split_dir.iterdir():
                        os.rename(enc_dir, first / split_dir.name / enc_dir.name)
        manifest = json.loads((first / "manifest.json").read_text())
        for k in keys[1:]:
            other = json.loads((work / k / "manifest.json").read_text())
            manifest["encoders"].update(other["encoders"])
            manifest["informativeness"].update(other["informativeness"])
        (first / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.rename(first, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def subprocess_env(extra: dict | None = None) -> dict:
    """Environment of benchmark subprocesses: this checkout first on PYTHONPATH, a private local Ray
    (``RAY_ADDRESS=local``: never join a cluster another user started on this machine with ``ray start``) and
    Ray workers at the same priority as the rest (``RAY_worker_niceness=0``)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.setdefault("RAY_ADDRESS", "local")
    # Ray runs its workers at niceness 15 by default: on a machine shared with other (un-niced) work they starve,
    # and a ratio against an in-process reference would measure the neighbours' load, not the platform
    e.setdefault("RAY_worker_niceness", "0")
    e.update(extra or {})
    return e


def run_python(code: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None) -> dict:
    """Run ``code`` in a fresh Python (PYTHONPATH = this checkout); its last stdout line must be JSON.

    Returns the parsed JSON (a child that must report its peak memory adds
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` to it).
    """
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=subprocess_env(env), cwd=cwd or ROOT)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise RuntimeError(f"benchmark subprocess timed out after {timeout} s:\n{err[-2000:]}") from None
    if p.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed ({p.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return json.loads(lines[-1])
