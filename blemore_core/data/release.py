"""Release reader: metadata, labels, folds and per-encoder features of a BlEmoRe release (docs/ARCHITECTURE.md 2.1-2.3).

Reads the organisers' layout unchanged (see :mod:`blemore_core.data.specs`). For each requested encoder the
per-clip folder ``<root>/pre_extracted_<split>_data/<Folder>_<split>/`` is used when it exists (through the
Arrow cache of :mod:`blemore_core.data.cache`); otherwise the organisers' aggregated file is looked up, in
this order:

* train: ``<root>/<key>_static_features.npz``, ``<root>/pre_extracted_train_data/<key>_static_features.npz``
* test: ``<root>/<key>_static_features_test.npz``, ``<root>/pre_extracted_test_data/<key>_static_features_test.npz``,
  ``<root>/pre_extracted_test_data/<key>_static_features.npz``

with keys ``X`` (N, 7*D) and ``filenames`` (N,) (extensions such as ``.mov`` are stripped).

Labels come from the filename grammar (:func:`blemore_core.labels.parse_filename`) and are cross-checked
against the metadata columns where present; a mismatch is a ValueError naming the file, row and field.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import MAX_TABLE_BYTES, read_capped
from ..labels import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS, ClipName, parse_filename, strip_extension
from .cache import default_cache_dir, load_or_build, scan_folder
from .folds import assign_folds, check_actor_disjoint
from .specs import (
    ENCODERS,
    REQUIRED_TRAIN_COLUMNS,
    SPLIT_DIRS,
    SPLITS,
    TEST_LABEL_COLUMNS,
    TEST_LABELS,
    TEST_METADATA,
    TRAIN_METADATA,
    EncoderSpec,
    encoder_spec,
)
from .temporal import aggregate

N_FOLDS = 5


@dataclass(frozen=True)
class SequenceFeatures:
    """Per-frame features of one encoder for every clip of a split, concatenated.

    Attributes:
        encoder: encoder key.
        frames: (total_T, D) float32, read-only, memory-mapped from the Arrow cache.
        offsets: (N+1,) int64; clip i is ``frames[offsets[i]:offsets[i+1]]`` (T_i >= 1).
        dim: D.
    """

    encoder: str
    frames: np.ndarray
    offsets: np.ndarray
    dim: int

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 frames per clip."""
        return np.diff(self.offsets)

    def clip(self, i: int) -> np.ndarray:
        """Frames of clip i: (T_i, D) float32 view."""
        return self.frames[self.offsets[i] : self.offsets[i + 1]]


@dataclass
class ReleaseData:
    """One split of a release, rows in metadata order.

    Attributes:
        root: release root. split: ``"train"`` or ``"test"``.
        filenames: N clip names without extension.
        actors: (N,) int64 actor ids (-1 for test clips).
        folds: (N,) int64 fold 0..4 (-1 for test clips).
        labels: (N, 6) float32 salience arrays (test: from test_labels.csv when present, else NaN).
        sequences: encoder -> :class:`SequenceFeatures` (when per-clip files exist).
        aggregated: encoder -> (N, 7*D) float32 read from the organisers' npz.
    """

    root: Path
    split: str
    filenames: list[str]
    actors: np.ndarray
    folds: np.ndarray
    labels: np.ndarray
    sequences: dict[str, SequenceFeatures] = field(default_factory=dict)
    aggregated: dict[str, np.ndarray] = field(default_factory=dict)
    _agg_memo: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def encoders(self) -> tuple[str, ...]:
        """Encoder keys available (sequence or aggregated), in registry order."""
        return tuple(k for k in ENCODERS if k in self.sequences or k in self.aggregated)

    def __len__(self) -> int:
        return len(self.filenames)

    def dim(self, encoder: str) -> int:
        """D of an encoder (per-frame width; the aggregated width is 7*D)."""
        if encoder in self.sequences:
            return self.sequences[encoder].dim
        if encoder in self.aggregated:
            return self.aggregated[encoder].shape[1] // 7
        raise ValueError(f"encoder {encoder!r} not loaded (loaded: {', '.join(self.encoders) or 'none'})")

    def aggregated_features(self, encoder: str) -> np.ndarray:
        """(N, 7*D) float32 static features: the npz array, or :func:`aggregate` of the sequences (memoised).

        Raises:
            ValueError: when the encoder was not loaded.
        """
        if encoder in self.aggregated:
            return self.aggregated[encoder]
        if encoder in self.sequences:
            if encoder not in self._agg_memo:
                s = self.sequences[encoder]
                self._agg_memo[encoder] = aggregate(s.frames, s.offsets)
            return self._agg_memo[encoder]
        raise ValueError(f"encoder {encoder!r} not loaded (loaded: {', '.join(self.encoders) or 'none'})")


# --------------------------------------------------------------------------------------------- metadata
def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and v.strip() == "")


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _expected_columns(clips: list[ClipName]) -> dict[str, list]:
    """What the filename of each clip implies for the metadata columns (None = no value implied)."""
    exp: dict[str, list] = {k: [] for k in ("video_id", "mix", "emotion_1", "version", "intensity_level",
                                            "situation", "emotion_2", "emotion_1_salience", "emotion_2_salience")}
    for c in clips:
        blend = c.kind == "blend"
        exp["video_id"].append(f"A{c.actor}")
        exp["mix"].append(1.0 if blend else 0.0)
        exp["emotion_1"].append(c.emotions[0])
        exp["version"].append(float(c.version))
        exp["intensity_level"].append(float(c.intensity) if c.kind == "single" else None)
        exp["situation"].append(float(c.situation) if c.kind == "neutral" else None)
        exp["emotion_2"].append(c.emotions[1] if blend else None)
        exp["emotion_1_salience"].append(float(c.saliences[0]) if blend else None)
        exp["emotion_2_salience"].append(float(c.saliences[1]) if blend else None)
    return exp


def _cross_check(path: Path, df: pd.DataFrame, names: list[str], clips: list[ClipName]) -> None:
    """Compare every metadata column with what the filenames say (vectorised per column).

    Empty cells are not checked. Where the filename implies no value, a non-empty cell is a mismatch for
    ``emotion_2``; saliences of singles may be given as 100 / 0; intensity / situation of other kinds are
    ignored.

    Raises:
        ValueError: naming the file, row, clip, field, value and the expected value.
    """
    for col, want in _expected_columns(clips).items():
        if col not in df.columns:
            continue
        got = df[col]
        present = ~got.isna().to_numpy()
        if not pd.api.types.is_numeric_dtype(got):
            present &= (got.astype(str).str.strip() != "").to_numpy()
        numeric = not isinstance(next((w for w in want if w is not None), ""), str)
        if numeric:
            g = pd.to_numeric(got, errors="coerce").to_numpy(dtype=np.float64)
            w = np.array([np.nan if v is None else v for v in want], dtype=np.float64)
            none = np.isnan(w)
            if col == "emotion_1_salience":
                w = np.where(none, 100.0, w)
            elif col == "emotion_2_salience":
                w = np.where(none, 0.0, w)
            elif col in ("intensity_level", "situation"):
                present &= ~none
            bad = present & ~(g == w)
        else:
            g = got.astype(str).str.strip().to_numpy()
            w = np.array(["" if v is None else v for v in want], dtype=object)
            bad = present & (g != w)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            expected = want[i] if want[i] is not None else "no value"
            raise ValueError(
                f"{path}: line {i + 2} ({names[i]}): field {col!r} = {got.iloc[i]!r} disagrees with the filename "
                f"(expected {expected!r})"
            )


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"{path}: metadata file not found")
    try:
        df = pd.read_csv(io.BytesIO(read_capped(path, MAX_TABLE_BYTES, "metadata table")), dtype={"filename": str})
    except Exception as e:
        raise ValueError(f"{path}: unreadable CSV ({type(e).__name__}: {e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (found: {list(df.columns)})")
    return df


def _parse_names(path: Path, raw: list) -> tuple[list[str], list[ClipName]]:
    names, clips = [], []
    seen: dict[str, int] = {}
    for i, r in enumerate(raw):
        if _isnan(r):
            raise ValueError(f"{path}: line {i + 2}: field 'filename' is empty")
        n = strip_extension(str(r).strip())
        try:
            c = parse_filename(n)
        except ValueError as e:
            raise ValueError(f"{path}: line {i + 2}: field 'filename' = {r!r}: {e}") from None
        if n in seen:
            raise ValueError(f"{path}: line {i + 2}: filename {n!r} repeats line {seen[n] + 2}")
        seen[n] = i
        names.append(n)
        clips.append(c)
    if not names:
        raise ValueError(f"{path}: no rows")
    return names, clips


def _labels_from_columns(path: Path, df: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Salience arrays (N, 6) from label columns (test_labels.csv), rows aligned with ``names``."""
    recs = df.to_dict("list")
    file_names = [strip_extension(str(n)) for n in recs["filename"]]
    pos = {n: i for i, n in enumerate(file_names)}
    out = np.full((len(names), NUM_EMOTIONS), np.nan, dtype=np.float32)
    for k, n in enumerate(names):
        if n not in pos:
            raise ValueError(f"{path}: no row for clip {n!r} of the metadata")
        i = pos[n]
        e1, e2, mix = recs["emotion_1"][i], recs["emotion_2"][i], _num(recs["mix"][i])
        if e1 not in EMOTION_INDEX:
            raise ValueError(f"{path}: line {i + 2} ({n}): field 'emotion_1' = {e1!r} is not one of {EMOTIONS}")
        v = np.zeros(NUM_EMOTIONS, dtype=np.float32)
        if mix == 1:
            if e2 not in EMOTION_INDEX:
                raise ValueError(f"{path}: line {i + 2} ({n}): field 'emotion_2' = {e2!r} is not one of {EMOTIONS}")
            v[EMOTION_INDEX[e1]] = _num(recs["emotion_1_salience"][i]) / 100.0
            v[EMOTION_INDEX[e2]] = _num(recs["emotion_2_salience"][i]) / 100.0
        elif mix == 0:
            v[EMOTION_INDEX[e1]] = 1.0
        else:
            raise ValueError(f"{path}: line {i + 2} ({n}): field 'mix' = {recs['mix'][i]!r} must be 0 or 1")
        if not np.isfinite(v).all() or abs(float(v.sum()) - 1.0) > 1e-4:
            raise ValueError(f"{path}: line {i + 2} ({n}): saliences do not sum to 100: {v.tolist()}")
        out[k] = v
    return out


def _read_metadata(root: Path, split: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    if split == "train":
        path = root / TRAIN_METADATA
        df = _read_csv(path, REQUIRED_TRAIN_COLUMNS)
        names, clips = _parse_names(path, df["filename"].tolist())
        for i, c in enumerate(clips):
            if not c.has_label:
                raise ValueError(f"{path}: line {i + 2}: field 'filename' = {c.filename!r} is a test clip name")
        _cross_check(path, df, names, clips)
        labels = np.stack([c.salience_vector() for c in clips]).astype(np.float32)
        actors = np.array([c.actor for c in clips], dtype=np.int64)
        if "fold" in df.columns:
            folds = np.empty(len(names), dtype=np.int64)
            for i, f in enumerate(df["fold"].tolist()):
                fv = _num(f)
                if _isnan(f) or not isinstance(fv, float) or fv != int(fv) or not 0 <= fv < N_FOLDS:
                    raise ValueError(f"{path}: line {i + 2} ({names[i]}): field 'fold' = {f!r} must be an integer 0..{N_FOLDS - 1}")
                folds[i] = int(fv)
        else:
            folds = assign_folds(actors, N_FOLDS)
        try:
            check_actor_disjoint(actors, folds, names)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return names, actors, folds, labels
    path = root / TEST_METADATA
    df = _read_csv(path, ("filename",))
    names, _ = _parse_names(path, df["filename"].tolist())
    lab_path = root / TEST_LABELS
    if lab_path.is_file():
        labels = _labels_from_columns(lab_path, _read_csv(lab_path, TEST_LABEL_COLUMNS), names)
    else:
        labels = np.full((len(names), NUM_EMOTIONS), np.nan, dtype=np.float32)
    n = len(names)
    return names, np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64), labels


# ------------------------------------------------------------------------------------------------- features
def npz_candidates(root: Path, split: str, key: str) -> list[Path]:
    """Where the organisers' aggregated ``<key>_static_features.npz`` is looked for, in order."""
    if split == "train":
        return [root / f"{key}_static_features.npz", root / SPLIT_DIRS["train"] / f"{key}_static_features.npz"]
    d = root / SPLIT_DIRS["test"]
    return [root / f"{key}_static_features_test.npz", d / f"{key}_static_features_test.npz",
            d / f"{key}_static_features.npz"]


#: the only globals an object-array ``filenames`` pickle may name: numpy's array reconstruction and dtype
_NPZ_PICKLE_GLOBALS = frozenset({
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})
_CONVERT_HINT = ("convert it once with: python -c \"import numpy as np; z = np.load('F', allow_pickle=True); "
                 "np.savez('F', X=z['X'], filenames=z['filenames'].astype(str))\" (only for a file you trust)")


class _StringArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild a numpy object array and nothing else (no other global is resolvable, so a
    crafted pickle cannot call ``os.system`` or any other function)."""

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in _NPZ_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _read_object_strings(path: Path, member: str) -> np.ndarray:
    """Read the object-array member ``member`` (e.g. ``filenames``) of the ``.npz`` at ``path`` WITHOUT general
    unpickling: only numpy's array reconstruction is resolvable, and every element must be a str (or bytes,
    decoded as UTF-8). Returns an (N,) ``<U`` array.

    Raises:
        ValueError: naming the file and field, for any other content (a crafted pickle included), with how to
            convert a trusted file to a plain string array.
    """
    import io
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read(member + ".npy")
        f = io.BytesIO(raw)
        version = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(f)
        if dtype.kind != "O":
            raise ValueError(f"dtype {dtype}")
        arr = _StringArrayUnpickler(f).load()
    except Exception as e:
        raise ValueError(f"{path}: field {member!r} is an object array that is not a plain list of strings "
                         f"({type(e).__name__}: {e}); refused without unpickling; "
                         + _CONVERT_HINT.replace("F", str(path))) from None
    if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
        raise ValueError(f"{path}: field {member!r}: object array of unexpected type/shape; " +
                         _CONVERT_HINT.replace("F", str(path)))
    out = []
    for i, v in enumerate(arr.reshape(-1).tolist()):
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        if not isinstance(v, str):
            raise ValueError(f"{path}: field {member!r} row {i}: expected a string, got {type(v).__name__}")
        out.append(v)
    return np.asarray(out, dtype=str)


def _read_npz(path: Path, names: list[str]) -> np.ndarray:
    """Aggregated features (N, 7*D) float32 of the organisers' ``.npz``, rows aligned with ``names``.

    Never unpickles: ``X`` must be a numeric array; an object-array ``filenames`` (how the organisers' files
    may store it) is read by :func:`_read_object_strings`, which accepts only strings.

    Raises:
        ValueError: naming the file and field (missing key, shape, dtype, duplicates, missing clips, NaN/Inf).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("X", "filenames") if k not in z.files]
            if missing:
                raise ValueError(f"{path}: missing key(s) {missing} (keys: {z.files})")
            try:
                x = np.asarray(z["X"])
            except ValueError as e:
                if "allow_pickle" in str(e) or "Object arrays" in str(e):
                    raise ValueError(f"{path}: field 'X' is an object array; it must be numeric (N, 7*D)") from None
                raise
            try:
                files = np.asarray(z["filenames"])
            except ValueError as e:
                if "allow_pickle" not in str(e) and "Object arrays" not in str(e):
                    raise
                files = _read_object_strings(path, "filenames")
    except Exception as e:
        if isinstance(e, ValueError) and str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: unreadable .npz ({type(e).__name__}: {e})") from None
    if x.ndim != 2 or x.shape[1] % 7 != 0 or x.shape[1] == 0:
        raise ValueError(f"{path}: field 'X' must have shape (N, 7*D), got {x.shape}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{path}: field 'X' must be numeric, got dtype {x.dtype}")
    files = [strip_extension(str(f)) for f in np.asarray(files).reshape(-1)]
    if len(files) != len(x):
        raise ValueError(f"{path}: 'filenames' has {len(files)} entries but 'X' has {len(x)} rows")
    pos: dict[str, int] = {}
    for i, f in enumerate(files):
        if f in pos:
            raise ValueError(f"{path}: filename {f!r} appears twice (rows {pos[f]} and {i})")
        pos[f] = i
    missing = [n for n in names if n not in pos]
    if missing:
        raise ValueError(f"{path}: clip {missing[0]!r} of the metadata has no row ({len(missing)} missing)")
    extra = len(files) - len(names)
    if extra:
        warnings.warn(f"{path}: {extra} rows have no metadata row and are ignored", stacklevel=3)
    out = np.ascontiguousarray(x[[pos[n] for n in names]], dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{path}: field 'X' has {int(bad.sum())} non-finite values, first for clip {names[r]!r} column {c}")
    return out


def _scan_features(folder: Path, spec: EncoderSpec, names: list[str]) -> dict[str, tuple[int, int]]:
    stats = scan_folder(folder, spec.extension)
    known = set(names)
    extra = [f for f in stats if f not in known]
    if extra:
        warnings.warn(
            f"{folder}: {len(extra)} {spec.key} feature file(s) have no metadata row and are ignored "
            f"(e.g. {sorted(extra)[0]}{spec.extension})",
            stacklevel=3,
        )
    return stats


def load_release(
    root: str | os.PathLike,
    encoders: list[str] | tuple[str, ...],
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ReleaseData:
    """Load one split of a BlEmoRe release (real or synthetic) with the features of ``encoders``.

    Per-clip sequences go through the Arrow feature cache (built on first use, memory-mapped afterwards;
    a second call only stats the input files). Validation (metadata, labels, folds, every clip's shape and
    values) happens before anything is cached.

    Args:
        root: release root (the folder holding ``train_metadata.csv``).
        encoders: encoder keys (see :data:`ENCODERS`).
        split: ``"train"`` or ``"test"``.
        cache_dir: where cache files go (default :func:`default_cache_dir`: ``<root>/.blemore_cache`` when
            writable, else ``~/.cache/blemore/features``).
        progress: tqdm progress bar while building a cache.
    Returns:
        :class:`ReleaseData`, rows in metadata order.
    Raises:
        ValueError: naming the file, field and value, for: a missing root or metadata file or column, an
            unparsable filename or unknown emotion code, a metadata field disagreeing with the filename, a
            bad or actor-overlapping fold, an unknown encoder key, an encoder with neither per-clip files nor
            an npz, a metadata clip without a feature file, a corrupt file, inconsistent D, T = 0, NaN/Inf.
        Feature files without a metadata row are reported with ``warnings.warn`` and ignored.
    """
    root = Path(root).expanduser()
    if split not in SPLITS:
        raise ValueError(f"split: unknown split {split!r} (valid: {', '.join(SPLITS)})")
    if isinstance(encoders, str):
        encoders = [encoders]
    keys = [encoder_spec(e).key for e in encoders]
    if len(set(keys)) != len(keys):
        raise ValueError(f"encoders: duplicate encoder key in {list(encoders)}")
    if not root.is_dir():
        raise ValueError(f"{root}: release root is not a directory")
    names, actors, folds, labels = _read_metadata(root, split)
    data = ReleaseData(root=root, split=split, filenames=names, actors=actors, folds=folds, labels=labels)
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else None
    for key in keys:
        spec = ENCODERS[key]
        folder = root / SPLIT_DIRS[split] / spec.split_folder(split)
        if folder.is_dir():
            stats = _scan_features(folder, spec, names)
            if cdir is None:
                cdir = default_cache_dir(root)
            frames, offsets, dim = load_or_build(cdir, root, split, spec, folder, names, stats, progress)
            data.sequences[key] = SequenceFeatures(key, frames, offsets, dim)
            continue
        cands = npz_candidates(root, split, key)
        found = next((p for p in cands if p.is_file()), None)
        if found is None:
            raise ValueError(
                f"encoder {key!r}: no features for split {split!r}: neither folder {folder} nor any of "
                f"{[str(p) for p in cands]} exists"
            )
        data.aggregated[key] = _read_npz(found, names)
    return data
