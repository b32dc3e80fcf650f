"""A real two-node Ray cluster on one machine (slow): a head and a worker raylet started by cluster/start_head.sh and
cluster/start_worker.sh, an MLflow server from cluster/start_mlflow.sh, and an S3-compatible store (moto's server
mode on 127.0.0.1) as the search storage, so no step can lean on the head's disk. Searches are submitted with
cluster/submit_search.sh (``ray job submit``). One cluster is shared by the tests of this module, in file order:
search -> browser check of the MLflow UI -> listening sockets -> faults (worker raylet killed, driver killed +
resume).

Sizes: head 1 logical CPU, worker 3; a fold worker reserves 0.7 CPU, so a trial's five folds cannot fit on one
node: Ray's PACK strategy puts four on the worker node (the first bundles, hence rank 0) and one on the head.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
BUCKET = "blemore-ci"

SPACE = """
name: {name}
preset: rank_aware
data: {{dir: {data}, encoders: [imagebind, wavlm]}}
fixed:
  model.pooling: stat
  model.latent_dim: 16
  model.shared_dim: 16
  model.top_n: 2
  loss.domain: 0.0
  train.patience: 0
params:
  model.fusion: {{type: choice, values: [concat, rank_aware]}}
  train.lr: {{type: loguniform, low: 3.0e-4, high: 3.0e-3}}
metric: score
scheduler: none
budget: {{num_samples: {n}, max_concurrent: 1, max_epochs: {epochs}}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _sh(c: SimpleNamespace, *args: str, timeout: float = 300, extra_env: dict | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    env = {**c.env, **(extra_env or {})}
    p = subprocess.run(list(args), env=env, cwd=c.tmp, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        logs = "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(c.run_dir.glob("*.log")))
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}\n{logs}")
    return p


def _pid(c: SimpleNamespace, name: str) -> int:
    return int((c.run_dir / f"{name}.pid").read_text())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import boto3

    from blemore_core.data import generate_release

    tmp = tmp_path_factory.mktemp("cluster")
    tiny = generate_release(tmp / "tiny", "tiny", progress=False)
    ports = {k: _free_port() for k in ("s3", "gcs", "dash", "client", "mlflow")}
    env = {**os.environ, "RUN_DIR": str(tmp / "run"), "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_PORT": str(ports["gcs"]), "RAY_DASHBOARD_PORT": str(ports["dash"]),
           "RAY_CLIENT_PORT": str(ports["client"]), "RAY_ADDRESS": f"http://127.0.0.1:{ports['dash']}",
           "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           # Ray's session files away from /tmp/ray, so no `ray.init()` elsewhere on this machine finds this cluster
           "RAY_TEMP_DIR": f"/tmp/rayc{ports['gcs']}"}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    # what an in-process local search earlier in a pytest run (or a user's shell) leaves in the environment: Ray's
    # single-machine switch (search.compat.LOCAL_RAY_ENV); the cluster scripts must start a cluster regardless
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    c = SimpleNamespace(tmp=tmp, run_dir=tmp / "run", env=env, ports=ports, tiny=tiny,
                        storage=f"s3://{BUCKET}/searches", tracking=env["MLFLOW_TRACKING_URI"], extra=[])
    c.run_dir.mkdir()
    moto_log = open(tmp / "moto.log", "w")  # noqa: SIM115 - closed at teardown
    moto = subprocess.Popen([shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(ports["s3"])],
                            stdout=moto_log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        _wait_port(ports["s3"])
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        _sh(c, str(CLUSTER / "start_head.sh"), "1", "0", timeout=240)
        _sh(c, str(CLUSTER / "start_worker.sh"), f"127.0.0.1:{ports['gcs']}", "3", "0", timeout=240,
            extra_env={"NODE_NAME": "worker1"})
        _sh(c, str(CLUSTER / "start_mlflow.sh"), "--port", str(ports["mlflow"]), "--dir", str(tmp / "mlflow"),
            timeout=240)
        nodes = json.loads(_sh(c, "ray", "list", "nodes", "--format", "json", "--limit", "10").stdout)
        alive = [n for n in nodes if n["state"] == "ALIVE"]
        assert len(alive) == 2, nodes
        c.head_node = next(n["node_id"] for n in alive if n["is_head_node"])
        c.worker_node = next(n["node_id"] for n in alive if not n["is_head_node"])
        yield c
    finally:
        subprocess.run([str(CLUSTER / "stop_cluster.sh")], env=env, cwd=tmp, timeout=180, capture_output=True)
        moto.send_signal(signal.SIGTERM)
        try:
            moto.wait(timeout=20)
        except subprocess.TimeoutExpired:
            moto.kill()
        moto_log.close()
        shutil.rmtree(env["RAY_TEMP_DIR"], ignore_errors=True)


def _space(c: SimpleNamespace, name: str, n: int, epochs: int = 2) -> Path:
    p = c.tmp / f"{name}.yaml"
    p.write_text(SPACE.format(name=name, data=c.tiny, n=n, epochs=epochs))
    return p


def _search_args(c: SimpleNamespace, name: str) -> list[str]:
    return ["--storage", c.storage, "--fold-layout", "workers", "--cpus-per-fold", "0.7", "--max-failures", "2", "--data", str(c.tiny),
            "--name", name]


def _runs(c: SimpleNamespace, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(c.tracking)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client, None, [], []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return (client, exp, [r for r in runs if r.data.tags.get("role") == "parent"],
            [r for r in runs if r.data.tags.get("role") == "fold"])


# --------------------------------------------------------------------------------------------------- the search


@pytest.fixture(scope="module")
def searched(cluster):
    c = cluster
    name = "cl_search"
    p = _sh(c, str(CLUSTER / "submit_search.sh"), str(_space(c, name, 2)), *_search_args(c, name), timeout=600)
    out = p.stdout + p.stderr
    assert "succeeded" in out, out[-3000:]
    c.search_output = out
    return name


def test_search_submitted_as_job_uses_both_nodes_and_s3(cluster, searched):
    c = cluster
    # the worker node's feature cache was built by a task on that node before the first trial
    assert re.search(r"building the feature cache of \S+ on 1 other node\(s\)", c.search_output), c.search_output[-3000:]
    client, exp, parents, folds = _runs(c, searched)
    assert len(parents) == 2 and len(folds) == 10
    assert all(r.info.status == "FINISHED" for r in parents + folds)
    nodes = {f.data.tags.get("node_id") for f in folds}
    assert nodes == {c.head_node, c.worker_node}, nodes  # fold workers ran on both nodes
    on_worker = [p for p in parents if p.data.tags.get("rank0_node_id") == c.worker_node]
    assert on_worker, [p.data.tags.get("rank0_node_id") for p in parents]
    for p in on_worker:  # rank 0 on the non-head node: its artifacts reached MLflow through S3
        arts = {a.path for a in client.list_artifacts(p.info.run_id)}
        assert {"config.yaml", "oof.parquet", "thresholds.json"} <= arts, arts
        assert "artifact_error" not in p.data.tags
        kids = [f for f in folds if f.data.tags["tune_trial_id"] == p.data.tags["tune_trial_id"]]
        for k in kids:
            assert any(a.path.endswith(".pt") for a in client.list_artifacts(k.info.run_id)), k.info.run_name
            assert k.data.tags["device"] == "cpu"
    # names say what a trial is: tNN + the searched values

    names = sorted(p.info.run_name for p in parents)
    assert [n[:4] for n in names] == ["t01 ", "t02 "], names
    assert all(re.fullmatch(r"t0\d (concat|rank_aware) lr=\d\.\de-\d", n) for n in names), names
    # manifest and checkpoints on S3, nothing under the head's default local storage
    import boto3

    s3 = boto3.client("s3", endpoint_url=c.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"searches/{searched}/").get("Contents", [])]
    assert f"searches/{searched}/blemore_search.json" in keys
    assert any(k.endswith("oof.parquet") for k in keys), keys[:20]
    # the experiment opens on its runs (MLflow 3 experiment kind) and says what it is
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    assert "How to read it" in exp.tags.get("mlflow.note.content", "")
    assert f"#/experiments/{exp.experiment_id}/runs?viewStateShareKey=blemore-best-score" in c.search_output
    view = json.loads(exp.tags["mlflow.sharedViewState.blemore-best-score"])
    assert view["orderByKey"] == "metrics.`score`" and view["orderByAsc"] is False


# --------------------------------------------------------------------------------------------------- the browser


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def _render(url: str, shot: Path, profile: Path) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             "--window-size=1600,1000", "--virtual-time-budget=25000", f"--user-data-dir={profile}"]
    subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, timeout=180, check=False)
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=180, check=True).stdout
    p = _Text()
    p.feed(dom)
    return "\n".join(p.parts)


def test_mlflow_ui_lists_trials_best_first_and_fold_runs(cluster, searched):
    from search.records.naming import runs_link, trial_link

    c = cluster
    client, exp, parents, folds = _runs(c, searched)
    link = runs_link(c.tracking, exp.experiment_id, "score")
    assert link in c.search_output  # the link the search printed
    shots = Path(os.environ.get("BLEMORE_SCREENSHOTS", REPO / "tests" / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    text = _render(link, shots / "mlflow_runs.png", c.tmp / "chrome")
    assert (shots / "mlflow_runs.png").stat().st_size > 10_000
    assert "score" in text and "acc_presence" in text, text[:2000]
    best_first = [p.info.run_name for p in sorted(parents, key=lambda r: -r.data.metrics["score"])]
    pos = [text.find(n) for n in best_first]
    assert all(i >= 0 for i in pos) and pos == sorted(pos), (best_first, pos, text[:3000])
    top = sorted(parents, key=lambda r: -r.data.metrics["score"])[0]
    assert f"{top.data.metrics['score']:.4g}"[:4] in text  # the Score value is visible
    assert "Traces" not in text.split(best_first[0])[0] or "Runs" in text  # opened on the runs, not GenAI overview
    tlink = trial_link(c.tracking, exp.experiment_id, top.data.tags["tune_trial_id"])
    t2 = _render(tlink, shots / "mlflow_trial_folds.png", c.tmp / "chrome")
    for col in ("acc_presence", "acc_salience", "alpha", "beta"):
        assert col in t2, (col, t2[:2000])
    kids = [f.info.run_name for f in folds if f.data.tags["tune_trial_id"] == top.data.tags["tune_trial_id"]]
    assert len(kids) == 5 and all(k in t2 for k in kids), (kids, t2[:2000])


# --------------------------------------------------------------------------------------------------- sockets


def _listening(root_pid: int) -> list[tuple[str, str, int]]:
    import psutil

    root = psutil.Process(root_pid)
    procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in procs:
            try:
                out.append((procs[conn.pid].name(), conn.laddr.ip, conn.laddr.port))
            except psutil.NoSuchProcess:
                pass
    return out


def _loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") or ip.startswith("127.")


def test_mlflow_server_and_ray_http_services_listen_on_loopback_only(cluster):
    c = cluster
    socks = _listening(_pid(c, "mlflow"))
    assert socks and all(_loopback(ip) for _, ip, _ in socks), socks
    head = _listening(_pid(c, "head"))
    by_port = {port: ip for _, ip, port in head}
    assert by_port.get(c.ports["dash"]) and _loopback(by_port[c.ports["dash"]]), head  # dashboard + job API


@pytest.mark.xfail(strict=True, reason="Ray 2.60's core gRPC servers (GCS, raylet, object manager, agents, client "
                   "server) bind the wildcard address or the host's address whatever --node-ip-address says; "
                   "README: firewall those ports (see 'Cluster: exposure')")
def test_every_ray_listener_is_loopback(cluster):
    c = cluster
    socks = _listening(_pid(c, "head")) + _listening(_pid(c, "worker1"))
    bad = [s for s in socks if not _loopback(s[1])]
    assert not bad, bad


# --------------------------------------------------------------------------------------------------- faults


def _wait(pred, timeout: float, what: str, step: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(what)


@pytest.fixture
def job_id(cluster):
    """``job_id(name)`` -> a fresh submission id; the job is stopped after the test whatever happened, so that a
    failed fault test never leaves a search holding the cluster's CPUs for the tests after it."""
    made: list[str] = []

    def make(name: str) -> str:
        made.append(f"{name}-{secrets.token_hex(3)}")
        return made[-1]

    yield make
    for sid in made:
        if _job_status(cluster, sid) not in ("SUCCEEDED", "FAILED", "STOPPED"):
            _sh(cluster, "ray", "job", "stop", sid, timeout=120, check=False)


def _job_status(c: SimpleNamespace, sid: str) -> str:
    p = _sh(c, "ray", "job", "status", sid, check=False)
    out = (p.stdout + p.stderr).upper()  # the Ray CLI logs to stderr, in words ("... succeeded")
    for s in ("SUCCEEDED", "FAILED", "STOPPED", "RUNNING", "PENDING"):
        if s in out:
            return s
    return "?"


def _cluster_state(c: SimpleNamespace) -> str:
    """What the cluster holds now (for a failure message): resources, live placement groups and actors."""
    parts = []
    for args in (("ray", "status"), ("ray", "list", "placement-groups", "--limit", "50"),
                 ("ray", "list", "actors", "--filter", "state=ALIVE", "--limit", "50"), ("ray", "list", "jobs")):
        try:
            p = _sh(c, *args, timeout=60, check=False)
            parts.append(f"$ {' '.join(args)}\n{(p.stdout + p.stderr)[-4000:]}")
        except subprocess.TimeoutExpired:
            parts.append(f"$ {' '.join(args)}: no answer in 60 s")
    return "\n".join(parts)


def _held_groups(c: SimpleNamespace, sid: str) -> list[str]:
    """Placement groups not REMOVED that the Ray job of submission ``sid`` created (ids, with their state)."""
    jobs = json.loads(_sh(c, "ray", "list", "jobs", "--format", "json", "--limit", "200").stdout)
    jid = next(j["job_id"] for j in jobs if j.get("submission_id") == sid)
    pgs = json.loads(_sh(c, "ray", "list", "placement-groups", "--format", "json", "--limit", "500").stdout)
    return [f"{g['placement_group_id']} {g['state']}" for g in pgs
            if g.get("creator_job_id") == jid and g.get("state") != "REMOVED"]


def _resume_job(c: SimpleNamespace, name: str, sid: str, timeout: float) -> str:
    """Submit `blemore resume NAME` as job ``sid`` and wait for it to end; returns the job's logs.

    Raises:
        AssertionError: the job did not succeed within ``timeout`` s; the message carries its logs and the cluster's
            state (a resume that hangs says what it waits for instead of a bare subprocess timeout).
    """
    _sh(c, str(CLUSTER / "submit_search.sh"), "resume", name, "--storage", c.storage,
        extra_env={"SUBMIT_ARGS": f"--no-wait --submission-id {sid}"})
    try:
        st = _wait(lambda: (s := _job_status(c, sid)) in ("SUCCEEDED", "FAILED", "STOPPED") and s, timeout,
                   "resume job end", 3)
    except TimeoutError:
        st = f"still running after {timeout} s"
    lp = _sh(c, "ray", "job", "logs", sid, check=False)
    logs = lp.stdout + lp.stderr
    assert st == "SUCCEEDED", f"resume job {sid}: {st}\n{logs[-6000:]}\n{_cluster_state(c)}"
    return logs


def test_worker_raylet_killed_mid_search_then_search_finishes(cluster, searched, job_id):
    """The worker node's raylet is SIGKILLed (by its recorded pid) while a trial trains. Every trial spans both
    nodes here (5 fold workers x 0.7 CPU > the worker's 3 CPUs; the head has 1), so the kill takes fold workers
    of the running trial with it: the trial fails, Tune retries it per FailureConfig (--max-failures 2) once a
    replacement node has joined (what an autoscaler does), and the search ends with the trial FINISHED, its
    retry recorded, five fold runs and no run left RUNNING."""
    c = cluster
    name = "cl_fault_node"
    sid = job_id(name)
    # long enough (120 epochs of the tiny release, about 2 min) that the kill lands while the trial trains
    _sh(c, str(CLUSTER / "submit_search.sh"), str(_space(c, name, 1, epochs=120)), *_search_args(c, name),
        extra_env={"SUBMIT_ARGS": f"--no-wait --submission-id {sid}"})
    _wait(lambda: any("epoch/score" in p.data.metrics and p.info.status == "RUNNING" for p in _runs(c, name)[2]),
          400, "first trial's epochs", step=0.5)
    os.kill(int((c.run_dir / "worker1.raylet.pid").read_text()), signal.SIGKILL)
    _sh(c, str(CLUSTER / "stop_cluster.sh"), "worker1")
    _sh(c, str(CLUSTER / "start_worker.sh"), f"127.0.0.1:{c.ports['gcs']}", "3", "0", timeout=240,
        extra_env={"NODE_NAME": "worker2"})
    st = _wait(lambda: (s := _job_status(c, sid)) in ("SUCCEEDED", "FAILED", "STOPPED") and s, 900, "job end", 3)
    lp = _sh(c, "ray", "job", "logs", sid, check=False)
    logs = lp.stdout + lp.stderr
    _, _, parents, folds = _runs(c, name)
    assert st == "SUCCEEDED", logs[-3000:]
    assert len(parents) == 1, [p.info.run_name for p in parents]
    assert not [r for r in parents + folds if r.info.status != "FINISHED"], [r.info.status for r in parents + folds]
    assert int(parents[0].data.tags.get("retries", "0")) >= 1, parents[0].data.tags  # the kill hit the trial
    assert len(folds) == 5 and "score" in parents[0].data.metrics
    # the retry's fold workers ran on the head and the replacement node, not on the killed one
    nodes = {f.data.tags.get("node_id") for f in folds}
    assert c.worker_node not in nodes and len(nodes - {c.head_node}) == 1, (nodes, c.head_node, c.worker_node)


def test_driver_killed_then_resume_gives_exactly_num_samples_runs(cluster, searched, job_id):
    c = cluster
    name = "cl_fault_driver"
    n = 3
    sid = job_id(name)
    _sh(c, str(CLUSTER / "submit_search.sh"), str(_space(c, name, n)), *_search_args(c, name),
        extra_env={"SUBMIT_ARGS": f"--no-wait --submission-id {sid}"})
    _wait(lambda: any(p.info.status == "FINISHED" for p in _runs(c, name)[2]), 500, "first finished trial")
    _sh(c, "ray", "job", "stop", sid, timeout=120)  # SIGTERM, then SIGKILL, to the driver
    _wait(lambda: _job_status(c, sid) in ("STOPPED", "FAILED"), 120, "driver stopped", 2)
    _resume_job(c, name, job_id(name + "-resume"), 600)
    _, _, parents, folds = _runs(c, name)
    tids = [p.data.tags["tune_trial_id"] for p in parents]
    assert len(parents) == n and len(set(tids)) == n, tids
    assert all(p.info.status == "FINISHED" for p in parents + folds), [p.info.status for p in parents]
    assert len(folds) == 5 * n


def test_tracking_server_killed_then_resume_records_every_trial_once(cluster, searched, job_id):
    """The MLflow server dies mid-search: the search stops within seconds with a clear error naming the server and
    the resume command; after the server is restarted (same store), `blemore resume` ends with exactly num_samples
    parent runs, each ended FINISHED with its Score, and five fold runs each."""
    c = cluster
    name = "cl_fault_mlflow"
    n = 3
    sid = job_id(name)
    _sh(c, str(CLUSTER / "submit_search.sh"), str(_space(c, name, n, epochs=6)), *_search_args(c, name),
        extra_env={"SUBMIT_ARGS": f"--no-wait --submission-id {sid}"})
    _wait(lambda: any(p.info.status == "FINISHED" for p in _runs(c, name)[2]), 500, "first finished trial")
    pid = int((c.run_dir / "mlflow.pid").read_text())
    os.killpg(pid, signal.SIGKILL)  # the server and its workers (start_mlflow.sh runs it in its own session)
    t0 = time.time()
    st = _wait(lambda: (s := _job_status(c, sid)) in ("SUCCEEDED", "FAILED", "STOPPED") and s, 300, "job end", 2)
    stopped_after = time.time() - t0
    lp = _sh(c, "ray", "job", "logs", sid, check=False)
    logs = lp.stdout + lp.stderr
    assert st == "FAILED", logs[-3000:]
    assert f"MLflow tracking server {c.tracking} stopped answering during the search" in logs, logs[-3000:]
    assert f"blemore resume {name} --storage {c.storage}" in logs, logs[-3000:]
    assert stopped_after < 240, stopped_after
    # the failed job reserved nothing after it ended (a group left by its last trial blocks the resumed search)
    deadline = time.time() + 30
    while (held := _held_groups(c, sid)) and time.time() < deadline:
        time.sleep(2)
    assert not held, f"{held}\n{logs[-3000:]}\n{_cluster_state(c)}"
    _sh(c, str(CLUSTER / "start_mlflow.sh"), "--port", str(c.ports["mlflow"]), "--dir", str(c.tmp / "mlflow"),
        timeout=240)
    _resume_job(c, name, job_id(name + "-resume"), 900)
    _, _, parents, folds = _runs(c, name)
    tids = [p.data.tags["tune_trial_id"] for p in parents]
    assert len(parents) == n and len(set(tids)) == n, tids
    assert all(p.info.status == "FINISHED" and "score" in p.data.metrics for p in parents), \
        [(p.info.status, sorted(p.data.metrics)) for p in parents]
    assert len(folds) == 5 * n and all(f.info.status == "FINISHED" for f in folds), \
        sorted((f.data.tags.get("tune_trial_id"), f.data.tags.get("fold"), f.info.status,
                f.data.tags.get("trial_status")) for f in folds)
