"""cluster/: scripts parse, services bind to loopback, token authentication is never switched off, manifests load."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
SCRIPTS = sorted(CLUSTER.glob("*.sh"))


def test_expected_files():
    names = {p.name for p in CLUSTER.iterdir()}
    assert {"start_head.sh", "start_worker.sh", "start_mlflow.sh", "stop_cluster.sh", "submit_search.sh",
            "autoscaler-gpu.yaml", "kuberay.yaml"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_syntax_and_loopback(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "RAY_AUTH_MODE=disabled" not in text and "0.0.0.0" not in text
    if script.name in ("start_head.sh", "start_worker.sh", "start_mlflow.sh"):
        assert 'source "$HERE/_common.sh"' in text
    if script.name in ("start_head.sh", "start_worker.sh"):
        assert '--node-ip-address "' in text
    if script.name == "_common.sh":
        assert 'BIND_IP="${BIND_IP:-127.0.0.1}"' in text and "export RAY_AUTH_MODE=token" in text
    if script.name == "start_mlflow.sh":
        assert '--host "$BIND_IP"' in text and "sqlite:///" in text and "--serve-artifacts" in text
    if script.name == "submit_search.sh":
        assert "ray job submit" in text and "search.cli search" in text


def test_manifests_load_and_keep_auth_on():
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["RayCluster", "RayJob"]
    assert docs[0]["spec"]["authOptions"]["mode"] == "token"
    assert docs[1]["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"
    assert "blemore search" in docs[1]["spec"]["entrypoint"]
    auto = yaml.safe_load((CLUSTER / "autoscaler-gpu.yaml").read_text())
    assert auto["available_node_types"]["gpu_worker"]["resources"]["GPU"] > 0
    assert all("RAY_AUTH_MODE=token" in c for c in auto["head_start_ray_commands"][1:2] + auto["worker_start_ray_commands"][1:])
    for text in ((CLUSTER / "kuberay.yaml").read_text(), (CLUSTER / "autoscaler-gpu.yaml").read_text()):
        assert "RAY_AUTH_MODE=disabled" not in text and "mode: disabled" not in text


def test_manifests_run_the_same_search_with_shared_storage_and_tracking_uri():
    import re

    job = list(yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()))[1]["spec"]["entrypoint"]
    auto = (CLUSTER / "autoscaler-gpu.yaml").read_text()
    auto_cmd = " ".join(line.lstrip("# ").rstrip("\\ ") for line in auto.splitlines()[1:3])

    def core(cmd: str) -> str:
        return re.sub(r"--tracking-uri \S+|--quiet|\s+", " ", cmd[cmd.index("blemore search"):]).split()

    assert core(job) == core(auto_cmd), (core(job), core(auto_cmd))
    for cmd in (job, auto_cmd):
        assert "--storage s3://" in cmd and "--tracking-uri http" in cmd and "--address auto" in cmd
