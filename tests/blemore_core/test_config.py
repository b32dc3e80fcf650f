"""Config loading: unknown keys rejected, every error gathered, round trip, overrides, presets valid."""

from pathlib import Path

import pytest

from blemore_core.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = Config()
    assert cfg.problems() == []
    p = tmp_path / "c.yaml"
    cfg.to_yaml(p)
    assert Config.from_yaml(p) == cfg


def test_all_errors_gathered_with_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: {fusion: telepathy, colour: red}\ntrain: {lr: fast}\nloss: {label_smoothing: 1.5}\n")
    with pytest.raises(ConfigError) as ei:
        Config.from_yaml(p)
    msg = str(ei.value)
    for needle in (str(p), "model.colour", "train.lr", "'fast'", "model.fusion", "telepathy", "loss.label_smoothing"):
        assert needle in msg


def test_top_n_bounded_by_number_of_encoders():
    with pytest.raises(ConfigError, match=r"model.top_n: must be in 1..2"):
        Config.from_dict({"data": {"encoders": ["imagebind", "wavlm"]}, "model": {"fusion": "rank_aware", "top_n": 3}})


def test_override_dotted_keys_and_unknown_key():
    cfg = Config().override({"model.fusion": "rank_aware", "model.top_n": 1, "data.encoders": ["wavlm"]})
    assert cfg.model.fusion == "rank_aware" and cfg.data.encoders == ("wavlm",)
    with pytest.raises(ConfigError, match="model.nope"):
        Config().override({"model.nope": 1})


def test_flat_view_is_scalar():
    flat = Config().flat()
    assert flat["data.encoders"] == "imagebind,wavlm"
    assert all(not isinstance(v, (list, dict)) for v in flat.values())


def test_baseline_arch_requires_aggregated():
    with pytest.raises(ConfigError, match="aggregated"):
        Config.from_dict({"model": {"arch": "mlp512"}})


@pytest.mark.parametrize("path", sorted((ROOT / "spaces" / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_load(path):
    cfg = Config.from_yaml(path)
    assert cfg.problems() == []


# ------------------------------------------------------------------ issue 11: floats, one error per key, --set
@pytest.mark.parametrize("key,text", [("loss.kl", ".nan"), ("train.lr", ".inf"), ("train.lr_min", "-.inf"),
                                      ("reg.dropout", ".nan"), ("thresholds.presence_weight", ".nan")])
def test_every_float_key_rejects_nan_and_inf(tmp_path, key, text):
    sec, k = key.split(".")
    p = tmp_path / "c.yaml"
    p.write_text(f"{sec}:\n  {k}: {text}\n")
    with pytest.raises(ConfigError) as ei:
        Config.from_yaml(p)
    lines = str(ei.value).splitlines()[1:]
    assert len(lines) == 1 and f"{key}: expected a finite number" in lines[0] and str(p) in lines[0], lines


def test_all_float_fields_are_checked_for_finiteness():
    import dataclasses
    import typing

    def floats(cls, prefix=""):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                yield from floats(tp, f"{prefix}{f.name}.")
            elif tp is float:
                yield prefix + f.name
    keys = list(floats(Config))
    assert len(keys) > 10
    for key in keys:
        with pytest.raises(ConfigError, match=f"{key}: expected a finite number"):
            Config().override({key: float("nan")})


def test_a_wrong_type_gives_one_message_for_its_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: abc\n  lr_min: 0.0001\nloss:\n  kl: oops\n")
    with pytest.raises(ConfigError) as ei:
        Config.from_yaml(p)
    lines = sorted(ln.strip() for ln in str(ei.value).splitlines()[1:])
    assert lines == sorted([f"{p}: train.lr: expected a number, got 'abc'",
                            f"{p}: loss.kl: expected a number, got 'oops'"])


def test_set_errors_are_gathered_with_the_files(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: .nan\nmodel:\n  bogus: 1\n")
    with pytest.raises(ConfigError) as ei:
        Config.from_yaml(p, {"train.max_epochs": "many", "loss.nope": 1, "train.batch_size": 8})
    msg = str(ei.value)
    assert f"{p}: train.lr: expected a finite number" in msg and f"{p}: unknown key 'model.bogus'" in msg
    assert "--set: train.max_epochs: expected an integer, got 'many'" in msg and "--set: unknown key 'loss.nope'" in msg
    assert len(msg.splitlines()) == 5
    ok = tmp_path / "ok.yaml"
    ok.write_text("seed: 1\n")
    assert Config.from_yaml(ok, {"train.batch_size": 8}).train.batch_size == 8


# ------------------------------------------------------------------ issue 19: declarative validation (pydantic)
def test_range_messages_come_from_the_declared_constraint():
    """The wording of a range error is derived from the field's declaration: closed [0, 1] for the presence weight,
    half-open [0, 1) for a rate, >= 1 for a count, > 0 for the learning rate."""
    cases = {"thresholds.presence_weight": (1.5, "must be in [0, 1], got 1.5"),
             "reg.dropout": (1, "must be in [0, 1), got 1"), "train.batch_size": (0, "must be >= 1, got 0"),
             "train.lr": (-1, "must be > 0, got -1")}
    for key, (value, text) in cases.items():
        with pytest.raises(ConfigError) as ei:
            Config().override({key: value}, source="S")
        assert str(ei.value).splitlines()[1:] == [f"  S: {key}: {text}"], str(ei.value)
    assert Config().override({"thresholds.presence_weight": 1}).thresholds.presence_weight == 1.0


def test_integral_float_is_an_integer_and_strings_are_not_numbers():
    cfg = Config().override({"train.max_epochs": 8.0})
    assert cfg.train.max_epochs == 8 and type(cfg.train.max_epochs) is int
    for key, value in (("train.max_epochs", "8"), ("train.lr", "0.1"), ("data.standardise", 1)):
        with pytest.raises(ConfigError, match=key):
            Config().override({key: value})


def test_config_error_carries_its_problems_and_pickles():
    """Callers read the problems (key, text) instead of parsing the message; they survive a process boundary."""
    import pickle

    with pytest.raises(ConfigError) as ei:
        Config().override({"train.lr": "fast", "model.nope": 1}, source="S")
    problems = dict(ei.value.problems)
    assert problems["train.lr"] == "train.lr: expected a number, got 'fast'"
    assert problems["model.nope"].startswith("unknown key 'model.nope'")
    again = pickle.loads(pickle.dumps(ei.value))
    assert again.problems == ei.value.problems and str(again) == str(ei.value)


def test_encoder_sets_have_one_string_form():
    from blemore_core.config import encoder_set, encoder_set_name

    cfg = Config().override({"data.encoders": ["imagebind", "wavlm", "hubert"]})
    assert cfg.flat()["data.encoders"] == encoder_set_name(cfg.data.encoders) == "imagebind,wavlm,hubert"
    assert encoder_set("imagebind+wavlm") == encoder_set("imagebind,wavlm") == ("imagebind", "wavlm")
    assert Config().override({"data.encoders": "imagebind,wavlm"}).data.encoders == ("imagebind", "wavlm")
    assert Config().override({"data.encoders": "wavlm"}).data.encoders == ("wavlm",)


def test_cross_section_rules_list_every_broken_rule():
    """Rules across fields are gathered: two broken rules give two lines."""
    with pytest.raises(ConfigError) as ei:
        Config.from_dict({"data": {"encoders": ["imagebind", "wavlm"]},
                          "model": {"arch": "mlp512", "fusion": "rank_aware", "top_n": 3}}, source="S")
    lines = str(ei.value).splitlines()[1:]
    assert len(lines) == 2 and "model.arch: baseline 'mlp512' needs data.features" in lines[0], lines
    assert "model.top_n: must be in 1..2" in lines[1], lines


# ------------------------------------------------------------------ issue 21 item 8: the YAML line of each problem
def test_errors_name_the_yaml_line_of_their_key(tmp_path):
    import pickle

    p = tmp_path / "c.yaml"
    p.write_text("seed: 1\nmodel:\n  fusion: rank_aware\n  top_n: 5\ntrain:\n  lr: abc\nloss: {bce: 0.5}\n")
    with pytest.raises(ConfigError) as ei:
        Config.from_yaml(p, {"loss.kl": -1})
    e = ei.value
    shown = dict(zip([k for k, _ in e.problems], e.with_lines().splitlines()[1:], strict=True))
    assert shown["train.lr"].endswith("expected a number, got 'abc' (line 6)")
    assert shown["loss.kl"].startswith("  --set: loss.kl") and "(line" not in shown["loss.kl"]  # not from the file
    assert pickle.loads(pickle.dumps(e)).with_lines() == e.with_lines()
    p.write_text("seed: 1\nmodel: {fusion: rank_aware,\n  top_n: 5}\ndata:\n  encoders: [imagebind, wavlm]\n")
    with pytest.raises(ConfigError) as ei:
        Config.from_yaml(p)
    assert ei.value.with_lines().endswith("got 5 (line 3)")


def test_yaml_key_lines_walks_each_node_once():
    """Aliases are not expanded: a document of nested aliases (a "billion laughs") is walked in linear time."""
    from blemore_core.config import yaml_key_lines

    assert yaml_key_lines("a: 1\nb:\n  c: {d: 2}\n") == {"a": 1, "b": 2, "b.c": 3, "b.c.d": 3}
    doc = "a0: &a0 {x: 1}\n" + "".join(f"a{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(9)) + "}\n"
                                       for i in range(1, 30))
    lines = yaml_key_lines(doc)
    assert lines["a29"] == 30 and len(lines) < 400
    assert yaml_key_lines("a: [unclosed\n") == {}
