"""Encoder registry and the fixed names of the BlEmoRe release layout (docs/ARCHITECTURE.md section 2.1).

Release layout read by :func:`blemore_core.data.load_release` (and written by the synthetic generator)::

    <root>/train_metadata.csv
    <root>/test_metadata.csv                                  filenames only
    <root>/test_labels.csv                                    synthetic releases only
    <root>/pre_extracted_train_data/<Folder>_train/<filename>.npy     (T, D) per clip (extra dims flattened)
    <root>/pre_extracted_train_data/OpenFace_3_train/<filename>.csv   OpenFace 3 per-frame CSV
    <root>/pre_extracted_test_data/<Folder>_test/<test_id>.npy
    <root>/pre_extracted_train_data/<key>_static_features.npz         organisers' aggregated form, or
    <root>/<key>_static_features.npz                                  (test split: ``<key>_static_features_test.npz``)

OpenFace 3 CSV columns (our choice, documented here; the synthetic generator writes exactly these):
``frame, timestamp, emotion_index, gaze_yaw, gaze_pitch, AU01, AU02, AU04, AU06, AU09, AU12, AU25, AU26``.
``frame`` and ``timestamp`` (seconds) are optional and ignored; the 11 features are
``emotion_index / 7`` (OpenFace 3's 8-class AffectNet emotion index 0..7 scaled to [0, 1]), gaze yaw and
pitch (radians), and the intensities of the 8 action units OpenFace 3 predicts (DISFA set). Any other
column is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

TRAIN_METADATA = "train_metadata.csv"
TEST_METADATA = "test_metadata.csv"
TEST_LABELS = "test_labels.csv"
SPLIT_DIRS: dict[str, str] = {"train": "pre_extracted_train_data", "test": "pre_extracted_test_data"}
SPLITS: tuple[str, ...] = ("train", "test")

#: train_metadata.csv columns (docs/ARCHITECTURE.md section 2.1); ``fold`` is optional (assign_folds is used when absent).
METADATA_COLUMNS: tuple[str, ...] = (
    "filename", "video_id", "gender", "mix", "emotion_1", "version", "intensity_level", "situation",
    "emotion_2", "emotion_1_salience", "emotion_2_salience", "fold",
)
REQUIRED_TRAIN_COLUMNS: tuple[str, ...] = tuple(c for c in METADATA_COLUMNS if c != "fold")
#: test_labels.csv columns (synthetic releases only).
TEST_LABEL_COLUMNS: tuple[str, ...] = (
    "filename", "mix", "emotion_1", "emotion_2", "emotion_1_salience", "emotion_2_salience",
)

OPENFACE_AUS: tuple[str, ...] = ("AU01", "AU02", "AU04", "AU06", "AU09", "AU12", "AU25", "AU26")
#: the 11 OpenFace 3 feature columns, in feature order (emotion_index is divided by 7 on reading)
OPENFACE_FEATURES: tuple[str, ...] = ("emotion_index", "gaze_yaw", "gaze_pitch") + OPENFACE_AUS
#: every column the generator writes (frame, timestamp are ignored by the reader)
OPENFACE_COLUMNS: tuple[str, ...] = ("frame", "timestamp") + OPENFACE_FEATURES
OPENFACE_EMOTION_CLASSES = 8


@dataclass(frozen=True)
class EncoderSpec:
    """One pre-extracted feature set of the release.

    Attributes:
        key: the name used in configs (``imagebind``, ``wavlm``, ...).
        folder: the release folder stem; files live in ``<Folder>_train`` / ``<Folder>_test``.
        kind: ``"npy"`` (one ``(T, D)`` array per clip) or ``"openface_csv"`` (OpenFace 3 per-frame CSV, D = 11).
        modality: ``"video"`` or ``"audio"`` (informational).
    """

    key: str
    folder: str
    kind: str = "npy"
    modality: str = "video"

    @property
    def extension(self) -> str:
        """File extension of one clip's features (``.npy`` or ``.csv``)."""
        return ".csv" if self.kind == "openface_csv" else ".npy"

    def split_folder(self, split: str) -> str:
        """``<Folder>_train`` or ``<Folder>_test``."""
        return f"{self.folder}_{split}"


ENCODERS: dict[str, EncoderSpec] = {
    s.key: s
    for s in (
        EncoderSpec("imagebind", "ImageBind"),
        EncoderSpec("videomae", "VideoMAEv2"),
        EncoderSpec("hicmae", "HiCMAE"),
        EncoderSpec("wavlm", "WavLM_large", modality="audio"),
        EncoderSpec("hubert", "HuBERT_large", modality="audio"),
        EncoderSpec("openface", "OpenFace_3", kind="openface_csv"),
        EncoderSpec("clip", "CLIP"),
        EncoderSpec("videoswin", "VideoSwin"),
    )
}
"""Encoder key -> :class:`EncoderSpec`, in the order of ``config.ENCODER_KEYS``."""


def encoder_spec(key: str) -> EncoderSpec:
    """The spec of an encoder key.

    Raises:
        ValueError: naming the key and listing the valid ones.
    """
    try:
        return ENCODERS[key]
    except (KeyError, TypeError):
        raise ValueError(f"unknown encoder {key!r} (valid: {', '.join(ENCODERS)})") from None
