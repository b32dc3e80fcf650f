"""Feature cache: one memory-mapped Arrow IPC file per (release, split, encoder) (docs/ARCHITECTURE.md section 2.3).

File format (``CACHE_FORMAT_VERSION`` 1): an Arrow IPC *file* holding exactly one record batch with columns

* ``filename``: string (N,), the clips in metadata order;
* ``frames``: ``large_list<fixed_size_list<float32, D>>`` (N,); its int64 list offsets are the clip offsets
  (N+1,) and its flat float32 values buffer is all frames (total_T, D), contiguous.

Reading memory-maps the file (``pyarrow.memory_map``) and views both buffers as numpy arrays without copying.
The schema metadata records the fingerprint, encoder, split, D and format version.

The file name carries a fingerprint of the inputs: the resolved root, split, encoder, format version and
every input file's name, size and mtime (``os.stat`` only; contents are not re-read). A build reads and
validates every clip, streams the frames into a temporary raw file, writes the Arrow file under a
temporary name and renames it into place (``os.replace``), so an interrupted or failed build never leaves a
file that a later load trusts. Concurrent builders of the same key serialise on an ``fcntl`` lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..names import cache_root
from .specs import OPENFACE_AUS, EncoderSpec

CACHE_FORMAT_VERSION = 1
_CSV_FEATURES = ("emotion_index", "gaze_yaw", "gaze_pitch") + OPENFACE_AUS


def default_cache_dir(root: Path) -> Path:
    """``<root>/.blemore_cache`` when it can be created and written, else ``$BLEMORE_CACHE/features`` or
    ``~/.cache/blemore/features`` (:func:`blemore_core.names.cache_root`)."""
    cand = Path(root) / ".blemore_cache"
    try:
        cand.mkdir(exist_ok=True)
        if os.access(cand, os.W_OK):
            return cand
    except OSError:
        pass
    return cache_root() / "features"


def scan_folder(folder: Path, extension: str) -> dict[str, tuple[int, int]]:
    """Clip name -> (size, mtime_ns) of every ``*<extension>`` file in a folder (one scandir, stat only)."""
    out = {}
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.endswith(extension):
                st = entry.stat()
                out[entry.name[: -len(extension)]] = (st.st_size, st.st_mtime_ns)
    return out


def fingerprint(
    root: Path, split: str, spec: EncoderSpec, folder: Path, names: Sequence[str], stats: dict[str, tuple[int, int]]
) -> str:
    """SHA-256 (hex) of the inputs of one cache file: stat-based (``stats`` from :func:`scan_folder`).

    Raises:
        ValueError: naming the clip, file and encoder when a metadata clip has no feature file.
    """
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_FORMAT_VERSION, str(Path(root).resolve()), split, spec.key, spec.kind]).encode())
    parts = []
    for name in names:
        st = stats.get(name)
        if st is None:
            raise ValueError(
                f"{Path(folder) / (name + spec.extension)}: clip {name!r} of the metadata has no {spec.key} "
                f"feature file (folder {folder})"
            )
        parts.append(f"{name}\0{st[0]}\0{st[1]}")
    h.update("\n".join(parts).encode())
    return h.hexdigest()


def cache_path(cache_dir: Path, root: Path, split: str, spec: EncoderSpec, fp: str) -> Path:
    """``<cache_dir>/<encoder>-<split>-<root hash>-<fingerprint>.arrow``."""
    rh = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:10]
    return Path(cache_dir) / f"{spec.key}-{split}-{rh}-{fp[:24]}.arrow"


def read_clip(path: str | Path, spec: EncoderSpec) -> np.ndarray:
    """Read and validate one clip's features -> float32 (T, D), C-contiguous.

    ``.npy``: any numeric array; 1-D arrays are one frame (1, D); extra dims are flattened to (T, -1).
    OpenFace CSV: the 11 features of :data:`blemore_core.data.specs.OPENFACE_FEATURES` (emotion_index / 7).

    Raises:
        ValueError: naming the file, for a corrupt or non-numeric file, a 0-d array, T = 0 or D = 0,
            a missing CSV column, or NaN / Inf values.
    """
    if spec.kind == "openface_csv":
        x = _read_openface_csv(path)
    else:
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:  # corrupt header, truncated data, pickled objects
            raise ValueError(f"{path}: corrupt or unreadable .npy file ({type(e).__name__}: {e})") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
            raise ValueError(f"{path}: expected a numeric array, got dtype {getattr(arr, 'dtype', type(arr))}")
        if arr.ndim == 0:
            raise ValueError(f"{path}: expected an array (T, D), got a scalar")
        if arr.size == 0:
            raise ValueError(f"{path}: empty sequence (T = 0 frames or D = 0), shape {arr.shape}")
        x = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
        x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[0] == 0:
        raise ValueError(f"{path}: empty sequence (T = 0 frames), shape {x.shape}")
    if x.shape[1] == 0:
        raise ValueError(f"{path}: feature dimension D = 0, shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        t, d = np.argwhere(bad)[0]
        raise ValueError(f"{path}: {int(bad.sum())} non-finite values (NaN/Inf), first at frame {t}, dim {d}: {x[t, d]}")
    return x


def _read_openface_csv(path: str | Path) -> np.ndarray:
    try:
        with open(path, encoding="utf-8") as f:
            header = [c.strip() for c in f.readline().strip().split(",")]
            missing = [c for c in _CSV_FEATURES if c not in header]
            if missing:
                raise ValueError(f"{path}: OpenFace CSV lacks column(s) {missing} (header: {header})")
            cols = [header.index(c) for c in _CSV_FEATURES]
            body = f.read()
        if not body.strip():
            return np.zeros((0, len(_CSV_FEATURES)), dtype=np.float32)
        data = np.loadtxt(body.splitlines(), delimiter=",", usecols=cols, ndmin=2, dtype=np.float64)
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: unreadable OpenFace CSV ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unreadable OpenFace CSV ({type(e).__name__}: {e})") from None
    data[:, 0] /= 7.0
    return np.ascontiguousarray(data, dtype=np.float32)


def build_cache(
    out: Path, spec: EncoderSpec, split: str, names: Sequence[str], paths: Sequence[str | Path], fp: str,
    progress: bool = True,
) -> None:
    """Read, validate and write every clip of one encoder into the Arrow cache file ``out`` (atomically).

    Raises:
        ValueError: naming the file, for any invalid clip (see :func:`read_clip`) or a D that differs from
            the first clip's. Nothing is left at ``out`` on failure.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    raw = out.parent / f".{out.name}.raw-{tag}"
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    dim = None
    first = None
    try:
        with open(raw, "wb") as f:
            for i, p in enumerate(tqdm(paths, desc=f"cache {spec.key}/{split}", disable=not progress, unit="clip")):
                x = read_clip(p, spec)
                if dim is None:
                    dim, first = x.shape[1], p
                elif x.shape[1] != dim:
                    raise ValueError(
                        f"{p}: feature dimension D = {x.shape[1]} differs from D = {dim} of {first} "
                        f"(encoder {spec.key}, shape {x.shape})"
                    )
                f.write(x.tobytes())
                offsets[i + 1] = offsets[i] + x.shape[0]
        if dim is None:
            raise ValueError(f"{spec.key}/{split}: no clips to cache")
        total = int(offsets[-1])
        with pa.memory_map(str(raw), "r") as mm:
            buf = mm.read_buffer()
            values = pa.Array.from_buffers(pa.float32(), total * dim, [None, buf])
            frames = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()),
                                                   pa.FixedSizeListArray.from_arrays(values, dim))
            meta = {"fingerprint": fp, "encoder": spec.key, "split": split, "dim": str(dim),
                    "format_version": str(CACHE_FORMAT_VERSION)}
            batch = pa.record_batch([pa.array(list(names), pa.string()), frames], names=["filename", "frames"])
            batch = batch.replace_schema_metadata(meta)
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
                writer.write_batch(batch)
            del batch, frames, values, buf
        os.replace(tmp, out)
    finally:
        for p in (raw, tmp):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def open_cache(path: Path, fp: str, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Memory-map a cache file -> (frames (total_T, D) float32 read-only, offsets (N+1,) int64, D).

    Returns None (the caller rebuilds) when the file is missing, unreadable, or its fingerprint, format
    version or clip list differ from the expected ones.
    """
    try:
        mm = pa.memory_map(str(path), "r")
        reader = pa.ipc.open_file(mm)
        meta = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
        if (meta.get("fingerprint") != fp or meta.get("format_version") != str(CACHE_FORMAT_VERSION)
                or reader.num_record_batches != 1):
            return None
        batch = reader.get_batch(0)
        if batch.column("filename").to_pylist() != list(names):
            return None
        col = batch.column("frames")
        dim = int(meta["dim"])
        offsets = col.offsets.to_numpy(zero_copy_only=True)
        flat = col.values.values.to_numpy(zero_copy_only=True)
        frames = flat.reshape(-1, dim)
        if offsets[0] != 0 or offsets[-1] != frames.shape[0]:
            return None
        return frames, offsets, dim
    except (OSError, pa.ArrowException, KeyError, ValueError):
        return None


def load_or_build(
    cache_dir: Path, root: Path, split: str, spec: EncoderSpec, folder: Path, names: Sequence[str],
    stats: dict[str, tuple[int, int]], progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The cached (frames, offsets, D) of one encoder and split, building the cache file when needed.

    The fingerprint is stat-based (cheap); a valid cache is memory-mapped, anything else is rebuilt under an
    exclusive lock, and older cache files of the same (root, split, encoder) are removed afterwards.
    """
    fp = fingerprint(root, split, spec, folder, names, stats)
    path = cache_path(cache_dir, root, split, spec, fp)
    got = open_cache(path, fp, names)
    if got is not None:
        return got
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name.rsplit("-", 1)[0] + ".lock")
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            got = open_cache(path, fp, names)          # another process may have built it meanwhile
            if got is None:
                paths = [os.path.join(folder, n + spec.extension) for n in names]
                build_cache(path, spec, split, names, paths, fp, progress)
                stem = path.name.rsplit("-", 1)[0]
                for old in Path(cache_dir).glob(f"{stem}-*.arrow"):
                    if old != path:
                        try:
                            old.unlink()
                        except OSError:
                            pass
                got = open_cache(path, fp, names)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    if got is None:
        raise OSError(f"{path}: cache file unreadable right after building it")
    return got
