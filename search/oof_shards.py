"""Per-epoch OOF shards: what a trial persists each epoch, so that the bytes it writes grow linearly in epochs.

Each epoch the lead worker of a trial writes ONE shard, the epoch's out-of-fold probabilities of every training clip
(float32 (N, 6), ``np.savez_compressed``), to ``<storage>/<name>/_train/oof/<trial_id>/<attempt>/epoch_<e>.npz``,
and the first epoch also ``clips.npz`` (``folds`` int64 (N,), ``filenames`` str (N,)). Nothing earlier is written
again: a 200-epoch trial writes 200 shards once each, not 200 growing copies of every epoch so far.

* A completed trial also carries every epoch in its final checkpoint (``oof_epochs.npz``, assembled once from the
  trial's in-memory curves by :func:`search.trainable.write_oof_epochs`); its shards are then deleted.
* A trial stopped by the scheduler (or cut by the time budget) keeps its shards; :func:`read_oof_epochs`
  assembles them into the same arrays (``blemore``'s MLflow records do it once, when the trial ends).
* A retried or resumed trial starts a new attempt directory (the shards of an abandoned attempt are never mixed
  in), and each epoch file exists once per attempt: :func:`read_oof_epochs` checks that the epochs are exactly
  ``1..E``.
* Next to each shard the epoch's Tune report (objective and one FoldRecord per fold) is written once as
  ``report_<e>.json``; :func:`read_epoch_reports` reads them back in epoch order. They outlive the probability
  shards (a few kB an epoch): the MLflow records replay a trial's learning curves from them after a tracking
  outage (:mod:`search.records.replay`), so Tune's own ``result.json`` need not keep every epoch (it holds the
  latest result only, :func:`search.compat.tune_loggers`): nothing the search stores grows with the square of
  the epochs.

Shards never hold pickled objects: read with ``np.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import numpy as np

from search.storage import Storage, write_bytes

CLIPS = "clips.npz"


def shard_name(epoch: int) -> str:
    """File name of epoch ``epoch``'s shard (1-based, zero-padded so names sort by epoch)."""
    return f"epoch_{int(epoch):05d}.npz"


def report_name(epoch: int) -> str:
    """File name of epoch ``epoch``'s Tune report (1-based, zero-padded so names sort by epoch)."""
    return f"report_{int(epoch):05d}.json"


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


class ShardWriter:
    """Writes the per-epoch OOF shards of one attempt of one trial (lead worker only).

    Args:
        train_storage: the trials' storage root (``TrialSetup.storage``: ``<storage>/<name>/_train``).
        trial_id: Tune's trial id.
        data: the trial's :class:`blemore_core.train.TrainData` (``folds``, ``filenames`` go into ``clips.npz``).

    Attributes:
        uri: the attempt's directory (a path or URI), reported to Tune with every epoch as ``oof_shards``.
    """

    def __init__(self, train_storage: str, trial_id: str, data: Any) -> None:
        self.root = Storage(train_storage.rstrip("/"))
        self.rel = f"oof/{trial_id}/{uuid.uuid4().hex[:8]}"
        self.uri = self.root.join(self.rel)
        self._data = data
        self._wrote_clips = False

    def write(self, epoch: int, probs: np.ndarray, report: dict[str, Any] | None = None) -> str:
        """Persist epoch ``epoch``'s OOF probabilities, float32 (N, 6), and its Tune ``report`` (a JSON object,
        :func:`search.trainable.epoch_report`; written as ``report_<e>.json`` when given); returns the shard's
        location.

        Raises:
            ValueError: probs not (N, 6) for the trial's N clips. OSError: the storage refused the write (named).
        """
        probs = np.asarray(probs, dtype=np.float32)
        n = len(self._data.filenames)
        if probs.shape != (n, 6):
            raise ValueError(f"OOF shard of epoch {epoch}: expected ({n}, 6) probabilities, got {probs.shape}")
        if not self._wrote_clips:
            write_bytes(self.root, f"{self.rel}/{CLIPS}",
                        _npz(folds=np.asarray(self._data.folds, dtype=np.int64),
                             filenames=np.asarray(self._data.filenames, dtype=str)))
            self._wrote_clips = True
        if report is not None:
            write_bytes(self.root, f"{self.rel}/{report_name(epoch)}",
                        json.dumps({**report, "epoch": int(epoch)}, allow_nan=True).encode())
        return write_bytes(self.root, f"{self.rel}/{shard_name(epoch)}", _npz(probs=probs,
                                                                             epoch=np.int64(epoch)))

    def delete(self) -> None:
        """Remove the attempt's probability shards and ``clips.npz`` (after the final checkpoint carries every
        epoch); the epoch reports stay (the replay reads them). Errors are ignored."""
        import pyarrow.fs as pafs

        try:
            fs, root = self.root.filesystem()
            path = f"{root.rstrip('/')}/{self.rel}"
            infos = [i for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                     if i.type == pafs.FileType.File]
            if all(i.base_name.endswith(".npz") for i in infos):
                fs.delete_dir(path)  # nothing else in it (no reports): the attempt's folder goes
                return
            for info in infos:
                if info.base_name.endswith(".npz"):
                    fs.delete_file(info.path)
        except Exception:  # noqa: BLE001 - best effort: the final checkpoint already holds every epoch
            pass


def read_epoch_reports(uri: str | None, upto: int | None = None) -> list[dict[str, Any]]:
    """The epoch reports one attempt wrote (:meth:`ShardWriter.write`), in epoch order, up to epoch ``upto`` (the
    last one Tune received; None: all); [] when ``uri`` is None or holds none, or when they cannot be read (the
    caller falls back to Tune's own results). Reports are taken while their epochs run ``1, 2, ...`` without a
    gap: a later epoch after a missing one is not returned."""
    import pyarrow.fs as pafs

    if not uri:
        return []
    try:
        fs, path = Storage(str(uri).rstrip("/")).filesystem()
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        names = sorted(i.base_name for i in infos
                       if i.type == pafs.FileType.File and i.base_name.startswith("report_")
                       and i.base_name.endswith(".json"))
        rows = []
        for e, name in enumerate(names, start=1):
            if name != report_name(e) or (upto is not None and e > upto):
                break
            with fs.open_input_stream(f"{path}/{name}") as f:
                rows.append(json.loads(f.read().decode()))
        return rows
    except (OSError, ValueError):
        return []


def read_oof_epochs(uri: str, upto: int | None = None) -> dict[str, np.ndarray]:
    """Assemble the shards of one attempt into the arrays of ``oof_epochs.npz``.

    Args:
        uri: a :attr:`ShardWriter.uri` (local path or object-store URI).
        upto: the last epoch Tune received (a stopped trial's worker may have written the shard of the epoch after
            its last report before the stop reached it: that epoch is not the trial's); None: every shard.

    Returns:
        ``{"probs": float32 (N, 6, E), "folds": int64 (N,), "filenames": str (N,)}``.

    Raises:
        FileNotFoundError: no shards at ``uri``. ValueError: the epochs are not exactly ``1..E`` (names the
            missing ones) or a shard does not match its name.
    """
    import pyarrow.fs as pafs

    fs, path = Storage(uri.rstrip("/")).filesystem()
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File)
    shards = [n for n in names if n.startswith("epoch_") and n.endswith(".npz")]
    if CLIPS not in names or not shards:
        raise FileNotFoundError(f"{uri}: no OOF shards ({CLIPS} and epoch_*.npz)")
    epochs = [int(n[len("epoch_"):-len(".npz")]) for n in shards]
    if upto is not None:
        keep = [(n, e) for n, e in zip(shards, epochs, strict=True) if e <= upto]
        shards, epochs = [n for n, _ in keep], [e for _, e in keep]
    last = upto if upto is not None else max(epochs)
    missing = sorted(set(range(1, last + 1)) - set(epochs))
    if missing:
        raise ValueError(f"{uri}: OOF shards of epochs {missing} are missing (found {len(epochs)} epochs)")

    def load(name: str) -> Any:
        with fs.open_input_stream(f"{path}/{name}") as f:
            return np.load(io.BytesIO(f.read()), allow_pickle=False)

    clips = load(CLIPS)
    probs = []
    for e, name in zip(epochs, shards, strict=True):
        z = load(name)
        if int(z["epoch"]) != e:
            raise ValueError(f"{uri}/{name}: holds epoch {int(z['epoch'])}")
        probs.append(z["probs"])
    return {"probs": np.stack(probs, axis=2).astype(np.float32), "folds": clips["folds"],
            "filenames": clips["filenames"]}


def write_oof_epochs_file(arrays: dict[str, np.ndarray], path: Any) -> Any:
    """Write :func:`read_oof_epochs`'s arrays as ``oof_epochs.npz`` at ``path`` (local), atomically."""
    import os
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path
