"""Writing and reading run outputs: OOF predictions (Parquet), metrics JSON, resolved config.

Used by ``blemore train`` and by the search's MLflow artifacts, so that both write the same formats:

* ``oof.parquet``: one row per training clip: ``filename`` (str), ``fold`` (int64), ``p_ang`` .. ``p_neu`` (float32).
* ``metrics.json``: per fold and mean, per threshold protocol, with alpha and beta, best epoch and encoder
  importances (see :func:`metrics_document`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blemore_core.labels import EMOTIONS

PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{e}" for e in EMOTIONS)


def oof_frame(filenames: Sequence[str], folds: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """OOF table: columns filename, fold, p_ang..p_neu; one row per clip.

    Raises:
        ValueError: when the lengths disagree or ``probs`` is not (N, 6).
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != len(EMOTIONS):
        raise ValueError(f"OOF probabilities must be (N, 6), got {probs.shape}")
    if not (len(filenames) == len(folds) == len(probs)):
        raise ValueError(f"OOF lengths differ: {len(filenames)} names, {len(folds)} folds, {len(probs)} rows")
    df = pd.DataFrame({"filename": list(filenames), "fold": np.asarray(folds, dtype=np.int64)})
    for j, c in enumerate(PROB_COLUMNS):
        df[c] = probs[:, j]
    return df


def read_oof(path: str | Path) -> pd.DataFrame:
    """Read an OOF Parquet file written by :func:`write_parquet` of :func:`oof_frame`.

    Raises:
        ValueError: naming the file, when a required column is missing.
    """
    df = pd.read_parquet(path)
    missing = [c for c in ("filename", "fold", *PROB_COLUMNS) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: OOF file lacks columns {missing}")
    return df


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame to Parquet atomically (temporary file + rename)."""
    path = Path(path)
    _atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON atomically (temporary file + rename), indented, keys in insertion order."""
    path = Path(path)
    text = json.dumps(obj, indent=2, default=_jsonable)
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def metrics_document(cv_metrics: dict[str, Any], fold_results: Sequence[Any]) -> dict[str, Any]:
    """The ``metrics.json`` document: protocols (per fold + mean + std, each with its selected epoch), the
    headline's epoch per fold (``best_epoch``), every protocol's epoch per fold (``selected_epochs``), epochs run
    and importances.

    Args:
        cv_metrics: the dict of :func:`blemore_core.train.summarize_protocols`.
        fold_results: the :class:`blemore_core.train.FoldResult` list.
    """
    doc = dict(cv_metrics)
    doc["best_epoch"] = {str(r.fold): int(r.best_epoch) for r in fold_results}  # the headline protocol's epoch
    doc["selected_epochs"] = {str(r.fold): dict(r.selected_epochs) for r in fold_results}  # {fold: {protocol: e}}
    doc["epochs_run"] = {str(r.fold): int(r.epochs_run) for r in fold_results}
    imps = [r.importances for r in fold_results if r.importances]
    if imps:
        keys = list(imps[0])
        doc["encoder_importances"] = {
            "per_fold": {str(r.fold): r.importances for r in fold_results if r.importances},
            "mean": {k: float(np.mean([d[k] for d in imps])) for k in keys},
        }
    return doc
