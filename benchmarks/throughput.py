"""Throughput of a search per fold layout (``packed`` vs ``workers``), its start-up, per-epoch platform overhead,
storage traffic, the README main job, the GPU target and warm-trial options (issue 22 items 4, 5, 6).

Figures and targets (one run, 2 shared cores; every ratio against a reference measured in the same run):

(a) trials/h of a short search (``scheduler: none``, same seed) per layout and model: the organisers' baseline MLP
    (aggregated features) and the rank-aware fusion with a small latent, on ``demo`` (``tiny`` with ``--quick``).
(b) start-up per trial: the trial function entered in its Tune actor -> the lead worker's first epoch reported
    (:mod:`benchmarks._timed_trial`), less that first epoch's compute in one warm process (the platform part);
    against the fresh-import floor measured in the same run (one fresh Python importing what a worker imports,
    :func:`benchmarks.startup.import_floor`); target: packed <= 1.5x floor.
(c) per-epoch platform overhead: the median over a trial's epochs 2.. of the time between consecutive epoch reports
    of its lead worker (:mod:`benchmarks._timed_trial`; what Tune's ``time_this_iter_s`` measures) minus the
    median epoch of the same loop (``run_lockstep``, the loop of ``cross_validate``) in one warm process, same
    config, thread count and fold execution (``auto``: what the trial ran, recorded as ``fold_execution``);
    target <= 25 ms (packed).
(d) bytes written to an S3-compatible store (a moto server on 127.0.0.1, every PUT/POST body counted by a WSGI
    wrapper) by a one-trial search at 10 / 40 / 160 epochs of the baseline MLP (patience off) vs the trial's final
    artifacts (its final checkpoint directory); target: the trial's uploads <= 2x its final artifacts.
(e) the README main job (``spaces/rank_aware.yaml`` on demo, reduced budget: :data:`MAIN_JOB_SAMPLES` trials,
    same seed) in both layouts: trials/h packed / workers >= 1.2 and |best Score difference| <= 0.01. Too long for
    the suite on 2 cores: ``python -m benchmarks.throughput main-job`` records it once in
    ``benchmarks/results/throughput_main_job.json``; the suite reuses a record whose key (space, generator,
    budget) matches.
(f) GPU: ten-epoch rank_aware trials on demo per GPU per hour >= 10 x 72 with the GPU utilisation (nvidia-smi,
    sampled every second) >= 50 % (``python -m benchmarks --only throughput,gpu`` on a CUDA machine); "not
    measured: no GPU" without CUDA.
(g) warm trials (item 5): start-up per trial and the gap between trials of the packed layout with Tune's
    ``reuse_actors=True`` and with Ray's prestarted workers preloading the worker's modules
    (``RAY_preload_python_modules``, ``RAY_enable_worker_prestart``), against the default, same run.
(h) why (b) and (c) cost what they cost, measured: a packed baseline search of its own sampled by a process
    census (:mod:`benchmarks._census`): the processes a trial starts before its first epoch and every process
    kind's CPU seconds meanwhile, and the cores the trial's worker and everything else used while it trained; and
    for (c), per epoch the lead worker's time inside ``ray.train.report`` and its process's CPU seconds against
    the in-process reference's CPU seconds.
(i) how much of (c) the cores taken by the search's other processes explain: the in-process reference of the
    census model run alone and beside a synthetic load of as many cores as (h) measured for the other processes
    (:func:`cpu_load`: spinning processes, their CPU measured); the packed trial's epoch minus the reference
    epoch beside the load is what the others' cores do not explain (the trial's own per-epoch cost). Its CPU
    seconds cannot tell that apart: beside a load the reference's torch threads spin while they wait for each
    other, so its CPU per epoch grows as well.

    python -m benchmarks --only throughput
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ._common import DEFAULT_OUT, ROOT, Result, release, run_python

SPACE = """
name: {name}
preset: {preset}
data: {{dir: {root}, encoders: [{encoders}]}}
fixed:
{fixed}
params:
  train.lr: {{type: loguniform, low: 9.99e-4, high: 1.0e-3}}
metric: score
scheduler: none
budget: {{num_samples: {trials}, max_concurrent: 1, max_epochs: {epochs}}}
"""

#: the compute-light models: preset, encoders, fixed keys (patience off: every trial runs its epochs)
MODELS: dict[str, dict[str, Any]] = {
    "baseline": {"preset": "baseline", "encoders": "imagebind, wavlm", "fixed": {"train.patience": 0}},
    "rank_aware": {"preset": "rank_aware", "encoders": "imagebind, wavlm",
                   "fixed": {"train.patience": 0, "model.latent_dim": 8, "model.shared_dim": 8, "model.seq_len": 4,
                             "model.top_n": 1, "model.heads": 2}},
}
#: sizes: (profile, {model: (trials, epochs)}, storage lengths, warm-trial (trials, epochs), floor repeats)
FULL = {"profile": "demo", "runs": {"baseline": (2, 20), "rank_aware": (1, 6)}, "lengths": (10, 40, 160),
        "warm": (2, 2), "floor_repeats": 2, "census": (2, 8)}
QUICK = {"profile": "tiny", "runs": {"baseline": (1, 2)}, "lengths": (3,), "warm": None, "floor_repeats": 1,
         "census": (1, 3)}
LAYOUTS = ("packed", "workers")
#: the README main job, reduced for 2 cores (its own budget: 8 trials, time_budget_s 780)
MAIN_JOB_SPACE = ROOT / "spaces" / "rank_aware.yaml"
MAIN_JOB_SAMPLES = 4
MAIN_JOB_RECORD = "throughput_main_job.json"
#: today's GPU figure (benchmarks/results/gpu_packing_search.json: 49-72 ten-epoch trials/h on one H100)
GPU_TODAY_TRIALS_PER_HOUR = 72.0
#: what a Ray worker preloads in the warm-trial experiment (what a packed worker imports)
PRELOAD = "torch,ray.train,ray.train.torch,blemore_core.train,search.trainable"
BUCKET = "blemore-bench"


def space_text(name: str, model: str, root: Path, trials: int, epochs: int) -> str:
    """The search-space YAML of one measured search (``model`` from :data:`MODELS`)."""
    m = MODELS[model]
    fixed = "\n".join(f"  {k}: {v}" for k, v in m["fixed"].items())
    return SPACE.format(name=name, preset=m["preset"], root=root, encoders=m["encoders"], fixed=fixed,
                        trials=trials, epochs=epochs)


# ------------------------------------------------------------------------------------------ the search driver
def drive(spec: dict) -> None:
    """Run the searches of ``spec`` in this process with ONE local Ray (a fresh Python, see :func:`run_driver`);
    prints one JSON line: Ray's start and, per search, its wall time and every trial's Tune rows.

    ``spec``: ``{"num_cpus": int, "tracking_uri": str, "searches": [{"space", "name", "layout", "storage",
    "reuse_actors": bool, "gpus_per_trial": float, "max_concurrent": int | None, "num_samples": int | None}]}``.
    """
    import search.trainable as trainable

    from . import _timed_trial

    trainable.run_trial = _timed_trial.timed_run_trial
    from search.runner import SearchOptions, _init_ray, run_search

    t = time.time()
    for attempt in range(3):  # Ray gives its raylet 30 s to register: on an overloaded shared machine, try again
        try:
            _init_ray(SearchOptions(num_cpus=spec["num_cpus"], verbose=0))
            break
        except Exception as e:  # noqa: BLE001 - ray.init raises a bare Exception for this
            if "timed out during startup" not in str(e) or attempt == 2:
                raise
            import ray

            ray.shutdown()
    out: dict[str, Any] = {"ray_start_s": time.time() - t, "searches": [], "references": {}, "floor": []}
    # the references run in a Ray worker too: on a shared machine a plain subprocess is scheduled differently from
    # Ray's workers (2026-12-03: 3-4x slower per epoch at the same load), which would make the differences meaningless
    if spec.get("references"):
        out["floor"].append(_in_ray("benchmarks.startup", "import_floor", 1))
    for r in spec.get("references", []):
        out["references"][r["key"]] = _in_ray("benchmarks.throughput", "in_process", Path(r["space"]),
                                             Path(r["root"]), r["threads"], r["epochs"])
    for s in spec["searches"]:
        opts = SearchOptions(name=s["name"], storage=s["storage"], tracking_uri=spec["tracking_uri"],
                             num_cpus=spec["num_cpus"], verbose=0, fold_layout=s["layout"], seed=0,
                             gpus_per_trial=s.get("gpus_per_trial", 0.0), max_concurrent=s.get("max_concurrent"),
                             num_samples=s.get("num_samples"))
        t0 = time.time()
        trainable.run_trial = (_timed_trial.timed_local_run_trial if s.get("train_local_mode")
                               else _timed_trial.timed_run_trial)
        census = None
        try:
            with _reuse_actors(s.get("reuse_actors", False)):
                if s.get("census"):
                    from ._census import ProcessCensus

                    with ProcessCensus() as census:
                        outcome = run_search(s["space"], opts)
                else:
                    outcome = run_search(s["space"], opts)
            trials = [_trial_rows(r) for r in outcome.results]
        except Exception as e:  # noqa: BLE001 - one failed search must not hide the others' figures
            out["searches"].append({"name": s["name"], "start": t0, "wall_s": time.time() - t0, "trials": [],
                                    "exception": repr(e)[:2000]})
            continue
        out["searches"].append({"name": s["name"], "start": t0, "wall_s": time.time() - t0, "trials": trials,
                                **({"census": census.records} if census is not None else {})})
    if spec.get("references"):
        out["floor"].append(_in_ray("benchmarks.startup", "import_floor", 1))
    print(json.dumps(out, default=float))


def _in_ray(module: str, fn: str, *args: Any) -> Any:
    """``module.fn(*args)`` in a Ray worker of the running Ray (one CPU), so that its subprocesses are scheduled as
    the trials' workers are."""
    import ray

    def call() -> Any:
        import importlib

        return getattr(importlib.import_module(module), fn)(*args)

    return ray.get(ray.remote(num_cpus=1)(call).remote())


@contextlib.contextmanager
def _reuse_actors(on: bool):
    """While active, every ``ray.tune.TuneConfig`` the runner builds has ``reuse_actors=True`` (prototype of a
    runner option; the production runner leaves Tune's default)."""
    from ray import tune

    orig = tune.TuneConfig
    if on:
        tune.TuneConfig = lambda *a, **k: orig(*a, **{**k, "reuse_actors": True})
    try:
        yield
    finally:
        tune.TuneConfig = orig


def _trial_rows(r: Any) -> dict:
    """One Tune result: id and final metrics (the per-epoch times come from the timing files,
    :func:`trial_timings`: Tune's trial folder keeps the latest result only)."""
    m = r.metrics or {}
    return {"trial_id": m.get("trial_id"), "error": None if r.error is None else repr(r.error)[:500],
            "score": m.get("score"), "final": bool(m.get("final")), "epochs": m.get("epoch"),
            "fold_execution": m.get("fold_execution")}


def epoch_times(rows: list[dict], trials: list[dict], field: str = "reports") -> list[float]:
    """Epochs 2.. of every trial in ``trials`` (:func:`_trial_rows`) that ``rows`` (:func:`trial_timings`) timed:
    by default the intervals between its lead worker's consecutive epoch reports (s); ``field="in_report"`` the
    seconds spent inside ``ray.train.report``, ``"cpu"`` the worker process's CPU seconds, of the same epochs. The
    final report, which writes the artifacts, is not an epoch."""
    epochs = {t["trial_id"]: int(t["epochs"] or 0) for t in trials}
    return [x for r in rows if r["trial_id"] in epochs for x in r.get(field, [])[:max(0, epochs[r["trial_id"]] - 1)]]


def run_driver(spec: dict, timing_dir: Path, env: dict | None = None, timeout: float = 3600) -> dict:
    """:func:`drive` in a fresh Python (this checkout first on the path), trial timestamps to ``timing_dir``."""
    timing_dir.mkdir(parents=True, exist_ok=True)
    code = f"import json; from benchmarks.throughput import drive; drive(json.loads({json.dumps(spec)!r}))"
    return run_python(code, env={"BLEMORE_BENCH_TIMING_DIR": str(timing_dir), **(env or {})}, timeout=timeout,
                      cwd=timing_dir.parent)


def trial_timings(timing_dir: Path, experiment: str) -> list[dict]:
    """Per trial of ``experiment`` (by start): start-up (trial start -> first epoch reported by the lead worker),
    train set-up, imports, data, the gap since the previous trial ended, the lead worker's report intervals, its
    time inside ``ray.train.report`` and its process's CPU seconds per epoch, and the trial's absolute (start,
    first report, end) ``window``."""
    recs = [json.loads(p.read_text()) for p in timing_dir.glob("*.json")]
    trials = sorted((r for r in recs if "start" in r and r.get("experiment") == experiment), key=lambda r: r["start"])
    leads = {r["trial_id"]: r for r in recs if r.get("rank") == 0}
    rows, prev_end = [], None
    for tr in trials:
        w = leads.get(tr["trial_id"])
        if w is None or w["first_epoch"] is None:
            continue
        rows.append({"trial_id": tr["trial_id"], "first_report": w["first_epoch"] - tr["start"],
                     "train_setup": w["enter"] - tr["start"], "imports": w["imports"] - w["enter"],
                     "data": w["data"] - w["imports"], "gap": None if prev_end is None else tr["start"] - prev_end,
                     "reports": [b - a for a, b in zip(w["reports"], w["reports"][1:])],
                     # per epoch 2..: seconds inside ray.train.report, the worker process's CPU seconds (all threads)
                     "in_report": [b - a for a, b in zip(w.get("report_calls", []), w["reports"])][1:],
                     "cpu": [b - a for a, b in zip(w.get("cpu", []), w.get("cpu", [])[1:])],
                     "actor_pid": tr.get("pid"), "worker_pid": w.get("pid"),
                     "window": (tr["start"], w["first_epoch"], tr["end"])})  # absolute: start, first report, end
        prev_end = tr["end"]
    return rows


# ------------------------------------------------------------------------------------------ in-process reference
INPROC = r"""
import json, time, torch
import numpy as np
torch.set_num_threads({threads})
from search.space import load_space
from blemore_core.train import LocalExchange, fold_group, new_curves, prepare_data, run_lockstep
space = load_space({space!r})
cfg = space.resolve({{"train.lr": 1.0e-3}})
data = prepare_data(cfg, {root!r}, progress=False)
folds = sorted(set(np.asarray(data.folds).tolist()))
def loop(epochs):
    t, cpu = [time.perf_counter()], []
    group = fold_group(cfg, data, folds, "auto")
    curves = new_curves(cfg, data, folds)
    t.append(time.perf_counter())
    cpu.append(time.process_time())
    run_lockstep(group, curves, LocalExchange(), epochs,
                 lambda c, r: (t.append(time.perf_counter()), cpu.append(time.process_time())))
    return (group.execution, t[1] - t[0], [b - a for a, b in zip(t[1:], t[2:])],
            [b - a for a, b in zip(cpu, cpu[1:])])
loop(2)                                                  # warm: first-use costs of torch and the data
execution, setup, epochs, cpu = loop({epochs})
print(json.dumps({{"execution": execution, "setup_s": setup, "epoch_s": epochs, "epoch_cpu_s": cpu}}))
"""


def in_process(space: Path, root: Path, threads: int, epochs: int) -> dict:
    """Per-epoch wall seconds (``epoch_s``) and the process's CPU seconds (``epoch_cpu_s``, every thread) of the
    trial's loop (``run_lockstep`` over ``fold_group(..., "auto")``, as in ``cross_validate``) in one warm fresh
    process, ``threads`` torch threads; also the fold set-up time."""
    return run_python(INPROC.format(space=str(space), root=str(root), threads=threads, epochs=epochs),
                      timeout=3600)


def worker_threads(layout: str, num_cpus: int, n_folds: int = 5) -> int:
    """Torch threads of one Ray Train worker of a one-trial-at-a-time local search (the runner's default plan)."""
    from search.resources import plan_resources
    from search.trainable import torch_threads

    packed = layout == "packed"
    plan = plan_resources({"CPU": float(num_cpus)}, 1 if packed else n_folds, 1, None, 0.0, True,
                          folds_per_worker=n_folds if packed else 1)
    return torch_threads(plan.cpus_per_worker)


# ------------------------------------------------------------------------------------------ counted S3 store
class CountingS3:
    """A moto S3 server on 127.0.0.1 (one bucket) whose WSGI app is wrapped to count the request body bytes of
    every PUT and POST (single-part uploads, multipart parts and their XML), per request path.

    Use as a context manager; :attr:`env` holds the ``AWS_*`` variables of a client (the search forwards
    ``AWS_ENDPOINT_URL`` to its workers). Raises ImportError naming moto/boto3 when they are missing.
    """

    def __init__(self, bucket: str = BUCKET):
        self.bucket = bucket
        self.uploads: list[tuple[str, str, int]] = []  # (method, path, body bytes)
        self._lock = threading.Lock()
        self._server = None
        self.env: dict[str, str] = {}

    def _wrap(self, app: Any) -> Any:
        def counted(environ: dict, start_response: Any) -> Any:
            method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
            if method not in ("PUT", "POST"):
                return app(environ, start_response)
            body = environ["wsgi.input"] = _CountingInput(environ["wsgi.input"])
            out = app(environ, start_response)  # moto reads the whole body before it answers
            self._record(method, path, body.n)
            return out

        return counted

    def _record(self, method: str, path: str, n: int) -> None:
        with self._lock:
            self.uploads.append((method, path, n))

    def __enter__(self) -> CountingS3:
        import boto3
        from moto.server import ThreadedMotoServer

        outer = self

        class Server(ThreadedMotoServer):
            def _server_entry(self) -> None:
                from moto.moto_server.threaded_moto_server import (
                    DomainDispatcherApplication,
                    MotoRequestHandler,
                    create_backend_app,
                    make_server,
                )

                class Quiet(MotoRequestHandler):
                    def log_request(self, *a: Any, **k: Any) -> None:  # one line per request otherwise
                        pass

                app = outer._wrap(DomainDispatcherApplication(create_backend_app))
                self._server = make_server(self._ip_address, self._port, app, True, request_handler=Quiet)
                self._server_ready_event.set()
                self._server.serve_forever()

        self._server = Server(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        self.client = boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                                   aws_access_key_id="testing", aws_secret_access_key="testing")
        self.client.create_bucket(Bucket=self.bucket)
        self.uploads.clear()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.stop()

    def uploaded(self, prefix: str) -> dict[str, int]:
        """Body bytes uploaded under ``<bucket>/<prefix>``: ``total``, ``requests``, and by part of the search:
        ``oof_shards`` (``_train/oof/``), ``train_runs`` (the rest of ``_train/``: checkpoints and Ray Train's run
        files), ``tune_trials`` (Tune's trial folders), ``search`` (files directly in the search folder: manifest,
        Tune's experiment and searcher state)."""
        head = f"/{self.bucket}/{prefix.strip('/')}/"
        out = {"total": 0, "requests": 0, "oof_shards": 0, "train_runs": 0, "tune_trials": 0, "search": 0}
        with self._lock:
            rows = list(self.uploads)
        for _method, path, n in rows:
            if not path.startswith(head):
                continue
            rel = path[len(head):]
            kind = ("oof_shards" if rel.startswith("_train/oof/") else "train_runs" if rel.startswith("_train/")
                    else "tune_trials" if "/" in rel else "search")
            out[kind] += n
            out["total"] += n
            out["requests"] += 1
        return out

    def stored(self, prefix: str, contains: str = "") -> int:
        """Bytes of the objects now under ``<bucket>/<prefix>`` whose key contains ``contains``."""
        total = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=prefix.strip("/") + "/"):
            total += sum(o["Size"] for o in page.get("Contents", []) if contains in o["Key"])
        return total


class _CountingInput:
    """``wsgi.input`` that counts the body bytes the app reads."""

    def __init__(self, raw: Any):
        self._raw, self.n = raw, 0

    def read(self, *args: Any) -> bytes:
        b = self._raw.read(*args)
        self.n += len(b)
        return b

    def readline(self, *args: Any) -> bytes:
        b = self._raw.readline(*args)
        self.n += len(b)
        return b

    def __iter__(self):
        for b in self._raw:
            self.n += len(b)
            yield b


# ------------------------------------------------------------------------------------------ the measurements
def layout_searches(tmp: Path, root: Path, sizes: dict) -> list[dict]:
    """The (a)-(c) searches: every model of ``sizes["runs"]`` in both layouts (local storage)."""
    out = []
    for model, (trials, epochs) in sizes["runs"].items():
        for layout in LAYOUTS:
            name = f"tp_{model}_{layout}"
            space = tmp / f"{name}.yaml"
            space.write_text(space_text(name, model, root, trials, epochs))
            out.append({"space": str(space), "name": name, "layout": layout, "storage": str(tmp / "rr"),
                        "model": model, "trials": trials, "epochs": epochs})
    return out


def storage_searches(tmp: Path, root: Path, lengths: tuple[int, ...]) -> list[dict]:
    """The (d) searches: one packed trial of the baseline per length, on the counted S3 store."""
    out = []
    for e in lengths:
        name = f"tp_s3_{e}"
        space = tmp / f"{name}.yaml"
        space.write_text(space_text(name, "baseline", root, 1, e))
        out.append({"space": str(space), "name": name, "layout": "packed", "storage": f"s3://{BUCKET}/searches",
                    "epochs": e})
    return out


def census_search(tmp: Path, root: Path, trials: int, epochs: int) -> dict:
    """The (h) search: the packed baseline again, with the process census sampling the machine (its own search, so
    that the sampler's CPU does not touch the measured ones)."""
    name = "tp_census_baseline_packed"
    space = tmp / f"{name}.yaml"
    space.write_text(space_text(name, "baseline", root, trials, epochs))
    return {"space": str(space), "name": name, "layout": "packed", "storage": str(tmp / "rr"), "census": True,
            "model": "baseline", "trials": trials, "epochs": epochs}


def record_census(res: Result, search: dict, driver: dict, timing: Path) -> None:
    """(h): per trial of the census search, the processes it started and every process kind's CPU seconds while it
    started (trial start -> first epoch reported) and the cores each kind used while it trained (first report ->
    trial end); figures ``census/*``, per-kind means in ``extra["census"]`` and one note that says it in words."""
    from ._census import DRIVER, cpu_in, started_in

    got = next(s for s in driver["searches"] if s["name"] == search["name"])
    if "census" not in got:
        res.notes.append(f"census: the search {search['name']} recorded no census ({got.get('exception', '')})")
        return
    records, rows = got["census"], trial_timings(timing, search["name"])
    started, start_cpu, epoch_cores = [], [], []
    for r in rows:
        t0, t1, t2 = r["window"]
        started.append(started_in(records, t0, t1))
        start_cpu.append(cpu_in(records, t0, t1))
        if t2 - t1 > 1.0:
            epoch_cores.append({k: v / (t2 - t1) for k, v in cpu_in(records, t1, t2).items()})
    if not rows:
        res.notes.append(f"census: no timed trial in {search['name']}")
        return
    res.figure("census/processes_started_per_trial", [sum(c.values()) for c in started], "processes",
               note="processes created between a packed trial's start and its first epoch report (sampled)")
    res.figure("census/start_up_cpu_s", [sum(c.values()) for c in start_cpu], "CPU s",
               note="CPU seconds of every process between a packed trial's start and its first epoch report")
    if epoch_cores:
        res.figure("census/epochs_worker_cores", [c.get("RayTrainWorker", 0.0) for c in epoch_cores], "cores",
                   note="cores the trial's Ray Train worker used while its epochs ran (first report -> trial end)")
        res.figure("census/epochs_other_cores",
                   [sum(v for k, v in c.items() if k != "RayTrainWorker") for c in epoch_cores], "cores",
                   note="cores every other process used meanwhile (driver incl. the census sampler, Train "
                        "controller, Ray's own processes)")

    def mean(dicts: list[dict]) -> dict[str, float]:
        keys = sorted({k for d in dicts for k in d})
        return {k: round(statistics.mean(d.get(k, 0) for d in dicts), 3) for k in keys}

    by_kind = {"started_per_trial": mean(started), "start_up_cpu_s": mean(start_cpu),
               "epochs_cores": mean(epoch_cores) if epoch_cores else {}}
    res.extra["census"] = {"search": search["name"], "trials": len(rows), "epochs": search["epochs"], **by_kind}
    top = sorted(by_kind["start_up_cpu_s"].items(), key=lambda kv: -kv[1])[:6]
    others = sorted(((k, v) for k, v in by_kind["epochs_cores"].items() if k != "RayTrainWorker"),
                    key=lambda kv: -kv[1])[:4]
    res.notes.append(
        "census (measured, same run): a packed trial starts "
        f"{statistics.mean(sum(c.values()) for c in started):.1f} processes before its first epoch "
        f"({', '.join(f'{k} x{v:g}' for k, v in by_kind['started_per_trial'].items())}); its start-up took "
        f"{statistics.mean(sum(c.values()) for c in start_cpu):.1f} CPU s of the machine "
        f"({', '.join(f'{k} {v:.1f}' for k, v in top)})"
        + (f"; while it trained, its worker used {by_kind['epochs_cores'].get('RayTrainWorker', 0):.2f} cores and "
           f"the others {sum(v for k, v in by_kind['epochs_cores'].items() if k != 'RayTrainWorker'):.2f} "
           f"({', '.join(f'{k} {v:.2f}' for k, v in others)}; {DRIVER} includes the sampler)"
           if by_kind["epochs_cores"] else ""))


def warm_searches(tmp: Path, root: Path, trials: int, epochs: int) -> list[dict]:
    """The (g) searches run in the main driver: the packed baseline with Tune's ``reuse_actors``, and the prototype
    :func:`benchmarks._timed_trial.timed_local_run_trial` (Ray Train local mode) with ``reuse_actors`` (the default
    is the (a) search of the packed baseline)."""
    out = []
    for variant in ("reuse_actors", "train_local_mode_reuse_actors"):
        name = f"tp_warm_{variant}"
        space = tmp / f"{name}.yaml"
        space.write_text(space_text(name, "baseline", root, trials, epochs))
        out.append({"space": str(space), "name": name, "layout": "packed", "storage": str(tmp / "rr"),
                    "reuse_actors": True, "train_local_mode": variant.startswith("train_local"),
                    "variant": variant})
    return out


def record_layouts(res: Result, searches: list[dict], driver: dict, timing: Path, refs: dict, floor: float,
                   first_epoch: dict) -> None:
    """Figures and targets (a)-(c) from the driver's output, the timing files and the in-process references."""
    by_name = {s["name"]: s for s in driver["searches"]}
    per_hour: dict[tuple[str, str], float] = {}
    for s in searches:
        got, key = by_name[s["name"]], (s["model"], s["layout"])
        tag = f"{s['model']}/{s['layout']}"
        ok = [t for t in got["trials"] if t["error"] is None]
        per_hour[key] = 3600 * len(ok) / got["wall_s"]
        res.figure(f"{tag}/trials_per_hour", per_hour[key], "trials/h",
                   note=f"{len(ok)} of {s['trials']} trials x {s['epochs']} epochs in {got['wall_s']:.0f} s "
                        "(run_search, Ray already up)")
        rows = trial_timings(timing, s["name"])
        if rows:
            ref_first = first_epoch[s["model"]]
            res.figure(f"{tag}/start_up_s", [r["first_report"] - ref_first for r in rows], "s",
                       note="trial start -> first epoch reported, less the first epoch in one warm process "
                            f"({ref_first:.2f} s)")
            res.figure(f"{tag}/first_report_s", [r["first_report"] for r in rows], "s",
                       note="trial start -> first epoch reported (raw)")
            for k in ("train_setup", "imports", "data"):
                res.figure(f"{tag}/{k}_s", [r[k] for r in rows], "s", note="lead worker, per trial")
        execs = sorted({t["fold_execution"] for t in ok if t["fold_execution"]})
        iters = epoch_times(rows, ok)
        ref = refs[(s["model"], s["layout"])]
        if iters:
            over = [x - statistics.median(ref["epoch_s"][1:]) for x in iters]
            res.figure(f"{tag}/epoch_s", iters, "s", note="between the lead worker's epoch reports, epochs >= 2, "
                       "all trials; "
                       f"fold_execution {','.join(execs) or '?'}")
            res.figure(f"{tag}/epoch_in_process_s", ref["epoch_s"][1:], "s",
                       note=f"run_lockstep in one warm process, {ref['threads']} thread(s), {ref['execution']}")
            res.figure(f"{tag}/epoch_overhead_ms", [1000 * x for x in over], "ms",
                       note="trial epoch - median in-process epoch")
            in_report, cpu = epoch_times(rows, ok, "in_report"), epoch_times(rows, ok, "cpu")
            if in_report:
                res.figure(f"{tag}/epoch_in_report_ms", [1000 * x for x in in_report], "ms",
                           note="inside ray.train.report, lead worker, same epochs (Ray Train's barrier and queue)")
            if cpu:
                res.figure(f"{tag}/epoch_cpu_s", cpu, "CPU s",
                           note="the lead worker process's CPU seconds (every thread) per epoch, same epochs")
            if ref.get("epoch_cpu_s"):
                res.figure(f"{tag}/epoch_cpu_in_process_s", ref["epoch_cpu_s"][1:], "CPU s",
                           note="the in-process reference's CPU seconds per epoch")
        res.extra.setdefault("fold_execution", {})[tag] = {"trials": execs, "in_process": ref["execution"]}
    for model in {s["model"] for s in searches}:
        tag = f"{model}/packed"
        if f"{tag}/start_up_s" in res.figures:
            med = res.figures[f"{tag}/start_up_s"]["median"]
            res.target(f"start_up_over_floor/{model}/packed", med / floor, "<=", 1.5,
                       f"fresh-import floor of one worker, same run ({floor:.2f} s)")
        if f"{tag}/epoch_overhead_ms" in res.figures:
            res.target(f"epoch_overhead_ms/{model}/packed", res.figures[f"{tag}/epoch_overhead_ms"]["median"], "<=",
                       25.0, "the same epoch of cross_validate's loop in one warm process, same threads/execution")
        if (model, "workers") in per_hour:
            res.figure(f"{model}/trials_per_hour_packed_over_workers",
                       per_hour[(model, "packed")] / per_hour[(model, "workers")], "x")


def record_storage(res: Result, searches: list[dict], s3: CountingS3, driver: dict) -> None:
    """Figures and targets (d): per length, the bytes the one-trial search uploaded, by part, vs its final
    checkpoint directory (the trial's final artifacts: the model directory and ``oof_epochs.npz``)."""
    by_name = {s["name"]: s for s in driver["searches"]}
    rows = []
    for s in searches:
        prefix = f"searches/{s['name']}"
        up = s3.uploaded(prefix)
        final = s3.stored(f"{prefix}/_train", "/checkpoint_")
        trial = up["oof_shards"] + up["train_runs"] + up["tune_trials"]
        ok = [t for t in by_name[s["name"]]["trials"] if t["error"] is None]
        e = s["epochs"]
        rows.append({"epochs": e, "uploaded": up, "final_artifacts": final, "trial_epochs": [t["epochs"] for t in ok]})
        res.figure(f"storage/epochs={e}/uploaded_trial_bytes", trial, "bytes",
                   note="the trial's uploads: OOF shards + its Ray Train run (checkpoint) + its Tune folder")
        res.figure(f"storage/epochs={e}/uploaded_search_bytes", up["total"], "bytes",
                   note="everything the one-trial search uploaded (adds manifest, Tune experiment/searcher state)")
        res.figure(f"storage/epochs={e}/final_artifacts_bytes", final, "bytes", note="final checkpoint directory")
        if final > 0:
            res.target(f"storage/epochs={e}/uploaded_over_final", trial / final, "<=", 2.0,
                       "the trial's final artifacts (final checkpoint directory on the store)")
        else:
            res.target(f"storage/epochs={e}/uploaded_over_final", None, "<=", 2.0, "final checkpoint directory",
                       not_measured="the trial left no final checkpoint")
    res.extra["storage"] = rows


def warm_preload(tmp: Path, root: Path, trials: int, epochs: int, num_cpus: int) -> tuple[dict, list[dict]]:
    """(g): the packed baseline search with Ray's prestarted workers preloading :data:`PRELOAD` (a fresh Ray)."""
    name = "tp_warm_preload"
    space = tmp / f"{name}.yaml"
    space.write_text(space_text(name, "baseline", root, trials, epochs))
    spec = {"num_cpus": num_cpus, "tracking_uri": f"sqlite:///{tmp}/mlflow_preload.db",
            "searches": [{"space": str(space), "name": name, "layout": "packed", "storage": str(tmp / "rr_pre")}]}
    timing = tmp / "timing_preload"
    drv = run_driver(spec, timing, env={"RAY_preload_python_modules": PRELOAD, "RAY_enable_worker_prestart": "1"})
    return drv, trial_timings(timing, name)


def record_warm(res: Result, variants: dict[str, list[dict]], floor: float, first_epoch: float) -> None:
    """Figures (g) per variant: start-up per trial (less the first epoch), the lead worker's set-up and imports,
    the gap between trials, and whether the trial actor / worker processes were reused (pids)."""
    med = {}
    for v, rows in variants.items():
        if not rows:
            res.notes.append(f"warm trials, {v}: no trial timings recorded")
            continue
        res.figure(f"warm/{v}/start_up_s", [r["first_report"] - first_epoch for r in rows], "s",
                   note="trial start -> first epoch reported, less the first epoch in one warm process")
        res.figure(f"warm/{v}/train_setup_s", [r["train_setup"] for r in rows], "s")
        res.figure(f"warm/{v}/imports_s", [r["imports"] for r in rows], "s")
        gaps = [r["gap"] for r in rows if r["gap"] is not None]
        if gaps:
            res.figure(f"warm/{v}/between_trials_s", gaps, "s", note="previous trial function end -> this start")
        res.extra.setdefault("warm_pids", {})[v] = {"trial_actor": [r["actor_pid"] for r in rows],
                                                     "worker": [r["worker_pid"] for r in rows]}
        med[v] = statistics.median(r["first_report"] - first_epoch for r in rows)
        if len(rows) > 1:  # a reused actor serves the trials after the first
            res.figure(f"warm/{v}/start_up_after_first_trial_s", [r["first_report"] - first_epoch for r in rows[1:]],
                       "s", note="trials 2.. of the search")
    if "default" in med:
        for v, m in med.items():
            if v != "default":
                res.figure(f"warm/{v}/start_up_over_default", m / med["default"], "x")
    res.extra["warm_floor_s"] = floor


# ------------------------------------------------------------------------------------------ (e) the main job
def main_job_key() -> dict:
    """What a recorded main-job run must match to be reused: the space (its parsed content: a comment edit does not
    void the record), the generator, the budget."""
    import hashlib

    import yaml

    from blemore_core.data.synth import GENERATOR_VERSION

    content = json.dumps(yaml.safe_load(MAIN_JOB_SPACE.read_text()), sort_keys=True, default=str)
    return {"space_sha256": hashlib.sha256(content.encode()).hexdigest()[:16],
            "generator_version": GENERATOR_VERSION, "num_samples": MAIN_JOB_SAMPLES, "seed": 0}


def run_main_job(out: Path = DEFAULT_OUT) -> dict:
    """Run the README main job (reduced budget) in both layouts, each in a fresh Python with its own Ray, and
    write the record to ``<out>/throughput_main_job.json``; returns it."""
    from ._common import versions

    runs = {}
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench_mainjob_") as d:
        tmp = Path(d)
        for layout in LAYOUTS:
            name = f"main_{layout}"
            spec = {"num_cpus": min(2, os.cpu_count() or 1), "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
                    "searches": [{"space": str(MAIN_JOB_SPACE), "name": name, "layout": layout,
                                  "storage": str(tmp / "rr"), "num_samples": MAIN_JOB_SAMPLES}]}
            drv = run_driver(spec, tmp / f"timing_{layout}", timeout=2 * 3600)
            s = drv["searches"][0]
            wall = drv["ray_start_s"] + s["wall_s"]
            scores = [t["score"] for t in s["trials"] if t["error"] is None and t["score"] is not None]
            runs[layout] = {"wall_s": wall, "ray_start_s": drv["ray_start_s"], "trials": s["trials"],
                            "trials_done": len(scores), "best_score": max(scores) if scores else None,
                            "trials_per_hour": 3600 * len(scores) / wall}
            load.append(os.getloadavg())
    rec = {"key": main_job_key(), "recorded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "git": versions().get("blemore_git"), "loadavg": load, "num_cpus": min(2, os.cpu_count() or 1),
           "budget": f"spaces/rank_aware.yaml with num_samples {MAIN_JOB_SAMPLES} (its own: 8), same seed 0, "
                     "its ASHA scheduler, max_epochs and time_budget_s", "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / MAIN_JOB_RECORD).write_text(json.dumps(rec, indent=2, default=float) + "\n")
    return rec


def record_main_job(res: Result, out: Path) -> None:
    """Targets (e) from the recorded main-job run (this checkout's, else ``<out>``'s) when its key matches."""
    rec = None
    for f in dict.fromkeys([DEFAULT_OUT / MAIN_JOB_RECORD, out / MAIN_JOB_RECORD]):
        if f.exists():
            doc = json.loads(f.read_text())
            if doc.get("key") == main_job_key():
                rec = doc
    ref = "the same job with --fold-layout workers (same space, seed, budget)"
    if rec is None:
        why = ("no record for this space/generator: run `python -m benchmarks.throughput main-job` (about 10-20 "
               "min on 2 cores) first")
        res.target("main_job/trials_per_hour_packed_over_workers", None, ">=", 1.2, ref, not_measured=why)
        res.target("main_job/best_score_abs_diff", None, "<=", 0.01, ref, not_measured=why)
        res.notes.append(f"main job: {why}")
        return
    p, w = rec["runs"]["packed"], rec["runs"]["workers"]
    for layout, r in rec["runs"].items():
        res.figure(f"main_job/{layout}/trials_per_hour", r["trials_per_hour"], "trials/h",
                   note=f"{r['trials_done']} trials in {r['wall_s']:.0f} s incl. Ray start (recorded "
                        f"{rec['recorded_utc']}, git {rec['git']}, load {rec['loadavg']})")
        if r["best_score"] is not None:
            res.figure(f"main_job/{layout}/best_score", r["best_score"], "Score")
    res.target("main_job/trials_per_hour_packed_over_workers", p["trials_per_hour"] / w["trials_per_hour"], ">=",
               1.2, ref)
    if p["best_score"] is not None and w["best_score"] is not None:
        res.target("main_job/best_score_abs_diff", abs(p["best_score"] - w["best_score"]), "<=", 0.01, ref)
    res.extra["main_job"] = {"key": rec["key"], "budget": rec["budget"], "recorded_utc": rec["recorded_utc"]}
    same = same_trial_diffs(p["trials"], w["trials"])
    if same:  # same seed: the n-th trial has the same config in both layouts
        res.figure("main_job/same_trial_score_abs_diff", same, "Score",
                   note="trials that ran the same epochs in both layouts (n-th trial vs n-th trial)")
    if p["trials_done"] != w["trials_done"]:
        res.notes.append(f"main job: packed finished {p['trials_done']} trials, workers {w['trials_done']} within the "
                         "space's time_budget_s; the best Score compares different sets of trials "
                         f"(same-trial Score differences: {same})")


def same_trial_diffs(a: list[dict], b: list[dict]) -> list[float]:
    """|Score| differences of the trials at the same position in two searches that ran the same epochs."""
    return [abs(x["score"] - y["score"]) for x, y in zip(a, b)
            if x["score"] is not None and y["score"] is not None and x["epochs"] == y["epochs"]]


# ------------------------------------------------------------------------------------------ (f) the GPU target
GPU_REF = f"today's {GPU_TODAY_TRIALS_PER_HOUR:g} ten-epoch rank_aware trials/h per GPU (one H100, gpu_packing_search.json)"


def gpu_space(tmp: Path, root: Path, trials: int, epochs: int, concurrent: int) -> Path:
    """spaces/rank_aware.yaml made a fixed-length GPU search: ``epochs``-epoch trials (patience off), no
    scheduler, ``trials`` trials, ``concurrent`` at once, on ``root``."""
    import yaml

    doc = yaml.safe_load(MAIN_JOB_SPACE.read_text())
    doc["name"] = "tp_gpu"
    doc["data"]["dir"] = str(root)
    doc["fixed"]["train.patience"] = 0
    doc["scheduler"] = "none"
    doc["budget"] = {"num_samples": trials, "max_concurrent": concurrent, "max_epochs": epochs}
    path = tmp / "tp_gpu.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class UtilisationSampler(threading.Thread):
    """Samples ``nvidia-smi --query-gpu=utilization.gpu`` (percent, first GPU) every ``period`` seconds."""

    def __init__(self, period: float = 1.0):
        super().__init__(daemon=True)
        self.period, self.samples, self._stop_event = period, [], threading.Event()

    def run(self) -> None:
        import subprocess

        while not self._stop_event.is_set():
            try:
                r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                   capture_output=True, text=True, timeout=10)
                self.samples.append((time.time(), float(r.stdout.strip().splitlines()[0])))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self._stop_event.wait(self.period)

    def stop(self, start: float, end: float) -> list[float]:
        """Stop sampling; the samples taken between ``start`` and ``end`` (``time.time()``)."""
        self._stop_event.set()
        self.join(timeout=15)
        return [u for t, u in self.samples if start <= t <= end]


def record_gpu(res: Result, quick: bool, tmp: Path) -> None:
    """(f): without CUDA, "not measured: no GPU"; with CUDA, a packed search of ten-epoch rank_aware trials at
    ``--gpus-per-trial 0.1`` (ten trials per GPU) with the GPU utilisation sampled every second."""
    import torch

    if not torch.cuda.is_available():
        for t in ("gpu/trials_per_hour_per_gpu", "gpu/utilisation_percent"):
            res.target(t, None, ">=", 10 * GPU_TODAY_TRIALS_PER_HOUR if "trials" in t else 50.0, GPU_REF,
                       not_measured="no GPU")
        res.notes.append("GPU target not measured: no CUDA device here; run `python -m benchmarks --only "
                         "throughput,gpu` on a CUDA machine")
        return
    trials, epochs = (10, 2) if quick else (40, 10)
    space = gpu_space(tmp, release("demo"), trials, epochs, concurrent=10)
    spec = {"num_cpus": os.cpu_count() or 1, "tracking_uri": f"sqlite:///{tmp}/mlflow_gpu.db",
            "searches": [{"space": str(space), "name": "tp_gpu", "layout": "packed", "storage": str(tmp / "rr_gpu"),
                          "gpus_per_trial": 0.1, "max_concurrent": 10}]}
    sampler = UtilisationSampler()
    sampler.start()
    try:
        drv = run_driver(spec, tmp / "timing_gpu", timeout=3 * 3600)
    except BaseException:
        sampler.stop(0.0, 0.0)
        raise
    s = drv["searches"][0]
    util = sampler.stop(s["start"], s["start"] + s["wall_s"])
    done = [t for t in s["trials"] if t["error"] is None]
    per_hour = 3600 * len(done) / s["wall_s"] / max(1, torch.cuda.device_count())
    res.figure("gpu/trials_per_hour_per_gpu", per_hour, "trials/h",
               note=f"{len(done)} of {trials} trials x {epochs} epochs in {s['wall_s']:.0f} s, 10 at once per GPU")
    res.target("gpu/trials_per_hour_per_gpu", per_hour, ">=", 10 * GPU_TODAY_TRIALS_PER_HOUR, GPU_REF)
    if util:
        res.figure("gpu/utilisation_percent", util, "%", note="nvidia-smi utilization.gpu, 1 s samples, GPU 0")
        res.target("gpu/utilisation_percent", statistics.mean(util), ">=", 50.0, "mean over the search")
    else:
        res.target("gpu/utilisation_percent", None, ">=", 50.0, "mean over the search",
                   not_measured="nvidia-smi gave no samples")
    res.extra["gpu_fold_execution"] = sorted({t["fold_execution"] for t in done if t["fold_execution"]})


# ------------------------------------------------------------------------------------------ (i) contention
SPIN = r"""
import sys, time
duty = float(sys.argv[1])
while True:  # busy for duty x 10 ms, asleep for the rest of each 10 ms period
    t = time.perf_counter()
    while time.perf_counter() - t < 0.01 * duty:
        pass
    time.sleep(0.01 * (1.0 - duty))
"""


@contextlib.contextmanager
def cpu_load(cores: float, processes: int = 2):
    """A synthetic CPU load of about ``cores`` cores while active: ``processes`` Python processes, each busy for
    ``cores / processes`` of every 10 ms (at most all of it). Yields a :class:`_Load` (its ``procs``: the
    ``subprocess.Popen`` of each); on exit, also by an exception, every process is killed and waited for, and
    ``cpu_s`` / ``wall_s`` hold the CPU seconds they used and the seconds the load was on."""
    import subprocess
    import sys

    import psutil

    duty = min(1.0, max(0.0, cores / processes))
    procs = [subprocess.Popen([sys.executable, "-c", SPIN, str(duty)]) for _ in range(processes if duty else 0)]
    load = _Load(procs, time.perf_counter())
    try:
        yield load
    finally:
        load.wall_s = time.perf_counter() - load.t0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(p.pid).cpu_times()
                load.cpu_s += t.user + t.system
            p.kill()
        for p in procs:
            p.wait()


class _Load:
    """What :func:`cpu_load` started and, once it ended, the CPU seconds its processes used over its wall time."""

    def __init__(self, procs: list, t0: float):
        self.procs, self.t0, self.cpu_s, self.wall_s = procs, t0, 0.0, 0.0


def beside_load(space: Path, root: Path, threads: int, epochs: int, cores: float) -> dict:
    """The in-process reference (:func:`in_process`) alone, then beside :func:`cpu_load` of ``cores`` cores.
    Returns ``{"alone": ..., "load": ..., "cores": cores, "load_cores_used": measured}``."""
    alone = in_process(space, root, threads, epochs)
    with cpu_load(cores) as load:
        loaded = in_process(space, root, threads, epochs)
    used = load.cpu_s / load.wall_s if load.wall_s else 0.0
    return {"alone": alone, "load": loaded, "cores": cores, "load_cores_used": used}


def record_contention(res: Result, model: str, measured: dict) -> None:
    """(i) figures from :func:`beside_load`'s ``measured`` and the packed trial's epochs (``<model>/packed/epoch_s``,
    already recorded): ``contention/*`` and ``<model>/packed/epoch_overhead_beyond_load_ms``, with a note."""
    alone, loaded = measured["alone"], measured["load"]
    res.figure("contention/load_cores", measured["cores"], "cores",
               note="the cores the search's other processes used while the census trial trained (census, median)")
    res.figure("contention/load_cores_used", measured["load_cores_used"], "cores",
               note="what the synthetic load's processes used (their CPU seconds over their wall time)")
    res.figure("contention/epoch_alone_s", alone["epoch_s"][1:], "s", note=f"in-process {model}, alone")
    res.figure("contention/epoch_beside_load_s", loaded["epoch_s"][1:], "s",
               note=f"in-process {model}, beside the synthetic load")
    res.figure("contention/epoch_cpu_alone_s", alone["epoch_cpu_s"][1:], "CPU s", note="alone")
    res.figure("contention/epoch_cpu_beside_load_s", loaded["epoch_cpu_s"][1:], "CPU s", note="beside the load")
    a, b = statistics.median(alone["epoch_s"][1:]), statistics.median(loaded["epoch_s"][1:])
    res.figure("contention/epoch_slowdown_ms", 1000 * (b - a), "ms",
               note="median epoch beside the load - median epoch alone: what the others' cores cost the plain loop")
    tag = f"{model}/packed"
    if f"{tag}/epoch_s" not in res.figures:
        res.notes.append(f"contention: no packed {model} epochs recorded to compare with")
        return
    trial = res.figures[f"{tag}/epoch_s"]["samples"]
    res.figure(f"{tag}/epoch_overhead_beyond_load_ms", [1000 * (x - b) for x in trial], "ms",
               note="trial epoch - median in-process epoch beside the synthetic load (contention/*): the trial's "
                    "own per-epoch cost, what the other processes' cores do not explain")
    ca, cb = statistics.median(alone["epoch_cpu_s"][1:]), statistics.median(loaded["epoch_cpu_s"][1:])
    over = res.figures.get(f"{tag}/epoch_overhead_ms", {}).get("median", float("nan"))
    res.notes.append(
        f"contention (measured, same run): the plain {model} loop beside a load of {measured['cores']:.2f} cores "
        f"(the search's other processes, census; the load used {measured['load_cores_used']:.2f}) runs an epoch "
        f"in {b:.3f} s vs {a:.3f} s alone ({1000 * (b - a):.0f} ms slower) and its CPU per epoch grows from "
        f"{ca:.2f} to {cb:.2f} s (its threads spin while they wait); the packed trial's per-epoch overhead "
        f"{over:.0f} ms is {res.figures[f'{tag}/epoch_overhead_beyond_load_ms']['median']:.0f} ms beyond what that "
        "load explains")


def contention_part(res: Result, search: dict, root: Path, cpus: int) -> None:
    """(i): the census search's model alone and beside a load of the census's other-process cores."""
    if "census/epochs_other_cores" not in res.figures:
        res.notes.append("contention: not measured (the census recorded no other-process cores)")
        return
    cores = res.figures["census/epochs_other_cores"]["median"]
    measured = beside_load(Path(search["space"]), root, worker_threads("packed", cpus), min(search["epochs"], 8),
                           cores)
    res.extra["contention"] = {"model": search["model"], **measured}
    record_contention(res, search["model"], measured)


# ------------------------------------------------------------------------------------------ the benchmark
def run(quick: bool, out: Path) -> Result:
    from .startup import import_floor

    res = Result("throughput", quick)
    sizes = QUICK if quick else FULL
    cpus = min(2, os.cpu_count() or 1)
    res.inputs = {"profile": sizes["profile"], "models": {m: MODELS[m] for m in sizes["runs"]},
                  "runs": {m: {"trials": t, "epochs": e} for m, (t, e) in sizes["runs"].items()},
                  "layouts": list(LAYOUTS), "scheduler": "none", "seed": 0, "num_cpus": cpus, "max_concurrent": 1,
                  "storage_lengths": list(sizes["lengths"]), "warm": sizes["warm"],
                  "loadavg_start": list(os.getloadavg()),
                  "reference": "in-process run_lockstep / fresh-import floor / final artifacts, same run"}
    root = release(sizes["profile"])
    floor = [import_floor(1)]
    with tempfile.TemporaryDirectory(prefix="bench_throughput_") as d:
        tmp = Path(d)
        layouts = layout_searches(tmp, root, sizes)
        storage = storage_searches(tmp, root, sizes["lengths"])
        warm = warm_searches(tmp, root, *sizes["warm"]) if sizes["warm"] else []
        census = census_search(tmp, root, *sizes["census"])
        with CountingS3() as s3:
            spec = {"num_cpus": cpus, "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
                    "searches": layouts + storage + warm + [census],
                    "references": reference_specs(layouts, root, cpus)}
            drv = run_driver(spec, tmp / "timing", env=s3.env, timeout=3 * 3600)
            _guarded(res, "storage", record_storage, res, storage, s3, drv)
        refs, first = references(layouts, cpus, drv["references"])
        res.figure("floor/imports_one_process_in_ray_s", drv["floor"], "s",
                   note="one fresh Python importing what a worker imports, started from a Ray worker (scheduled as "
                        "the trials' processes), before and after the searches")
        floor += [import_floor(1) for _ in range(sizes["floor_repeats"] - 1)]
        res.figure("floor/imports_one_process_s", floor, "s",
                   note="one fresh Python importing ray, ray.train, torch, blemore_core.train, search.trainable, "
                        "started from the benchmark process")
        floor = drv["floor"]  # the targets' floor: measured as the trials' processes are scheduled
        res.figure("ray_start_s", drv["ray_start_s"], "s", note="the driver's local Ray (shared by its searches)")
        for s in drv["searches"]:
            if s.get("exception"):
                res.notes.append(f"search {s['name']} failed: {s['exception']}")
        _guarded(res, "layouts", record_layouts, res, layouts, drv, tmp / "timing", refs, statistics.median(floor),
                 first)
        _guarded(res, "census", record_census, res, census, drv, tmp / "timing")
        _guarded(res, "contention", contention_part, res, census, root, cpus)
        partial = "partial record: the warm-trial, main-job and GPU parts were still running"
        res.notes.append(partial)
        res.write(out)  # a long run cut short keeps (a)-(d); replaced by the complete record below
        res.notes.remove(partial)
        if warm:
            _guarded(res, "warm trials", _warm_part, res, tmp, root, sizes["warm"], cpus, warm, statistics.median(floor),
                     first["baseline"])
        else:
            res.notes.append("--quick: warm-trial options (reuse_actors, Train local mode, preloaded prestarted "
                             "workers) not run")
        _guarded(res, "main job", record_main_job, res, out)
        _guarded(res, "GPU", record_gpu, res, quick, tmp)
    res.inputs["loadavg_end"] = list(os.getloadavg())
    return res


def _guarded(res: Result, part: str, fn: Any, *args: Any) -> None:
    """``fn(*args)``; an exception becomes a note naming the part (the other parts' figures are kept)."""
    import traceback

    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        res.notes.append(f"{part}: failed: {e!r}: {traceback.format_exc()[-1500:]}")


def _warm_part(res: Result, tmp: Path, root: Path, warm_size: tuple[int, int], cpus: int, warm: list[dict],
               floor: float, first_epoch: float) -> None:
    """(g): the default (the (a) packed baseline search), the main driver's warm searches, and the preload run."""
    variants = {"default": trial_timings(tmp / "timing", "tp_baseline_packed")}
    variants.update({w["variant"]: trial_timings(tmp / "timing", w["name"]) for w in warm})
    try:
        _, variants["preload_prestart"] = warm_preload(tmp, root, *warm_size, cpus)
    except Exception as e:  # noqa: BLE001 - the other variants still count
        res.notes.append(f"warm trials, preload_prestart: failed: {e!r}"[:2000])
    record_warm(res, variants, floor, first_epoch)


def reference_specs(searches: list[dict], root: Path, cpus: int) -> list[dict]:
    """The in-process references the driver runs (one per model and thread count, at most 8 epochs)."""
    out = {}
    for s in searches:
        threads = worker_threads(s["layout"], cpus)
        key = f"{s['model']}/{threads}"
        out.setdefault(key, {"key": key, "space": s["space"], "root": str(root), "threads": threads,
                             "epochs": min(s["epochs"], 8)})
    return list(out.values())


def references(searches: list[dict], cpus: int, measured: dict) -> tuple[dict, dict]:
    """In-process references per (model, layout) from the driver's ``references`` and each model's first epoch in
    a warm process (s)."""
    refs, first = {}, {}
    for s in searches:
        threads = worker_threads(s["layout"], cpus)
        ref = {**measured[f"{s['model']}/{threads}"], "threads": threads}
        refs[(s["model"], s["layout"])] = ref
        first.setdefault(s["model"], ref["epoch_s"][0])
    return refs, first


def run_storage(out: Path = DEFAULT_OUT, lengths: tuple[int, ...] = FULL["lengths"]) -> dict:
    """Part (d) alone (storage traffic per length, on the counted S3 store), merged into ``<out>/throughput.json``:
    its storage figures, targets and details are replaced and a note says when, on which load and commit. The
    other parts' figures are kept as they were recorded. Returns the new storage details."""
    import subprocess

    path = out / "throughput.json"
    old = json.loads(path.read_text()) if path.exists() else Result("throughput", False).to_dict()
    res = Result("throughput", False)
    load0 = list(os.getloadavg())
    root = release(FULL["profile"])
    with tempfile.TemporaryDirectory(prefix="bench_throughput_storage_") as d:
        tmp = Path(d)
        storage = storage_searches(tmp, root, lengths)
        with CountingS3() as s3:
            spec = {"num_cpus": min(2, os.cpu_count() or 1), "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
                    "searches": storage}
            drv = run_driver(spec, tmp / "timing", env=s3.env, timeout=3 * 3600)
            record_storage(res, storage, s3, drv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    old["figures"] = {k: v for k, v in old.get("figures", {}).items() if not k.startswith("storage/")} | res.figures
    old["targets"] = {k: v for k, v in old.get("targets", {}).items() if not k.startswith("storage/")} | res.targets
    old.setdefault("details", {})["storage"] = res.extra["storage"]
    old.setdefault("notes", []).append(
        f"storage re-run {res.started} (part (d) only, lengths {list(lengths)}, commit {commit.strip() or '?'}, "
        f"load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}): figures storage/* and details.storage replaced")
    tmp_path = path.with_suffix(f".json.tmp-{os.getpid()}")
    out.mkdir(parents=True, exist_ok=True)
    tmp_path.write_text(json.dumps(old, indent=2, default=float) + "\n")
    os.replace(tmp_path, path)
    return res.extra["storage"]


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="python -m benchmarks.throughput main-job|storage: record the README "
                                             "main job in both fold layouts (benchmarks/results/"
                                             "throughput_main_job.json), or re-measure the storage traffic alone "
                                             "(merged into benchmarks/results/throughput.json)")
    ap.add_argument("what", choices=["main-job", "storage"])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--lengths", default=",".join(map(str, FULL["lengths"])), help="storage: epochs per trial")
    a = ap.parse_args()
    if a.what == "storage":
        print(json.dumps(run_storage(a.out, tuple(int(x) for x in a.lengths.split(","))), default=float)[:4000])
    else:
        print(json.dumps(run_main_job(a.out)["runs"], default=float)[:4000])
