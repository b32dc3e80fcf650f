"""The Optuna searcher built for every shipped space (no Ray started): seeded, define-by-run, conditionals
respected, every suggestion resolves to a valid Config, and the Pareto space takes two objectives."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.runner import SearchOptions, _build_tuner
from search.space import load_space

SPACES = sorted((Path(__file__).resolve().parents[2] / "spaces").glob("*.yaml"))


def _searcher(space, tmp_path, seed=0):
    tuner, _ = _build_tuner(space, SearchOptions(seed=seed), space.name, str(tmp_path), "/nonexistent", 5, 0.39, 1,
                            f"sqlite:///{tmp_path}/m.db")
    return tuner._local_tuner._tune_config.search_alg


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_suggestions_resolve_and_are_seeded(path, tmp_path):
    space = load_space(path)
    a, b = _searcher(space, tmp_path / "a"), _searcher(space, tmp_path / "b")
    metrics = list(space.metrics)
    for i in range(6):
        ca, cb = a.suggest(f"t{i}"), b.suggest(f"t{i}")
        assert ca == cb  # same seed, same proposals
        cfg = space.resolve(ca)
        assert cfg.problems() == []
        if "model.top_n" in ca:
            assert 1 <= ca["model.top_n"] <= len(cfg.data.encoders)
        if any(p.key == "model.top_n" and p.when for p in space.params):
            assert ("model.top_n" in ca) == (ca.get("model.fusion") == "rank_aware")
        result = {m: 0.1 * (i + 1) + 0.01 * j for j, m in enumerate(metrics)}
        a.on_trial_complete(f"t{i}", result)
        b.on_trial_complete(f"t{i}", result)
    if space.pareto:
        assert len(a._ot_study.directions) == 2
