"""Run configuration: frozen dataclasses loaded from and saved to YAML.

The dotted names of the fields (``model.fusion``, ``loss.kl``, ``train.lr`` ...) are the vocabulary of the
search spaces in ``spaces/``. Loading rejects unknown keys and wrong types and gathers every error into one
``ConfigError`` message naming the file and the key (DESIGN.md section 9).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from blemore_core.io import load_yaml

ENCODER_KEYS: tuple[str, ...] = ("imagebind", "videomae", "hicmae", "wavlm", "hubert", "openface", "clip", "videoswin")
#: the threshold / epoch protocols of DESIGN 3, all recorded for every run
PROTOCOLS: tuple[str, ...] = ("val", "train", "crossfit")
#: the protocols that can be the headline (computed every epoch: the objective of a search)
HEADLINE_PROTOCOLS: tuple[str, ...] = ("val", "crossfit")


def _registry_names() -> dict[str, tuple[str, ...]]:
    """Valid ``model.pooling`` / ``model.fusion`` / ``model.head`` / ``model.arch`` names: the model registries
    are the only list (DESIGN 9); imported lazily because the model zoo imports this module."""
    import blemore_core.models  # noqa: F401  (registers the blocks)
    from blemore_core.models.registry import ARCH, FUSION, HEAD, POOLING

    return {"pooling": POOLING.names(), "fusion": FUSION.names(), "head": HEAD.names(),
            "arch": ("fusion", *ARCH.names())}


class ConfigError(ValueError):
    """A configuration is invalid; the message lists every problem found, each naming its key."""


@dataclass(frozen=True)
class DataConfig:
    """Which inputs a model sees.

    Attributes:
        encoders: encoder keys (see :data:`ENCODER_KEYS`), in model input order.
        features: ``"sequence"`` (per-frame features, standardised to ``model.seq_len`` frames) or
            ``"aggregated"`` (the 7 statistics per dimension, (7*D,), the organisers' baseline input).
        standardise: z-score features with statistics fitted on the training folds of each split only.
        domain_target: unlabeled target inputs of the domain term: ``"val"`` (the held-out fold) or
            ``"test"`` (the test split's features). Labels of the target are never read.
    """

    encoders: tuple[str, ...] = ("imagebind", "wavlm")
    features: str = "sequence"
    standardise: bool = True
    domain_target: str = "val"


@dataclass(frozen=True)
class ModelConfig:
    """Model architecture (DESIGN.md section 4).

    Attributes:
        arch: ``"fusion"`` (pooling + fusion + head built from the registries) or an organisers' baseline
            ``"linear"``, ``"mlp256"``, ``"mlp512"`` (aggregated features only).
        pooling: temporal pooling per encoder: stat | bilstm | cls | attention.
        fusion: concat | attention | mixed | rank_aware.
        head: softmax | presence_salience | structured.
        latent_dim: width of each unimodal branch output (B, latent_dim).
        shared_dim: width of the shared space of attention / rank-aware fusion.
        top_n: encoders kept per sample by rank-aware fusion (1..number of encoders).
        seq_len: L, frames per encoder after temporal standardisation.
        layers: transformer / LSTM layers in pooling and attention fusion.
        heads: attention heads of transformer layers (must divide the model width).
        mixed_pretrain_epochs: epochs the concat and attention branches of ``mixed`` are trained before they
            are frozen and the combining attention is trained (seed 002's staged schedule).
    """

    arch: str = "fusion"
    pooling: str = "attention"
    fusion: str = "concat"
    head: str = "softmax"
    latent_dim: int = 128
    shared_dim: int = 128
    top_n: int = 2
    seq_len: int = 16
    layers: int = 1
    heads: int = 4
    mixed_pretrain_epochs: int = 20


@dataclass(frozen=True)
class LossConfig:
    """Loss coefficients (DESIGN.md section 4, Losses). A coefficient of 0 switches a term off.

    Attributes:
        kl: weight of KL(soft label || p).
        bce: weight of the binary cross-entropy on emotion presence.
        rank: weight of the margin ranking term on unequal blends (dominant above subdominant).
        margin: margin m of the ranking term, in probability units.
        label_smoothing: epsilon mixed into the soft label (uniform over the 6 emotions).
        domain: weight of the unsupervised feature-level domain term.
        domain_kind: ``"mmd"`` (Gaussian-kernel MMD) or ``"coral"``.
    """

    kl: float = 1.0
    bce: float = 0.0
    rank: float = 0.0
    margin: float = 0.1
    label_smoothing: float = 0.0
    domain: float = 0.0
    domain_kind: str = "mmd"


@dataclass(frozen=True)
class RegConfig:
    """Regularisation rates, each a probability in [0, 1).

    Attributes:
        dropout: layer dropout.
        modality_dropout: probability of dropping a whole encoder for one training sample.
        temporal_dropout: probability of masking one real frame in training.
    """

    dropout: float = 0.1
    modality_dropout: float = 0.0
    temporal_dropout: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (DESIGN.md section 5).

    Attributes:
        lr: initial learning rate of AdamW.
        lr_min: final learning rate of the cosine decay.
        weight_decay: AdamW weight decay.
        batch_size: clips per step.
        max_epochs: upper bound on epochs.
        patience: epochs without an improvement of the fold-mean headline Score (the objective, over all folds
            together; for mixed fusion counted in the combine stage only) before the folds stop (0 = never).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"`` (default) or ``"bf16"``: forward passes under ``torch.autocast`` in bfloat16 (weights,
            optimiser state, losses and threshold fits stay float32). 1.3-1.5x faster for the MLP-512 baseline on a
            CPU with AVX512-BF16 (benchmarks/bench_trainer.py) and standard on recent GPUs; Scores move by a few thousandths (benchmarks/).
    """

    lr: float = 1e-3
    lr_min: float = 1e-5
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 20
    device: str = "auto"
    precision: str = "fp32"


@dataclass(frozen=True)
class ThresholdConfig:
    """Presence threshold alpha / salience threshold beta fitting (DESIGN.md section 3).

    Attributes:
        protocol: the headline protocol (the objective of a search, the patience stop and the kept fold
            weights): ``"crossfit"`` (default, leak-free) or ``"val"`` (optimistic, the organisers' baseline).
            All three protocols (``val``, ``train``, ``crossfit``) are always recorded
            (:mod:`blemore_core.selection`).
        presence_weight: weight w of ACC_presence in the fitting objective w*ACC_presence + (1-w)*ACC_salience.
    """

    protocol: str = "crossfit"
    presence_weight: float = 0.5


@dataclass(frozen=True)
class Config:
    """A complete, resolved run configuration (one trial of a search, or one ``blemore train``)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    seed: int = 0

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, source: str = "<config>") -> Config:
        """Build and validate a Config from a nested mapping.

        Raises:
            ConfigError: listing every unknown key, wrong type and broken rule, each with ``source`` and the
                dotted key.
        """
        errors: list[str] = []
        bad: set[str] = set()
        cfg = _build(cls, d or {}, "", errors, source, bad)
        errors.extend(f"{source}: {e}" for e in _without_follow_ons(cfg.problems(), bad))
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None,
                  overrides_source: str = "--set") -> Config:
        """Load a Config from a YAML file (``yaml.safe_load``), with optional dotted-key ``overrides``
        (``{"train.lr": 0.01}``, e.g. from ``--set``) applied before validation, so that the file's errors and
        the overrides' errors come in ONE message (an override's error names ``overrides_source``).

        Raises:
            ConfigError: naming the file, for unreadable YAML or any invalid key/value.
        """
        path = Path(path)
        try:
            d = load_yaml(path, named=False)  # bounded: size, aliases, depth (blemore_core.io)
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read YAML config: {' '.join(str(e).split())}") from e
        if d is not None and not isinstance(d, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(d).__name__}")
        if not overrides:
            return cls.from_dict(d, source=str(path))
        d = _plain(dict(d or {}))
        errors: list[str] = []
        for key, value in overrides.items():
            node, parts = d, key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {}) if isinstance(node, dict) else None
                if not isinstance(node, dict):
                    break
            if isinstance(node, dict):
                node[parts[-1]] = list(value) if isinstance(value, tuple) else value
        try:
            return cls.from_dict(d, source=str(path))
        except ConfigError as e:
            lines = str(e).split("\n  ")[1:]
        for line in lines:
            rest = line[len(str(path)) + 2:] if line.startswith(f"{path}: ") else line
            m = re.match(r"(?:unknown key )?'?([A-Za-z_][\w.]*)'?", rest)
            errors.append(f"{overrides_source}: {rest}" if m and m.group(1) in overrides else line)
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        """Nested plain-Python dict (tuples as lists), YAML-safe."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Serialise to YAML; write to ``path`` when given. Returns the YAML text."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def flat(self) -> dict[str, Any]:
        """Flattened ``{"model.fusion": "concat", ...}`` view (lists joined by commas), e.g. for MLflow params."""
        out: dict[str, Any] = {}

        def rec(prefix: str, v: Any) -> None:
            if isinstance(v, dict):
                for k, x in v.items():
                    rec(f"{prefix}.{k}" if prefix else k, x)
            elif isinstance(v, list):
                out[prefix] = ",".join(map(str, v))
            else:
                out[prefix] = v

        rec("", self.to_dict())
        return out

    def override(self, updates: Mapping[str, Any], source: str = "<overrides>") -> Config:
        """Return a copy with dotted-key updates applied (``{"model.top_n": 3}``), validated.

        Raises:
            ConfigError: for unknown dotted keys or invalid values.
        """
        d = self.to_dict()
        errors = []
        for key, value in updates.items():
            parts = key.split(".")
            node = d
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    errors.append(f"{source}: unknown key {key!r}")
                    break
                node = node[p]
            else:
                if parts[-1] not in node:
                    errors.append(f"{source}: unknown key {key!r}")
                else:
                    node[parts[-1]] = list(value) if isinstance(value, tuple) else value
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
        return Config.from_dict(d, source=source)

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[str]:
        """Every broken rule of this config, as ``"key: message"`` strings (empty when valid)."""
        p: list[str] = []
        d, m, lo, r, t, th = self.data, self.model, self.loss, self.reg, self.train, self.thresholds

        def choice(key: str, value: Any, valid: tuple) -> None:
            if value not in valid:
                p.append(f"{key}: {value!r} is not one of {list(valid)}")

        if not d.encoders:
            p.append("data.encoders: at least one encoder is required")
        for e in d.encoders:
            choice("data.encoders", e, ENCODER_KEYS)
        if len(set(d.encoders)) != len(d.encoders):
            p.append(f"data.encoders: duplicate encoder in {list(d.encoders)}")
        choice("data.features", d.features, ("sequence", "aggregated"))
        choice("data.domain_target", d.domain_target, ("val", "test"))
        names = _registry_names()
        choice("model.arch", m.arch, names["arch"])
        choice("model.pooling", m.pooling, names["pooling"])
        choice("model.fusion", m.fusion, names["fusion"])
        choice("model.head", m.head, names["head"])
        if m.arch != "fusion" and d.features != "aggregated":
            p.append(f"model.arch: baseline {m.arch!r} needs data.features: aggregated, got {d.features!r}")
        for key in ("latent_dim", "shared_dim", "seq_len", "layers", "heads"):
            if getattr(m, key) < 1:
                p.append(f"model.{key}: must be >= 1, got {getattr(m, key)}")
        if m.mixed_pretrain_epochs < 0:
            p.append(f"model.mixed_pretrain_epochs: must be >= 0, got {m.mixed_pretrain_epochs}")
        if m.arch == "fusion" and m.fusion == "mixed" and m.mixed_pretrain_epochs >= t.max_epochs:
            p.append(f"model.mixed_pretrain_epochs: mixed fusion must train its combined stage, so it must be < "
                     f"train.max_epochs={t.max_epochs}, got {m.mixed_pretrain_epochs}")
        if m.fusion == "rank_aware" and d.encoders and not (1 <= m.top_n <= len(d.encoders)):
            p.append(f"model.top_n: must be in 1..{len(d.encoders)} (the number of encoders), got {m.top_n}")
        for key in ("kl", "bce", "rank", "margin", "domain"):
            if getattr(lo, key) < 0:
                p.append(f"loss.{key}: must be >= 0, got {getattr(lo, key)}")
        if lo.kl + lo.bce + lo.rank == 0:
            p.append("loss: at least one of loss.kl, loss.bce, loss.rank must be > 0")
        if not 0 <= lo.label_smoothing < 1:
            p.append(f"loss.label_smoothing: must be in [0, 1), got {lo.label_smoothing}")
        choice("loss.domain_kind", lo.domain_kind, ("mmd", "coral"))
        for key in ("dropout", "modality_dropout", "temporal_dropout"):
            if not 0 <= getattr(r, key) < 1:
                p.append(f"reg.{key}: must be in [0, 1), got {getattr(r, key)}")
        if t.lr <= 0:
            p.append(f"train.lr: must be > 0, got {t.lr}")
        if not 0 <= t.lr_min <= t.lr:
            p.append(f"train.lr_min: must be in [0, train.lr={t.lr}], got {t.lr_min}")
        if t.weight_decay < 0:
            p.append(f"train.weight_decay: must be >= 0, got {t.weight_decay}")
        for key in ("batch_size", "max_epochs"):
            if getattr(t, key) < 1:
                p.append(f"train.{key}: must be >= 1, got {getattr(t, key)}")
        if t.patience < 0:
            p.append(f"train.patience: must be >= 0, got {t.patience}")
        choice("train.device", t.device, ("auto", "cpu", "cuda"))
        choice("train.precision", t.precision, ("fp32", "bf16"))
        choice("thresholds.protocol", th.protocol, HEADLINE_PROTOCOLS)
        if not 0 <= th.presence_weight <= 1:
            p.append(f"thresholds.presence_weight: must be in [0, 1], got {th.presence_weight}")
        return p


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


class _Invalid:
    """Marker returned by :func:`_coerce` for a value of the wrong type (the error is already recorded)."""


_INVALID = _Invalid()


def _coerce(value: Any, tp: Any, key: str, errors: list[str], source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists for tuples.

    Floats must be finite (NaN and +-inf are rejected: a NaN loss weight trains nothing). Returns ``_INVALID``
    after recording ONE error for the key; :func:`_build` then keeps the field's default and marks the key so
    that no follow-on rule error is reported for a value the user never wrote."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            errors.append(f"{source}: {key}: expected a list, got {value!r}")
            return _INVALID
        items = []
        for x in value:
            v = _coerce(x, item_tp, key, errors, source)
            if v is _INVALID:
                return _INVALID
            items.append(v)
        return tuple(items)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, errors, source)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{source}: {key}: expected a number, got {value!r}")
            return _INVALID
        if not math.isfinite(value):
            errors.append(f"{source}: {key}: expected a finite number, got {value!r}")
            return _INVALID
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            errors.append(f"{source}: {key}: expected an integer, got {value!r}")
            return _INVALID
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{source}: {key}: expected true/false, got {value!r}")
            return _INVALID
        return value
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{source}: {key}: expected a string, got {value!r}")
            return _INVALID
        return value
    return value


def _build(cls: type, d: Any, prefix: str, errors: list[str], source: str, bad: set[str] | None = None) -> Any:
    """Dataclass ``cls`` from mapping ``d``; a field of the wrong type keeps its default and its dotted key is
    added to ``bad``."""
    bad = set() if bad is None else bad
    if not isinstance(d, Mapping):
        errors.append(f"{source}: {prefix.rstrip('.') or '<top>'}: expected a mapping, got {d!r}")
        bad.add(prefix.rstrip("."))
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for k in d:
        if k not in known:
            errors.append(f"{source}: unknown key {prefix + str(k)!r} (valid: {', '.join(sorted(known))})")
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, d[f.name], f"{prefix}{f.name}.", errors, source, bad)
        else:
            v = _coerce(d[f.name], tp, prefix + f.name, errors, source)
            if v is _INVALID:
                bad.add(prefix + f.name)
            else:
                kwargs[f.name] = v
    return cls(**kwargs)


def _without_follow_ons(problems: list[str], bad: set[str]) -> list[str]:
    """Drop rule errors that mention a key whose value already had a type error (one message per key)."""
    if not bad:
        return problems
    out = []
    for msg in problems:
        keys = set(re.findall(r"[a-z_]+\.[a-z_]+", msg))
        if keys & bad or any(msg.startswith(b.split(".")[0] + ":") for b in bad if "." not in b):
            continue
        out.append(msg)
    return out
