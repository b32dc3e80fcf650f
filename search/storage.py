"""Where a search keeps its state: Tune's experiment state, the trials' Ray Train checkpoints (their artifacts) and
the search manifest, all under ``<storage>/<name>/`` (docs/ARCHITECTURE.md sections 6 and 8).

``--storage`` is a local path (one node), a path on a filesystem shared by every node (NFS, EFS, Lustre...) or an
object-store URI (``s3://bucket/prefix``, ``gs://...``; any scheme pyarrow resolves). S3-compatible stores (MinIO,
Ceph, moto) are reached through the standard AWS environment: ``AWS_ENDPOINT_URL`` (read by pyarrow >= 15 and
boto3), ``AWS_DEFAULT_REGION``, credentials from the usual chain. The driver forwards the endpoint and region
variables (:data:`FORWARDED_ENV`, never credentials) to every Ray worker; credentials must be present on each node
(instance role, ``~/.aws``, or the environment of ``ray start``).

The driver reads a trial's artifacts from the storage through :func:`download_checkpoint` (never from a worker's
disk): a fold worker on any node persists its checkpoint with ``ray.train.report(checkpoint=...)``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blemore_core.io import loads_json
from search.defaults import DEFAULT_STORAGE
from search.safety import confined, mask_secrets

#: file of the search manifest under ``<storage>/<name>/`` (what ``blemore resume`` reads)
MANIFEST = "blemore_search.json"
#: environment variables that say WHERE the object store is (forwarded to Ray workers); credentials are not
FORWARDED_ENV: tuple[str, ...] = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")


@dataclass(frozen=True)
class Storage:
    """A search's storage root.

    Attributes:
        uri: an absolute local path (``/data/ray_results``) or a URI (``s3://bucket/prefix``), no trailing slash.
    """

    uri: str

    @property
    def is_local(self) -> bool:
        """True for a filesystem path (local or shared), False for an object-store URI."""
        return "://" not in self.uri

    def join(self, *parts: str) -> str:
        """``<uri>/<part>/...`` (a path or a URI, as Ray Tune and Train take them)."""
        return confined(self.uri, "/".join(p.strip("/") for p in parts))  # never outside the root

    def filesystem(self) -> tuple[Any, str]:
        """``(pyarrow filesystem, path on it)`` of the root (the bucket-prefixed path for object stores).

        Raises:
            ValueError: the URI's scheme is not supported by pyarrow (names the value).
        """
        import pyarrow.fs as pafs

        if self.is_local:
            return pafs.LocalFileSystem(), self.uri
        try:
            return pafs.FileSystem.from_uri(self.uri)
        except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"--storage: cannot open {self.uri!r}: {e}") from None

    def __str__(self) -> str:
        return self.uri


def resolve_storage(value: str | None, default: str = DEFAULT_STORAGE) -> Storage:
    """The storage root of ``--storage`` (default ``./ray_results``): local paths made absolute, URIs kept.

    Raises:
        ValueError: an empty value or a ``file://`` URI with a relative path.
    """
    s = default if value is None else str(value).strip()
    if not s:
        raise ValueError("--storage: empty value")
    if s.startswith("file://"):
        s = s[len("file://"):]
        if not s.startswith("/"):
            raise ValueError(f"--storage: file:// URI must hold an absolute path, got {value!r}")
    if "://" in s:
        return Storage(s.rstrip("/"))
    return Storage(str(Path(s).expanduser().resolve()))


def forwarded_env() -> dict[str, str]:
    """The :data:`FORWARDED_ENV` variables set in this process (for ``ray.init(runtime_env={"env_vars": ...})``)."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


def write_bytes(storage: Storage, rel: str, data: bytes) -> str:
    """Write ``<storage>/<rel>`` whole (local: temp file + rename, so a reader never sees half a file; object
    stores: one PUT, which is atomic). Returns the written path/URI.

    Raises:
        OSError: the store is unreachable or not writable (message names the location).
    """
    fs, root = storage.filesystem()
    path = confined(root, rel.strip("/"))
    try:
        if storage.is_local:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        else:
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(path) as f:
                f.write(data)
    except OSError as e:
        raise OSError(f"--storage {storage.join(rel)}: cannot write: {e}") from None
    return storage.join(rel)


def write_text(storage: Storage, rel: str, text: str) -> str:
    """:func:`write_bytes` of ``text`` encoded as UTF-8."""
    return write_bytes(storage, rel, text.encode())


def read_text(storage: Storage, rel: str) -> str | None:
    """Text of ``<storage>/<rel>``, or None when it does not exist.

    Raises:
        OSError: the store is unreachable (message names the location).
    """
    import pyarrow.fs as pafs

    fs, root = storage.filesystem()
    path = confined(root, rel.strip("/"))
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except OSError as e:
        raise OSError(f"--storage {storage.join(rel)}: cannot read: {e}") from None


def write_manifest(storage: Storage, name: str, doc: dict) -> str:
    """Write the search manifest ``<storage>/<name>/blemore_search.json``; returns its location."""
    return write_text(storage, f"{name}/{MANIFEST}", json.dumps(mask_secrets(doc), indent=2))  # no credentials


def read_manifest(storage: Storage, name: str) -> dict | None:
    """The search manifest of ``name`` (None when there is none)."""
    text = read_text(storage, f"{name}/{MANIFEST}")
    return None if text is None else loads_json(text, storage.join(name, MANIFEST))  # bounded (depth)


def check_writable(storage: Storage) -> None:
    """Write and delete a probe object under the root, so an unreachable or read-only store fails before any trial.

    Raises:
        ValueError: naming the storage and the underlying error.
    """
    rel = f".blemore-probe-{uuid.uuid4().hex[:12]}"
    try:
        write_text(storage, rel, "probe")
        fs, root = storage.filesystem()
        fs.delete_file(f"{root.rstrip('/')}/{rel}")
    except OSError as e:
        hint = " (S3-compatible store: is AWS_ENDPOINT_URL set and the bucket created?)" if not storage.is_local else ""
        raise ValueError(f"--storage {storage.uri}: not writable: {e}{hint}") from None


def download_checkpoint(storage: Storage, checkpoint_path: str, dest: str | Path | None = None) -> Path:
    """Copy a trial checkpoint from the storage to a fresh local directory; the caller removes it.

    Args:
        storage: the search's storage root.
        checkpoint_path: ``checkpoint.path`` as Ray Train reports it (a path on the storage's filesystem: absolute
            for local storage, ``bucket/prefix/...`` for object stores).
        dest: target directory (default: a new temporary directory).

    Raises:
        OSError: the checkpoint is missing on the storage.
    """
    import ray.train

    fs, _ = storage.filesystem()
    out = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="blemore-ckpt-"))
    try:
        return Path(ray.train.Checkpoint(checkpoint_path, filesystem=fs).to_directory(str(out)))
    except Exception:
        if dest is None:
            shutil.rmtree(out, ignore_errors=True)
        raise


__all__ = ["MANIFEST", "FORWARDED_ENV", "Storage", "resolve_storage", "forwarded_env", "write_bytes", "write_text", "read_text",
           "write_manifest", "read_manifest", "check_writable", "download_checkpoint"]
