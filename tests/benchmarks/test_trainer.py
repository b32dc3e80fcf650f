"""benchmarks/trainer.py's preset timing on a tiny release (the numbers mean nothing; every preset must run)."""

from __future__ import annotations

import pytest

from benchmarks._common import Result
from benchmarks.trainer import PRESETS, preset_speeds


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_speeds_runs_every_seed_preset_at_reduced_epochs(tiny_release, preset):
    """Each preset at 2 epochs (``attention_mixed``'s mixed fusion pretrains 15 epochs in the preset: the reduced
    run must move its combined stage inside the 2 epochs, in the same override)."""
    res = Result("trainer", quick=True)
    preset_speeds(res, tiny_release, epochs=2, threads=1, presets=(preset,))
    f = res.figures[f"preset/{preset}/seconds_per_epoch"]
    assert f["repeats"] == 1 and f["median"] > 0  # epoch 2 only (the first is allocator warm-up)
    assert res.figures[f"preset/{preset}/full_fold_wall_s_projected"]["median"] > f["median"]
