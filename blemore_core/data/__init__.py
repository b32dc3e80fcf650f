"""BlEmoRe data layer: release reader, Arrow feature cache, temporal standardisation, folds, synthetic release.

docs/ARCHITECTURE.md section 2. Public API::

    from blemore_core.data import (ENCODERS, EncoderSpec, SequenceFeatures, ReleaseData, load_release,
                                   standardise_length, aggregate, fit_standardiser, fold_indices,
                                   check_actor_disjoint, assign_folds, generate_release, ensure_demo_release)
"""

from .folds import assign_folds, check_actor_disjoint, fit_standardiser, fold_indices
from .release import ReleaseData, SequenceFeatures, load_release
from .specs import ENCODERS, OPENFACE_COLUMNS, OPENFACE_FEATURES, EncoderSpec, encoder_spec
from .synth import PROFILES, ensure_demo_release, generate_release
from .temporal import STATISTICS, aggregate, as_tensor, standardise_length

__all__ = [
    "ENCODERS", "EncoderSpec", "SequenceFeatures", "ReleaseData", "load_release", "standardise_length",
    "aggregate", "fit_standardiser", "fold_indices", "check_actor_disjoint", "assign_folds",
    "generate_release", "ensure_demo_release", "PROFILES", "STATISTICS", "OPENFACE_COLUMNS",
    "OPENFACE_FEATURES", "encoder_spec", "as_tensor",
]
