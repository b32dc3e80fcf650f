"""Reliability of a search end to end (slow; issue 11): a local search listens on loopback only, holds its name
against a second search with another storage, fails fast naming an unreachable service (the name then reusable),
and survives Ctrl-C at 20 moments of its start-up and first trial: the store stays readable, and the final
``blemore resume`` ends with exactly ``num_samples`` trials and no metric step recorded twice.

The loopback check covers the fold workers too: a trial's folds exchange results through a Ray actor
(search.exchange), not a torch.distributed group, whose TCPStore would listen on every interface."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPACE = """
name: {name}
preset: rank_aware
data: {{dir: {data}, encoders: [imagebind, wavlm]}}
fixed:
  model.pooling: stat
  model.latent_dim: 8
  model.shared_dim: 8
  loss.domain: 0.0
  train.patience: 0
  model.top_n: 2
params:
  train.lr: {{type: loguniform, low: 3.0e-4, high: 3.0e-3}}
metric: score
scheduler: none
budget: {{num_samples: {n}, max_concurrent: 1, max_epochs: 2}}
"""
# PYTHONFAULTHANDLER: a crash of a CLI process prints its Python stacks into the output the assertions show
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PYTHONFAULTHANDLER": "1"}


def _space(tmp: Path, data: Path, name: str, n: int = 2) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(SPACE.format(name=name, data=data, n=n))
    return p


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "search.cli", *args]


def _common(tmp: Path) -> list[str]:
    return ["--storage", str(tmp / "ray_results"), "--num-cpus", "2", "--quiet"]


def _search_cmd(tmp: Path, space: Path, uri: str) -> list[str]:
    return _cli("search", str(space), "--tracking-uri", uri, "--cpus-per-trial", "0.95", *_common(tmp))


def _parents(uri: str, name: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return c, [r for r in runs if r.data.tags.get("role") == "parent"], [r for r in runs if
                                                                         r.data.tags.get("role") == "fold"]


def _is_loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip.split("%")[0])
    if getattr(a, "ipv4_mapped", None) is not None:
        a = a.ipv4_mapped
    return a.is_loopback


def _listening(root_pid: int) -> list[tuple[str, str, int]]:
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    out = []
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.append((p.name(), c.laddr.ip, c.laddr.port))
        except psutil.Error:
            continue
    return out


def test_local_search_on_loopback_name_lock_and_fast_failures(tmp_path, tiny_release):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    space = _space(tmp_path, tiny_release, "guarded", n=1)
    # unreachable tracking server / Ray address: one line naming it, exit 2, in well under 30 s; nothing left
    for extra, named in ((["--tracking-uri", "http://127.0.0.1:9"], "http://127.0.0.1:9"),
                         (["--tracking-uri", uri, "--address", "127.0.0.1:1"], "127.0.0.1:1")):
        t0 = time.time()
        res = subprocess.run(_cli("search", str(space), *extra, *_common(tmp_path)), capture_output=True, text=True,
                             timeout=120, env=ENV)
        assert time.time() - t0 < 30 and res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], res.stderr
        assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()
    # the same name starts right after; while it runs, every socket of its process tree listens on loopback
    proc = subprocess.Popen(_search_cmd(tmp_path, space, uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env=ENV)
    try:
        seen: list = []
        deadline = time.time() + 600
        second = None
        while proc.poll() is None and time.time() < deadline:
            now = _listening(proc.pid)
            seen.extend(now)
            if second is None and any(n.startswith("gcs_server") for n, _, _ in now):
                # a second search of the same name, other storage, same tracking store: refused while this one lives
                second = subprocess.run(_cli("search", str(space), "--tracking-uri", uri, "--storage",
                                             str(tmp_path / "other"), "--num-cpus", "2", "--quiet"),
                                        capture_output=True, text=True, timeout=120, env=ENV)
            time.sleep(0.25)  # often enough to see a tiny trial's fold workers
        out = proc.stdout.read().decode()
        assert proc.wait(timeout=60) == 0, out[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    names = {n for n, _, _ in seen}
    assert any(n.startswith("gcs_server") for n in names) and any(n.startswith("raylet") for n in names), seen
    # Ray (GCS, raylet, agents, workers), the fold workers of every trial and the driver: loopback only
    assert any(n.startswith("ray::RayTrainWorker") for n in names), names  # the fold workers were seen
    assert all(_is_loopback(ip) for _, ip, _ in seen), [s for s in seen if not _is_loopback(s[1])]
    assert second is not None and second.returncode == 2, second
    assert "guarded" in second.stderr and "is running" in second.stderr and str(os.getpid()) not in second.stderr
    assert not (tmp_path / "other" / "guarded").exists()
    _, parents, folds = _parents(uri, "guarded")
    assert len(parents) == 1 and all(r.info.status == "FINISHED" for r in parents + folds)
    # the lock is released at the end: the experiment holds no lock entry
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(uri).get_experiment_by_name("guarded").tags
    assert not [k for k in tags if k.startswith("blemore.lock.")], tags


#: moments of Ctrl-C (SIGINT to the process group, as a terminal sends it), as fractions of T = the time from a
#: process start to the first epoch recorded in MLflow (measured on the first run, which is interrupted then):
#: imports, preflight, store creation, name lock, manifest, feature cache, Ray start-up, trial start, epochs, the
#: final report and the next trial. The test takes about 9 T plus 20 shut-downs.
FRACTIONS = [0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.16, 0.2, 0.25, 0.3, 0.36, 0.43, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
             1.2]


def _first_epoch_recorded(uri: str, name: str) -> bool:
    if not Path(uri[len("sqlite:///"):]).exists():  # never let this reader create the store itself
        return False
    try:
        _, parents, _ = _parents(uri, name)
    except Exception:  # the store is being created
        return False
    return any("epoch/score" in p.data.metrics for p in parents)


def _interrupt(proc: subprocess.Popen, at: float | None, uri: str, name: str) -> tuple[int, float, int]:
    """SIGINT the process group at ``at`` seconds after start (None: at the first recorded epoch), as a user
    would: once, then once more if it has not exited 90 s later (Tune's "press Ctrl-C again"), then SIGKILL after
    another 60 s. Returns (exit code, seconds until the first interrupt, extra signals needed: 0, 1 or 2)."""
    t0 = time.time()
    extra = 0
    try:
        while proc.poll() is None:
            if (at is not None and time.time() - t0 >= at) or (at is None and _first_epoch_recorded(uri, name)):
                os.killpg(proc.pid, signal.SIGINT)
                break
            time.sleep(0.05 if at is not None else 0.5)
        t = time.time() - t0
        for sig, wait in ((signal.SIGINT, 90), (signal.SIGKILL, 60)):
            try:
                return proc.wait(timeout=wait), t, extra
            except subprocess.TimeoutExpired:
                extra += 1
                os.killpg(proc.pid, sig)
        return proc.wait(timeout=60), t, extra
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_sigint_at_20_moments_then_resume_completes_exactly(tmp_path, tiny_release):
    from search.preflight import sqlite_store_problem

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    space = _space(tmp_path, tiny_release, "sigint", n=2)
    manifest = tmp_path / "ray_results" / "sigint" / "blemore_search.json"

    def start():
        cmd = _cli("resume", "sigint", *_common(tmp_path)) if manifest.exists() else _search_cmd(tmp_path, space, uri)
        return cmd[3], subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                        env=ENV)

    log = []
    kind, proc = start()
    rc, first_epoch, extra = _interrupt(proc, None, uri, "sigint")
    log.append(("first-epoch", kind, round(first_epoch, 1), rc, extra))
    assert rc == 130 and first_epoch < 600, (log, proc.stdout.read().decode()[-3000:])
    for f in FRACTIONS:
        kind, proc = start()
        rc, t, extra = _interrupt(proc, f * first_epoch, uri, "sigint")
        out = proc.stdout.read().decode()
        log.append((f, kind, round(t, 1), rc, extra))
        if extra:  # did not stop on the first Ctrl-C: keep its output for the report, go on
            (tmp_path / f"slow_stop_{f}.log").write_text(out)
        else:
            assert rc in (0, 130, -2), (log, out[-3000:])
            assert "Traceback" not in out, (log, out[-3000:])
        db = tmp_path / "mlflow.db"
        if db.exists():
            assert sqlite_store_problem(db) is None, (log, sqlite_store_problem(db))
            _parents(uri, "sigint")  # readable by MLflow
        assert not list(tmp_path.glob(".mlflow.db.tmp-*")), log
    kind, proc = start()
    rc, _, _ = _interrupt(proc, 1e9, uri, "sigint")
    out = proc.stdout.read().decode()
    print("interrupts (fraction, command, seconds, exit code, extra signals):", log)
    assert rc == 0, (log, out[-3000:])
    assert sum(e for *_, e in log) <= 2, log  # a second Ctrl-C is rarely needed
    client, parents, folds = _parents(uri, "sigint")
    assert len(parents) == 2 and len({p.data.tags["tune_trial_id"] for p in parents}) == 2, log
    assert all(r.info.status == "FINISHED" for r in parents + folds), log
    assert len(folds) == 10
    for r in parents + folds:
        for key in [k for k in r.data.metrics if k.startswith("epoch/")]:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert len(steps) == len(set(steps)), (r.data.tags.get("mlflow.runName"), key, steps, log)


def test_ctrl_c_right_after_ray_init_shuts_that_ray_down(tmp_path, tiny_release, monkeypatch):
    """A Ctrl-C that lands inside ``ray.init`` (or just after it, before the search knows it started Ray) still
    shuts that Ray down in the search's own clean-up, not at interpreter exit."""
    import ray

    from search import runner

    assert not ray.is_initialized()

    def _init_then_ctrl_c(opts):
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_init_ray", _init_then_ctrl_c)
    space = _space(tmp_path, tiny_release, "initint", n=1)
    opts = runner.SearchOptions(storage=str(tmp_path / "ray_results"), tracking_uri=f"sqlite:///{tmp_path}/m.db",
                                num_cpus=1, verbose=0)
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run_search(space, opts)
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
