"""Plots logged as MLflow artifacts (matplotlib, Agg backend): label-set confusion matrix and encoder importances."""

from __future__ import annotations

import json
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_plot(confusion_json: str | Path, out: str | Path) -> Path:
    """Heat map of the 16 x 16 label-set confusion counts (rows truth, columns prediction) -> PNG at ``out``.

    Args:
        confusion_json: ``{"protocol": str, "rows_truth_cols_pred": int[16][16]}`` written by the trial.

    Raises:
        ValueError: naming the file when the matrix is not 16 x 16.
    """
    import numpy as np

    from blemore_core.labels import LABEL_SET_NAMES

    doc = json.loads(Path(confusion_json).read_text())
    m = np.asarray(doc["rows_truth_cols_pred"], dtype=np.int64)
    n = len(LABEL_SET_NAMES)
    if m.shape != (n, n):
        raise ValueError(f"{confusion_json}: rows_truth_cols_pred must be {n}x{n}, got {m.shape}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(n), LABEL_SET_NAMES, rotation=90, fontsize=7)
    ax.set_yticks(range(n), LABEL_SET_NAMES, fontsize=7)
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted label set")
    ax.set_ylabel("true label set")
    ax.set_title(f"OOF label-set confusion ({doc.get('protocol', '?')} thresholds)")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def importance_plot(importances_json: str | Path, out: str | Path) -> Path:
    """Bar plot of the mean rank-aware encoder importance (mean over folds, error bar = std) -> PNG at ``out``.

    Args:
        importances_json: ``{fold: {encoder: importance}}`` written by the trial.
    """
    import numpy as np

    doc = json.loads(Path(importances_json).read_text())
    encoders = sorted({e for v in doc.values() for e in v})
    vals = np.array([[v.get(e, np.nan) for e in encoders] for v in doc.values()], dtype=np.float64)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(encoders, np.nanmean(vals, axis=0), yerr=np.nanstd(vals, axis=0), color="tab:orange")
    ax.set_ylabel("mean importance (validation folds)")
    ax.set_title("rank-aware encoder importance")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
