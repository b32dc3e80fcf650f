"""Search-space files: every shipped space loads; invalid spaces are rejected (before Ray starts) with the file,
key and value in the message; conditional parameters are sampled only when their condition holds."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from search.space import SpaceError, load_space

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted((ROOT / "spaces").glob("*.yaml"))


def test_shipped_spaces_exist():
    names = {p.stem for p in SPACES}
    assert {"baseline", "attention_fusion", "rank_aware", "full"} <= names


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_space_loads(path):
    import optuna.distributions as od
    import yaml

    space = load_space(path)
    doc = yaml.safe_load(path.read_text())
    assert [p.key for p in space.params] == list(doc["params"]), path
    for p in space.params:  # held as Optuna distributions, with the file's bounds
        spec = doc["params"][p.key]
        assert isinstance(p.dist, od.BaseDistribution)
        if spec["type"] != "choice":
            assert (p.dist.low, p.dist.high) == (spec["low"], spec["high"])
            assert getattr(p.dist, "log", False) == (spec["type"] == "loguniform")
    for key, value in (doc.get("fixed") or {}).items():
        assert space.base.flat()[key] == value
    assert space.max_epochs == space.base.train.max_epochs == doc["budget"]["max_epochs"]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


def test_all_errors_gathered_with_file_key_value(tmp_path):
    p = _write(tmp_path, """
preset: rank_aware
bogus_top: 1
data: {dir: /definitely/not/here, encoders: [imagebind, wavlm]}
params:
  train.lr: {type: loguniform, low: 0.01, high: 0.001}
  model.top_n: {type: int, low: 1, high: 4}
  model.fusion: {type: choice, values: [concat, transformer_xl]}
  model.no_such_field: {type: uniform, low: 0, high: 1}
""")
    with pytest.raises(SpaceError) as ei:
        load_space(p)
    msg = str(ei.value)
    lines = msg.splitlines()[1:]
    assert all(str(p) in line for line in lines), msg
    expected = [
        ("bogus_top", "unknown key"),
        ("data.dir", "/definitely/not/here"),
        ("params.train.lr", "empty range"),
        ("params.model.top_n.high", "number of encoders"),
        ("params.model.fusion", "transformer_xl"),
        ("params.model.no_such_field", "unknown Config key"),
    ]
    for key, text in expected:
        assert any(key in line and text in line for line in lines), (key, msg)
    assert len(lines) == len(expected), msg



def test_errors_listed_in_file_format_order(tmp_path):
    """One bad value per section: the messages follow the sections in a fixed order (top keys first, params last)."""
    p = _write(tmp_path, "params: 8\nmetric: 7\nscheduler: 6\nbudget: 5\nfixed: 4\ndata: 3\npreset: nosuch\nx: 1\n")
    with pytest.raises(SpaceError) as ei:
        load_space(p)
    lines = [line.removeprefix(f"  {p}: ") for line in str(ei.value).splitlines()]
    assert lines[0] == f"invalid search space {p}:"
    assert [line.split(":")[0] for line in lines[1:]] == [
        "x", "preset", "data", "fixed", "budget", "scheduler", "metric", "params"]
    assert lines[-1] == "params: must be a mapping of dotted keys to {type: ...} (got 8)"


def test_budget_scheduler_and_param_errors_exact(tmp_path):
    p = _write(tmp_path, """
preset: baseline
fixed: {train.lr: 0.001, debug.fail_trial: -1}
params:
  model.top_n: {type: int, low: 1, high: 2, when: {model.fusion: rank_aware, model.top_n: 1}}
  model.fusion: {type: choice, values: [concat, rank_aware]}
  train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
scheduler: {type: pbt, grace_period: 0, reduction_factor: 1}
budget: {num_samples: 0, time_budget_s: -5, extra: 1}
""")
    with pytest.raises(SpaceError) as ei:
        load_space(p)
    lines = [line.removeprefix(f"  {p}: ") for line in str(ei.value).splitlines()[1:]]
    assert lines == [
        "fixed.debug.fail_trial: must be a trial index >= 0 (got -1)",
        "budget.extra: unknown key (valid: num_samples, max_concurrent, max_epochs, time_budget_s) (got 1)",
        "budget.num_samples: must be an integer >= 1 (got 0)",
        "budget.time_budget_s: must be a positive number of seconds or null (got -5)",
        "scheduler.type: must be one of ['asha', 'none'] (got 'pbt')",
        "scheduler.grace_period: must be an integer >= 1 (got 0)",
        "scheduler.reduction_factor: must be an integer >= 2 (got 1)",
        "params.model.top_n.when.model.top_n: a parameter cannot depend on itself (got 'model.top_n')",
        "params.train.lr: is both fixed and searched (got 'train.lr')",
        "params.model.top_n.when.model.fusion: must refer to a parameter listed before it (got 'model.fusion')",
    ]


def test_top_n_value_in_message(tmp_path):
    p = _write(tmp_path, """
preset: rank_aware
data: {encoders: [imagebind, wavlm, hubert]}
params:
  model.top_n: {type: int, low: 1, high: 5}
""")
    with pytest.raises(SpaceError, match=r"params\.model\.top_n\.high: top_n larger than the number of encoders \(3.*got 5"):
        load_space(p)


def test_unknown_preset_and_metric(tmp_path):
    p = _write(tmp_path, "preset: nope\nmetric: [acc_presence]\nparams: {}\n")
    with pytest.raises(SpaceError) as ei:
        load_space(p)
    assert "preset: no such preset" in str(ei.value) and "'nope'" in str(ei.value)
    assert "metric:" in str(ei.value)


def test_conditional_sampling_is_define_by_run(tmp_path):
    p = _write(tmp_path, """
preset: rank_aware
data: {encoders: [imagebind, wavlm, hubert]}
params:
  model.fusion: {type: choice, values: [concat, rank_aware]}
  model.top_n: {type: int, low: 1, high: 3, when: {model.fusion: rank_aware}}
  train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
""")
    space = load_space(p)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        chosen = space.suggest(trial)
        assert ("model.top_n" in chosen) == (chosen["model.fusion"] == "rank_aware")
        assert 1e-4 <= chosen["train.lr"] <= 1e-2
        cfg = space.resolve(chosen)
        assert cfg.model.fusion == chosen["model.fusion"]
        seen.add(chosen["model.fusion"])
        study.tell(trial, 0.0)
    assert seen == {"concat", "rank_aware"}


def test_debug_knob_is_not_a_config_key(tmp_path):
    p = _write(tmp_path, """
preset: baseline
fixed: {debug.fail_trial: 1, train.max_epochs: 3}
params:
  train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
""")
    space = load_space(p)
    assert space.debug == {"debug.fail_trial": 1}
    assert space.base.train.max_epochs == 3
    p2 = _write(tmp_path, "preset: baseline\nfixed: {debug.explode: 1}\nparams: {train.lr: {type: uniform, low: 0.001, high: 0.01}}\n")
    with pytest.raises(SpaceError, match=r"fixed\.debug\.explode: unknown debug key"):
        load_space(p2)


@pytest.mark.parametrize("case", ["unknown_key", "empty_range", "top_n", "fusion", "missing_data"])
def test_invalid_space_fails_before_ray_starts(tmp_path, case):
    import ray

    from search.runner import SearchOptions, run_search

    bodies = {
        "unknown_key": ("preset: baseline\nparams: {train.lr: {type: uniform, low: 0.001, high: 0.01, stepp: 2}}\n",
                        "params.train.lr.stepp", "2"),
        "empty_range": ("preset: baseline\nparams: {train.lr: {type: uniform, low: 0.01, high: 0.01}}\n",
                        "params.train.lr", "0.01"),
        "top_n": ("preset: rank_aware\nparams: {model.top_n: {type: int, low: 1, high: 9}}\n",
                  "params.model.top_n.high", "9"),
        "fusion": ("preset: rank_aware\nparams: {model.fusion: {type: choice, values: [concat, gated]}}\n",
                   "params.model.fusion", "'gated'"),
        "missing_data": ("preset: baseline\ndata: {dir: /no/such/release}\nparams: {train.lr: {type: uniform, low: 0.001, high: 0.01}}\n",
                         "data.dir", "/no/such/release"),
    }
    text, key, value = bodies[case]
    p = _write(tmp_path, text)
    assert not ray.is_initialized()
    with pytest.raises(SpaceError) as ei:
        run_search(p, SearchOptions(storage=str(tmp_path / "rr"), tracking_uri=f"sqlite:///{tmp_path}/m.db"))
    assert not ray.is_initialized()
    msg = str(ei.value)
    assert str(p) in msg and key in msg and value in msg, msg
    assert not (tmp_path / "rr").exists()


def test_bad_options_rejected():
    from search.runner import SearchOptions, check_options

    with pytest.raises(ValueError, match=r"--cpus-per-fold: must be > 0, got 0"):
        check_options(SearchOptions(cpus_per_fold=0))
    with pytest.raises(ValueError, match=r"--scheduler"):
        check_options(SearchOptions(scheduler="hyperband"))


def test_resume_uses_the_stored_space_and_says_when_the_file_changed(tmp_path, capsys):
    from search.runner import SearchOptions, _write_manifest, stored_space

    p = _write(tmp_path, """
preset: rank_aware
data: {encoders: [imagebind, wavlm, hubert]}
params:
  train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
""")
    space = load_space(p)
    from search.storage import resolve_storage

    _write_manifest(resolve_storage(str(tmp_path)), "exp", space, SearchOptions(), "/data", "sqlite:///x.db")
    doc = json.loads((tmp_path / "exp" / "blemore_search.json").read_text())
    assert stored_space(doc).params == space.params and "note" not in capsys.readouterr().err
    p.write_text(p.read_text().replace("1.0e-2", "5.0e-2").replace("hubert]", "hubert, openface]"))
    again = stored_space(doc)
    assert again.params == space.params and again.base == space.base
    assert "changed since the search started" in capsys.readouterr().err


@pytest.mark.parametrize("body, want", [
    ("fixed: {1: 2}", r"fixed\.1: keys must be dotted Config keys \(strings\) \(got 1\)"),
    ("params: {train.lr: {type: [uniform], low: 1.0e-4, high: 1.0e-2}}", r"params\.train\.lr\.type: must be one of"),
    ("params: {data.encoders: {type: choice, values: [[imagebind], 3]}}",
     r"params\.data\.encoders\.values: each encoder set must be a list of encoder names or an 'a\+b' string \(got 3\)"),
])
def test_malformed_keys_and_values_are_space_errors(tmp_path, body, want):
    """Non-string keys, a list as a type, a number as an encoder set: a SpaceError naming the key, never a
    TypeError/AttributeError from deep inside."""
    p = _write(tmp_path, f"preset: baseline\n{body}\n")
    with pytest.raises(SpaceError, match=want):
        load_space(p)


def test_relative_data_dir_becomes_absolute(tmp_path, monkeypatch, tiny_release):
    """`--data data/demo` from the user's working directory: the space holds the absolute path, because the trial
    and fold-worker processes Ray starts do not run in that directory (seen: every trial failed with
    "data/demo: release root is not a directory")."""
    import shutil

    shutil.copytree(tiny_release, tmp_path / "data" / "rel")
    p = _write(tmp_path, "preset: baseline\n")
    monkeypatch.chdir(tmp_path)
    space = load_space(p, data_dir="data/rel")
    assert space.data_dir == (tmp_path / "data" / "rel").resolve() and space.data_dir.is_absolute()


# ------------------------------------------------------------------ issue 19: declarative specs, one bound, one form
def test_a_directory_that_is_not_a_string_is_a_space_error(tmp_path):
    p = _write(tmp_path, "preset: baseline\ndata: {dir: 5, encoders: []}\n")
    with pytest.raises(SpaceError) as ei:
        load_space(p)
    lines = [line.removeprefix(f"  {p}: ") for line in str(ei.value).splitlines()[1:]]
    assert lines == ["data.dir: must be a directory path or null (got 5)",
                     "data.encoders: must be a non-empty list of encoder names (got [])"]


def test_defaults_come_from_the_specs(tmp_path):
    """The budget and scheduler defaults are stated once, in the specs: SearchSpace declares none of its own."""
    import dataclasses

    from search.space import SearchSpace

    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(SearchSpace)
               if f.name in ("scheduler", "grace_period", "reduction_factor", "num_samples", "max_concurrent",
                             "max_epochs", "time_budget_s"))
    space = load_space(_write(tmp_path, "preset: baseline\n"))
    assert (space.num_samples, space.max_concurrent, space.time_budget_s) == (6, 1, None)
    assert (space.scheduler, space.grace_period, space.reduction_factor) == ("asha", 2, 2)
    assert space.max_epochs == space.base.train.max_epochs  # budget.max_epochs unset: the base config's


def test_top_n_is_lowered_only_when_searched(tmp_path):
    """The preset says top_n 3; the file keeps 2 encoders. Searched, top_n's base value is lowered to the bound and
    sampled within it; not searched, the preset's value is an error naming model.top_n."""
    searched = load_space(_write(tmp_path, "preset: rank_aware\ndata: {encoders: [imagebind, wavlm]}\n"
                                           "params: {model.top_n: {type: int, low: 1, high: 2}}\n"))
    assert searched.base.model.top_n == 2
    with pytest.raises(SpaceError, match=r"model\.top_n: must be in 1\.\.2"):
        load_space(_write(tmp_path, "preset: rank_aware\ndata: {encoders: [imagebind, wavlm]}\n"
                                    "params: {train.lr: {type: uniform, low: 0.001, high: 0.01}}\n"))


def test_encoder_set_choices_are_lists_offered_in_one_string_form(tmp_path):
    p = _write(tmp_path, "preset: rank_aware\nparams:\n"
                         "  data.encoders: {type: choice, values: [[imagebind, wavlm], imagebind+wavlm+hubert]}\n"
                         "  model.top_n: {type: int, low: 1, high: 3}\n")
    space = load_space(p)
    enc = next(x for x in space.params if x.key == "data.encoders")
    assert enc.values == ("imagebind,wavlm", "imagebind,wavlm,hubert")
    cfg = space.resolve({"data.encoders": "imagebind,wavlm", "model.top_n": 2})
    assert cfg.data.encoders == ("imagebind", "wavlm") and cfg.flat()["data.encoders"] == enc.values[0]


def test_a_builtin_space_is_found_by_name_from_any_directory(tmp_path, monkeypatch):
    from search.space import SPACES_DIR, builtin_spaces, space_summary

    monkeypatch.chdir(tmp_path)
    assert set(builtin_spaces()) >= {"baseline", "attention_fusion", "rank_aware", "full"}
    space = load_space("rank_aware")
    assert space.path == SPACES_DIR / "rank_aware.yaml" and space.name == "rank_aware"
    assert space_summary(space.path).startswith("Rank-aware top-n fusion")
    (tmp_path / "rank_aware").mkdir()  # a directory of that name in the working directory is not the space
    with pytest.raises(SpaceError, match="cannot read"):
        load_space("rank_aware")
    with pytest.raises(SpaceError, match="cannot read"):
        load_space("no_such_space")


def test_space_errors_name_the_yaml_line(tmp_path):
    p = _write(tmp_path, "preset: baseline\nbudget:\n  num_samples: 0\nparams:\n  train.lr:\n    type: uniform\n"
                         "    low: 0.1\n    high: 0.01\n")
    with pytest.raises(SpaceError) as ei:
        load_space(p)
    lines = ei.value.with_lines().splitlines()[1:]
    assert lines[0].endswith("budget.num_samples: must be an integer >= 1 (got 0) (line 3)"), lines
    assert "params.train.lr: empty range" in lines[1] and lines[1].endswith("(line 5)"), lines
    assert str(ei.value).splitlines()[1].endswith("(got 0)")  # the message itself is unchanged
