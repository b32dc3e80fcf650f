"""Registry rules: duplicate registration raises; unknown names list the valid ones (DESIGN.md section 9)."""

import pytest

from blemore_core.config import ARCHS, FUSIONS, HEADS, POOLINGS
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


def test_registries_cover_config_vocabulary():
    """Every name the config accepts is buildable, and nothing the config rejects is registered."""
    assert set(POOLING.names()) == set(POOLINGS)
    assert set(FUSION.names()) == set(FUSIONS)
    assert set(HEAD.names()) == set(HEADS)
    assert set(ARCH.names()) == set(ARCHS) - {"fusion"}
