"""CodaBench submission files: write, read and validate; read label tables for scoring.

Source: docs/ARCHITECTURE.md section 3 (submission format) and the challenge's submission template. A submission is one JSON
object ``{"predictions": {"test_0001.mov": [{"emotion": "hap", "salience": 70.0}, {"emotion": "sad",
"salience": 30.0}], ...}}`` (salience in percent), uploaded zipped as a single JSON file.

Conventions:

* In memory a prediction is a salience vector (6,) of fractions (emotion order of :data:`labels.EMOTIONS`).
  :func:`read_predictions` returns float64 fractions (percent / 100), so that the metrics' whole-percent rounding
  reproduces the challenge's ``round(salience)`` on the file's percent values.
* Keys are clip names; the file carries ``.mov`` (as CodaBench expects), the returned dicts carry the name without
  extension.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from blemore_core.io import MAX_TABLE_BYTES, BoundedInputError, loads_json, read_capped
from blemore_core.labels import (
    EMOTION_INDEX,
    EMOTIONS,
    NUM_EMOTIONS,
    challenge_to_vector,
    parse_filename,
    strip_extension,
    vector_to_challenge,
)

__all__ = [
    "SubmissionError",
    "SUBMISSION_JSON_NAME",
    "predictions_to_json",
    "write_submission",
    "read_predictions",
    "check_coverage",
    "read_label_table",
]

SUBMISSION_JSON_NAME = "predictions.json"
"""Name of the JSON member inside a written submission zip."""


class SubmissionError(ValueError):
    """A malformed submission or label file; the message names the file and, where one is at fault, the clip."""


def predictions_to_json(filenames: Sequence[str], salience: np.ndarray, extension: str = ".mov") -> dict[str, Any]:
    """Build the submission object ``{"predictions": {name + extension: challenge list}}``.

    Args:
        filenames: N clip names (with or without extension; the extension is normalised to ``extension``).
        salience: float (N, 6) salience array; each row one or two emotions (> 0), fractions.
        extension: appended to every key (default ``.mov``, as CodaBench expects).

    Returns:
        The JSON-ready dict; each clip's list in descending salience, percent rounded to one decimal
        (:func:`labels.vector_to_challenge`).

    Raises:
        SubmissionError: for a length mismatch, a duplicate name, or a row with no emotion or more than two.
    """
    names = [strip_extension(f) for f in filenames]
    s = np.asarray(salience, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != NUM_EMOTIONS:
        raise SubmissionError(f"salience: expected shape (N, 6), got {s.shape}")
    if len(names) != len(s):
        raise SubmissionError(f"{len(names)} filenames but {len(s)} salience rows")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise SubmissionError(f"clip {dup!r}: listed more than once")
    if not np.isfinite(s).all() or (s < 0).any():
        r = int(np.flatnonzero((~np.isfinite(s) | (s < 0)).any(axis=1))[0])
        raise SubmissionError(f"clip {names[r]!r}: salience row {s[r].tolist()} has a negative or non-finite value")
    k = (s > 0).sum(axis=1)
    bad = np.flatnonzero((k < 1) | (k > 2))
    if len(bad):
        r = int(bad[0])
        raise SubmissionError(f"clip {names[r]!r}: a prediction needs one or two emotions, got {int(k[r])}")
    return {"predictions": {n + extension: vector_to_challenge(row) for n, row in zip(names, s, strict=True)}}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_submission(
    path: str | os.PathLike, filenames: Sequence[str], salience: np.ndarray, json_name: str = SUBMISSION_JSON_NAME
) -> Path:
    """Write a CodaBench submission atomically (temp file in the same folder + rename).

    Args:
        path: ``*.zip`` -> a zip holding one JSON member ``json_name``; ``*.json`` -> the plain JSON.
        filenames: N clip names, e.g. ``test_0001`` (``.mov`` is added); salience: float (N, 6) salience array,
            e.g. the output of :func:`decoding.decode`.

    Returns:
        The written path.

    Raises:
        SubmissionError: see :func:`predictions_to_json`, or for a path that is neither .zip nor .json.
    """
    path = Path(path)
    obj = predictions_to_json(filenames, salience)
    text = json.dumps(obj, indent=1).encode("utf-8")
    suffix = path.suffix.lower()
    if suffix == ".json":
        _atomic_write_bytes(path, text)
    elif suffix == ".zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(json_name, text)
        _atomic_write_bytes(path, buf.getvalue())
    else:
        raise SubmissionError(f"{path}: submission path must end in .zip or .json")
    return path


def _zip_member(path: Path, zf: zipfile.ZipFile) -> tuple[bytes, str]:
    """The one JSON member of a submission zip, read up to :data:`blemore_core.io.MAX_TABLE_BYTES` (a zip bomb
    stops there)."""
    members = [m for m in zf.namelist() if m.lower().endswith(".json") and not m.startswith("__MACOSX")]
    if len(members) != 1:
        raise SubmissionError(f"{path}: a submission zip must hold exactly one .json file, found {members}")
    where = f"{path}!{members[0]}"
    if zf.getinfo(members[0]).file_size > MAX_TABLE_BYTES:
        raise SubmissionError(f"{where}: larger than the {MAX_TABLE_BYTES // 2**20} MiB cap; refused")
    with zf.open(members[0]) as fh:
        raw = fh.read(MAX_TABLE_BYTES + 1)
    if len(raw) > MAX_TABLE_BYTES:
        raise SubmissionError(f"{where}: larger than the {MAX_TABLE_BYTES // 2**20} MiB cap; refused")
    return raw, where


def _load_json(path: Path) -> Any:
    if path.is_dir():
        raise SubmissionError(f"{path}: is a directory; expected a submission .zip or .json file")
    try:
        raw = read_capped(path, MAX_TABLE_BYTES, "prediction file")
        if raw[:2] == b"PK" and not zipfile.is_zipfile(io.BytesIO(raw)):
            raise SubmissionError(f"{path}: truncated or corrupt zip (no zip directory found); re-create the file")
        if zipfile.is_zipfile(io.BytesIO(raw)):
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                raw, where = _zip_member(path, zf)
        else:
            where = str(path)
    except FileNotFoundError:
        raise SubmissionError(f"{path}: no such file") from None
    except BoundedInputError as e:
        raise SubmissionError(str(e)) from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:  # CRC error, truncated member, unreadable
        raise SubmissionError(f"{path}: truncated or corrupt zip ({type(e).__name__}: {e})") from None
    try:
        return loads_json(raw, where), where
    except BoundedInputError as e:
        raise SubmissionError(str(e)) from None


def _is_usual(v: np.ndarray) -> bool:
    nz = v[v > 0]
    pct = {int(x) for x in np.round(np.round(100.0 * nz, 4))}
    return (len(nz) == 1 and pct == {100}) or (len(nz) == 2 and pct in ({50}, {70, 30}))


#: tolerance (percent) on a clip's salience sum: the file's values are rounded to one decimal
SUM_TOLERANCE_PCT = 0.1


def _check_percents(where: str, key: str, items: Sequence[dict], v: np.ndarray) -> None:
    """Saliences are percents: each in (0, 100] (a fraction of the clip: [0, 1] once divided by 100), and a
    clip's saliences sum to at most 100."""
    for it in items:
        s = float(it["salience"])
        if not 0.0 < s <= 100.0:
            raise SubmissionError(f"{where}: clip {key!r}, field 'salience' of {it['emotion']!r}: must be a percent "
                                  f"in (0, 100] (the file's saliences are percents), got {it['salience']!r}")
    total = 100.0 * float(v.sum())
    if total > 100.0 + SUM_TOLERANCE_PCT:
        raise SubmissionError(f"{where}: clip {key!r}, field 'salience': the saliences sum to {total:g} percent, "
                              "more than 100")


def read_predictions(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a submission (``.zip`` with one JSON member, or a ``.json`` file).

    Returns:
        ``{clip name without extension: float64 (6,) fractions}`` in file order.

    Raises:
        SubmissionError: naming the file (and the clip), for: a missing file, a zip without exactly one JSON, invalid
            JSON (also larger than :data:`blemore_core.io.MAX_TABLE_BYTES` or nested too deep), no top-level object
            with key ``"predictions"`` mapping names to lists, an unknown emotion code, a non-numeric salience or
            one outside (0, 100] percent, saliences summing to more than 100, the same emotion twice, more than two
            emotions, or the same clip twice (names are compared without extension).

    Warns:
        UserWarning (``warnings.warn``) for well-formed but unusual predictions (a pair other than 50/50 or
        70/30, a single emotion not at 100): they are kept and scored as the challenge scores them.
    """
    path = Path(path)
    obj, where = _load_json(path)
    if not isinstance(obj, dict) or "predictions" not in obj:
        keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise SubmissionError(f"{where}: missing top-level key 'predictions' (found {keys})")
    preds = obj["predictions"]
    if not isinstance(preds, dict):
        raise SubmissionError(f"{where}: 'predictions' must map clip names to lists, got {type(preds).__name__}")
    out: dict[str, np.ndarray] = {}
    unusual: list[str] = []
    for key, items in preds.items():
        name = strip_extension(key)
        if name in out:
            raise SubmissionError(f"{where}: clip {key!r} is listed twice (names are compared without extension)")
        try:
            v32 = challenge_to_vector(items, key)
        except ValueError as e:
            raise SubmissionError(f"{where}: {e}") from None
        v = np.zeros(NUM_EMOTIONS, dtype=np.float64)
        for it in items:  # float64 from the file's percent values (challenge_to_vector returns float32)
            v[EMOTION_INDEX[it["emotion"]]] = float(it["salience"]) / 100.0
        if (v32 > 0).sum() != len(items):
            raise SubmissionError(f"{where}: clip {key!r}: a listed emotion has salience 0 ({items!r})")
        _check_percents(where, key, items, v)
        if not _is_usual(v):
            unusual.append(key)
        out[name] = v
    if unusual:
        shown = ", ".join(repr(k) for k in unusual[:5]) + (" ..." if len(unusual) > 5 else "")
        warnings.warn(
            f"{where}: {len(unusual)} prediction(s) are not one emotion at 100 or a 50/50 or 70/30 pair "
            f"(e.g. {shown}); they are scored as the challenge scores them (salience-wrong unless they round to the "
            "true whole percents)",
            UserWarning,
            stacklevel=2,
        )
    return out


def check_coverage(predictions: Mapping[str, Any], expected: Sequence[str], source: str = "predictions") -> None:
    """Check that a prediction mapping covers exactly the ``expected`` clip names (extensions ignored).

    Raises:
        SubmissionError: naming ``source`` and up to five clips, for missing or unexpected clips.
    """
    have = {strip_extension(k) for k in predictions}
    want = {strip_extension(k) for k in expected}
    missing, extra = sorted(want - have), sorted(have - want)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} clip(s) missing (e.g. {missing[:5]})")
        if extra:
            parts.append(f"{len(extra)} clip(s) not expected (e.g. {extra[:5]})")
        raise SubmissionError(f"{source}: " + "; ".join(parts))


_LABEL_COLUMNS = ("emotion_1", "emotion_2", "emotion_1_salience", "emotion_2_salience")


def read_label_table(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Ground-truth labels from ``train_metadata.csv`` or (synthetic releases) ``test_labels.csv``.

    Training names (``A<actor>_...``) are labelled by the filename grammar (docs/ARCHITECTURE.md section 2.2); test ids (``test_NNNN``)
    by the columns ``emotion_1``, ``emotion_2`` (empty for a single emotion), ``emotion_1_salience``,
    ``emotion_2_salience`` (percent; a single emotion is 100 whatever the column says, as the organisers'
    ``metadata2label``).

    Returns:
        ``{filename without extension: float64 (6,) fractions}`` in table order.

    Raises:
        SubmissionError: naming the file, the row's filename and the column, for a missing ``filename`` column,
            an unparsable filename, a test id without label columns or with an unknown emotion / bad salience,
            or a duplicate filename.
    """
    import pandas as pd

    path = Path(path)
    try:  # read up to the size cap: an endless or huge file is refused, not read into memory
        df = pd.read_csv(io.BytesIO(read_capped(path, MAX_TABLE_BYTES, "label table")), dtype={"filename": str})
    except FileNotFoundError:
        raise SubmissionError(f"{path}: no such file") from None
    except BoundedInputError as e:
        raise SubmissionError(str(e)) from None
    except Exception as e:  # pandas parser errors
        raise SubmissionError(f"{path}: cannot read as CSV ({e})") from None
    if "filename" not in df.columns:
        raise SubmissionError(f"{path}: no 'filename' column (columns: {list(df.columns)})")
    has_cols = all(c in df.columns for c in _LABEL_COLUMNS)
    out: dict[str, np.ndarray] = {}
    for r, row in enumerate(df.to_dict("records")):
        raw = row["filename"]
        if not isinstance(raw, str) or not raw:
            raise SubmissionError(f"{path}: row {r + 2}: empty filename")
        try:
            clip = parse_filename(raw)
        except ValueError as e:
            raise SubmissionError(f"{path}: {e}") from None
        if clip.filename in out:
            raise SubmissionError(f"{path}: filename {raw!r} appears twice")
        if clip.has_label:
            out[clip.filename] = clip.salience_vector().astype(np.float64)
            continue
        if not has_cols:
            missing = [c for c in _LABEL_COLUMNS if c not in df.columns]
            raise SubmissionError(f"{path}: test clip {raw!r} needs label columns {missing} (not in the file)")
        out[clip.filename] = _row_label(path, raw, row)
    if not out:
        raise SubmissionError(f"{path}: no rows")
    return out


def _row_label(path: Path, name: str, row: dict) -> np.ndarray:
    def emo(col: str) -> str | None:
        v = row.get(col)
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            return None
        if v not in EMOTION_INDEX:
            raise SubmissionError(f"{path}: clip {name!r}, column {col!r}: unknown emotion {v!r} (valid: {', '.join(EMOTIONS)})")
        return v

    def sal(col: str) -> float:
        v = row.get(col)
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        if not np.isfinite(f) or f <= 0:
            raise SubmissionError(f"{path}: clip {name!r}, column {col!r}: salience must be a positive number, got {v!r}")
        return f

    e1, e2 = emo("emotion_1"), emo("emotion_2")
    if e1 is None:
        raise SubmissionError(f"{path}: clip {name!r}, column 'emotion_1': missing")
    v = np.zeros(NUM_EMOTIONS, dtype=np.float64)
    if e2 is None:
        v[EMOTION_INDEX[e1]] = 1.0
        return v
    if e1 == e2:
        raise SubmissionError(f"{path}: clip {name!r}, column 'emotion_2': same emotion as emotion_1 ({e1!r})")
    v[EMOTION_INDEX[e1]] = sal("emotion_1_salience") / 100.0
    v[EMOTION_INDEX[e2]] = sal("emotion_2_salience") / 100.0
    return v
