"""Preflight (issue 11): unreachable services are reported in seconds naming them; paths made absolute; a
half-made SQLite store is named; checks are an extensible list."""

from __future__ import annotations

import socket
import sqlite3
import time

import pytest

from search import preflight
from search.preflight import PreflightContext, PreflightError, run_preflight


def _ctx(tmp_path, **kw):
    base = dict(name="x", storage="ray_results", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    base.update(kw)
    return PreflightContext(**base)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_tracking_server_fails_fast_naming_it(tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.time()
    with pytest.raises(PreflightError) as ei:
        run_preflight(_ctx(tmp_path, tracking_uri=uri))
    assert time.time() - t0 < 10
    assert str(ei.value).startswith(f"--tracking-uri {uri}:") and "\n" not in str(ei.value)


def test_silent_tracking_server_times_out_naming_it(tmp_path, monkeypatch):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # accepts the connection, never answers
    monkeypatch.setattr(preflight, "TIMEOUT_S", 1.0)
    uri = f"http://127.0.0.1:{srv.getsockname()[1]}"
    t0 = time.time()
    try:
        with pytest.raises(PreflightError, match=f"--tracking-uri {uri}: no MLflow tracking server answers"):
            run_preflight(_ctx(tmp_path, tracking_uri=uri, timeout=1.0))
    finally:
        srv.close()
    assert time.time() - t0 < 5


def test_tracking_server_behind_basic_auth_passes_with_credentials_in_the_uri(tmp_path):
    """``http://user:password@host:port`` (what MLflow's client sends as basic authentication) reaches the server's
    /health with the credentials; wrong ones are named as the server's answer, the password masked."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    want = "Basic " + base64.b64encode(b"ann:p@ss w").decode()

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            ok = self.path == "/health" and self.headers.get("Authorization") == want
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        run_preflight(_ctx(tmp_path, tracking_uri=f"http://ann:p%40ss%20w@127.0.0.1:{port}"), [preflight.check_tracking_store])
        with pytest.raises(PreflightError, match="answered HTTP 401") as ei:
            run_preflight(_ctx(tmp_path, tracking_uri=f"http://ann:wrong@127.0.0.1:{port}"), [preflight.check_tracking_store])
    finally:
        srv.shutdown()
    assert "wrong" not in str(ei.value)


def test_unreachable_ray_address_fails_fast_naming_it(tmp_path):
    addr = f"127.0.0.1:{_closed_port()}"
    for a in (addr, f"ray://{addr}"):
        t0 = time.time()
        with pytest.raises(PreflightError, match=f"--address {a}: Ray is not reachable at {addr}"):
            run_preflight(_ctx(tmp_path, address=a))
        assert time.time() - t0 < 10
    with pytest.raises(PreflightError, match="--address nonsense: expected"):
        run_preflight(_ctx(tmp_path, address="nonsense"))


def test_reachable_ray_address_passes(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        ctx = run_preflight(_ctx(tmp_path, address=f"127.0.0.1:{srv.getsockname()[1]}"))
    finally:
        srv.close()
    assert "ray" in ctx.notes


def test_paths_made_absolute_and_missing_ones_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    ctx = run_preflight(_ctx(tmp_path, storage="rr", data_dir="data", tracking_uri="sqlite:///./m.db"))
    assert ctx.storage == str(tmp_path / "rr") and ctx.data_dir == str(tmp_path / "data")
    assert ctx.tracking_uri == f"sqlite:///{tmp_path / 'm.db'}"
    with pytest.raises(PreflightError, match="data: .*nodata: no such directory"):
        run_preflight(_ctx(tmp_path, data_dir="nodata"))
    with pytest.raises(PreflightError, match="--tracking-uri sqlite:///.*/nofolder/m.db: folder .* does not exist"):
        run_preflight(_ctx(tmp_path, tracking_uri=f"sqlite:///{tmp_path}/nofolder/m.db"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written


def test_half_made_sqlite_store_is_named_with_the_way_out(tmp_path):
    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)
    con.execute("create table experiments (id int)")  # what an interrupted schema creation used to leave
    con.commit()
    con.close()
    with pytest.raises(PreflightError, match=r"half-made MLflow store .* mv .*mlflow.db .*mlflow.db.broken"):
        run_preflight(_ctx(tmp_path))
    db.write_bytes(b"not sqlite at all")
    with pytest.raises(PreflightError, match="is not an SQLite database"):
        run_preflight(_ctx(tmp_path))


def test_checks_are_an_extensible_list(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(preflight, "CHECKS", list(preflight.CHECKS))
    monkeypatch.setattr(preflight, "RAY_CHECKS", [])

    @preflight.register_check
    def per_node(ctx):
        calls.append(ctx.storage)
        raise PreflightError("data: not readable on node 2")

    preflight.register_check(lambda ctx: calls.append("ray"), after_ray=True)
    with pytest.raises(PreflightError, match="node 2"):
        run_preflight(_ctx(tmp_path))
    assert len(calls) == 1 and calls[0].startswith("/")  # runs after check_paths: storage made absolute
    run_preflight(_ctx(tmp_path), preflight.RAY_CHECKS)
    assert calls[-1] == "ray"
