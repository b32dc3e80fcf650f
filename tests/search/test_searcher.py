"""The Optuna searcher built for every shipped space (no Ray started): seeded, define-by-run, conditionals
respected, every suggestion resolves to a valid Config, and the Pareto space takes two objectives."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.runner import SearchOptions, _build_tuner
from search.space import encoder_set, load_space, trial_config

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
        cfg = trial_config(space.base.to_dict(), ca)  # what the trial and its MLflow record build
        assert cfg == space.resolve(ca)
        flat = cfg.flat()
        for key, value in ca.items():  # every suggestion lands in the trial's config (encoder sets parsed back)
            if key.startswith("debug."):
                continue
            assert isinstance(value, (str, int, float, bool)), (key, value)  # plain Optuna choices
            want = ",".join(value.split("+")) if key == "data.encoders" else value
            assert flat[key] == want, (key, flat[key], value)
        if "model.top_n" in ca:
            assert 1 <= ca["model.top_n"] <= len(cfg.data.encoders)
        if any(p.key == "model.top_n" and p.when for p in space.params):
            assert ("model.top_n" in ca) == (ca.get("model.fusion") == "rank_aware")
        result = {m: 0.1 * (i + 1) + 0.01 * j for j, m in enumerate(metrics)}
        a.on_trial_complete(f"t{i}", result)
        b.on_trial_complete(f"t{i}", result)
    if space.pareto:
        assert len(a._ot_study.directions) == 2


def test_sampler_is_seeded_multivariate_grouped_tpe(tmp_path):
    space = load_space(SPACES[0])
    sampler = _searcher(space, tmp_path, seed=7)._sampler
    import optuna

    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate and sampler._group


def test_full_space_searches_every_mission_dimension():
    space = load_space(Path(__file__).resolve().parents[2] / "spaces" / "full.yaml")
    keys = {p.key: p for p in space.params}
    mission = {"loss.kl", "loss.bce", "loss.rank", "loss.domain", "loss.label_smoothing", "reg.dropout",
               "reg.modality_dropout", "reg.temporal_dropout", "model.top_n", "model.latent_dim", "model.shared_dim",
               "model.fusion", "model.pooling", "model.head", "train.lr"}
    assert mission <= set(keys), mission - set(keys)
    assert set(keys["model.fusion"].values) == {"concat", "attention", "mixed", "rank_aware"}
    assert keys["model.top_n"].when == {"model.fusion": ("rank_aware",)}
    # top_n is bounded by the sampled encoder set
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sizes = set()
    for _ in range(80):
        t = study.ask()
        chosen = space.suggest(t)
        if "model.top_n" in chosen:
            n = len(encoder_set(chosen["data.encoders"]))  # the one string form of an encoder set
            assert chosen["model.top_n"] <= n
            sizes.add((n, chosen["model.top_n"]))
        study.tell(t, 0.0)
    assert (2, 2) in sizes and any(top > 2 for _, top in sizes)


def test_run_trial_builds_its_config_from_plain_choices(monkeypatch, tmp_path):
    """The trial function itself (Ray Train stubbed out): an encoder-set choice arrives as the plain string Optuna
    holds ("imagebind+wavlm") and reaches the fold workers as the list (seen broken: every trial of
    spaces/full.yaml failed with "data.encoders: 'imagebind+videomae+wavlm' is not one of [...]")."""
    import types

    import ray.train.v2.api.data_parallel_trainer
    import ray.tune
    import ray.tune.integration.ray_train

    import search.exchange
    from search import trainable

    seen: dict = {}

    class _Trainer:
        def __init__(self, fn, train_loop_config, **kw):
            seen.update(train_loop_config)

        def fit(self):
            return None

    monkeypatch.setattr(ray.train.v2.api.data_parallel_trainer, "DataParallelTrainer", _Trainer)
    monkeypatch.setattr(search.exchange, "make_exchange", lambda n: f"exchange of {n}")
    monkeypatch.setattr(search.exchange, "close_exchange", lambda h: None)
    monkeypatch.setattr(ray.tune.integration.ray_train, "TuneReportCallback", ray.train.UserCallback)
    monkeypatch.setattr(ray.tune, "get_context", lambda: types.SimpleNamespace(get_trial_id=lambda: "abc123"))
    space = load_space(Path(__file__).resolve().parents[2] / "spaces" / "full.yaml")
    setup = trainable.TrialSetup(base=space.base.to_dict(), space_path=str(space.path), data_dir=str(tmp_path),
                                 cpus_per_worker=0.19, gpus_per_worker=0.0, storage=str(tmp_path / "train"),
                                 debug={}, max_epochs=space.max_epochs, fold_layout="workers")
    trainable.run_trial({"data.encoders": "imagebind+videomae+wavlm", "model.fusion": "rank_aware",
                         "model.top_n": 3, "debug.trial_index": 0}, setup)
    assert seen["config"]["data"]["encoders"] == ["imagebind", "videomae", "wavlm"]
    assert seen["config"]["model"]["top_n"] == 3 and seen["trial_id"] == "abc123"
    assert seen["exchange"] == "exchange of 5"  # one exchange per trial, sized to the folds
