"""Retraining for a fixed number of epochs and prediction from a model directory (docs/ARCHITECTURE.md section 7).

* :func:`fit_epochs` trains one model on a given set of training clips for exactly ``epochs`` epochs: a loop over
  :meth:`blemore_core.train.FoldTrainer.train_epoch` (the one training step: optimiser, cosine schedule with
  ``T_max = train.max_epochs`` so epoch e sees the learning rate it saw in cross-validation, batches, losses and
  seeds); there is no validation
  set, so the epoch count comes from the cross-validation (``blemore retrain``: the median selected epoch for
  ``full``, each fold's own for ``folds``).
* :func:`predict_test` / :func:`predict_model` give the test-split probabilities of a model directory: each
  weights file's model on inputs z-scored with the statistics of the clips it was trained on (recomputed from the
  release, exactly as in training); fold models and ensemble members are averaged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blemore_core.artifacts import ArtifactError, ModelDir
from blemore_core.config import Config
from blemore_core.data import load_release
from blemore_core.fold_inputs import TrainData, prepare_data
from blemore_core.predict import predict_weights, train_rows  # noqa: F401  (train_rows: re-exported)
from blemore_core.train import FoldTrainer


def with_test_split(data: TrainData, root: str | Path, progress: bool = False) -> TrainData:
    """``data`` with the release's test split as its unlabeled target set (features of ``data.encoders``).

    Raises:
        ValueError: from :func:`blemore_core.data.load_release`, naming the file and clip, e.g. a test clip of
            ``test_metadata.csv`` without a feature file.
    """
    if data.target is not None and data.target.split == "test":
        return data
    target = load_release(root, list(data.encoders), split="test", progress=progress)
    return dataclasses.replace(data, target=target)


def fit_epochs(cfg: Config, data: TrainData, train_idx: np.ndarray, epochs: int, seed_key: int,
               device: torch.device | None = None, target_idx: np.ndarray | None = None,
               ) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Train one model on clips ``train_idx`` for exactly ``epochs`` epochs (no validation, no early stopping).

    Args:
        cfg: resolved config.
        data: from :func:`blemore_core.train.prepare_data` (its ``target`` serves the domain term when
            ``data.domain_target == "test"``).
        train_idx: int64 (M,) training rows.
        epochs: 1 <= epochs <= train.max_epochs.
        seed_key: seeds as a cross-validation's fold index does (:func:`blemore_core.train.fold_seeds`), so that
            the fold-k model of ``folds`` retraining repeats the cross-validation's fold-k run up to ``epochs``.
        device: default ``train.device`` resolved.
        target_idx: unlabeled rows for the domain term when ``data.domain_target == "val"`` (fit_fold uses the
            validation fold; default: ``train_idx``, as a model trained on every fold has no held-out clips).

    Returns:
        (state_dict of CPU tensors, history: one ``{"epoch", "train_loss", "lr"}`` per epoch).

    Raises:
        ValueError: ``epochs`` out of range or no training clips; NonFiniteLossError: NaN/inf loss.
    """
    if not 1 <= int(epochs) <= cfg.train.max_epochs:
        raise ValueError(f"epochs: must be in 1..train.max_epochs={cfg.train.max_epochs}, got {epochs}")
    train_idx = np.asarray(train_idx, dtype=np.int64)
    if len(train_idx) == 0:
        raise ValueError("train_idx: no training clips")
    if device is not None:
        cfg = cfg.override({"train.device": torch.device(device).type})
    trainer = FoldTrainer(cfg, data, train_idx=train_idx, seed_key=seed_key, target_idx=target_idx,
                          label=f"retrain (seed key {seed_key})")
    history = []
    for _ in range(int(epochs)):
        rec = trainer.train_epoch()
        history.append({k: rec[k] for k in ("epoch", "train_loss", "lr")})
    return {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}, history


def predict_model(md: ModelDir, root: str | Path, progress: bool = False) -> tuple[list[str], np.ndarray]:
    """Test-split probabilities of a model directory: the mean over its weights files (fold models), and for an
    ensemble the ``info["member_weights"]``-weighted mean over its members.

    Returns:
        (test clip names (N,), probabilities float32 (N, 6)).

    Raises:
        ArtifactError: a directory without weights, or weights that do not load; ValueError: from loading the
            release (e.g. a test clip without features, named).
    """
    if md.kind == "ensemble":
        w = np.asarray(md.info.get("member_weights") or [1.0] * len(md.members), dtype=np.float64)
        if len(w) != len(md.members) or not len(w) or w.sum() <= 0:
            raise ArtifactError(f"{md.path / 'model.json'}: member_weights: expected {len(md.members)} weights > 0")
        names, acc = None, None
        for wi, m in zip(w / w.sum(), md.members, strict=True):
            n_i, p_i = predict_model(m, root, progress)
            if names is not None and n_i != names:
                raise ArtifactError(f"{m.path}: predicts other test clips than the first member")
            names, acc = n_i, (p_i * wi if acc is None else acc + p_i * wi)
        return names, acc.astype(np.float32)
    if not md.weights:
        raise ArtifactError(f"{md.path / 'model.json'}: weights: the directory holds no weights files")
    data = with_test_split(prepare_data(md.config, root, progress=progress), root, progress)
    acc = None
    for name in md.weights:
        w = md.load(name)
        folds = w.meta.get("train_folds")
        if not folds:
            raise ArtifactError(f"{w.path}: meta.train_folds: missing (which clips standardise the inputs)")
        p, _ = predict_weights(w.config, w.state_dict, data, folds, source=str(w.path))
        acc = p.astype(np.float64) if acc is None else acc + p
    return list(data.target.filenames), (acc / len(md.weights)).astype(np.float32)


def fold_epochs(export: dict[str, Any]) -> dict[int, int]:
    """``{fold: selected epoch}`` of an exported trial's ``export.selected_epochs``."""
    return {int(k): int(v) for k, v in (export.get("selected_epochs") or {}).items()}
