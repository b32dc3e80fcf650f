"""Shared fixtures: one tiny synthetic release per test session (reused by every test that needs a release)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory):
    """A ``tiny`` synthetic release (seed 0), generated once per session; tests must not modify it."""
    from blemore_core.data import generate_release

    return generate_release(tmp_path_factory.mktemp("shared_release") / "tiny", "tiny", progress=False)


def make_epoch_report(epoch: int, rng) -> dict:
    """A per-epoch trial report as the fold worker sends it (FoldRecord dicts, objective = headline fold mean).

    ``rng`` is a numpy Generator or an int seed; five folds, random metrics in [0.05, 0.6).
    """
    import numpy as np

    from search.trainable import FoldRecord

    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    recs = []
    for k in range(5):
        u = lambda: float(rng.uniform(0.05, 0.6))  # noqa: E731
        choice = {"epoch": int(rng.integers(1, epoch + 1)), "alpha": u(), "beta": u(), "acc_presence": u(),
                  "acc_salience": u(), "score": u()}
        recs.append(FoldRecord(fold=k, epoch=epoch, train_loss=u(), lr=u(),
                               own={m: u() for m in ("score", "acc_presence", "acc_salience", "alpha", "beta")},
                               protocols={"crossfit": choice, "val": dict(choice, score=u())}).to_dict())
    r = {"epoch": epoch, "final": False, "training_iteration": epoch, "headline": "crossfit", "folds": recs}
    for m in ("score", "acc_presence", "acc_salience"):
        r[m] = float(np.mean([d["protocols"]["crossfit"][m] for d in recs]))
    return r


@pytest.fixture
def epoch_report():
    """:func:`make_epoch_report` (tests call ``epoch_report(epoch, rng_or_seed)``)."""
    return make_epoch_report


@pytest.fixture
def mlflow_server():
    """``start(backend_store_uri, artifacts_dir=None) -> "http://127.0.0.1:PORT"``: an `mlflow server` on a free
    loopback port, answering /health before it returns; every server started is stopped after the test."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    procs = []

    def start(backend_uri: str, artifacts_dir=None) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
        if artifacts_dir is not None:
            cmd += ["--artifacts-destination", str(artifacts_dir)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).close()
                return url
            except OSError:
                if procs[-1].poll() is not None:
                    break
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server for {backend_uri} did not answer on {url}")

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=30)


BUCKET = "blemore-unit"


@pytest.fixture(scope="module")  # module: its AWS_* variables must not outlive the module (cluster e2e)
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket; AWS_* variables set for pyarrow and boto3."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()
