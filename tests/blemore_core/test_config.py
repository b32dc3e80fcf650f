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
