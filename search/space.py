"""Search-space files (``spaces/*.yaml``): loading, validation and the Optuna define-by-run space.

DESIGN.md section 6. A space file starts from a preset (``spaces/presets/<name>.yaml``, a complete
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
    metric: score                         # or [acc_presence, acc_salience] for a Pareto search
    scheduler: {type: asha, grace_period: 2, reduction_factor: 2}   # or {type: none}
    budget: {num_samples: 6, max_concurrent: 1, max_epochs: 8, time_budget_s: 840}
    fold_layout: packed                   # optional: packed (default) | workers, see search.trainable
    warm_start: [rank_aware]              # optional: earlier searches seeding the sampler (search.warmstart)

Parameter types: ``choice`` (``values``), ``uniform`` / ``loguniform`` (``low`` < ``high``, loguniform needs
``low`` > 0) and ``int`` (``low`` < ``high``, optional ``step``). ``when`` makes a parameter conditional: it is
only sampled when every named key (a searched or fixed key, or a preset value) has one of the given values
(a value or a list of values); otherwise the preset's value stands. Optuna's define-by-run API samples
conditionals natively (:meth:`SearchSpace.suggest`).

Validation happens before anything starts (no Ray, no data loading except a directory check) and gathers
every error into one :class:`SpaceError`, each naming the file, the key and the value: unknown keys, empty
ranges, ``model.top_n`` beyond the number of encoders, choice values the Config rejects (each is applied to the
preset and checked with :meth:`Config.problems`), a missing data directory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna.distributions as od
import yaml

from blemore_core.config import Config, ConfigError

#: where ``preset: NAME`` is looked up (relative to the repository / installed package root)
PRESET_DIR = Path(__file__).resolve().parent.parent / "spaces" / "presets"
TOP_KEYS = ("name", "preset", "data", "fixed", "params", "metric", "scheduler", "budget", "fold_layout",
            "warm_start")
#: ``fold_layout:`` values (``search --fold-layout``): all folds of a trial in one worker, or one worker per fold
FOLD_LAYOUTS = ("packed", "workers")
DATA_KEYS = ("dir", "encoders")
PARAM_TYPES = {
    "choice": ("values",),
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "int": ("low", "high", "step"),
}
METRICS = ("score", "acc_presence", "acc_salience")
SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor"}
SCHEDULERS = ("asha", "none")
BUDGET_KEYS = ("num_samples", "max_concurrent", "max_epochs", "time_budget_s")
#: ``fixed:`` keys that are interpreted by the trainable, not by Config (debugging knobs, documented in README):
#: ``debug.fail_trial``: index (0-based Optuna trial number, i.e. the order in which trials are proposed) of a trial whose fold-0 worker raises
#: ``FloatingPointError`` (a forced non-finite loss) after its first epoch, on every attempt.
DEBUG_KEYS = ("debug.fail_trial",)


class SpaceError(ValueError):
    """A search-space file is invalid; the message lists every problem, each with file, key and value."""


#: separator of an encoder set written as one categorical choice (``"imagebind+wavlm"``): Optuna's categorical
#: choices must be plain strings, numbers or bools
ENCODER_SET_SEP = "+"


def encoder_set_name(encoders: Any) -> str:
    """``["imagebind", "wavlm"]`` -> ``"imagebind+wavlm"`` (a string is returned unchanged)."""
    return encoders if isinstance(encoders, str) else ENCODER_SET_SEP.join(encoders)


def trial_config(base: Config | Mapping[str, Any], params: Mapping[str, Any], source: str = "<trial>") -> Config:
    """A trial's Config: ``base`` (a Config or its dict) with the sampled ``params`` applied, the one conversion
    every consumer of Tune's trial config shares (the trial itself, the MLflow record, :meth:`SearchSpace.resolve`):
    an encoder-set choice (``"imagebind+wavlm"``) becomes the list, ``debug.*`` knobs are dropped.

    Raises:
        ConfigError: the combination is invalid, naming ``source`` and the key.
    """
    cfg = base if isinstance(base, Config) else Config.from_dict(dict(base), source=source)
    updates = {k: encoder_set(v) if k == "data.encoders" else v for k, v in params.items()
               if not k.startswith("debug.")}
    return cfg.override(updates, source=source)


def encoder_set(value: Any) -> list[str]:
    """``"imagebind+wavlm"`` -> ``["imagebind", "wavlm"]`` (a list is returned as a list)."""
    return value.split(ENCODER_SET_SEP) if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class Param:
    """One searched parameter.

    Attributes:
        key: dotted Config key (``train.lr``).
        dist: its Optuna distribution, built (and so validated by Optuna) when the space is loaded:
            ``CategoricalDistribution`` (choice; encoder sets as ``"a+b"`` strings), ``FloatDistribution``
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
    """

    path: Path
    name: str
    base: Config
    data_dir: Path | None
    fixed: dict[str, Any]
    debug: dict[str, Any]
    params: tuple[Param, ...]
    metrics: tuple[str, ...]
    scheduler: str = "asha"
    grace_period: int = 2
    reduction_factor: int = 2
    num_samples: int = 6
    max_concurrent: int = 1
    max_epochs: int = 8
    time_budget_s: float | None = None
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
        import optuna.distributions as od

        chosen: dict[str, Any] = {}
        for p in self.params:
            if not self._active(p, chosen):
                continue
            d = p.dist
            if isinstance(d, od.CategoricalDistribution):
                chosen[p.key] = trial.suggest_categorical(p.key, d.choices)
            elif isinstance(d, od.IntDistribution):
                high = d.high
                if p.key == "model.top_n":  # at most the number of encoders of the (sampled) encoder set
                    n_enc = len(encoder_set(chosen.get("data.encoders", self.base.data.encoders)))
                    high = max(d.low, min(high, n_enc))
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


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _preset_path(preset: Any, space_path: Path) -> Path | None:
    if not isinstance(preset, str) or not preset:
        return None
    cands = [Path(preset)] if preset.endswith((".yaml", ".yml")) else []
    cands += [space_path.parent / "presets" / f"{preset}.yaml", PRESET_DIR / f"{preset}.yaml"]
    if preset.endswith((".yaml", ".yml")):
        cands.append(space_path.parent / preset)
    for c in cands:
        if c.is_file():
            return c
    return None


class _Errors:
    """Collects the problems of one space file, each as ``"<file>: <key>: <message> (got <value>)"``."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.messages: list[str] = []

    def err(self, key: str, msg: str, value: Any = None) -> None:
        """Record a problem with ``key`` (the value is shown unless None)."""
        self.messages.append(f"{self.src}: {key}: {msg}" + ("" if value is None else f" (got {value!r})"))

    def raise_if_any(self) -> None:
        """Raise one :class:`SpaceError` listing every recorded problem, if there is any."""
        if self.messages:
            raise SpaceError(f"invalid search space {self.src}:\n  " + "\n  ".join(self.messages))


def load_space(path: str | Path, data_dir: str | Path | None = None, text: str | None = None) -> SearchSpace:
    """Read and validate a search-space file.

    Args:
        path: the ``spaces/*.yaml`` file (relative presets and data directories are resolved against it).
        data_dir: overrides ``data.dir`` of the file (the ``--data`` option); checked to exist.
        text: the file's content to use instead of reading ``path`` (``blemore resume``: the stored space).

    Returns:
        A :class:`SearchSpace` whose every choice value gives a valid Config.

    Raises:
        SpaceError: listing every problem, each as ``"<file>: <key>: <message> (got <value>)"``.
    """
    path = Path(path)
    errs = _Errors(str(path))
    doc = _read_doc(path, text, errs.src)
    _check_unknown_keys(errs, doc, TOP_KEYS)
    preset = _load_preset(doc, path, errs)
    resolved_dir, encoders = _load_data(doc, path, data_dir, errs)
    fixed, debug = _load_fixed(doc, errs)
    budget = _load_budget(doc, errs)
    sched = _load_scheduler(doc, errs)
    metrics = _load_metric(doc, errs)
    params_doc = doc.get("params") or {}
    base = _build_base(preset, encoders, fixed, params_doc, budget["max_epochs"], errs)
    params = _load_params(params_doc, preset, base, encoders, fixed, errs)
    layout = doc.get("fold_layout")
    if layout is not None and layout not in FOLD_LAYOUTS:
        errs.err("fold_layout", f"must be one of {', '.join(FOLD_LAYOUTS)}", layout)
    warm = _load_warm_start(doc, errs)
    errs.raise_if_any()
    assert base is not None
    return SearchSpace(
        path=path, name=str(doc.get("name") or path.stem), base=base, data_dir=resolved_dir, fixed=fixed,
        debug=debug, params=params, metrics=metrics, **sched,
        num_samples=budget["num_samples"], max_concurrent=budget["max_concurrent"],
        max_epochs=budget["max_epochs"] or base.train.max_epochs, time_budget_s=budget["time_budget_s"],
        fold_layout=layout, warm_start=warm,
    )


def _load_warm_start(doc: Mapping, errs: _Errors) -> tuple[str, ...]:
    """``warm_start:``: a search name or a list of them (issue 20, search.warmstart)."""
    names = doc.get("warm_start") or []
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        errs.err("warm_start", "must be a search name or a list of search names", doc.get("warm_start"))
        return ()
    return tuple(dict.fromkeys(names))


def _read_doc(path: Path, text: str | None, src: str) -> Mapping:
    """Parse the file (or ``text``); raise :class:`SpaceError` at once if it is unreadable or not a mapping."""
    try:
        doc = yaml.safe_load(path.read_text() if text is None else text)
    except (OSError, yaml.YAMLError) as e:
        raise SpaceError(f"{src}: cannot read search space: {e}") from e
    if not isinstance(doc, Mapping):
        raise SpaceError(f"{src}: <top>: a search space must be a mapping (got {type(doc).__name__})")
    return doc


def _check_unknown_keys(errs: _Errors, section: Mapping, valid: Any, prefix: str = "") -> None:
    """Report each key of ``section`` not in ``valid`` as ``<prefix><key>``."""
    for k in section:
        if k not in valid:
            errs.err(f"{prefix}{k}", f"unknown key (valid: {', '.join(valid)})", section[k])


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


def _load_data(doc: Mapping, path: Path, data_dir: str | Path | None,
               errs: _Errors) -> tuple[Path | None, list | None]:
    """``data:`` (and the ``--data`` override): the release directory (absolute; ``data.dir`` relative to the space
    file when it exists there, ``--data`` relative to the working directory) and the encoder list (or None)."""
    data = doc.get("data") or {}
    if not isinstance(data, Mapping):
        errs.err("data", "must be a mapping with dir / encoders", data)
        data = {}
    _check_unknown_keys(errs, data, DATA_KEYS, "data.")
    ddir = data_dir if data_dir is not None else data.get("dir")
    resolved_dir: Path | None = None
    if ddir is not None:
        resolved_dir = Path(ddir).expanduser()
        if not resolved_dir.is_absolute() and data_dir is None:
            resolved_dir = (path.parent / resolved_dir) if (path.parent / resolved_dir).exists() else resolved_dir
        if not resolved_dir.is_dir():
            errs.err("data.dir" if data_dir is None else "--data", "data directory does not exist", str(ddir))
        else:  # absolute: Ray's trial and fold-worker processes do not run in the user's working directory
            resolved_dir = resolved_dir.resolve()
    encoders = None
    if "encoders" in data:
        encoders = data["encoders"]
        if not isinstance(encoders, list) or not encoders or not all(isinstance(e, str) for e in encoders):
            errs.err("data.encoders", "must be a non-empty list of encoder names", encoders)
            encoders = None
    return resolved_dir, encoders


def _load_fixed(doc: Mapping, errs: _Errors) -> tuple[dict[str, Any], dict[str, Any]]:
    """``fixed:``: the Config overrides and, split off, the debugging knobs (``DEBUG_KEYS``)."""
    fixed = doc.get("fixed") or {}
    debug: dict[str, Any] = {}
    if not isinstance(fixed, Mapping):
        errs.err("fixed", "must be a mapping of dotted keys to values", fixed)
        fixed = {}
    fixed = dict(fixed)
    for k in list(fixed):
        if not isinstance(k, str):
            errs.err(f"fixed.{k}", "keys must be dotted Config keys (strings)", k)
            del fixed[k]
        elif k.startswith("debug."):
            if k not in DEBUG_KEYS:
                errs.err(f"fixed.{k}", f"unknown debug key (valid: {', '.join(DEBUG_KEYS)})", fixed[k])
            elif not isinstance(fixed[k], int) or isinstance(fixed[k], bool) or fixed[k] < 0:
                errs.err(f"fixed.{k}", "must be a trial index >= 0", fixed[k])
            else:
                debug[k] = fixed[k]
            del fixed[k]
    return fixed, debug


def _load_budget(doc: Mapping, errs: _Errors) -> dict[str, Any]:
    """``budget:``: every ``BUDGET_KEYS`` value (max_epochs None = the base config's)."""
    budget = doc.get("budget") or {}
    if not isinstance(budget, Mapping):
        errs.err("budget", "must be a mapping", budget)
        budget = {}
    _check_unknown_keys(errs, budget, BUDGET_KEYS, "budget.")
    b = {"num_samples": 6, "max_concurrent": 1, "max_epochs": None, "time_budget_s": None}
    for k in BUDGET_KEYS:
        if k in budget:
            v = budget[k]
            if k == "time_budget_s":
                if v is not None and (not _num(v) or v <= 0):
                    errs.err(f"budget.{k}", "must be a positive number of seconds or null", v)
                    continue
            elif not isinstance(v, int) or isinstance(v, bool) or v < 1:
                errs.err(f"budget.{k}", "must be an integer >= 1", v)
                continue
            b[k] = v
    return b


def _load_scheduler(doc: Mapping, errs: _Errors) -> dict[str, Any]:
    """``scheduler:``: the :class:`SearchSpace` fields scheduler, grace_period and reduction_factor."""
    sched = doc.get("scheduler", {"type": "asha"})
    if isinstance(sched, str):
        sched = {"type": sched}
    if not isinstance(sched, Mapping):
        errs.err("scheduler", "must be asha|none or a mapping with type", sched)
        sched = {"type": "asha"}
    _check_unknown_keys(errs, sched, sorted(SCHEDULER_KEYS), "scheduler.")
    stype = sched.get("type", "asha")
    if stype not in SCHEDULERS:
        errs.err("scheduler.type", f"must be one of {list(SCHEDULERS)}", stype)
    for k, default in (("grace_period", 2), ("reduction_factor", 2)):
        v = sched.get(k, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < (1 if k == "grace_period" else 2):
            errs.err(f"scheduler.{k}", f"must be an integer >= {1 if k == 'grace_period' else 2}", v)
    return {"scheduler": stype, "grace_period": sched.get("grace_period", 2),
            "reduction_factor": sched.get("reduction_factor", 2)}


def _load_metric(doc: Mapping, errs: _Errors) -> tuple[str, ...]:
    """``metric:``: ``("score",)`` or ``("acc_presence", "acc_salience")`` (either order in the file)."""
    metric = doc.get("metric", "score")
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
    updates: dict[str, Any] = {}
    if encoders is not None:
        updates["data.encoders"] = encoders
        if isinstance(params_doc, Mapping) and "model.top_n" in params_doc and "model.top_n" not in fixed:
            updates["model.top_n"] = min(preset.model.top_n, len(encoders))  # searched: keep the base valid
    updates.update(fixed)
    if max_epochs is not None:
        updates["train.max_epochs"] = max_epochs
    try:
        return preset.override(updates, source=f"{errs.src}: fixed")
    except ConfigError as e:
        errs.messages.extend(str(e).split("\n  ")[1:])
        return None


@dataclass(frozen=True)
class _ParamContext:
    """What checking one ``params.<key>`` spec needs besides the spec itself.

    Attributes:
        flat: the Config keys a parameter or a condition may name.
        fixed: the ``fixed:`` overrides (a key may not be both fixed and searched).
        base: the built base config, or None when it is invalid (values are then not checked).
        n_enc, enc_names: the encoders of the file (or of the preset), for the ``model.top_n`` bound.
        encoders_searched: whether ``data.encoders`` is searched (``model.top_n`` is then clipped per trial).
    """

    flat: Mapping[str, Any]
    fixed: Mapping[str, Any]
    base: Config | None
    n_enc: int | None
    enc_names: list[str]
    encoders_searched: bool


def _load_params(params_doc: Any, preset: Config | None, base: Config | None, encoders: list | None,
                 fixed: Mapping[str, Any], errs: _Errors) -> tuple[Param, ...]:
    """``params:``: the searched parameters in file order (invalid ones are reported and left out)."""
    if not isinstance(params_doc, Mapping):
        errs.err("params", "must be a mapping of dotted keys to {type: ...}", params_doc)
        params_doc = {}
    ctx = _ParamContext(
        flat=base.flat() if base is not None else Config().flat(), fixed=fixed, base=base,
        n_enc=len(encoders) if encoders is not None else (len(preset.data.encoders) if preset else None),
        enc_names=list(encoders) if encoders is not None else (list(preset.data.encoders) if preset else []),
        encoders_searched="data.encoders" in params_doc,
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
    ptype = spec["type"]
    for k in spec:
        if k not in (*PARAM_TYPES[ptype], "type", "when"):
            errs.err(f"{pk}.{k}", f"unknown key for type {ptype} (valid: type, when, {', '.join(PARAM_TYPES[ptype])})",
                     spec[k])
    when = _param_when(key, pk, spec, ctx.flat, errs)
    if ptype == "choice":
        dist = _choice_dist(key, pk, spec, when, ctx, errs)
    else:
        dist = _range_dist(key, pk, ptype, spec, when, ctx, errs)
    return None if dist is None else Param(key=key, dist=dist, when=when)


def _param_when(key: Any, pk: str, spec: Mapping, flat: Mapping[str, Any], errs: _Errors) -> dict[str, tuple]:
    """The ``when:`` conditions of one parameter as ``{dotted key: accepted values}`` (invalid ones dropped)."""
    when: dict[str, tuple] = {}
    w = spec.get("when") or {}
    if not isinstance(w, Mapping):
        errs.err(f"{pk}.when", "must be a mapping {dotted key: value or [values]}", w)
        w = {}
    for ck, cv in w.items():
        if ck not in flat:
            errs.err(f"{pk}.when.{ck}", "unknown Config key", ck)
        elif ck == key:
            errs.err(f"{pk}.when.{ck}", "a parameter cannot depend on itself", ck)
        else:
            when[ck] = _as_tuple(cv)
    return when


def _choice_dist(key: Any, pk: str, spec: Mapping, when: Mapping[str, tuple], ctx: _ParamContext,
                 errs: _Errors) -> od.CategoricalDistribution | None:
    """``type: choice``: the categorical distribution, each value checked against the base config."""
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        errs.err(f"{pk}.values", "must be a non-empty list", values)
        return None
    if key == "data.encoders":  # Optuna choices are plain values: an encoder set is one "a+b" string
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
            _check_value(ctx.base, key, encoder_set(v) if key == "data.encoders" else v, when, pk, errs.err)
    return dist


def _range_dist(key: Any, pk: str, ptype: str, spec: Mapping, when: Mapping[str, tuple], ctx: _ParamContext,
                errs: _Errors) -> od.IntDistribution | od.FloatDistribution | None:
    """``type: uniform / loguniform / int``: the range distribution, its bounds checked against the base config."""
    low, high, step = spec.get("low"), spec.get("high"), spec.get("step")
    if isinstance(low, str) or isinstance(high, str):  # YAML reads 1e-3 (no dot) as a string
        try:
            low, high = float(low), float(high)
        except (TypeError, ValueError):
            pass
    if not _num(low) or not _num(high):
        errs.err(f"{pk}", "low and high must be numbers", {"low": low, "high": high})
        return None
    if low >= high:
        errs.err(f"{pk}", "empty range: low must be < high", {"low": low, "high": high})
        return None
    if ptype == "int" and not all(isinstance(x, int) and not isinstance(x, bool) for x in (low, high)):
        errs.err(f"{pk}", "int needs integer low and high", {"low": low, "high": high})
        return None
    try:  # Optuna validates the rest (log scale needs low > 0, step >= 1 ...)
        dist = (od.IntDistribution(low, high, step=1 if step is None else step) if ptype == "int" else
                od.FloatDistribution(float(low), float(high), log=ptype == "loguniform"))
    except (TypeError, ValueError) as e:
        errs.err(f"{pk}", f"invalid {ptype} range: {e}", {k: spec.get(k) for k in ("low", "high", "step")})
        return None
    if key == "model.top_n" and ctx.n_enc is not None and high > ctx.n_enc and not ctx.encoders_searched:
        errs.err(f"{pk}.high", f"top_n larger than the number of encoders ({ctx.n_enc}: {ctx.enc_names})", high)
    elif ctx.base is not None:
        for v in (dist.low, dist.high):
            _check_value(ctx.base, key, v, when, pk, errs.err)
    return dist


def _check_when_order(params: list[Param], order: list[Any], errs: _Errors) -> None:
    """A condition on a searched parameter must name one listed before it (define-by-run samples in order)."""
    searched = {p.key for p in params}
    for p in params:
        for ck in p.when:
            if ck in searched and order.index(ck) > order.index(p.key):
                errs.err(f"params.{p.key}.when.{ck}", "must refer to a parameter listed before it", ck)


def _check_value(base: Config, key: str, value: Any, when: Mapping[str, tuple], pk: str, err) -> None:
    """Apply ``key: value`` (with the first accepted value of each condition) to ``base``; report problems."""
    updates = {ck: cv[0] for ck, cv in when.items()}
    updates[key] = list(value) if isinstance(value, tuple) else value
    if key == "data.encoders":  # top_n is clipped to the sampled encoder set (SearchSpace.suggest)
        updates.setdefault("model.top_n", min(base.model.top_n, len(value)))
    try:
        base.override(updates)
    except ConfigError as e:
        msgs = [m.split(": ", 1)[-1] for m in str(e).split("\n  ")[1:]]
        err(pk, f"value rejected by the config: {'; '.join(msgs)}", value)
