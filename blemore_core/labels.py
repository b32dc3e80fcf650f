"""BlEmoRe label vocabulary: emotion order, the filename grammar, soft labels and the challenge's label lists.

Source: BlEmoRe challenge rules and the organisers' public baseline (blemore-common, ``config.py`` and
``utils/filename_parser.py``); docs/ARCHITECTURE.md section 2.2.

Conventions used everywhere in :mod:`blemore_core`:

* Emotion order ``ang, disg, fea, hap, sad, neu`` (index 0..5).
* A *salience vector* is a float array of shape (6,) (or (N, 6) for N clips) whose entries are
  fractions in [0, 1] summing to 1: a single emotion is one-hot, a blend carries salience/100 on its
  two emotions (0.5/0.5, 0.7/0.3 or 0.3/0.7). Neutral never blends.
* A *challenge list* is the CodaBench form of one clip's label:
  ``[{"emotion": "hap", "salience": 70.0}, {"emotion": "sad", "salience": 30.0}]`` (salience in percent).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

EMOTIONS: tuple[str, ...] = ("ang", "disg", "fea", "hap", "sad", "neu")
"""The six emotion codes in the challenge's index order."""
NUM_EMOTIONS: int = len(EMOTIONS)
NEUTRAL_INDEX: int = EMOTIONS.index("neu")
EMOTION_INDEX: dict[str, int] = {e: i for i, e in enumerate(EMOTIONS)}
BLEND_RATIOS: tuple[tuple[int, int], ...] = ((50, 50), (70, 30), (30, 70))
"""The allowed (salience_1, salience_2) pairs of a blend, in percent."""

#: The 16 valid label sets: 6 single emotions then the 10 unordered pairs of non-neutral emotions,
#: each a tuple of emotion indices in ascending order.
LABEL_SETS: tuple[tuple[int, ...], ...] = tuple((i,) for i in range(NUM_EMOTIONS)) + tuple(
    combinations(range(NEUTRAL_INDEX), 2)
)
LABEL_SET_INDEX: dict[tuple[int, ...], int] = {s: k for k, s in enumerate(LABEL_SETS)}
LABEL_SET_NAMES: tuple[str, ...] = tuple("+".join(EMOTIONS[i] for i in s) for s in LABEL_SETS)

_SINGLE = re.compile(r"^A(?P<actor>\d+)_(?P<emo>[a-z]+)_int(?P<intensity>[1-4])_ver(?P<version>\d+)$")
_NEUTRAL = re.compile(r"^A(?P<actor>\d+)_neu_sit(?P<situation>[1-4])_ver(?P<version>\d+)$")
_BLEND = re.compile(
    r"^A(?P<actor>\d+)_mix_(?P<e1>[a-z]+)_(?P<e2>[a-z]+)_(?P<s1>\d+)_(?P<s2>\d+)_ver(?P<version>\d+)$"
)
_TEST = re.compile(r"^test_(?P<index>\d{4})$")
_EXTENSIONS = (".mov", ".npy", ".csv", ".mp4")


@dataclass(frozen=True)
class ClipName:
    """One parsed BlEmoRe clip name.

    Attributes:
        filename: the name without extension, e.g. ``"A102_mix_ang_hap_70_30_ver1"``.
        kind: ``"single"``, ``"neutral"``, ``"blend"`` or ``"test"`` (test clips carry no label).
        actor: actor number (``A102`` -> 102); ``None`` for test clips.
        emotions: emotion codes as named in the file (one for singles/neutral, two for blends, none for test).
        saliences: saliences in percent, aligned with ``emotions`` (100 for singles).
        intensity: 1..4 for single emotions, else ``None``.
        situation: 1..4 for neutral clips, else ``None``.
        version: retake number (``ver1`` -> 1); ``None`` for test clips.
        test_index: 1..594 for ``test_0001``..; ``None`` otherwise.
    """

    filename: str
    kind: str
    actor: int | None
    emotions: tuple[str, ...]
    saliences: tuple[int, ...]
    intensity: int | None = None
    situation: int | None = None
    version: int | None = None
    test_index: int | None = None

    @property
    def is_blend(self) -> bool:
        """True for a two-emotion blend."""
        return self.kind == "blend"

    @property
    def has_label(self) -> bool:
        """False for test clips, whose labels the release does not include."""
        return self.kind != "test"

    def salience_vector(self) -> np.ndarray:
        """The soft label of this clip: float32 array (6,), fractions summing to 1.

        Raises:
            ValueError: for a test clip (no label).
        """
        if not self.has_label:
            raise ValueError(f"clip {self.filename!r} is a test clip and has no label")
        v = np.zeros(NUM_EMOTIONS, dtype=np.float32)
        for e, s in zip(self.emotions, self.saliences):
            v[EMOTION_INDEX[e]] = s / 100.0
        return v

    def challenge_list(self) -> list[dict]:
        """The label in the challenge's ``[{"emotion", "salience"}]`` form (salience in percent, float)."""
        return [{"emotion": e, "salience": float(s)} for e, s in zip(self.emotions, self.saliences)]


def strip_extension(name: str) -> str:
    """Remove a known clip extension (``.mov``, ``.npy``, ``.csv``, ``.mp4``) and any directory part."""
    name = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    for ext in _EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _emotion(code: str, name: str) -> str:
    if code not in EMOTION_INDEX:
        raise ValueError(f"clip {name!r}: unknown emotion code {code!r} (valid: {', '.join(EMOTIONS)})")
    return code


def parse_filename(name: str) -> ClipName:
    """Parse a BlEmoRe clip name into its parts (docs/ARCHITECTURE.md section 2.2 grammar).

    Accepted forms (an extension such as ``.mov`` or ``.npy`` is stripped first)::

        A<actor>_<emo>_int<1-4>_ver<v>                  single emotion (emo in ang, disg, fea, hap, sad)
        A<actor>_neu_sit<1-4>_ver<v>                    neutral
        A<actor>_mix_<e1>_<e2>_<s1>_<s2>_ver<v>         blend, (s1, s2) in (50,50), (70,30), (30,70)
        test_<NNNN>                                     test clip (no label)

    Raises:
        ValueError: naming the filename, for anything else: an unknown emotion code, neutral in a blend,
            the same emotion twice, a salience pair outside the three allowed ratios, ``neu`` with an
            intensity, or an unrecognised pattern.
    """
    raw = name
    name = strip_extension(name)
    m = _TEST.match(name)
    if m:
        idx = int(m["index"])
        if idx < 1:
            raise ValueError(f"clip {raw!r}: test index must be >= 1")
        return ClipName(name, "test", None, (), (), test_index=idx)
    m = _NEUTRAL.match(name)
    if m:
        return ClipName(name, "neutral", int(m["actor"]), ("neu",), (100,), situation=int(m["situation"]),
                        version=int(m["version"]))
    m = _BLEND.match(name)
    if m:
        e1, e2 = _emotion(m["e1"], raw), _emotion(m["e2"], raw)
        s1, s2 = int(m["s1"]), int(m["s2"])
        if "neu" in (e1, e2):
            raise ValueError(f"clip {raw!r}: neutral never blends")
        if e1 == e2:
            raise ValueError(f"clip {raw!r}: a blend needs two different emotions, got {e1!r} twice")
        if (s1, s2) not in BLEND_RATIOS:
            raise ValueError(f"clip {raw!r}: salience pair ({s1}, {s2}) is not one of {list(BLEND_RATIOS)}")
        return ClipName(name, "blend", int(m["actor"]), (e1, e2), (s1, s2), version=int(m["version"]))
    m = _SINGLE.match(name)
    if m:
        emo = _emotion(m["emo"], raw)
        if emo == "neu":
            raise ValueError(f"clip {raw!r}: neutral clips use sit<1-4>, not int<1-4>")
        return ClipName(name, "single", int(m["actor"]), (emo,), (100,), intensity=int(m["intensity"]),
                        version=int(m["version"]))
    # Give the most useful message we can for near-misses.
    parts = name.split("_")
    if len(parts) >= 2 and parts[0].startswith("A") and parts[1] not in ("mix",) and parts[1] not in EMOTION_INDEX:
        raise ValueError(f"clip {raw!r}: unknown emotion code {parts[1]!r} (valid: {', '.join(EMOTIONS)})")
    raise ValueError(
        f"clip {raw!r} does not follow the BlEmoRe filename grammar "
        "(A<actor>_<emo>_int<1-4>_ver<v>, A<actor>_neu_sit<1-4>_ver<v>, "
        "A<actor>_mix_<e1>_<e2>_<s1>_<s2>_ver<v>, test_<NNNN>)"
    )


def soft_labels(names: Iterable[str]) -> np.ndarray:
    """Soft labels of labelled clip names: float32 array (N, 6), rows summing to 1.

    Raises:
        ValueError: naming the clip, for an unparsable name or a test clip.
    """
    names = list(names)
    out = np.zeros((len(names), NUM_EMOTIONS), dtype=np.float32)
    for i, n in enumerate(names):
        out[i] = parse_filename(n).salience_vector()
    return out


def label_set_indices(labels: np.ndarray) -> np.ndarray:
    """Index into :data:`LABEL_SETS` of each row of a salience array (N, 6) -> int64 (N,).

    Raises:
        ValueError: when a row's set of non-zero emotions is not one of the 16 valid label sets.
    """
    labels = np.asarray(labels)
    present = labels > 0
    out = np.empty(len(labels), dtype=np.int64)
    for i, row in enumerate(present):
        key = tuple(np.flatnonzero(row).tolist())
        if key not in LABEL_SET_INDEX:
            raise ValueError(f"row {i}: emotions {[EMOTIONS[j] for j in key]} are not a valid BlEmoRe label set")
        out[i] = LABEL_SET_INDEX[key]
    return out


def vector_to_challenge(vec: Sequence[float]) -> list[dict]:
    """Salience vector (6,) -> challenge list, emotions in descending salience (ties in emotion order).

    Saliences are returned in percent, rounded to one decimal, as the organisers' ``probs2dict`` does.
    Zero entries are omitted.
    """
    v = np.asarray(vec, dtype=np.float64)
    if v.shape != (NUM_EMOTIONS,):
        raise ValueError(f"salience vector must have shape (6,), got {v.shape}")
    order = sorted(np.flatnonzero(v > 0).tolist(), key=lambda j: (-v[j], j))
    return [{"emotion": EMOTIONS[j], "salience": round(float(100.0 * v[j]), 1)} for j in order]


def challenge_to_vector(items: Sequence[dict], clip: str = "<clip>") -> np.ndarray:
    """Challenge list -> salience vector float32 (6,) (fractions: percent / 100).

    Raises:
        ValueError: naming ``clip``, for a non-list, an item without ``emotion``/``salience``, an unknown
            emotion code, a non-numeric or negative salience, the same emotion twice, or more than two emotions.
    """
    if not isinstance(items, (list, tuple)) or len(items) == 0:
        raise ValueError(f"clip {clip!r}: prediction must be a non-empty list of {{emotion, salience}}, got {items!r}")
    if len(items) > 2:
        raise ValueError(f"clip {clip!r}: at most two emotions may be predicted, got {len(items)}")
    v = np.zeros(NUM_EMOTIONS, dtype=np.float32)
    for it in items:
        if not isinstance(it, dict) or "emotion" not in it or "salience" not in it:
            raise ValueError(f"clip {clip!r}: each item needs keys 'emotion' and 'salience', got {it!r}")
        e = it["emotion"]
        if e not in EMOTION_INDEX:
            raise ValueError(f"clip {clip!r}: unknown emotion code {e!r} (valid: {', '.join(EMOTIONS)})")
        s = it["salience"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not np.isfinite(s) or s < 0:
            raise ValueError(f"clip {clip!r}: salience of {e!r} must be a non-negative number, got {s!r}")
        j = EMOTION_INDEX[e]
        if v[j] > 0:
            raise ValueError(f"clip {clip!r}: emotion {e!r} listed twice")
        v[j] = float(s) / 100.0
    return v
