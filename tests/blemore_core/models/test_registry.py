"""Registry rules: duplicate registration raises; unknown names list the valid ones (docs/ARCHITECTURE.md section 9)."""

import pytest

from blemore_core.config import Config, ConfigError
from blemore_core.models import ARCH, FUSION, HEAD, POOLING, Registry, RegistryError


def test_duplicate_registration_raises():
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(RegistryError, match="'a' is already registered"):
        reg.register("a")(int)
    assert reg.get("a") is object


def test_unknown_name_lists_valid_names():
    reg = Registry("thing")
    reg.register("alpha")(object)
    reg.register("beta")(int)
    with pytest.raises(ValueError, match=r"unknown thing 'gamma' \(valid: alpha, beta\)"):
        reg.get("gamma")
    with pytest.raises(KeyError):
        reg.get("gamma")


def test_duplicate_in_real_registry_raises():
    with pytest.raises(RegistryError, match="pooling 'stat' is already registered"):
        POOLING.register("stat")(object)


def test_unregister_and_empty_name():
    reg = Registry("thing")
    reg.register("x")(object)
    reg.unregister("x")
    assert "x" not in reg and len(reg) == 0
    with pytest.raises(RegistryError):
        reg.register("")


def test_config_names_come_from_the_registries():
    """The registries are the only list of valid names: a name registered now is accepted by the config, and
    rejected again once unregistered (the error lists the registered names)."""
    for kind, reg, key in (("pooling", POOLING, "model.pooling"), ("fusion", FUSION, "model.fusion"),
                           ("head", HEAD, "model.head")):
        for name in reg.names():
            if key == "model.fusion" and name == "mixed":
                Config().override({key: name, "model.mixed_pretrain_epochs": 1})
            else:
                Config().override({key: name})
        reg.register(f"tmp_{kind}")(object)
        try:
            Config().override({key: f"tmp_{kind}"})
        finally:
            reg.unregister(f"tmp_{kind}")
        with pytest.raises(ConfigError, match=rf"{key}: 'tmp_{kind}' is not one of .*{reg.names()[0]}"):
            Config().override({key: f"tmp_{kind}"})
    for name in ARCH.names():
        Config().override({"model.arch": name, "data.features": "aggregated"})