"""Warm start (search/warmstart.py): which earlier trials seed the study, and that the seeded model proposes first."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from search import warmstart
from search.runner import _DefineByRun, make_sampler
from search.space import load_space

SPACE = """
name: second
preset: baseline
params:
  model.arch: {type: choice, values: [linear, mlp256]}
  train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}
  reg.dropout: {type: uniform, low: 0.0, high: 0.5, when: {model.arch: mlp256}}
metric: score
budget: {num_samples: 20, max_epochs: 6}
"""
RELEASE = "/data/release"


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    p = tmp_path_factory.mktemp("space") / "second.yaml"
    p.write_text(SPACE)
    return load_space(p)


def _flat(space, **over):
    flat = {k: str(v) for k, v in space.base.flat().items()}
    flat["train.max_epochs"] = str(space.max_epochs)
    flat.update({k: str(v) for k, v in over.items()})
    return flat


def _parent(client, exp_id, params, status, score=None, curve=None):
    """A parent run as the search records write it (tags role/trial_status, params = Config.flat())."""
    tags = {warmstart.ROLE_TAG: "parent"}
    if status is not None:
        tags[warmstart.STATUS_TAG] = status
    run = client.create_run(exp_id, tags=tags)
    rid = run.info.run_id
    for k, v in params.items():
        client.log_param(rid, k, v)
    for step, v in (curve or {}).items():
        client.log_metric(rid, "epoch/score", v, step=step)
    if score is not None:
        for m, v in (("score", score), ("acc_presence", score + 0.1), ("acc_salience", score - 0.1)):
            client.log_metric(rid, m, v)
    client.set_terminated(rid, status="FINISHED" if status in ("completed", "stopped") else "FAILED")
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory, space):
    """An earlier search ``first`` with one trial of each kind, and the ids of the ones that must seed."""
    d = tmp_path_factory.mktemp("mlflow")
    client = MlflowClient(f"sqlite:///{d / 'mlflow.db'}")
    exp = client.create_experiment("first", artifact_location=str(d / "mlruns"))
    client.set_experiment_tag(exp, warmstart.RELEASE_TAG, RELEASE)
    client.create_experiment("other_release", artifact_location=str(d / "mlruns2"))
    client.set_experiment_tag(client.get_experiment_by_name("other_release").experiment_id, "mlflow.note.content",
                              "**blemore search** ... on the release `/elsewhere`, 6 trials")
    other = client.get_experiment_by_name("other_release").experiment_id
    good = {
        "completed_linear": _parent(client, exp, _flat(space, **{"model.arch": "linear", "train.lr": 1e-3}),
                                    "completed", 0.30),
        "completed_mlp": _parent(client, exp, _flat(space, **{"model.arch": "mlp256", "train.lr": 2e-3,
                                                              "reg.dropout": 0.2}), "completed", 0.35),
        "stopped": _parent(client, exp, _flat(space, **{"model.arch": "linear", "train.lr": 5e-2}), "stopped", 0.1,
                           curve={1: 0.05, 2: 0.1}),
        # lr outside the new range: the value is dropped with a note, model.arch still seeds
        "lr_outside": _parent(client, exp, _flat(space, **{"model.arch": "linear", "train.lr": 0.5}),
                              "completed", 0.2),
    }
    _parent(client, exp, _flat(space, **{"train.lr": 1e-3}), "error")
    _parent(client, exp, _flat(space, **{"train.lr": 1e-3}), None)  # never ended (running or killed)
    _parent(client, exp, _flat(space, **{"train.lr": 1e-3, "train.max_epochs": 99}), "completed", 0.9)
    _parent(client, exp, _flat(space, **{"train.lr": 1e-3, "thresholds.protocol": "crossfit"}), "completed", 0.9)
    _parent(client, exp, _flat(space, **{"train.lr": 1e-3, "data.encoders": "wavlm"}), "completed", 0.9)
    _parent(client, other, _flat(space, **{"train.lr": 1e-3}), "completed", 0.9)
    return client, good


def test_seeded_study_holds_exactly_the_compatible_trials(space, store):
    client, good = store
    warm = warmstart.build_warm_start(space, ("first", "other_release"), client, RELEASE)
    searcher = OptunaSearch(space=_DefineByRun(space), metric="score", mode="max", sampler=make_sampler(0, 20))
    study = warmstart.study_of(searcher)
    warmstart.seed_study(study, warm)
    trials = {t.user_attrs["mlflow_run_id"]: t for t in study.trials if t.state != TrialState.WAITING}
    assert set(trials) == set(good.values())
    # the two best compatible configurations (0.35, 0.30; never an unused 0.9) are the next two proposals
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.user_attrs["warm_start_replay"] for t in waiting] == [good["completed_mlp"], good["completed_linear"]]
    assert warm.replayed == [good["completed_mlp"], good["completed_linear"]]
    line = next(ln for ln in warm.describe() if "run first" in ln)  # the console names them as MLflow shows them
    for rid, recorded in ((good["completed_mlp"], "0.3500"), (good["completed_linear"], "0.3000")):
        assert f"{client.get_run(rid).info.run_name} {rid[:8]} (first, recorded {recorded})" in line, line
    asked = [study.ask() for _ in range(2)]
    for t in asked:
        space.suggest(t)  # the define-by-run space, as the searcher runs it
    assert [t.params for t in asked] == [trials[good["completed_mlp"]].params,
                                         trials[good["completed_linear"]].params]
    lin, mlp = trials[good["completed_linear"]], trials[good["completed_mlp"]]
    assert lin.state == TrialState.COMPLETE and lin.value == pytest.approx(0.30)
    assert lin.params == {"model.arch": "linear", "train.lr": pytest.approx(1e-3)}  # dropout: inactive for linear
    assert mlp.params == {"model.arch": "mlp256", "train.lr": pytest.approx(2e-3), "reg.dropout": pytest.approx(0.2)}
    st = trials[good["stopped"]]
    assert st.state == TrialState.PRUNED and st.intermediate_values == {1: 0.05, 2: 0.1}
    assert trials[good["lr_outside"]].params == {"model.arch": "linear"}
    assert any(n.startswith("train.lr: 0.5 outside") for n in warm.notes)
    assert warm.used == {"first": 4, "other_release": 0}
    assert warm.not_used == Counter({"trial_status error": 1, "trial_status missing (unfinished)": 1,
                                     "train.max_epochs differs (99 != 6)": 1,
                                     "thresholds.protocol differs (crossfit != val)": 1,
                                     "data.encoders differs (wavlm != imagebind,wavlm)": 1,
                                     "release differs": 1})


def test_pareto_space_seeds_both_objectives(space, store):
    import dataclasses

    client, good = store
    pareto = dataclasses.replace(space, metrics=("acc_presence", "acc_salience"))
    warm = warmstart.build_warm_start(pareto, ("first",), client, RELEASE)
    study = optuna.create_study(directions=["maximize", "maximize"])
    warmstart.seed_study(study, warm)
    t = next(t for t in study.trials if t.user_attrs.get("mlflow_run_id") == good["completed_mlp"])
    assert t.values == pytest.approx([0.45, 0.25])
    # replayed first: the front of the completed trials (mlp 0.45/0.25 dominates linear 0.40/0.20 and
    # lr_outside 0.30/0.10), so one configuration
    assert warm.replayed == [good["completed_mlp"]]


def test_study_of_reads_rays_optuna_search():
    """The third-party assumption: Ray's OptunaSearch holds the study it proposes from in ``_ot_study``."""
    sampler = optuna.samplers.RandomSampler(seed=1)
    searcher = OptunaSearch(space=lambda t: {"x": t.suggest_float("x", 0, 1)}, metric="score", mode="max",
                            sampler=sampler)
    study = warmstart.study_of(searcher)
    assert study.sampler is sampler
    searcher.suggest("a")
    assert len(study.trials) == 1  # the searcher's proposals are asked from this very study
    with pytest.raises(RuntimeError, match="_ot_study"):
        warmstart.study_of(object())


def test_names_and_checks(space, store):
    from types import SimpleNamespace

    from search.errors import InputError

    client, _ = store
    assert warmstart.names_of(SimpleNamespace(warm_start=("a", "b")), SimpleNamespace(warm_start=["b", "c"])) == (
        "b", "c", "a")
    with pytest.raises(InputError, match="own name"):
        warmstart.check_names(("first",), "first", client)
    with pytest.raises(InputError, match="no search named 'nope'.*first"):
        warmstart.check_names(("nope",), "second", client)


def _good_region_trials(space, n: int, rng) -> list:
    """``n`` finished trials whose score peaks at lr = 1e-3 (score falls with |log10 lr + 3|)."""
    out = []
    for _ in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        arch = str(rng.choice(["linear", "mlp256"]))
        params = {"model.arch": "linear" if arch == "linear" else "mlp256", "train.lr": str(lr)}
        if arch == "mlp256":
            params["reg.dropout"] = str(float(rng.uniform(0, 0.5)))
        out.append(warmstart.PastTrial("first", f"r{len(out)}", "completed", _flat(space, **params),
                                       {"score": 0.5 - 0.1 * abs(math.log10(lr) + 3)}, release=RELEASE))
    return out


def _first_proposals(space, seeds: list, k: int = 5, seed: int = 3) -> np.ndarray:
    searcher = OptunaSearch(space=_DefineByRun(space), metric="score", mode="max", sampler=make_sampler(seed, 20))
    warm = warmstart.WarmStart()
    for t in seeds:
        ft, reason = warmstart.frozen_trial(space, t, Counter())
        assert reason is None
        warm.trials.append(ft)
    warmstart.seed_study(warmstart.study_of(searcher), warm)
    return np.array([math.log10(searcher.suggest(f"t{i}")["train.lr"]) for i in range(k)])


def test_first_proposals_come_from_the_seeded_model(space):
    """After 60 seeded trials whose best region is lr near 1e-3, the first five proposals of the production sampler
    (5 sampler seeds, 25 proposals) concentrate there; a cold sampler's first five (its random start-up trials)
    spread over the range's three decades."""
    seeds = _good_region_trials(space, 60, np.random.default_rng(0))
    warm = np.abs(np.concatenate([_first_proposals(space, seeds, 5, s) for s in range(5)]) + 3)
    cold = np.abs(np.concatenate([_first_proposals(space, [], 5, s) for s in range(5)]) + 3)
    assert np.mean(warm < 0.5) >= 0.9 and np.mean(warm) < 0.3, warm
    assert np.mean(cold < 0.5) <= 0.5 and np.mean(cold) > 0.5, cold


def test_space_key_cli_flag_and_manifest_keep_the_names(tmp_path, monkeypatch):
    """``warm_start:`` in a space file, ``--warm-start`` (repeatable) and the manifest ``resume`` reads back."""
    from dataclasses import asdict

    import search.runner as runner
    from search.cli import build_parser
    from search.space import SpaceError

    p = tmp_path / "s.yaml"
    p.write_text(SPACE + "warm_start: [first, first, older]\n")
    sp = load_space(p)
    assert sp.warm_start == ("first", "older")
    p.write_text(SPACE + "warm_start: [1]\n")
    with pytest.raises(SpaceError, match="warm_start: must be a search name"):
        load_space(p)
    seen = {}
    monkeypatch.setattr(runner, "run_search", lambda space, opts: seen.setdefault("opts", opts) and (_ for _ in ()
                                                                                                  ).throw(SystemExit))
    args = build_parser().parse_args(["search", str(p), "--warm-start", "a", "--warm-start", "b"])
    with pytest.raises(SystemExit):
        args.func(args)
    opts = seen["opts"]
    assert opts.warm_start == ("a", "b")
    # resume rebuilds SearchOptions from the manifest's JSON options: the names survive the round trip
    import json

    back = runner.SearchOptions(**json.loads(json.dumps(asdict(opts))))
    assert warmstart.names_of(sp, back) == ("a", "b", "first", "older")
    with pytest.raises(Exception, match="--warm-start"):
        runner.check_options(runner.SearchOptions(warm_start=("",)))


def test_records_agree_with_what_warm_start_reads(space):
    """The tags and the release line warm start reads are the ones the search records write."""
    from types import SimpleNamespace

    import search.runner as runner

    try:
        from search.records import naming as records
    except ImportError:  # before the records package (search/tracking.py)
        from search import tracking as records
    assert (warmstart.ROLE_TAG, warmstart.STATUS_TAG) == (records.ROLE_TAG, "trial_status")
    storage = SimpleNamespace(join=lambda *a: "/st/x", uri="/st")
    text = runner._description(space, runner.SearchOptions(), "x", storage, "/data/rel",
                               SimpleNamespace(describe=lambda: "plan"))
    assert warmstart._DESCRIBED_RELEASE.search(text).group(1) == "/data/rel"


def test_description_says_what_seeded_the_search(space):
    """The experiment's description (what the MLflow UI shows above the runs) carries a warm-started search's
    seeding, read back from the tags the warm start writes; nothing for a cold search."""
    from collections import Counter
    from types import SimpleNamespace

    import search.runner as runner

    warm = warmstart.WarmStart(used={"first": 6, "other": 2}, not_used=Counter({"trial_status cut": 2}),
                               replayed=["2a635aa9324944d2986a83baff038080", "270aa432ba1140abbd11ec2bfd11d54c"])
    warm.trials = [None] * 8
    text = warmstart.described(warm.tags())
    assert text.startswith("Warm-started: 8 finished trials of earlier searches seeded the sampler (`first`: 6, "
                           "`other`: 2); 2 not used (trial_status cut: 2); the 2 best earlier configuration(s) ran "
                           "first (runs `2a635aa9`, `270aa432`)"), text
    assert warmstart.described({"mlflow.note.content": "x"}) == ""
    storage = SimpleNamespace(join=lambda *a: "/st/x", uri="/st")
    plan = SimpleNamespace(describe=lambda: "plan")
    desc = runner._description(space, runner.SearchOptions(), "x", storage, "/data/rel", plan, text)
    assert f"(maximised).\n\n{text}\n\nHow to read it" in desc
    assert "Warm-started" not in runner._description(space, runner.SearchOptions(), "x", storage, "/data/rel", plan)
