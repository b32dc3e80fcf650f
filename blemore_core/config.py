"""Run configuration: frozen dataclasses loaded from and saved to YAML, validated declaratively by pydantic.

The dotted names of the fields (``model.fusion``, ``loss.kl``, ``train.lr`` ...) are the vocabulary of the
search spaces in ``spaces/``. Each field's type states its rule: a ``Literal`` for a fixed choice, a range for a
number (:data:`Number`, :data:`Integer`, ``Ge``, ``Interval``), a registry for the model blocks (checked against
:mod:`blemore_core.models.registry`, the only list of names); rules across fields are validators on the class that
holds them. The classes are pydantic dataclasses (``extra="forbid"``: an unknown key is an error), so they stay
plain frozen dataclasses for their users (``dataclasses.fields``, ``asdict``, equality, pickling).

Loading (:meth:`Config.from_dict`, :meth:`Config.from_yaml`, :meth:`Config.override`) gathers every problem into
one :class:`ConfigError` whose lines name the file and the dotted key (docs/ARCHITECTURE.md section 9); pydantic's errors
are rendered as one-line messages by :func:`_explain` (the table :data:`_TYPE_TEXT` and the constraints of the
field), e.g. ``train.lr: expected a number, got 'fast'`` or ``reg.dropout: must be in [0, 1), got 1.5``.

Encoder sets have ONE string form, :func:`encoder_set_name` (``"imagebind,wavlm"``): ``Config.flat()`` (MLflow
params), an encoder-set choice of a search space (an Optuna categorical value) and the report all use it;
:func:`encoder_set` reads it back (and the older ``"imagebind+wavlm"`` spelling of space files).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, Gt, Interval
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BeforeValidator,
    ConfigDict,
    Strict,
    TypeAdapter,
    ValidationError,
    with_config,
)
from pydantic_core import PydanticCustomError

from blemore_core import names as _names
from blemore_core.io import load_yaml, read_capped

ENCODER_KEYS: tuple[str, ...] = ("imagebind", "videomae", "hicmae", "wavlm", "hubert", "openface", "clip", "videoswin")
#: the threshold / epoch protocols of docs/ARCHITECTURE.md section 3, all recorded for every run
PROTOCOLS: tuple[str, ...] = _names.PROTOCOLS
#: the protocols that can be the headline (computed every epoch: the objective of a search)
HEADLINE_PROTOCOLS: tuple[str, ...] = _names.HEADLINE_PROTOCOLS

#: separator of the one string form of an encoder set (``"imagebind,wavlm"``, see :func:`encoder_set_name`)
ENCODER_SET_SEP = ","
#: separators :func:`encoder_set` reads: the canonical one and the ``a+b`` spelling of older space files
_ENCODER_SET_SEPS = (",", "+")


def encoder_set_name(encoders: str | Iterable[str]) -> str:
    """The one string form of an encoder set: ``["imagebind", "wavlm"]`` -> ``"imagebind,wavlm"`` (what
    ``Config.flat()`` records and what a search space offers Optuna as a choice). A string is normalised
    (``"imagebind+wavlm"`` -> ``"imagebind,wavlm"``)."""
    return ENCODER_SET_SEP.join(encoder_set(encoders))


def encoder_set(value: str | Iterable[str]) -> tuple[str, ...]:
    """An encoder set as a tuple of encoder keys: ``"imagebind,wavlm"`` (or ``"imagebind+wavlm"``, or one key)
    -> ``("imagebind", "wavlm")``; a list or tuple is returned as a tuple. Names are not checked here (the Config
    does that)."""
    if isinstance(value, str):
        for sep in _ENCODER_SET_SEPS:
            value = value.replace(sep, ENCODER_SET_SEP)
        return tuple(v.strip() for v in value.split(ENCODER_SET_SEP))
    return tuple(value)


def _registry_names() -> dict[str, tuple[str, ...]]:
    """Valid ``model.pooling`` / ``model.fusion`` / ``model.head`` / ``model.arch`` names: the model registries
    are the only list (docs/ARCHITECTURE.md section 9); imported lazily because the model zoo imports this module."""
    import blemore_core.models  # noqa: F401  (registers the blocks)
    from blemore_core.models.registry import ARCH, FUSION, HEAD, POOLING

    return {"pooling": POOLING.names(), "fusion": FUSION.names(), "head": HEAD.names(),
            "arch": ("fusion", *ARCH.names())}


def _integral(v: Any) -> Any:
    """An integral float (``8.0``, as YAML or a sampler may write it) is the integer it names."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _one_or_many(v: Any) -> Any:
    """A string is one encoder or an encoder set in its string form (:func:`encoder_set`)."""
    return encoder_set(v) if isinstance(v, str) else v


#: a finite number (an int is accepted; bools, strings, NaN and +-inf are not: a NaN loss weight trains nothing)
Number = Annotated[float, Strict(), AllowInfNan(False)]
#: an integer (an integral float such as 8.0 is accepted; bools and strings are not)
Integer = Annotated[int, BeforeValidator(_integral), Strict()]
Flag = Annotated[bool, Strict()]
NonNegative = Annotated[Number, Ge(0)]
Positive = Annotated[Number, Gt(0)]
Rate = Annotated[Number, Interval(ge=0, lt=1)]
Count = Annotated[Integer, Ge(1)]
NonNegativeInt = Annotated[Integer, Ge(0)]
EncoderKey = Literal[ENCODER_KEYS]
HeadlineProtocol = Literal[HEADLINE_PROTOCOLS]

#: every config class: unknown keys are errors; the values are checked as they are (no coercion by pydantic
#: beyond what the field types above allow)
_SECTION = ConfigDict(extra="forbid")


def _registered(kind: str) -> AfterValidator:
    """A validator accepting the names registered in the model registry of ``kind`` (pooling, fusion, head,
    arch): the registries are the only list of valid names (docs/ARCHITECTURE.md section 9)."""

    def check(value: str) -> str:
        valid = _registry_names()[kind]
        if value not in valid:
            raise PydanticCustomError("choice", "{text}", {"text": f"{value!r} is not one of {list(valid)}"})
        return value

    return AfterValidator(check)


def _apply_rules(obj: Any) -> Any:
    """Validator of a config class: its ``_rules()`` (the rules across its fields, checked once every field is
    valid), raised together."""
    _check(obj._rules())
    return obj


#: marks a config class whose ``_rules()`` apply (on the fields of :class:`Config` and on Config itself)
_RULES = AfterValidator(_apply_rules)


def _check(problems: list[tuple[str, str]]) -> None:
    """Raise the broken cross-field rules (``(dotted key, "key: message")`` pairs) as ONE pydantic error, so that
    all of them reach the :class:`ConfigError` (a validator can raise only one error)."""
    if problems:
        raise PydanticCustomError("rules", "{text}", {"text": "; ".join(t for _, t in problems),
                                                      "problems": tuple(problems)})


class ConfigError(ValueError):
    """A configuration is invalid; the message lists every problem found, each naming its key.

    Attributes:
        problems: the problems as ``(dotted key, "key: message")`` pairs, without the file, in the order of the
            message's lines (for callers that re-attribute them, e.g. a search space checking a choice value);
            empty when not known.
        lines: per problem, the line of the YAML file that writes its key (or the key's nearest written section),
            None when the value did not come from the file; :meth:`with_lines` adds them to the message.
    """

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = (),
                 lines: tuple[int | None, ...] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)
        self.lines = tuple(lines)

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.problems, self.lines)

    def with_lines(self) -> str:
        """The message with ``(line N)`` appended to each problem whose key the YAML file writes (README: errors
        name the file, line, field and value); the CLI prints this."""
        return with_lines(str(self), self.lines)


def with_lines(message: str, lines: tuple[int | None, ...]) -> str:
    """``message`` (a header, then one line per problem) with ``(line N)`` appended to problem i when
    ``lines[i]`` is a line number; unchanged when the counts do not match."""
    out = message.split("\n")
    if len(out) != len(lines) + 1:
        return message
    return "\n".join([out[0], *(t if n is None else f"{t} (line {n})" for t, n in zip(out[1:], lines))])


def key_line(lines: Mapping[str, int], key: str | None) -> int | None:
    """The line of dotted ``key`` in a :func:`yaml_key_lines` map, or of its longest written prefix (a rule on a
    section, a default the file did not write); None when no part of it is written."""
    parts = (key or "").split(".")
    return next((lines[k] for k in (".".join(parts[:n]) for n in range(len(parts), 0, -1)) if k in lines), None)


def yaml_key_lines(text: str) -> dict[str, int]:
    """``{dotted key path: 1-based line}`` of every mapping key of a YAML document (``{"train": 3, "train.lr": 4}``;
    a space's ``params: {train.lr: {low: ...}}`` gives ``"params.train.lr.low"``). A compose pass: nodes carry
    their marks and nothing is constructed; a node reached twice through an alias is walked once. Unreadable YAML
    gives ``{}`` (the loader reports it)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, prefix = stack.pop()
        if not isinstance(node, yaml.MappingNode) or id(node) in seen:
            continue
        seen.add(id(node))
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                key = f"{prefix}{k.value}"
                out.setdefault(key, k.start_mark.line + 1)
                stack.append((v, key + "."))
    return out


@with_config(_SECTION)
@dataclass(frozen=True)
class DataConfig:
    """Which inputs a model sees.

    Attributes:
        encoders: encoder keys (see :data:`ENCODER_KEYS`), in model input order; at least one, no repeats. A
            string is read as one encoder or an encoder set's string form (:func:`encoder_set`).
        features: ``"sequence"`` (per-frame features, standardised to ``model.seq_len`` frames) or
            ``"aggregated"`` (the 7 statistics per dimension, (7*D,), the organisers' baseline input).
        standardise: z-score features with statistics fitted on the training folds of each split only.
        domain_target: unlabeled target inputs of the domain term: ``"val"`` (the held-out fold) or
            ``"test"`` (the test split's features). Labels of the target are never read.
    """

    encoders: Annotated[tuple[EncoderKey, ...], BeforeValidator(_one_or_many)] = ("imagebind", "wavlm")
    features: Literal["sequence", "aggregated"] = "sequence"
    standardise: Flag = True
    domain_target: Literal["val", "test"] = "val"

    def _rules(self) -> list[tuple[str, str]]:
        p = []
        if not self.encoders:
            p.append(("data.encoders", "data.encoders: at least one encoder is required"))
        if len(set(self.encoders)) != len(self.encoders):
            p.append(("data.encoders", f"data.encoders: duplicate encoder in {list(self.encoders)}"))
        return p


@with_config(_SECTION)
@dataclass(frozen=True)
class ModelConfig:
    """Model architecture (docs/ARCHITECTURE.md section 4).

    Attributes:
        arch: ``"fusion"`` (pooling + fusion + head built from the registries) or an organisers' baseline
            ``"linear"``, ``"mlp256"``, ``"mlp512"`` (aggregated features only).
        pooling: temporal pooling per encoder: stat | bilstm | cls | attention.
        fusion: concat | attention | mixed | rank_aware.
        head: softmax | presence_salience | structured.
        latent_dim: width of each unimodal branch output (B, latent_dim).
        shared_dim: width of the shared space of attention / rank-aware fusion.
        top_n: encoders kept per sample by rank-aware fusion (1..number of encoders; checked by :class:`Config`,
            which knows the encoders).
        seq_len: L, frames per encoder after temporal standardisation.
        layers: transformer / LSTM layers in pooling and attention fusion.
        heads: attention heads of transformer layers (must divide the model width).
        mixed_pretrain_epochs: epochs the concat and attention branches of ``mixed`` are trained before they
            are frozen and the combining attention is trained (seed 002's staged schedule).

    The names of ``arch``, ``pooling``, ``fusion`` and ``head`` are checked against the model registries.
    """

    arch: Annotated[str, Strict(), _registered("arch")] = "fusion"
    pooling: Annotated[str, Strict(), _registered("pooling")] = "attention"
    fusion: Annotated[str, Strict(), _registered("fusion")] = "concat"
    head: Annotated[str, Strict(), _registered("head")] = "softmax"
    latent_dim: Count = 128
    shared_dim: Count = 128
    top_n: Integer = 2
    seq_len: Count = 16
    layers: Count = 1
    heads: Count = 4
    mixed_pretrain_epochs: NonNegativeInt = 20


@with_config(_SECTION)
@dataclass(frozen=True)
class LossConfig:
    """Loss coefficients (docs/ARCHITECTURE.md section 4, Losses). A coefficient of 0 switches a term off; at least one of
    kl, bce, rank is > 0.

    Attributes:
        kl: weight of KL(soft label || p).
        bce: weight of the binary cross-entropy on emotion presence.
        rank: weight of the margin ranking term on unequal blends (dominant above subdominant).
        margin: margin m of the ranking term, in probability units.
        label_smoothing: epsilon mixed into the soft label (uniform over the 6 emotions).
        domain: weight of the unsupervised feature-level domain term.
        domain_kind: ``"mmd"`` (Gaussian-kernel MMD) or ``"coral"``.
    """

    kl: NonNegative = 1.0
    bce: NonNegative = 0.0
    rank: NonNegative = 0.0
    margin: NonNegative = 0.1
    label_smoothing: Rate = 0.0
    domain: NonNegative = 0.0
    domain_kind: Literal["mmd", "coral"] = "mmd"

    def _rules(self) -> list[tuple[str, str]]:
        if self.kl + self.bce + self.rank == 0:
            return [("loss", "loss: at least one of loss.kl, loss.bce, loss.rank must be > 0")]
        return []


@with_config(_SECTION)
@dataclass(frozen=True)
class RegConfig:
    """Regularisation rates, each a probability in [0, 1).

    Attributes:
        dropout: layer dropout.
        modality_dropout: probability of dropping a whole encoder for one training sample.
        temporal_dropout: probability of masking one real frame in training.
    """

    dropout: Rate = 0.1
    modality_dropout: Rate = 0.0
    temporal_dropout: Rate = 0.0


@with_config(_SECTION)
@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (docs/ARCHITECTURE.md section 5).

    Attributes:
        lr: initial learning rate of AdamW (> 0).
        lr_min: final learning rate of the cosine decay (in [0, lr]).
        weight_decay: AdamW weight decay.
        batch_size: clips per step.
        max_epochs: upper bound on epochs.
        patience: epochs without an improvement of the fold-mean headline Score (the objective, over all folds
            together; for mixed fusion counted in the combine stage only) before the folds stop (0 = never).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"`` (default) or ``"bf16"``: forward passes under ``torch.autocast`` in bfloat16 (weights,
            optimiser state, losses and threshold fits stay float32). 1.3-1.5x faster for the MLP-512 baseline on a
            CPU with AVX512-BF16 (``python -m benchmarks --only trainer``) and standard on recent GPUs; Scores move by a few thousandths (benchmarks/).
    """

    lr: Positive = 1e-3
    lr_min: Number = 1e-5
    weight_decay: NonNegative = 1e-4
    batch_size: Count = 64
    max_epochs: Count = 100
    patience: NonNegativeInt = 20
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"

    def _rules(self) -> list[tuple[str, str]]:
        if not 0 <= self.lr_min <= self.lr:
            return [("train.lr_min", f"train.lr_min: must be in [0, train.lr={self.lr}], got {self.lr_min}")]
        return []


@with_config(_SECTION)
@dataclass(frozen=True)
class ThresholdConfig:
    """Presence threshold alpha / salience threshold beta fitting (docs/ARCHITECTURE.md section 3).

    Attributes:
        protocol: the headline protocol (the objective of a search, the patience stop and the kept fold
            weights): ``"crossfit"`` (default, leak-free) or ``"val"`` (optimistic, the organisers' baseline).
            All three protocols (``val``, ``train``, ``crossfit``) are always recorded
            (:mod:`blemore_core.selection`).
        presence_weight: weight w of ACC_presence in the fitting objective w*ACC_presence + (1-w)*ACC_salience.
    """

    protocol: HeadlineProtocol = "crossfit"
    presence_weight: Annotated[Number, Interval(ge=0, le=1)] = 0.5


@with_config(_SECTION)
@dataclass(frozen=True)
class Config:
    """A complete, resolved run configuration (one trial of a search, or one ``blemore train``).

    Built directly (``Config()``, ``dataclasses.replace``) it is a plain frozen dataclass and is not checked (the
    model builders check what they need); the loaders below validate and raise :class:`ConfigError` with one line
    per problem, and :meth:`problems` checks an instance.
    """

    data: Annotated[DataConfig, _RULES] = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: Annotated[LossConfig, _RULES] = field(default_factory=LossConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    train: Annotated[TrainConfig, _RULES] = field(default_factory=TrainConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    seed: Integer = 0

    def _rules(self) -> list[tuple[str, str]]:
        """The rules across sections (checked once every section is valid)."""
        d, m, t = self.data, self.model, self.train
        p = []
        if m.arch != "fusion" and d.features != "aggregated":
            p.append(("model.arch", f"model.arch: baseline {m.arch!r} needs data.features: aggregated, "
                                    f"got {d.features!r}"))
        if m.arch == "fusion" and m.fusion == "mixed" and m.mixed_pretrain_epochs >= t.max_epochs:
            p.append(("model.mixed_pretrain_epochs",
                      f"model.mixed_pretrain_epochs: mixed fusion must train its combined stage, so it must be < "
                      f"train.max_epochs={t.max_epochs}, got {m.mixed_pretrain_epochs}"))
        if m.fusion == "rank_aware" and not 1 <= m.top_n <= len(d.encoders):
            p.append(("model.top_n", f"model.top_n: must be in 1..{len(d.encoders)} (the number of encoders), "
                                     f"got {m.top_n}"))
        return p

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, source: str = "<config>") -> Config:
        """Build and validate a Config from a nested mapping.

        Raises:
            ConfigError: listing every unknown key, wrong type and broken rule, each with ``source`` and the
                dotted key.
        """
        return _load(d or {}, lambda key: source)

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
            text = read_capped(path, what="YAML config").decode("utf-8")
            d = load_yaml(path, text=text, named=False)  # bounded: size, aliases, depth (blemore_core.io)
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read YAML config: {' '.join(str(e).split())}") from e
        if d is not None and not isinstance(d, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(d).__name__}")
        d = _plain(dict(d or {}))
        overrides = dict(overrides or {})
        lost = [k for k, v in overrides.items() if not _set_dotted(d, k, v)]
        written = yaml_key_lines(text)
        return _load(d, lambda key: overrides_source if key in overrides else str(path),
                     [(k, f"unknown key {k!r}") for k in lost],
                     lambda key: None if key in overrides else key_line(written, key))

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
        """Flattened ``{"model.fusion": "concat", ...}`` view, e.g. for MLflow params; the encoder set in its one
        string form (``"imagebind,wavlm"``, :func:`encoder_set_name`)."""
        out: dict[str, Any] = {}

        def rec(prefix: str, v: Any) -> None:
            if isinstance(v, dict):
                for k, x in v.items():
                    rec(f"{prefix}.{k}" if prefix else k, x)
            elif isinstance(v, list):
                out[prefix] = encoder_set_name(map(str, v))
            else:
                out[prefix] = v

        rec("", self.to_dict())
        return out

    def override(self, updates: Mapping[str, Any], source: str = "<overrides>") -> Config:
        """Return a copy with dotted-key updates applied (``{"model.top_n": 3}``), validated.

        Raises:
            ConfigError: for unknown dotted keys or invalid values, each naming ``source``.
        """
        d = self.to_dict()
        lost = [k for k, v in updates.items() if not _set_dotted(d, k, v)]
        return _load(d, lambda key: source, [(k, f"unknown key {k!r}") for k in lost])

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[str]:
        """Every broken rule of this config, as ``"key: message"`` strings (empty when valid; a config built
        before a registry changed can become invalid)."""
        try:
            _ADAPTER.validate_python(self.to_dict())
        except ValidationError as e:
            return [text for err in e.errors(include_url=False) for _, text in _explain(err)]
        return []


_ADAPTER = TypeAdapter(Annotated[Config, _RULES])


def _load(d: Any, source_of: Callable[[str], str], early: list[tuple[str, str]] = (),
          line_of: Callable[[str], int | None] = lambda key: None) -> Config:
    """Validate the nested mapping ``d``; raise one :class:`ConfigError` whose lines are ``"<source>: <problem>"``
    (``source_of(dotted key)`` names where the key's value came from). ``early``: problems found before
    validation (dotted keys that could not be set), listed first; ``line_of(dotted key)``: its YAML line."""
    problems = list(early)
    cfg = None
    try:
        cfg = _ADAPTER.validate_python(d)
    except ValidationError as e:
        problems += [p for err in e.errors(include_url=False) for p in _explain(err)]
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(f"{source_of(k)}: {t}" for k, t in problems),
                          tuple(problems), tuple(line_of(k) for k, _ in problems))
    return cfg


def _set_dotted(d: dict, key: str, value: Any) -> bool:
    """Set ``d[a][b] = value`` for ``key = "a.b"`` (creating missing sections); False when a part of the path
    is a value, not a section."""
    node, parts = d, key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return False
    node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    return True


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


#: pydantic's error type -> the one-line message of a wrong type (followed by ", got <value>")
_TYPE_TEXT = {
    "float_type": "expected a number", "finite_number": "expected a finite number",
    "int_type": "expected an integer", "bool_type": "expected true/false", "string_type": "expected a string",
    "tuple_type": "expected a list", "list_type": "expected a list", "dataclass_type": "expected a mapping",
}
_BOUND_TYPES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _explain(err: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One pydantic error -> ``[(dotted key, "key: message")]`` in the config's one-line wording."""
    kind, value = err["type"], err.get("input")
    names = [x for x in err["loc"] if isinstance(x, str)]
    key = ".".join(names)
    if kind == "rules":
        return list(err["ctx"]["problems"])
    if kind == "unexpected_keyword_argument":
        section = _field_types(names[:-1])
        valid = sorted(f.name for f in dataclasses.fields(section))
        return [(key, f"unknown key {key!r} (valid: {', '.join(valid)})")]
    if kind in _TYPE_TEXT:
        return [(key, f"{key or '<top>'}: {_TYPE_TEXT[kind]}, got {value!r}")]
    if kind == "literal_error":
        return [(key, f"{key}: {value!r} is not one of {list(_literal_args(_field_types(names)))}")]
    if kind in _BOUND_TYPES:
        return [(key, f"{key}: must be {_bounds(names)}, got {value}")]
    return [(key, f"{key}: {err['msg']}")]


def _field_types(names: list[str]) -> Any:
    """The annotated type at a dotted path of :class:`Config` (``[]`` -> Config itself)."""
    tp: Any = Config
    for name in names:
        tp = typing.get_type_hints(tp, include_extras=True)[name]
        while typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
    return tp


def _literal_args(tp: Any) -> tuple:
    """The choices of the first ``Literal`` inside ``tp`` (``tuple[Literal[...], ...]`` included)."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    for arg in typing.get_args(tp):
        found = _literal_args(arg)
        if found:
            return found
    return ()


def _bounds(names: list[str]) -> str:
    """The range of a numeric field as the messages state it: ``>= 1``, ``> 0``, ``in [0, 1)``, ``in [0, 1]``."""
    meta = typing.get_args(typing.get_type_hints(_field_types(names[:-1]), include_extras=True)[names[-1]])[1:]
    b = {k: getattr(m, k) for m in meta for k in ("ge", "gt", "lt", "le") if getattr(m, k, None) is not None}
    if "ge" in b and ("lt" in b or "le" in b):
        return f"in [{b['ge']}, {b['lt']})" if "lt" in b else f"in [{b['ge']}, {b['le']}]"
    return f">= {b['ge']}" if "ge" in b else f"> {b['gt']}"
