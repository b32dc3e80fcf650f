"""Prediction of one stored model on clips of a release: the inputs standardised with the statistics of the clips
the model was trained on (recomputed from the release, exactly as in training), eval mode (docs/ARCHITECTURE.md section 7).

Used by test prediction (:mod:`blemore_core.refit`) and by the OOF encoder importances of a model directory
(:mod:`blemore_core.artifacts`); it imports neither, so the two never import each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from blemore_core.config import Config
from blemore_core.errors import ArtifactError
from blemore_core.fold_inputs import FoldInputs, TrainData, predict_probs, resolve_device
from blemore_core.models import build_model


def train_rows(data: TrainData, train_folds: Sequence[int]) -> np.ndarray:
    """Rows (int64) of the training clips whose fold is in ``train_folds``."""
    return np.flatnonzero(np.isin(np.asarray(data.folds), list(train_folds))).astype(np.int64)


def predict_weights(cfg: Config, state_dict: dict[str, torch.Tensor], data: TrainData, train_folds: Sequence[int],
                    source: str = "<weights>", idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities of one model on the target split of ``data`` (the test split, see :func:`with_test_split`).

    Args:
        cfg: the model's config; state_dict: its weights; data: with a target split;
        train_folds: the folds the model was trained on (its input standardisation is fitted on them);
        idx: int64 rows of the target split to predict (default: all).

    Returns:
        (probabilities float32 (n, 6), importances float32 (n, E) or None) for the n rows.

    Raises:
        ArtifactError: naming ``source`` when the weights do not fit the model the config builds.
    """
    device = resolve_device(cfg.train.device)
    t = FoldInputs(data, cfg, train_rows(data, train_folds), device)
    model = build_model(cfg, data.input_dims)
    if cfg.model.arch == "fusion" and cfg.model.fusion == "mixed":
        model.set_stage("combine")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise ArtifactError(f"{source}: weights do not fit the config's model: {str(e).splitlines()[0]}") from None
    model.to(device)
    rows = np.arange(len(data.target.filenames), dtype=np.int64) if idx is None else np.asarray(idx, dtype=np.int64)
    return predict_probs(model, t, rows, target=True, precision=cfg.train.precision)
