"""The BlEmoRe challenge metrics: ACC_presence, ACC_salience and Score, vectorised over salience arrays.

Source: docs/ARCHITECTURE.md section 3; the organisers' ``utils/generic_accuracy/accuracy_funcs.py`` (blemore-common),
whose semantics these functions reproduce exactly:

* ACC_presence: mean over clips of ``set(predicted emotions) == set(true emotions)`` (saliences ignored).
* ACC_salience: only clips whose truth has exactly two emotions; a prediction that is not exactly two emotions
  counts wrong; otherwise correct iff the ``{emotion: round(salience in percent)}`` dicts are equal. With no
  blended clip it is 0.0.
* Score = (ACC_presence + ACC_salience) / 2.

Inputs are either *salience arrays* (float (N, 6), fractions, emotion order of :data:`blemore_core.labels.EMOTIONS`;
an emotion is present when its entry is > 0) or the challenge's per-clip form, a mapping
``filename -> [{"emotion": "hap", "salience": 70.0}, ...]`` (a value may also be a (6,) salience vector, as
:func:`blemore_core.submission.read_predictions` returns). Mappings are aligned by filename with the extension
stripped; the clips scored are the prediction's keys, as in the organisers' code.

Rounding: saliences are compared as whole percents, ``round(100 * x)`` with Python's round-half-to-even; the
product is first rounded to 4 decimals so that float32 fractions (0.7 -> 0.69999999) round the way their percent
value does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from blemore_core.labels import (
    EMOTIONS,
    LABEL_SETS,
    NUM_EMOTIONS,
    challenge_to_vector,
    strip_extension,
    vector_to_challenge,
)

__all__ = [
    "acc_presence",
    "acc_salience",
    "score",
    "evaluate",
    "percent",
    "as_salience_array",
    "align",
    "trivial_baselines",
]

LabelsLike = np.ndarray | Mapping[str, Any]


def percent(x: np.ndarray) -> np.ndarray:
    """Fractions -> whole percents as the challenge compares them: float64, ``round(round(100*x, 4))``.

    Round-half-to-even, like Python's ``round`` in the organisers' code.
    """
    return np.round(np.round(100.0 * np.asarray(x, dtype=np.float64), 4))


def as_salience_array(x: Any, name: str = "labels") -> np.ndarray:
    """Validate a salience array: returns float64 (N, 6).

    Raises:
        ValueError: naming ``name``, for a wrong shape, an empty array, a non-finite or negative entry.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != NUM_EMOTIONS:
        raise ValueError(f"{name}: expected a salience array of shape (N, 6), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name}: no clips (N = 0)")
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{name}: row {r}, emotion {EMOTIONS[c]!r}: value {a[r, c]!r} is not a finite number >= 0")
    return a


def _row_vector(value: Any, clip: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        v = np.asarray(value, dtype=np.float64)
        if v.shape != (NUM_EMOTIONS,) or not np.isfinite(v).all() or (v < 0).any():
            raise ValueError(f"clip {clip!r}: expected a salience vector (6,) of numbers >= 0, got {value!r}")
        return v
    return challenge_to_vector(value, clip).astype(np.float64)


def align(pred: Mapping[str, Any], truth: Mapping[str, Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Align two per-clip mappings by filename (extension stripped) over the prediction's keys.

    Returns:
        (names (N,), pred (N, 6) float64, truth (N, 6) float64).

    Raises:
        ValueError: naming the clip, for a prediction whose clip is not in ``truth``, a name given twice
            (e.g. with and without ``.mov``), or a malformed entry (see :func:`labels.challenge_to_vector`).
    """
    t = {}
    for k, v in truth.items():
        t[strip_extension(k)] = v
    names: list[str] = []
    seen: set[str] = set()
    for k in pred:
        n = strip_extension(k)
        if n in seen:
            raise ValueError(f"clip {k!r}: predicted twice (names are compared without extension)")
        if n not in t:
            raise ValueError(f"clip {k!r}: not in the ground truth (no such filename in the metadata)")
        seen.add(n)
        names.append(n)
    if not names:
        raise ValueError("no predictions to score (empty mapping)")
    p = np.stack([_row_vector(pred[k], k) for k in pred])
    y = np.stack([_row_vector(t[n], n) for n in names])
    return names, p, y


def _pair(pred: LabelsLike, truth: LabelsLike) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(pred, Mapping) or isinstance(truth, Mapping):
        if not (isinstance(pred, Mapping) and isinstance(truth, Mapping)):
            raise ValueError("pred and truth must both be salience arrays (N, 6) or both be filename mappings")
        _, p, y = align(pred, truth)
        return p, y
    p = as_salience_array(pred, "pred")
    y = as_salience_array(truth, "truth")
    if p.shape != y.shape:
        raise ValueError(f"pred has shape {p.shape} but truth has shape {y.shape}")
    return p, y


def _presence(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) bool: predicted emotion set == true emotion set."""
    return ((p > 0) == (y > 0)).all(axis=1)


def _salience_counts(p: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """(correct, blended): over clips whose truth has exactly two emotions."""
    blended = (y > 0).sum(axis=1) == 2
    two = (p > 0).sum(axis=1) == 2
    same = _presence(p, y) & (percent(p) == percent(y)).all(axis=1)
    return int((blended & two & same).sum()), int(blended.sum())


def acc_presence(pred: LabelsLike, truth: LabelsLike) -> float:
    """ACC_presence: fraction of clips whose predicted emotion set equals the true one (docs/ARCHITECTURE.md section 3).

    Args:
        pred, truth: salience arrays float (N, 6) (present = entry > 0), or mappings filename -> challenge list
            (or (6,) vector); mappings are scored over the prediction's clips.

    Returns:
        float in [0, 1].

    Raises:
        ValueError: for mismatched shapes, N = 0, negative/non-finite entries, or malformed mapping entries.
    """
    p, y = _pair(pred, truth)
    return float(_presence(p, y).mean())


def acc_salience(pred: LabelsLike, truth: LabelsLike) -> float:
    """ACC_salience over the clips whose truth is a blend (exactly two emotions) (docs/ARCHITECTURE.md section 3).

    A prediction with other than two emotions is wrong; otherwise correct iff both carry the same emotions with
    the same whole-percent saliences. Returns 0.0 when no clip is blended. Arguments and errors as
    :func:`acc_presence`.
    """
    p, y = _pair(pred, truth)
    correct, blended = _salience_counts(p, y)
    return correct / blended if blended else 0.0


def score(pred: LabelsLike, truth: LabelsLike) -> float:
    """Score = (ACC_presence + ACC_salience) / 2 (the challenge's ranking metric). Arguments as :func:`acc_presence`."""
    p, y = _pair(pred, truth)
    return evaluate(p, y)["score"]


def evaluate(pred: LabelsLike, truth: LabelsLike) -> dict[str, float]:
    """All three metrics at once: ``{"acc_presence", "acc_salience", "score"}`` (floats). Arguments as
    :func:`acc_presence`."""
    p, y = _pair(pred, truth)
    pres = float(_presence(p, y).mean())
    correct, blended = _salience_counts(p, y)
    sal = correct / blended if blended else 0.0
    return {"acc_presence": pres, "acc_salience": sal, "score": (pres + sal) / 2}


def trivial_baselines(truth: np.ndarray, blend_ratio: tuple[int, int] = (70, 30)) -> dict[str, dict[str, Any]]:
    """The organisers' two trivial baselines on a set of clips (blemore-common ``utils/most_frequent_classifier.py``).

    * ``"single"``: always predict the most frequent single-emotion label (neutral included) of ``truth``.
    * ``"blend"``: always predict the most frequent emotion pair of ``truth`` at the fixed ratio ``blend_ratio``
      (percent; the first number goes to the lower emotion index, as the organisers' 70/30 goes to the
      alphabetically first code, which for the non-neutral codes is the same order).

    Ties between equally frequent labels go to the lowest index of :data:`labels.LABEL_SETS` (documented choice;
    the organisers' ``Counter.most_common`` takes the first seen).

    Args:
        truth: float (N, 6) salience array of the clips to score.
        blend_ratio: the fixed (first, second) saliences in percent of the blend baseline.

    Returns:
        ``{"single": {...}, "blend": {...}}``, each with ``label`` (challenge list), ``prediction`` ((6,) float32),
        ``acc_presence``, ``acc_salience``, ``score``. The blend entry is absent if no clip is a blend; the
        single entry if no clip is a single emotion.

    Raises:
        ValueError: for an invalid salience array or ratio.
    """
    y = as_salience_array(truth, "truth")
    if len(blend_ratio) != 2 or min(blend_ratio) <= 0:
        raise ValueError(f"blend_ratio: expected two positive percents, got {blend_ratio!r}")
    present = y > 0
    n_present = present.sum(axis=1)
    out: dict[str, dict[str, Any]] = {}
    for kind, size in (("single", 1), ("blend", 2)):
        sets = [s for s in LABEL_SETS if len(s) == size]
        rows = n_present == size
        counts = [int((rows & present[:, list(s)].all(axis=1)).sum()) for s in sets]
        if max(counts) == 0:
            continue
        best = sets[int(np.argmax(counts))]  # first maximum = lowest LABEL_SETS index
        vec = np.zeros(NUM_EMOTIONS, dtype=np.float32)
        if size == 1:
            vec[best[0]] = 1.0
        else:
            vec[best[0]], vec[best[1]] = blend_ratio[0] / 100.0, blend_ratio[1] / 100.0
        m = evaluate(np.broadcast_to(vec, y.shape), y)
        out[kind] = {"label": vector_to_challenge(vec), "prediction": vec, **m}
    return out
