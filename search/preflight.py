"""Preflight of a search: every check that can fail for a reason the user can fix runs BEFORE anything is written
or started (no manifest, no store, no Ray), and says in one line what it checked and what answered.

docs/ARCHITECTURE.md sections 6 and 8. The checks are a list of small functions (:data:`CHECKS`), each taking the
:class:`PreflightContext` and raising :class:`PreflightError` (one line naming the URI, path or address); a later
check (e.g. a per-node data check on a cluster) is added with :func:`register_check`. Checks that need Ray (it is
not started during preflight) go to :data:`RAY_CHECKS`, run by the runner right after ``ray.init``.

Every network probe is one request with a short timeout (:data:`TIMEOUT_S`): an unreachable server is reported in
seconds, not after MLflow's or Ray's retry loops. For the rest of the process, MLflow's HTTP retries are bounded by
:func:`bound_mlflow_http` (the user's own environment settings win).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from search.errors import InputError

#: seconds one probe (HTTP request, TCP connect) may take
TIMEOUT_S = 5.0
#: MLflow HTTP client settings applied for the search process when the user has not set them
MLFLOW_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_SQLITE_MAGIC = b"SQLite format 3\x00"


class PreflightError(InputError):
    """A preflight check failed; the message is one line naming the URI, path or address (exit 2)."""


@dataclass
class PreflightContext:
    """What the checks look at (all paths absolute after :func:`check_paths`).

    Attributes:
        name: search name. storage: Tune storage directory or URI. tracking_uri: MLflow URI.
        address: Ray address (None: a local Ray is started). data_dir: the release directory (None: the demo).
        space_path: the space file. timeout: seconds per probe. notes: what the checks found (for messages).
    """

    name: str
    storage: str
    tracking_uri: str
    address: str | None = None
    data_dir: str | None = None
    space_path: str | None = None
    timeout: float = TIMEOUT_S
    notes: dict[str, str] = field(default_factory=dict)


Check = Callable[[PreflightContext], None]


def _is_uri(s: str) -> bool:
    return "://" in s


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (None for any other URI)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def check_paths(ctx: PreflightContext) -> None:
    """Local paths absolute (storage, data, space, SQLite store), the data and space present, the store's folder
    present: a relative path would mean something else on another node or after ``cd``."""
    if not _is_uri(ctx.storage):
        ctx.storage = str(Path(ctx.storage).expanduser().resolve())
    if ctx.data_dir is not None:
        p = Path(ctx.data_dir).expanduser().resolve()
        if not p.is_dir():
            raise PreflightError(f"data: {p}: no such directory")
        ctx.data_dir = str(p)
    if ctx.space_path is not None:
        p = Path(ctx.space_path).expanduser().resolve()
        if not p.is_file():
            raise PreflightError(f"space: {p}: no such file")
        ctx.space_path = str(p)
    db = sqlite_path(ctx.tracking_uri)
    if db is not None:
        db = db.expanduser().resolve()
        ctx.tracking_uri = f"sqlite:///{db}"
        if not db.parent.is_dir():
            raise PreflightError(f"--tracking-uri {ctx.tracking_uri}: folder {db.parent} does not exist")
        if not os.access(db.parent, os.W_OK):
            raise PreflightError(f"--tracking-uri {ctx.tracking_uri}: folder {db.parent} is not writable")


def _health_request(url: str) -> urllib.request.Request:
    """A GET of ``url`` with any ``user:password@`` moved into a basic ``Authorization`` header (urllib would take
    it for part of the host name; MLflow's client, through requests, sends it as basic authentication)."""
    import base64

    parts = urlparse(url)
    if parts.username is None and parts.password is None:
        return urllib.request.Request(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    req = urllib.request.Request(parts._replace(netloc=netloc).geturl())
    token = base64.b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    return req


def check_tracking_store(ctx: PreflightContext) -> None:
    """The tracking store answers: an HTTP server's ``/health`` within ``ctx.timeout`` seconds (one request, no
    retry); an existing SQLite file is a complete MLflow store (a half-made one is named, with how to recover)."""
    from search.safety import mask_uri

    uri = ctx.tracking_uri
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        request = _health_request(uri.rstrip("/") + "/health")
        uri, url = mask_uri(uri), mask_uri(uri.rstrip("/") + "/health")  # what messages show
        try:
            with urllib.request.urlopen(request, timeout=ctx.timeout) as r:  # noqa: S310 (http/s only)
                if r.status != 200:
                    raise PreflightError(f"--tracking-uri {uri}: MLflow server answered HTTP {r.status} at {url}")
        except urllib.error.HTTPError as e:
            raise PreflightError(f"--tracking-uri {uri}: MLflow server answered HTTP {e.code} at {url}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise PreflightError(f"--tracking-uri {uri}: no MLflow tracking server answers within {ctx.timeout:g} s "
                                 f"({reason}); start it or pass another --tracking-uri") from None
        bound_mlflow_http()
        ctx.notes["tracking"] = f"MLflow server {uri} answers"
        return
    db = sqlite_path(uri)
    if db is not None and db.exists():
        problem = sqlite_store_problem(db)
        if problem:
            raise PreflightError(f"--tracking-uri {uri}: {problem}")


def sqlite_store_problem(db: Path) -> str | None:
    """Why the existing file ``db`` is not a complete MLflow SQLite store (None when it is one)."""
    try:
        with open(db, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"cannot read {db} ({e.strerror})"
    if head != _SQLITE_MAGIC:
        return f"{db} is not an SQLite database"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=TIMEOUT_S)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
            version = con.execute("select version_num from alembic_version").fetchall() if \
                "alembic_version" in tables else []
        finally:
            con.close()
    except sqlite3.Error as e:
        return f"{db} is unreadable ({e})"
    if not tables:
        return None  # empty file: MLflow creates the schema
    if "experiments" not in tables or "runs" not in tables or not version:
        return (f"{db} is a half-made MLflow store (tables {sorted(tables)[:6]}...); move it aside (e.g. "
                f"mv {db} {db}.broken) and run again")
    return None


def bound_mlflow_http() -> None:
    """Bound MLflow's HTTP retries for this process (unless the user set them): a server that goes away during
    the search costs seconds per call, not minutes."""
    for k, v in MLFLOW_HTTP_ENV.items():
        os.environ.setdefault(k, v)


def ray_address_target(address: str) -> tuple[str, int] | None:
    """(host, port) a Ray address points to: ``ray://host:port``, ``host:port``, or ``auto`` (``RAY_ADDRESS``,
    else the address file of the running local cluster). None for ``auto`` with no cluster to find."""
    a = address.strip()
    if a == "auto":
        a = os.environ.get("RAY_ADDRESS", "")
        if not a or a == "auto":
            f = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
            a = f.read_text().strip() if f.is_file() else ""
        if not a:
            return None
    if "://" in a:
        a = a.split("://", 1)[1]
    host, _, port = a.rpartition(":")
    if not host or not port.isdigit():
        raise PreflightError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def check_ray_address(ctx: PreflightContext) -> None:
    """A given Ray address accepts a TCP connection within ``ctx.timeout`` seconds (``ray.init`` would retry for
    minutes)."""
    if not ctx.address:
        return
    target = ray_address_target(ctx.address)
    if target is None:
        raise PreflightError(f"--address {ctx.address}: no running Ray cluster found (RAY_ADDRESS unset, no "
                             "/tmp/ray/ray_current_cluster); start one with `ray start --head` or drop --address")
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=ctx.timeout):
            pass
    except OSError as e:
        raise PreflightError(f"--address {ctx.address}: Ray is not reachable at {host}:{port} within "
                             f"{ctx.timeout:g} s ({e.strerror or e})") from None
    ctx.notes["ray"] = f"Ray at {host}:{port} answers"


#: the checks run before anything is written or started, in order
CHECKS: list[Check] = [check_paths, check_tracking_store, check_ray_address]
#: checks run right after ``ray.init`` (they may use Ray: e.g. a per-node data check)
RAY_CHECKS: list[Check] = []


def register_check(fn: Check, after_ray: bool = False) -> Check:
    """Add a check (to :data:`RAY_CHECKS` when it needs Ray); returns ``fn`` so it can be used as a decorator."""
    (RAY_CHECKS if after_ray else CHECKS).append(fn)
    return fn


def run_preflight(ctx: PreflightContext, checks: list[Check] | None = None) -> PreflightContext:
    """Run ``checks`` (default :data:`CHECKS`) in order; returns ``ctx`` with absolute paths.

    Raises:
        PreflightError: from the first failing check (one line naming what failed).
    """
    for check in CHECKS if checks is None else checks:
        check(ctx)
    return ctx


__all__ = ["PreflightError", "PreflightContext", "CHECKS", "RAY_CHECKS", "register_check", "run_preflight",
           "check_paths", "check_tracking_store", "check_ray_address", "sqlite_store_problem", "sqlite_path"]
