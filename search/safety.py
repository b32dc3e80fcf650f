"""What a command may write, what a search may be called, and what a message may show (issue 21).

One rule for every command that writes (``train``, ``retrain``, ``predict``, ``export``, ``ensemble``, ``synth``,
``report``), checked by :func:`check_output` before any work starts:

* an existing ``--out`` is replaced only when it is a complete artifact of the kind the command writes (a model
  directory, an exported trial, an ensemble file, a submission, a synthetic release, a report folder) or an empty
  directory; anything else is refused (exit 2, naming it) unless ``--overwrite``;
* an ``--out`` that is one of the command's inputs, or a folder holding one, is refused even with ``--overwrite``;
* the output's filesystem must have :data:`MIN_FREE_BYTES` free, else the command stops at once (exit 1, "no space
  left"); a write that still runs out of space is reported the same way by :func:`disk_full_message`;
* writes go to a temporary sibling renamed into place (:func:`staged` here; ``write_model_dir`` and
  ``write_submission`` in ``blemore_core``): an interrupted, failed or disk-full write leaves the previous content
  as it was.

Every temporary file or folder a command makes through :mod:`tempfile` lands in one folder of its own
(:func:`command_tempdir`), removed when the command ends, whether it succeeds, fails or is interrupted.

A search's name (``--name``, else the space's ``name:``) is one path component (:func:`check_search_name`), and
every storage path derived from it stays under the storage root (:func:`confined`).

Credentials in URIs (tracking store, storage, Ray address) never reach a message, log, tag or file:
:func:`mask_secrets` masks them (``http://user:***@host``) and :class:`MaskingStream` applies it to everything a
command prints.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from search.errors import InputError, exception_chain

#: free bytes the output's filesystem needs before a command starts writing
MIN_FREE_BYTES = 16 * 1024 * 1024
#: longest search name
MAX_NAME_LEN = 100
_NAME = re.compile(r"[A-Za-z0-9_.-]+")

#: artifact kinds: what a command writes, as named in messages
KINDS: dict[str, str] = {
    "model": "a blemore model directory (model.json)",
    "export": "an exported trial YAML (export: section)",
    "ensemble": "an ensemble YAML (ensemble: section)",
    "submission": "a submission (.zip or .json with predictions)",
    "release": "a synthetic release (manifest.json of blemore synth)",
    "report": "a report folder (importances.json, top_trials.csv)",
}
_DIR_KINDS = ("model", "release", "report")


class NoSpaceError(OSError):
    """The output's filesystem is full; the message names the path and says "no space left" (exit 1)."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.args[1]


# ------------------------------------------------------------------------------------------------ secrets

_URI_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s?#'\"<>`]*)@")
#: ``user:password@host`` without a scheme (a Ray address ``user:pw@host:port``, a message quoting a parsed host)
_BARE_USERINFO = re.compile(r"(?P<pre>^|[\s'\"(=,])(?P<user>[A-Za-z0-9._~%!$&*+;-]+):(?P<pw>[^\s@/'\"]+)@"
                            r"(?=[A-Za-z0-9\[])")
_SECRET_QUERY = re.compile(r"(?i)(?P<key>[?&;](?:password|passwd|pwd|token|secret|access_key|secret_key|"
                           r"api_key|apikey|x-amz-signature|x-amz-credential|sig|signature)=)(?P<val>[^&#\s'\"]+)")


def _mask_userinfo(m: re.Match) -> str:
    user, sep, _ = m.group("userinfo").partition(":")
    return f"{m.group('scheme')}{user}:***@" if sep else f"{m.group('scheme')}***@"


def mask_uri(text: str) -> str:
    """``text`` with the credentials of every URI in it masked: ``http://user:pw@host`` -> ``http://user:***@host``,
    ``https://token@host`` -> ``https://***@host``, a scheme-less ``user:pw@host`` -> ``user:***@host``,
    ``?password=x`` / ``?token=x`` (and signed-URL keys) ->
    ``=***``. Text without a URI comes back unchanged."""
    if "@" not in text and "=" not in text:
        return text
    text = _URI_USERINFO.sub(_mask_userinfo, text)
    if "@" in text:
        text = _BARE_USERINFO.sub(lambda m: f"{m.group('pre')}{m.group('user')}:***@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}***", text)


def mask_secrets(obj: Any) -> Any:
    """A copy of ``obj`` (str, or nested dicts / lists / tuples of them) with :func:`mask_uri` applied to every
    string (keys included); other values unchanged."""
    if isinstance(obj, str):
        return mask_uri(obj)
    if isinstance(obj, dict):
        return {mask_secrets(k): mask_secrets(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(mask_secrets(v) for v in obj)
    return obj


class MaskingStream:
    """A text stream that writes through :func:`mask_uri` (wraps ``sys.stdout`` / ``sys.stderr`` while a command
    runs; every other attribute is the wrapped stream's)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, s: str) -> int:  # noqa: D102
        self._stream.write(mask_uri(s))
        return len(s)

    def writelines(self, lines: Iterable[str]) -> None:  # noqa: D102
        for ln in lines:
            self.write(ln)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def masked_console() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` wrapped in :class:`MaskingStream` for the block."""
    import sys

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = MaskingStream(saved[0]), MaskingStream(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def unmasked_tracking_uri(uri: str | None) -> str | None:
    """A tracking URI read back from a manifest, where its password was masked: with ``MLFLOW_TRACKING_PASSWORD``
    set, the URI without credentials (MLflow sends the environment's basic-auth credentials); otherwise it cannot
    be used.

    Raises:
        InputError: the URI's password was masked and the environment holds none.
    """
    if uri is None or ":***@" not in uri and "://***@" not in uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_PASSWORD") or os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return _URI_USERINFO.sub(lambda m: m.group("scheme"), uri)
    raise InputError(f"tracking URI {uri}: its credentials are not stored; pass --tracking-uri with them, or set "
                     "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")


# ------------------------------------------------------------------------------------------------ names


def check_search_name(value: Any, source: str) -> str:
    """A search name as one path component: letters, digits, ``-``, ``_``, ``.``, 1-100 characters, not starting
    with ``.`` (so never ``.`` or ``..``).

    Args:
        value: the name; source: where it came from, named in the error (``--name``, ``spaces/x.yaml: name (line
            1)``).

    Returns:
        ``value``.

    Raises:
        InputError: naming ``source`` and the value (shortened when very long).
    """
    text = value if isinstance(value, str) else repr(value)
    if (isinstance(value, str) and 0 < len(value) <= MAX_NAME_LEN and _NAME.fullmatch(value)
            and not value.startswith(".")):
        return value
    shown = text if len(text) <= 120 else f"{text[:60]}...{text[-20:]} ({len(text)} characters)"
    raise InputError(f"{source}: invalid search name {shown!r}: a search name is one path component of at most "
                     f"{MAX_NAME_LEN} letters, digits, '-', '_' or '.' (not starting with '.')")


def resolve_search_name(option: str | None, space: Any) -> str:
    """The search's name: ``--name`` when given, else the space's ``name:`` (else its file name), checked by
    :func:`check_search_name` naming its source (with the YAML line of ``name:``).

    Raises:
        InputError: an invalid name.
    """
    if option is not None:
        return check_search_name(option, "--name")
    from blemore_core.io import key_line

    path = getattr(space, "path", None)
    line = key_line(path, "name") if path is not None else None
    where = f"{path}: name" + (f" (line {line})" if line else "") if path is not None else "space name"
    return check_search_name(space.name, where)


def confined(root: str, rel: str) -> str:
    """``<root>/<rel>``, checked to stay under ``root`` (a local path or a URI such as ``s3://bucket/prefix``).

    Raises:
        InputError: ``rel`` climbs out of ``root`` (``..``, an absolute path) or ``root`` is empty.
    """
    root = str(root).rstrip("/")
    if not root:
        raise InputError("storage root: empty")
    norm = posixpath.normpath("/" + str(rel)).lstrip("/")
    if str(rel).startswith("/") or ".." in str(rel).split("/") or norm != str(rel).strip("/").replace("//", "/"):
        raise InputError(f"{mask_uri(root)}: path {rel!r} leaves the storage root; refused")
    full = f"{root}/{norm}" if norm else root
    if "://" not in root:
        r, f = Path(root).resolve(), Path(full).resolve()
        if f != r and r not in f.parents:
            raise InputError(f"{root}: path {rel!r} resolves to {f}, outside the storage root; refused")
    return full


def resume_command(name: str, storage: str | None = None) -> str:
    """``blemore resume NAME [--storage DIR]`` with both shell-quoted (:func:`shlex.quote`), ready to paste."""
    import shlex

    return f"blemore resume {shlex.quote(name)}" + ("" if storage is None else f" --storage {shlex.quote(storage)}")


def name_taken_message(name: str, storage: Any, storage_option: str | None, owner: dict | None) -> str:
    """The error for a new search whose name exists in the storage: resume advice (shell-quoted) when the search is
    not running (``owner`` None), and no resume advice while it still runs (``owner``: its live name-lock entry,
    :func:`search.records.store.running_owner`; resuming would be refused, it holds the name)."""
    if owner is not None:
        return (f"--name: a search named {name!r} is still running in {storage} (host {owner.get('host')}, pid "
                f"{owner.get('pid')}); wait for it to end, stop it, or choose another --name")
    return (f"--name: a search named {name!r} exists in {storage}; run `{resume_command(name, storage_option)}` or "
            "choose another --name")


# ------------------------------------------------------------------------------------------------ outputs


def add_overwrite(p: Any) -> None:
    """``--overwrite`` as every writing command takes it (an argparse parser)."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out even when it is not an output of this command (never an input)")


def is_artifact(path: Path, kind: str) -> bool:
    """True when ``path`` is a complete artifact of ``kind`` (see :data:`KINDS`); never raises."""
    from blemore_core.io import BoundedInputError, load_json, load_yaml

    path = Path(path)
    try:
        if kind == "model":
            from blemore_core.artifacts import MODEL_FORMAT

            doc = load_json(path / "model.json")
            return (isinstance(doc, dict) and doc.get("format") == MODEL_FORMAT
                    and all((path / f).is_file() for f in doc.get("files") or {}))
        if kind in ("export", "ensemble"):
            doc = load_yaml(path)
            return path.is_file() and isinstance(doc, dict) and isinstance(doc.get(kind), dict)
        if kind == "submission":
            import warnings

            from blemore_core.submission import read_predictions

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return path.is_file() and bool(read_predictions(path))
        if kind == "release":
            doc = load_json(path / "manifest.json")
            return isinstance(doc, dict) and "generator_version" in doc and (path / "train_metadata.csv").is_file()
        if kind == "report":
            return (path / "importances.json").is_file() and (path / "top_trials.csv").is_file()
    except (OSError, ValueError, BoundedInputError):
        return False
    raise ValueError(f"kind: unknown artifact kind {kind!r} (valid: {', '.join(KINDS)})")


def _same_or_inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def free_bytes(path: Path) -> int | None:
    """Free bytes of the filesystem that holds ``path`` (its nearest existing ancestor); None if unknown."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def check_output(out: str | Path, kind: str, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                 option: str = "--out") -> Path:
    """Apply the output rule (module docstring) to ``out`` before a command does any work.

    Args:
        out: the output path; kind: the artifact kind the command writes (:data:`KINDS`).
        inputs: the command's input paths (None entries ignored); overwrite: ``--overwrite`` was given.
        option: the option named in messages.

    Returns:
        ``Path(out)``.

    Raises:
        InputError: ``out`` is (or holds) an input, or exists and is neither empty nor a complete ``kind``
            artifact (without ``overwrite``), or its parent is a file.
        NoSpaceError: fewer than :data:`MIN_FREE_BYTES` free where ``out`` goes.
    """
    out = Path(out)
    real = out.expanduser().resolve()
    for i in inputs:
        if i is None:
            continue
        ip = Path(i).expanduser().resolve()
        if _same_or_inside(ip, real):
            what = "is" if ip == real else f"holds the input {i} and"
            raise InputError(f"{option} {out}: {what} an input of this command; writing it would destroy the input "
                             f"(choose another {option})")
    if out.exists() or out.is_symlink():
        empty_dir = out.is_dir() and not out.is_symlink() and not any(out.iterdir())
        if not (empty_dir and kind in _DIR_KINDS) and not is_artifact(out, kind) and not overwrite:
            what = "a directory" if out.is_dir() else "a file"
            raise InputError(f"{option} {out}: exists ({what}) and is not {KINDS[kind]}; it would be replaced: "
                             f"choose another {option}, or pass --overwrite to replace it")
    anc = out.absolute().parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"{option} {out}: {anc} is a file, not a directory")
    free = free_bytes(out)
    if free is not None and free < MIN_FREE_BYTES:
        raise NoSpaceError(f"{option} {out}: no space left on device ({free // 1024} KiB free on its filesystem, "
                           f"{MIN_FREE_BYTES // (1024 * 1024)} MiB needed to start)")
    return out


def disk_full_message(exc: BaseException, out: str | Path | None) -> str | None:
    """The one-line "no space left" message for a failure ``exc`` while writing ``out``, or None when the failure
    is something else: an ``OSError`` with ``ENOSPC`` (anywhere in its cause chain), or any failure (e.g. torch's
    ``RuntimeError: file write failed``) while ``out``'s filesystem has less than 1 MiB free."""
    e = next((x for x in exception_chain(exc) if isinstance(x, OSError) and x.errno == errno.ENOSPC), None)
    where = out if out is not None else getattr(e, "filename", None)
    if e is None:
        if out is None:
            return None
        free = free_bytes(Path(out))
        if free is None or free >= 1024 * 1024:
            return None
    if isinstance(exc, NoSpaceError):
        return str(exc)
    return f"{where}: no space left on device (the write was abandoned; the previous content, if any, is intact)"


def _move_aside(out: Path) -> Path | None:
    if not (out.exists() or out.is_symlink()):
        return None
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    return old


def replace_into(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` (file or directory, a sibling of ``out``) to ``out``, replacing whatever is there
    (moved aside first, removed after the rename)."""
    old = _move_aside(out)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def staged(out: str | Path, directory: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write into; renamed to ``out`` when the block ends normally, removed when
    it raises (Ctrl-C included), so ``out`` is either the previous content or the complete new one.

    Args:
        out: the final path; directory: create the temporary path as an (empty) directory.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent)) if directory else \
        out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        replace_into(tmp, out)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(out: str | Path, text: str) -> Path:
    """Write ``text`` to ``out`` through :func:`staged` (flushed and fsynced before the rename)."""
    with staged(out) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(out)


@contextlib.contextmanager
def command_tempdir(command: str) -> Iterator[Path]:
    """Make ``<tmp>/blemore-<command>-XXXX`` the default folder of :mod:`tempfile` (``tempfile.tempdir``) for the
    block and remove it, with whatever the command left there, when the block ends (success, error, Ctrl-C).

    Only this process's default changes (not ``TMPDIR``): Ray's session folder and other processes are not moved.
    Caches that torch keeps under the temporary folder on purpose (``torchinductor_<user>``, compiled kernels
    reused by the next run) stay where torch puts them by default.
    """
    import getpass

    saved = tempfile.tempdir
    base = tempfile.gettempdir()
    d = Path(tempfile.mkdtemp(prefix=f"blemore-{command}-", dir=base))
    inductor = "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    if inductor:  # torch's default, computed before tempfile's default moves
        user = re.sub(r'[\\/:*?"<>|]', "_", getpass.getuser())
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(base, f"torchinductor_{user}")
    tempfile.tempdir = str(d)
    try:
        yield d
    finally:
        tempfile.tempdir = saved
        if inductor:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        shutil.rmtree(d, ignore_errors=True)


__all__ = ["MIN_FREE_BYTES", "MAX_NAME_LEN", "KINDS", "NoSpaceError", "mask_uri", "mask_secrets", "MaskingStream",
           "masked_console", "unmasked_tracking_uri", "check_search_name", "resolve_search_name", "confined",
           "resume_command", "name_taken_message", "add_overwrite", "is_artifact", "free_bytes", "check_output", "disk_full_message", "replace_into", "staged",
           "write_text_atomic", "command_tempdir"]
