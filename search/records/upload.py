"""Artifact upload of a finished trial: the files of its final checkpoint to its parent and fold runs, with the
plots drawn from them (docs/ARCHITECTURE.md section 6). Read from the search's storage (shared filesystem or object store),
never from a worker's disk."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

#: files of a final checkpoint logged to the trial's parent run (those present)
PARENT_FILES: tuple[str, ...] = ("config.yaml", "oof.parquet", "oof_epochs.npz", "thresholds.json", "metrics.json",
                                 "importances.json", "confusion.json")


def fold_files(fold: int) -> tuple[str, str]:
    """Files of a final checkpoint logged to fold ``fold``'s run: the state dict and the training history."""
    return f"fold{fold}.pt", f"history_fold{fold}.json"


def upload_checkpoint(client: Any, storage: str | None, ckpt: str, parent: str, children: dict[int, str]) -> None:
    """Log the checkpoint ``ckpt`` of a trial: :data:`PARENT_FILES` and ``plots/confusion.png``,
    ``plots/importances.png`` to ``parent``; :func:`fold_files` to each fold's run (``children``: fold -> run id).

    ``storage`` is the search's storage URI (the checkpoint is downloaded into a temporary folder, removed after);
    None: ``ckpt`` is a local folder.
    """
    from search.storage import download_checkpoint, resolve_storage

    d = download_checkpoint(resolve_storage(storage), ckpt) if storage else Path(ckpt)
    try:
        upload_dir(client, d, parent, children)
    finally:
        if storage:
            shutil.rmtree(d, ignore_errors=True)


def upload_shards(client: Any, shards_uri: str, parent: str, upto: int | None = None) -> None:
    """Log ``oof_epochs.npz`` of a trial that ended without a final checkpoint (stopped by the scheduler), assembled
    once from its per-epoch OOF shards (:func:`search.oof_shards.read_oof_epochs`: every epoch it reported, once;
    ``upto``: its last reported epoch)."""
    from search.oof_shards import read_oof_epochs, write_oof_epochs_file

    with tempfile.TemporaryDirectory(prefix="blemore-oof-") as tmp:
        path = write_oof_epochs_file(read_oof_epochs(shards_uri, upto), Path(tmp) / "oof_epochs.npz")
        client.log_artifact(parent, str(path))


def upload_dir(client: Any, d: Path, parent: str, children: dict[int, str]) -> None:
    """Log the files of a local checkpoint folder ``d`` (see :func:`upload_checkpoint`)."""
    from search import plots

    for name in PARENT_FILES:
        if (d / name).is_file():
            client.log_artifact(parent, str(d / name))
    with tempfile.TemporaryDirectory() as tmp:
        pngs = []
        if (d / "confusion.json").is_file():
            pngs.append(plots.confusion_plot(d / "confusion.json", Path(tmp) / "confusion.png"))
        if (d / "importances.json").is_file():
            pngs.append(plots.importance_plot(d / "importances.json", Path(tmp) / "importances.png"))
        for p in pngs:
            client.log_artifact(parent, str(p), artifact_path="plots")
    for k, child in children.items():
        for name in fold_files(k):
            if (d / name).is_file():
                client.log_artifact(child, str(d / name))


__all__ = ["PARENT_FILES", "fold_files", "upload_checkpoint", "upload_dir", "upload_shards"]
