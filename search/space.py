"""Search-space files (``spaces/*.yaml``): loading, validation and the Optuna define-by-run space.

docs/ARCHITECTURE.md section 6. A space file starts from a preset (``spaces/presets/<name>.yaml``, a complete
:class:`~blemore_core.config.Config`) and says what to search::

    name: rank_aware                      # optional; the default search name (else the file stem)
    preset: rank_aware                    # spaces/presets/rank_aware.yaml (or a path to a YAML config)
    data:
      dir: null                           # a BlEmoRe release directory; null = the embedded demo release
      encoders: [imagebind, wavlm, hubert]   # optional: overrides data.encoders of the preset
    fixed:                                # dotted-key overrides applied to the preset
      train.max_epochs: 8
      debug.fail_trial: 1                 # debugging knob (not a Config key, see DEBUG_KEYS)
    params:                               # searched parameters
      train.lr: {type: loguniform, low: 3.0e-4, high: 3.0e-3}
      model.fusion: {type: choice, values: [concat, attention, rank_aware]}
      model.top_n: {type: int, low: 1, high: 3, when: {model.fusion: rank_aware}}
      data.encoders: {type: choice, values: [[imagebind, wavlm], [imagebind, wavlm, hubert]]}
    metric: score                         # or [acc_presence, acc_salience] for a Pareto search
    scheduler: {type: asha, grace_period: 2, reduction_factor: 2}   # or {type: none}
    budget: {num_samples: 6, max_concurrent: 1, max_epochs: 8, time_budget_s: 840}
    fold_layout: packed                   # optional: packed (default) | workers, see search.trainable
    warm_start: [rank_aware]              # optional: earlier searches seeding the sampler (search.warmstart)

Parameter types: ``choice`` (``values``), ``uniform`` / ``loguniform`` (``low`` < ``high``, loguniform needs
``low`` > 0) and ``int`` (``low`` < ``high``, optional ``step``). ``when`` makes a parameter conditional: it is
only sampled when every named key (a searched or fixed key, or a preset value) has one of the given values
(a value or a list of values); otherwise the preset's value stands. Optuna's define-by-run API samples
conditionals natively (:meth:`SearchSpace.suggest`). An encoder set is a list of encoder keys (the older
``imagebind+wavlm`` string is read too); Optuna sees its one string form ``"imagebind,wavlm"``
(:func:`~blemore_core.config.encoder_set_name`, the form ``Config.flat()`` records).

One parameter has a bound that depends on another value: ``model.top_n`` is at most the number of encoders
(:func:`_bounded`, the only place that knows it); when ``data.encoders`` is searched, its range is clipped per
trial to the sampled encoder set.

Validation happens before anything starts (no Ray, no data loading except a directory check) and gathers
every error into one :class:`SpaceError`, each naming the file, the key and the value. The shape of each
section (keys, types, ranges, choices) is declared by the pydantic models ``_Top``, ``_Data``, ``_Debug``,
``_Budget``, ``_Scheduler`` and the parameter specs (``extra="forbid"``; each field's rule in words is its
``_Says`` annotation); what needs the preset or the disk is checked by the loaders below: unknown Config keys,
``model.top_n`` beyond the number of encoders, choice values the Config rejects (each is applied to the
preset and validated by :class:`~blemore_core.config.Config`), a missing data directory.

Built-in spaces: a bare name (``blemore search rank_aware``) is one of the spaces shipped with the package
(:func:`builtin_spaces`; in a checkout the repository's ``spaces/``, in an installed wheel the ``blemore_spaces``
package that holds the same files), and ``preset: NAME`` resolves next to the space file, then among the built-in
presets.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import optuna.distributions as od
import yaml
from annotated_types import Ge, Gt, MinLen
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from blemore_core.config import (
    Config,
    ConfigError,
    encoder_set,
    encoder_set_name,
    key_line,
    with_lines,
    yaml_key_lines,
)
from blemore_core.io import load_yaml, read_capped
from blemore_core.names import OBJECTIVES

__all__ = ["SearchSpace", "Param", "SpaceError", "load_space", "trial_config", "encoder_set", "encoder_set_name",
           "builtin_spaces", "space_summary", "SPACES_DIR", "PRESET_DIR", "DEBUG_KEYS"]


def _spaces_dir() -> Path:
    """The built-in spaces: the checkout's ``spaces/`` next to the ``search`` package (a clone or an editable
    install), else the installed ``blemore_spaces`` package (a wheel maps ``spaces/`` to it, see pyproject.toml)."""
    checkout = Path(__file__).resolve().parent.parent / "spaces"
    if (checkout / "presets").is_dir():
        return checkout
    spec = importlib.util.find_spec("blemore_spaces")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return checkout


#: the built-in spaces (``*.yaml``) and, under ``presets/``, where ``preset: NAME`` is looked up last
SPACES_DIR = _spaces_dir()
PRESET_DIR = SPACES_DIR / "presets"
TOP_KEYS = ("name", "preset", "data", "fixed", "params", "metric", "scheduler", "budget", "fold_layout",
            "warm_start")
#: ``fold_layout:`` values (``search --fold-layout``): all folds of a trial in one worker, or one worker per fold
FOLD_LAYOUTS = ("packed", "workers")
METRICS = OBJECTIVES
SCHEDULERS = ("asha", "none")
#: ``fixed:`` keys that are interpreted by the trainable, not by Config (debugging knobs, documented in README):
#: ``debug.fail_trial``: index (0-based Optuna trial number, i.e. the order in which trials are proposed) of a trial whose fold-0 worker raises
#: ``FloatingPointError`` (a forced non-finite loss) after its first epoch, on every attempt.
DEBUG_KEYS = ("debug.fail_trial",)
#: the one key whose range depends on another value (:func:`_bounded`)
_TOP_N = "model.top_n"


class SpaceError(ValueError):
    """A search-space file is invalid; the message lists every problem, each with file, key and value.

    Attributes:
        lines: per problem, the line of the space file that writes its key (or its nearest written section), or
            None; :meth:`with_lines` adds them to the message (what the CLI prints).
    """

    def __init__(self, message: str, lines: tuple[int | None, ...] = ()) -> None:
        super().__init__(message)
        self.lines = tuple(lines)

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.lines)

    def with_lines(self) -> str:
        """The message with ``(line N)`` appended to each problem whose key the file writes."""
        return with_lines(str(self), self.lines)


def builtin_spaces() -> dict[str, Path]:
    """The built-in spaces by name (file stem), sorted: what ``blemore search NAME`` and ``blemore spaces`` know."""
    return {p.stem: p for p in sorted(SPACES_DIR.glob("*.yaml"))}


def space_summary(path: Path) -> str:
    """One line about a space file: its leading comment's first sentence (else its preset and metric)."""
    text = path.read_text()
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("# ").split()
    summary = " ".join(words)
    if ". " in summary:
        summary = summary[: summary.index(". ") + 1]
    if summary:
        return summary
    doc = yaml.safe_load(text) or {}
    return f"preset {doc.get('preset')}, metric {doc.get('metric', 'score')}"


def _locate(path: str | Path) -> Path:
    """``path`` itself, or the built-in space of that name when ``path`` is a bare name that is not a file."""
    p = Path(path)
    if not p.exists() and p.name == str(path) and p.suffix == "" and p.name in builtin_spaces():
        return builtin_spaces()[p.name]
    return p


def trial_config(base: Config | Mapping[str, Any], params: Mapping[str, Any], source: str = "<trial>") -> Config:
    """A trial's Config: ``base`` (a Config or its dict) with the sampled ``params`` applied, the one conversion
    every consumer of Tune's trial config shares (the trial itself, the MLflow record, :meth:`SearchSpace.resolve`):
    an encoder-set choice (``"imagebind,wavlm"``) becomes the list, ``debug.*`` knobs are dropped.

    Raises:
        ConfigError: the combination is invalid, naming ``source`` and the key.
    """
    cfg = base if isinstance(base, Config) else Config.from_dict(dict(base), source=source)
    updates = {k: list(encoder_set(v)) if k == "data.encoders" else v for k, v in params.items()
               if not k.startswith("debug.")}
    return cfg.override(updates, source=source)


def _bounded(key: str, value: Any, encoders: Iterable[str]) -> Any:
    """The one dependent bound of a space: rank-aware fusion keeps ``model.top_n`` of the encoders, so its value
    (or range end) is at most their number; any other key's ``value`` is returned unchanged."""
    return min(value, len(tuple(encoders))) if key == _TOP_N else value


def _fit(base: Config, updates: Mapping[str, Any], searched: Iterable[str]) -> dict[str, Any]:
    """``updates`` plus each searched key with a dependent bound lowered to what the encoders of ``updates`` allow
    (a trial samples it within that bound, :meth:`SearchSpace.suggest`), so that the base stays valid."""
    out = dict(updates)
    if "data.encoders" in updates:
        flat, encoders = base.flat(), encoder_set(updates["data.encoders"])
        for key in searched:
            if key not in updates and key in flat and _bounded(key, flat[key], encoders) != flat[key]:
                out[key] = _bounded(key, flat[key], encoders)
    return out


# ---------------------------------------------------------------------------------------------- section specs
class _Says:
    """Annotation of a spec field: its rule in words, the message of any error of that field."""

    def __init__(self, text: str) -> None:
        self.text = text


def _fail(message: str, value: Any = None) -> None:
    """Raise a rule of a spec (a cross-field validator) with the value to show (None: none)."""
    raise PydanticCustomError("space", "{message}", {"message": message, "value": value})


def _yaml_number(v: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: such a string is the number it spells."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Spec(BaseModel):
    """A section of a space file: unknown keys are errors (``_unknown`` words them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _unknown: ClassVar[str] = "unknown key (valid: {valid})"
    _shape: ClassVar[str] = "must be a mapping"

    @classmethod
    def keys(cls) -> list[str]:
        """The keys of the section as the file writes them, in declaration order."""
        return [f.alias or name for name, f in cls.model_fields.items()]

    @classmethod
    def unknown(cls, spec: Mapping) -> str:
        """The message for an unknown key of this section."""
        return cls._unknown.format(valid=", ".join(cls.keys()), **{k: spec.get(k) for k in ("type",)})

    @classmethod
    def says(cls, key: str) -> str | None:
        """The rule in words of the field written ``key``."""
        for name, f in cls.model_fields.items():
            if key in (name, f.alias):
                return next((m.text for m in f.metadata if isinstance(m, _Says)), None)
        return None


class _Top(_Spec):
    """The top level of a space file (its sections are checked by their own specs, in this order)."""

    name: Any = None
    preset: Any = None
    data: Any = None
    fixed: Any = None
    params: Any = None
    metric: Any = "score"
    scheduler: Any = None
    budget: Any = None
    fold_layout: Annotated[Literal[FOLD_LAYOUTS] | None, _Says(f"must be one of {list(FOLD_LAYOUTS)}")] = None
    #: issue 20 (i20): earlier searches whose finished trials seed the sampler (search.warmstart)
    warm_start: Annotated[Annotated[str, MinLen(1)] | list[Annotated[str, MinLen(1)]] | None,
                          _Says("must be a search name or a list of search names")] = None


Count = Annotated[int, Strict(), Ge(1), _Says("must be an integer >= 1")]


class _Data(_Spec):
    """``data:`` (``dir`` is checked on disk by :func:`_load_data`)."""

    _shape: ClassVar[str] = "must be a mapping with dir / encoders"

    dir: Annotated[str | None, Strict(), _Says("must be a directory path or null")] = None
    encoders: Annotated[list[Annotated[str, Strict()]] | None, Strict(), MinLen(1),
                        _Says("must be a non-empty list of encoder names")] = None


class _Debug(_Spec):
    """The debugging knobs of ``fixed:`` (:data:`DEBUG_KEYS`)."""

    _unknown: ClassVar[str] = "unknown debug key (valid: {valid})"
    fail_trial: Annotated[int | None, Strict(), Ge(0), _Says("must be a trial index >= 0")] = \
        Field(None, alias="debug.fail_trial")


class _Budget(_Spec):
    """``budget:`` (``max_epochs`` None = the base config's ``train.max_epochs``; time in seconds, None =
    unlimited)."""

    num_samples: Count = 6
    max_concurrent: Count = 1
    max_epochs: Annotated[int | None, Strict(), Ge(1), _Says("must be an integer >= 1")] = None
    time_budget_s: Annotated[float | None, Strict(), AllowInfNan(False), Gt(0),
                             _Says("must be a positive number of seconds or null")] = None


class _Scheduler(_Spec):
    """``scheduler:`` (``asha`` or ``none``; ASHA's grace period and reduction factor in epochs)."""

    _shape: ClassVar[str] = "must be asha|none or a mapping with type"

    type: Annotated[Literal[SCHEDULERS], _Says(f"must be one of {list(SCHEDULERS)}")] = "asha"
    grace_period: Count = 2
    reduction_factor: Annotated[int, Strict(), Ge(2), _Says("must be an integer >= 2")] = 2


class _ParamSpec(_Spec):
    """One ``params.<key>`` entry; ``when`` is checked against the Config keys by :func:`_param_when`."""

    _unknown: ClassVar[str] = "unknown key for type {type} (valid: {valid})"
    type: str
    when: Annotated[dict | None, Strict(), _Says("must be a mapping {dotted key: value or [values]}")] = None


class _ChoiceSpec(_ParamSpec):
    values: Annotated[list, Strict(), MinLen(1), _Says("must be a non-empty list")]


class _RangeSpec(_ParamSpec):
    low: Annotated[Any, BeforeValidator(_yaml_number)] = None
    high: Annotated[Any, BeforeValidator(_yaml_number)] = None

    @model_validator(mode="after")
    def _range(self) -> _RangeSpec:
        bounds = {"low": self.low, "high": self.high}
        if not _num(self.low) or not _num(self.high):
            _fail("low and high must be numbers", bounds)
        if self.low >= self.high:
            _fail("empty range: low must be < high", bounds)
        if self.type == "int" and not all(isinstance(x, int) and not isinstance(x, bool) for x in bounds.values()):
            _fail("int needs integer low and high", bounds)
        return self


class _IntSpec(_RangeSpec):
    step: Any = None


#: parameter type -> its spec (Optuna validates the rest of a range: log scale needs low > 0, step >= 1 ...)
PARAM_TYPES: dict[str, type[_ParamSpec]] = {
    "choice": _ChoiceSpec, "uniform": _RangeSpec, "loguniform": _RangeSpec, "int": _IntSpec}


def _spec(spec_cls: type[_Spec], value: Any, prefix: str, errs: _Errors) -> Any:
    """``value`` validated by ``spec_cls``; each problem recorded as ``<prefix><key>`` (unknown keys first).
    Returns the spec, or None when it is invalid."""
    if not isinstance(value, Mapping):
        errs.err(prefix.rstrip("."), spec_cls._shape, value)
        return None
    try:
        return spec_cls.model_validate(value)
    except ValidationError as e:
        problems = sorted(e.errors(include_url=False), key=lambda x: x["type"] != "extra_forbidden")
    for x in problems:
        key = str(x["loc"][0]) if x["loc"] else ""
        if x["type"] == "extra_forbidden":
            errs.err(prefix + key, spec_cls.unknown(value), x["input"])
        elif x["type"] == "space":
            errs.err(prefix.rstrip(".") + (f".{key}" if key else ""), x["ctx"]["message"], x["ctx"]["value"])
        else:
            errs.err(prefix + key, spec_cls.says(key) or x["msg"],  # the key's whole value (a list, not its item)
                     None if x["type"] == "missing" else value.get(key, x["input"]))
    return None


@dataclass(frozen=True)
class Param:
    """One searched parameter.

    Attributes:
        key: dotted Config key (``train.lr``).
        dist: its Optuna distribution, built (and so validated by Optuna) when the space is loaded:
            ``CategoricalDistribution`` (choice; an encoder set as its string form ``"a,b"``), ``FloatDistribution``
            (uniform, loguniform with ``log=True``) or ``IntDistribution`` (int, bounds inclusive).
        when: conditions ``{dotted key: tuple of accepted values}``; empty = always sampled.
    """

    key: str
    dist: Any
    when: dict[str, tuple] = field(default_factory=dict)

    @property
    def values(self) -> tuple:
        """The choices of a categorical parameter (empty otherwise)."""
        return tuple(getattr(self.dist, "choices", ()))


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see the module docstring for the file format).

    Attributes:
        path: the source file.
        name: default search name.
        base: the preset with ``data.encoders`` and ``fixed`` applied (a valid Config).
        data_dir: release directory, or None for the embedded demo release.
        fixed: Config overrides (dotted keys), already applied to ``base``.
        debug: debugging knobs (``DEBUG_KEYS``) for the trainable.
        params: searched parameters in file order.
        metrics: ``("score",)`` or ``("acc_presence", "acc_salience")`` (maximised).
        scheduler: ``"asha"`` or ``"none"``; grace_period / reduction_factor for ASHA (epochs).
        num_samples, max_concurrent, max_epochs, time_budget_s: budgets (time in seconds; None = unlimited).
        fold_layout: ``"packed"`` or ``"workers"``, or None (the search's default, ``--fold-layout``).
        warm_start: names of earlier searches whose finished trials seed the sampler (:mod:`search.warmstart`).

    The defaults of the scheduler and the budgets are stated once, in the specs ``_Scheduler`` and ``_Budget``.
    """

    path: Path
    name: str
    base: Config
    data_dir: Path | None
    fixed: dict[str, Any]
    debug: dict[str, Any]
    params: tuple[Param, ...]
    metrics: tuple[str, ...]
    scheduler: str
    grace_period: int
    reduction_factor: int
    num_samples: int
    max_concurrent: int
    max_epochs: int
    time_budget_s: float | None
    fold_layout: str | None = None
    warm_start: tuple[str, ...] = ()

    @property
    def pareto(self) -> bool:
        """True for a multi-objective (Pareto) search."""
        return len(self.metrics) > 1

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Define-by-run space for ``OptunaSearch(space=...)``: sample this trial's parameters.

        Args:
            trial: an ``optuna.Trial``.

        Returns:
            ``{dotted key: value}`` of the parameters whose conditions hold (conditional ones may be absent).
        """
        chosen: dict[str, Any] = {}
        for p in self.params:
            if not self._active(p, chosen):
                continue
            d = p.dist
            if isinstance(d, od.CategoricalDistribution):
                chosen[p.key] = trial.suggest_categorical(p.key, d.choices)
            elif isinstance(d, od.IntDistribution):  # a dependent bound: under the (sampled) encoder set
                encoders = encoder_set(chosen.get("data.encoders", self.base.data.encoders))
                high = max(d.low, _bounded(p.key, d.high, encoders))
                chosen[p.key] = trial.suggest_int(p.key, d.low, high, step=d.step, log=d.log)
            else:
                chosen[p.key] = trial.suggest_float(p.key, d.low, d.high, step=d.step, log=d.log)
        return chosen

    def _active(self, p: Param, chosen: Mapping[str, Any]) -> bool:
        flat = self.base.flat()
        for key, accepted in p.when.items():
            value = chosen.get(key, flat.get(key))
            if value not in accepted:
                return False
        return True

    def resolve(self, params: Mapping[str, Any]) -> Config:
        """The trial's Config: ``base`` with the sampled ``params`` applied (validated).

        Raises:
            ConfigError: when the combination is invalid (e.g. a Config rule across two params).
        """
        return trial_config(self.base, params, source=f"{self.path} (trial params {dict(params)})")


def _as_tuple(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def _preset_path(preset: Any, space_path: Path) -> Path | None:
    if not isinstance(preset, str) or not preset:
        return None
    cands = [Path(preset)] if preset.endswith((".yaml", ".yml")) else []
    cands += [space_path.parent / "presets" / f"{preset}.yaml", PRESET_DIR / f"{preset}.yaml"]
    if preset.endswith((".yaml", ".yml")):
        cands += [space_path.parent / preset, SPACES_DIR / preset]
    for c in cands:
        if c.is_file():
            return c
    return None


class _Errors:
    """Collects the problems of one space file, each as ``"<file>: <key>: <message> (got <value>)"``."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.messages: list[str] = []
        self.keys: list[str] = []  # the dotted key of each message, for its line in the file
        self.written: dict[str, int] = {}  # yaml_key_lines of the file, once read

    def err(self, key: str, msg: str, value: Any = None) -> None:
        """Record a problem with ``key`` (the value is shown unless None)."""
        self.messages.append(f"{self.src}: {key}: {msg}" + ("" if value is None else f" (got {value!r})"))
        self.keys.append(key)

    def extend(self, key: str, messages: Iterable[str]) -> None:
        """Record finished message lines (a Config's, for the section ``key`` of the file)."""
        for m in messages:
            self.messages.append(m)
            self.keys.append(key)

    def raise_if_any(self) -> None:
        """Raise one :class:`SpaceError` listing every recorded problem, if there is any."""
        if self.messages:
            raise SpaceError(f"invalid search space {self.src}:\n  " + "\n  ".join(self.messages),
                             tuple(key_line(self.written, k) for k in self.keys))


def load_space(path: str | Path, data_dir: str | Path | None = None, text: str | None = None) -> SearchSpace:
    """Read and validate a search-space file.

    Args:
        path: the ``spaces/*.yaml`` file (relative presets and data directories are resolved against it), or the
            name of a built-in space (``rank_aware``, see :func:`builtin_spaces`) when no such file exists.
        data_dir: overrides ``data.dir`` of the file (the ``--data`` option); checked to exist.
        text: the file's content to use instead of reading ``path`` (``blemore resume``: the stored space).

    Returns:
        A :class:`SearchSpace` whose every choice value gives a valid Config.

    Raises:
        SpaceError: listing every problem, each as ``"<file>: <key>: <message> (got <value>)"``.
    """
    path = _locate(path) if text is None else Path(path)
    errs = _Errors(str(path))
    doc, errs.written = _read_doc(path, text, errs.src)
    top = _spec(_Top, doc, "", errs) or _Top.model_construct(**{k: v for k, v in doc.items() if k in TOP_KEYS})
    preset = _load_preset(doc, path, errs)
    resolved_dir, encoders = _load_data(top.data, path, data_dir, errs)
    fixed, debug = _load_fixed(top.fixed, errs)
    budget = _spec(_Budget, {} if top.budget is None else top.budget, "budget.", errs) or _Budget()
    sched = _load_scheduler(top.scheduler, errs)
    metrics = _load_metric(top.metric, errs)
    params_doc = top.params or {}
    base = _build_base(preset, encoders, fixed, params_doc, budget.max_epochs, errs)
    params = _load_params(params_doc, preset, base, encoders, fixed, errs)
    errs.raise_if_any()
    assert base is not None
    return SearchSpace(
        path=path, name=str(top.name or path.stem), base=base, data_dir=resolved_dir, fixed=fixed, debug=debug,
        params=params, metrics=metrics, scheduler=sched.type, grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor, num_samples=budget.num_samples,
        max_concurrent=budget.max_concurrent, max_epochs=budget.max_epochs or base.train.max_epochs,
        time_budget_s=budget.time_budget_s, fold_layout=top.fold_layout,
        warm_start=tuple(dict.fromkeys([top.warm_start] if isinstance(top.warm_start, str) else
                                       top.warm_start or [])),
    )


def _read_doc(path: Path, text: str | None, src: str) -> tuple[Mapping, dict[str, int]]:
    """Parse the file (or ``text``): the document and the line of each key (:func:`yaml_key_lines`); raise
    :class:`SpaceError` at once if it is unreadable or not a mapping."""
    try:
        text = read_capped(path, what="search space").decode("utf-8") if text is None else text
        doc = load_yaml(path, text=text, named=False)  # bounded: size, aliases, depth (blemore_core.io)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise SpaceError(f"{src}: cannot read search space: {e}") from e
    if not isinstance(doc, Mapping):
        raise SpaceError(f"{src}: <top>: a search space must be a mapping (got {type(doc).__name__})")
    return doc, yaml_key_lines(text)


def _load_preset(doc: Mapping, path: Path, errs: _Errors) -> Config | None:
    """``preset:``: the preset Config (None when it is missing, unknown or invalid)."""
    preset_path = _preset_path(doc.get("preset"), path)
    if "preset" not in doc:
        errs.err("preset", "required: a file in spaces/presets/ (e.g. preset: baseline)")
    elif preset_path is None:
        names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        errs.err("preset", f"no such preset (known: {', '.join(names) or 'none'})", doc.get("preset"))
    else:
        try:
            return Config.from_yaml(preset_path)
        except ConfigError as e:
            errs.err("preset", f"invalid preset config {preset_path}: {e}", doc.get("preset"))
    return None


def _load_data(data: Any, path: Path, data_dir: str | Path | None,
               errs: _Errors) -> tuple[Path | None, list | None]:
    """``data:`` (and the ``--data`` override): the release directory (absolute; ``data.dir`` relative to the space
    file when it exists there, ``--data`` relative to the working directory) and the encoder list (or None)."""
    spec = _spec(_Data, {} if data is None else data, "data.", errs) or _Data()
    ddir = data_dir if data_dir is not None else spec.dir
    resolved_dir: Path | None = None
    if ddir is not None:
        resolved_dir = Path(ddir).expanduser()
        if not resolved_dir.is_absolute() and data_dir is None:
            resolved_dir = (path.parent / resolved_dir) if (path.parent / resolved_dir).exists() else resolved_dir
        if not resolved_dir.is_dir():
            errs.err("data.dir" if data_dir is None else "--data", "data directory does not exist", str(ddir))
        else:  # absolute: Ray's trial and fold-worker processes do not run in the user's working directory
            resolved_dir = resolved_dir.resolve()
    return resolved_dir, spec.encoders


def _load_fixed(fixed: Any, errs: _Errors) -> tuple[dict[str, Any], dict[str, Any]]:
    """``fixed:``: the Config overrides and, split off, the debugging knobs (:data:`DEBUG_KEYS`, spec ``_Debug``)."""
    if fixed is not None and not isinstance(fixed, Mapping):
        errs.err("fixed", "must be a mapping of dotted keys to values", fixed)
        fixed = {}
    fixed = dict(fixed or {})
    for k in [k for k in fixed if not isinstance(k, str)]:
        errs.err(f"fixed.{k}", "keys must be dotted Config keys (strings)", k)
        del fixed[k]
    knobs = {k: fixed.pop(k) for k in list(fixed) if k.startswith("debug.")}
    debug = _spec(_Debug, knobs, "fixed.", errs)
    return fixed, {} if debug is None else debug.model_dump(by_alias=True, exclude_none=True)


def _load_scheduler(sched: Any, errs: _Errors) -> _Scheduler:
    """``scheduler:`` (a type name or a mapping)."""
    if isinstance(sched, str):
        sched = {"type": sched}
    return _spec(_Scheduler, {} if sched is None else sched, "scheduler.", errs) or _Scheduler()


def _load_metric(metric: Any, errs: _Errors) -> tuple[str, ...]:
    """``metric:``: ``("score",)`` or ``("acc_presence", "acc_salience")`` (either order in the file)."""
    metrics = _as_tuple(metric)
    if metrics not in (("score",), ("acc_presence", "acc_salience"), ("acc_salience", "acc_presence")):
        errs.err("metric", "must be 'score' or [acc_presence, acc_salience]", metric)
        metrics = ("score",)
    return metrics if metrics[0] == "score" else ("acc_presence", "acc_salience")


def _build_base(preset: Config | None, encoders: list | None, fixed: Mapping[str, Any], params_doc: Any,
                max_epochs: int | None, errs: _Errors) -> Config | None:
    """The base config: preset + encoders + fixed + max_epochs (None when the preset or the result is invalid)."""
    if preset is None:
        return None
    updates: dict[str, Any] = {} if encoders is None else {"data.encoders": encoders}
    searched = [k for k in params_doc if k not in fixed] if isinstance(params_doc, Mapping) else []
    updates = _fit(preset, updates, searched)
    updates.update(fixed)
    if max_epochs is not None:
        updates["train.max_epochs"] = max_epochs
    try:
        return preset.override(updates, source=f"{errs.src}: fixed")
    except ConfigError as e:
        errs.extend("fixed", str(e).split("\n  ")[1:])
        return None


@dataclass(frozen=True)
class _ParamContext:
    """What checking one ``params.<key>`` spec needs besides the spec itself.

    Attributes:
        flat: the Config keys a parameter or a condition may name.
        fixed: the ``fixed:`` overrides (a key may not be both fixed and searched).
        base: the built base config, or None when it is invalid (values are then not checked).
        encoders: the encoders of the file (or of the preset), None when unknown, for the dependent bounds.
        searched: the keys of ``params:``.
    """

    flat: Mapping[str, Any]
    fixed: Mapping[str, Any]
    base: Config | None
    encoders: list[str] | None
    searched: tuple[str, ...] = field(default_factory=tuple)


def _load_params(params_doc: Any, preset: Config | None, base: Config | None, encoders: list | None,
                 fixed: Mapping[str, Any], errs: _Errors) -> tuple[Param, ...]:
    """``params:``: the searched parameters in file order (invalid ones are reported and left out)."""
    if not isinstance(params_doc, Mapping):
        errs.err("params", "must be a mapping of dotted keys to {type: ...}", params_doc)
        params_doc = {}
    ctx = _ParamContext(
        flat=base.flat() if base is not None else Config().flat(), fixed=fixed, base=base,
        encoders=list(encoders) if encoders is not None else (list(preset.data.encoders) if preset else None),
        searched=tuple(params_doc),
    )
    params: list[Param] = []
    for key, spec in params_doc.items():
        p = _load_param(key, spec, ctx, errs)
        if p is not None:
            params.append(p)
    _check_when_order(params, list(params_doc), errs)
    return tuple(params)


def _load_param(key: Any, spec: Any, ctx: _ParamContext, errs: _Errors) -> Param | None:
    """One ``params.<key>`` spec -> :class:`Param` (None when it cannot be built)."""
    pk = f"params.{key}"
    if key not in ctx.flat:
        errs.err(pk, "unknown Config key", key)
        return None
    if key in ctx.fixed:
        errs.err(pk, "is both fixed and searched", key)
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str) or spec["type"] not in PARAM_TYPES:
        errs.err(f"{pk}.type", f"must be one of {list(PARAM_TYPES)}",
                 spec.get("type") if isinstance(spec, Mapping) else spec)
        return None
    checked = _spec(PARAM_TYPES[spec["type"]], spec, f"{pk}.", errs)
    if checked is None:
        return None
    when = _param_when(key, pk, checked.when or {}, ctx.flat, errs)
    if isinstance(checked, _ChoiceSpec):
        dist = _choice_dist(key, pk, checked.values, when, ctx, errs)
    else:
        dist = _range_dist(key, pk, checked, when, ctx, errs)
    return None if dist is None else Param(key=key, dist=dist, when=when)


def _param_when(key: Any, pk: str, w: Mapping, flat: Mapping[str, Any], errs: _Errors) -> dict[str, tuple]:
    """The ``when:`` conditions of one parameter as ``{dotted key: accepted values}`` (invalid ones dropped)."""
    when: dict[str, tuple] = {}
    for ck, cv in w.items():
        if ck not in flat:
            errs.err(f"{pk}.when.{ck}", "unknown Config key", ck)
        elif ck == key:
            errs.err(f"{pk}.when.{ck}", "a parameter cannot depend on itself", ck)
        else:
            when[ck] = _as_tuple(cv)
    return when


def _choice_dist(key: Any, pk: str, values: list, when: Mapping[str, tuple], ctx: _ParamContext,
                 errs: _Errors) -> od.CategoricalDistribution | None:
    """``type: choice``: the categorical distribution, each value checked against the base config."""
    if key == "data.encoders":  # Optuna choices are plain values: an encoder set is its one string form
        bad = [v for v in values if not isinstance(v, str)
               and not (isinstance(v, list) and v and all(isinstance(e, str) for e in v))]
        if bad:
            errs.err(f"{pk}.values", "each encoder set must be a list of encoder names or an 'a+b' string", bad[0])
            return None
        values = [encoder_set_name(v) for v in values]
    bad = [v for v in values if v is not None and not isinstance(v, (str, int, float, bool))]
    if bad:
        errs.err(f"{pk}.values", "choices must be plain strings, numbers or bools", bad[0])
        return None
    dist = od.CategoricalDistribution(values)
    if ctx.base is not None:
        for v in values:
            _check_value(ctx, key, list(encoder_set(v)) if key == "data.encoders" else v, when, pk, errs)
    return dist


def _range_dist(key: Any, pk: str, spec: _RangeSpec, when: Mapping[str, tuple], ctx: _ParamContext,
                errs: _Errors) -> od.IntDistribution | od.FloatDistribution | None:
    """``type: uniform / loguniform / int``: the range distribution, its bounds checked against the base config."""
    low, high = spec.low, spec.high
    try:  # Optuna validates the rest (log scale needs low > 0, step >= 1 ...)
        dist = (od.IntDistribution(low, high, step=1 if spec.step is None else spec.step)
                if isinstance(spec, _IntSpec) else
                od.FloatDistribution(float(low), float(high), log=spec.type == "loguniform"))
    except (TypeError, ValueError) as e:
        shown = {k: getattr(spec, k, None) for k in ("low", "high", "step")}
        errs.err(f"{pk}", f"invalid {spec.type} range: {e}", shown)
        return None
    bound = high if ctx.encoders is None else _bounded(key, high, ctx.encoders)
    if bound < high and "data.encoders" not in ctx.searched:
        errs.err(f"{pk}.high", f"{key.split('.')[-1]} larger than the number of encoders "
                               f"({len(ctx.encoders)}: {ctx.encoders})", high)
    elif ctx.base is not None:
        for v in (dist.low, dist.high):
            _check_value(ctx, key, v, when, pk, errs)
    return dist


def _check_when_order(params: list[Param], order: list[Any], errs: _Errors) -> None:
    """A condition on a searched parameter must name one listed before it (define-by-run samples in order)."""
    searched = {p.key for p in params}
    for p in params:
        for ck in p.when:
            if ck in searched and order.index(ck) > order.index(p.key):
                errs.err(f"params.{p.key}.when.{ck}", "must refer to a parameter listed before it", ck)


def _check_value(ctx: _ParamContext, key: str, value: Any, when: Mapping[str, tuple], pk: str,
                 errs: _Errors) -> None:
    """Apply ``key: value`` (with the first accepted value of each condition) to the base config; report the
    Config's problems."""
    updates = {ck: cv[0] for ck, cv in when.items()}
    updates[key] = value
    try:
        ctx.base.override(_fit(ctx.base, updates, ctx.searched))
    except ConfigError as e:
        errs.err(pk, f"value rejected by the config: {'; '.join(text for _, text in e.problems)}", value)
