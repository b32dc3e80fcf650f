"""The one artifact format of a trained fold or model directory: one writer, one reader (docs/ARCHITECTURE.md section 7).

Used by ``blemore train``, the search trial (its Ray Train checkpoint), ``blemore retrain`` and ``blemore predict``.
A model directory holds::

    model.json        {"format": "blemore-model/1", "kind": cv|full|folds|ensemble, "weights": [names],
                       "files": {name: sha256}, "members": [subdirs] (ensemble), ...}
    config.yaml       the resolved config (Config.to_yaml)
    thresholds.json   {"headline": protocol, "<protocol>": {"per_fold": [{fold, alpha, beta}]},
                       "pooled": {alpha, beta, ...}}   (pooled = fitted on all OOF predictions; what predict uses)
    metrics.json      per protocol: per fold + mean + std; selected epochs; encoder importances
    oof.parquet       filename, fold, p_ang..p_neu (float32), when the directory comes from cross-validation;
                      rank-aware models add imp_<encoder> (per-clip encoder importance)
    fold<k>.pt / model.pt   weights (see :func:`save_weights`)
    <other>.json      extra documents (histories, confusion counts)

A weights file is ``torch.save`` of a dict of plain values and tensors only: ``{"format", "config" (nested dict),
"state_dict" {name: tensor}, "meta" {fold, epoch, train_folds, input_dims, ...}, "sha256"}``, read back with
``torch.load(weights_only=True)`` (no code is ever unpickled). ``sha256`` is the digest of the tensors' names,
dtypes, shapes and bytes, so an edited tensor is detected on load; a truncated file fails to parse. Either gives
:class:`ArtifactError` naming the file. ``model.json`` lists the SHA-256 of every file of the directory, checked
by :func:`read_model_dir`.

The directory is written into a temporary sibling and renamed into place: an interrupted write never leaves a
half-written directory behind.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from blemore_core.config import Config, ConfigError
from blemore_core.errors import ArtifactError  # noqa: F401  (re-exported: blemore_core.artifacts.ArtifactError)
from blemore_core.io import BoundedInputError, key_line, load_json, load_yaml
from blemore_core.names import PROTOCOLS
from blemore_core.results import read_oof, write_json, write_parquet

MODEL_FORMAT = "blemore-model/1"
WEIGHTS_FORMAT = "blemore-weights/1"
MODEL_KINDS: tuple[str, ...] = ("cv", "full", "folds", "ensemble")
#: top-level section of an exported config YAML (``blemore export``) that is not part of :class:`Config`
EXPORT_KEY = "export"
#: top-level section of an ensemble YAML (``blemore ensemble``)
ENSEMBLE_KEY = "ensemble"


# ------------------------------------------------------------------------------------------------ weights


def state_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 hex digest over the tensors of ``state_dict`` (names in sorted order, dtype, shape, raw bytes)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict[{k!r}]: expected a tensor, got {type(t).__name__}")
        t = t.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _plain(obj: Any) -> Any:
    """JSON/weights-safe copy: dicts with str keys, lists, str, int, float, bool, None."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"not a plain value: {type(obj).__name__}")


def save_weights(path: str | Path, state_dict: Mapping[str, torch.Tensor], config: Config | Mapping[str, Any],
                 **meta: Any) -> Path:
    """Write a weights file (format in the module docstring) atomically.

    Args:
        path: destination ``*.pt``.
        state_dict: parameter and buffer tensors (any device; stored on CPU).
        config: the resolved config (a :class:`Config` or its ``to_dict()``), stored inside the file.
        meta: plain values (e.g. ``fold=0, epoch=7, train_folds=[1, 2, 3, 4], input_dims={...}``).

    Returns:
        The written path.
    """
    path = Path(path)
    sd = {str(k): v.detach().cpu().contiguous() for k, v in state_dict.items()}
    cfg = config.to_dict() if isinstance(config, Config) else _plain(config)
    payload = {"format": WEIGHTS_FORMAT, "config": cfg, "state_dict": sd, "meta": _plain(meta),
               "sha256": state_digest(sd)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class Weights:
    """A loaded weights file.

    Attributes:
        path: the file.
        state_dict: {name: CPU tensor}.
        config: the resolved :class:`Config` stored in the file.
        meta: the plain metadata (fold, epoch, train_folds, input_dims, ...).
    """

    path: Path
    state_dict: dict[str, torch.Tensor]
    config: Config
    meta: dict[str, Any]


def load_weights(path: str | Path) -> Weights:
    """Read a weights file written by :func:`save_weights` with ``torch.load(weights_only=True)``.

    Raises:
        ArtifactError: naming the file, when it is missing, truncated or not a weights file, when its tensors do
            not match the stored digest (modified), or when its config is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...: never retried without weights_only
        raise ArtifactError(f"{path}: not a readable blemore weights file (truncated or tampered?): "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(obj, dict) or obj.get("format") != WEIGHTS_FORMAT:
        fmt = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ArtifactError(f"{path}: format: expected {WEIGHTS_FORMAT!r}, got {fmt!r}")
    sd = obj.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ArtifactError(f"{path}: state_dict: expected a mapping of tensors")
    if state_digest(sd) != obj.get("sha256"):
        raise ArtifactError(f"{path}: sha256: the stored tensors do not match their digest (file modified)")
    try:
        cfg = Config.from_dict(obj.get("config"), source=f"{path} (config)")
    except ConfigError as e:
        raise ArtifactError(str(e)) from None
    return Weights(path, sd, cfg, dict(obj.get("meta") or {}))


# ------------------------------------------------------------------------------------------------ directories


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class WeightsSpec:
    """One weights file to write: ``name`` (e.g. ``fold0.pt``), the tensors and plain metadata."""

    name: str
    state_dict: Mapping[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def write_model_dir(
    out: str | Path,
    config: Config,
    *,
    kind: str,
    weights: Sequence[WeightsSpec] = (),
    thresholds: Mapping[str, Any],
    metrics: Mapping[str, Any],
    oof: pd.DataFrame | None = None,
    documents: Mapping[str, Any] | None = None,
    members: Sequence[str | Path] = (),
    info: Mapping[str, Any] | None = None,
    writers: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model directory (layout in the module docstring), atomically replacing ``out``.

    Args:
        out: destination directory (replaced as a whole if it exists).
        config: the resolved config.
        kind: ``cv`` (cross-validation: fold models + OOF), ``full`` (one model on all training clips),
            ``folds`` (the fold models, averaged at prediction), ``ensemble`` (``members`` weighted).
        weights: the weights files.
        thresholds: the thresholds document; ``thresholds["pooled"] = {"alpha", "beta"}`` is what predict uses.
        metrics: the metrics document.
        oof: OOF table (:func:`blemore_core.results.oof_frame`) or None.
        documents: extra JSON documents ``{file name: object}``.
        members: model directories copied in as ``member<i>/`` (ensemble only).
        info: extra plain fields of ``model.json`` (source run id, member weights, ...).
        writers: other files ``{file name: callable(path)}`` that write themselves (e.g. per-epoch OOF tables).

    Returns:
        ``out``.

    Raises:
        ValueError: unknown ``kind``; ``pooled`` thresholds missing for a predicting kind.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind: unknown model kind {kind!r} (valid: {', '.join(MODEL_KINDS)})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "config.yaml").write_text(config.to_yaml())
        write_json(_plain(thresholds), tmp / "thresholds.json")
        write_json(metrics, tmp / "metrics.json")
        if oof is not None:
            write_parquet(oof, tmp / "oof.parquet")
        for name, doc in (documents or {}).items():
            write_json(doc, tmp / name)
        for name, write in (writers or {}).items():
            write(tmp / name)
        for w in weights:
            save_weights(tmp / w.name, w.state_dict, config, **w.meta)
        member_names = []
        for i, m in enumerate(members):
            name = f"member{i}"
            shutil.copytree(m, tmp / name)
            member_names.append(name)
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        files.update({f"{m}/model.json": file_sha256(tmp / m / "model.json") for m in member_names})
        doc = {"format": MODEL_FORMAT, "kind": kind, "weights": [w.name for w in weights], "members": member_names,
               "files": files, **_plain(dict(info or {}))}
        write_json(doc, tmp / "model.json")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass
class ModelDir:
    """A model directory read by :func:`read_model_dir`.

    Attributes:
        path: the directory.
        kind: ``cv``, ``full``, ``folds`` or ``ensemble``.
        config: the resolved config.
        thresholds: the thresholds document.
        metrics: the metrics document.
        oof: the OOF table or None.
        weights: weights file names (load with :meth:`load`).
        members: member model directories (ensemble).
        info: the whole ``model.json``.
    """

    path: Path
    kind: str
    config: Config
    thresholds: dict[str, Any]
    metrics: dict[str, Any]
    oof: pd.DataFrame | None
    weights: list[str]
    members: list[ModelDir]
    info: dict[str, Any]

    def load(self, name: str) -> Weights:
        """Load one of the directory's weights files (see :func:`load_weights`)."""
        return load_weights(self.path / name)

    def predict_thresholds(self) -> tuple[float, float]:
        """(alpha, beta) used to decode test predictions: ``thresholds.json["pooled"]``.

        Raises:
            ArtifactError: naming the file when they are missing or invalid.
        """
        pooled = self.thresholds.get("pooled")
        f = self.path / "thresholds.json"
        if not isinstance(pooled, Mapping) or "alpha" not in pooled or "beta" not in pooled:
            raise ArtifactError(f"{f}: pooled: missing the pooled alpha/beta used for prediction")
        a, b = pooled["alpha"], pooled["beta"]
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 and b >= 0):
            raise ArtifactError(f"{f}: pooled: alpha must be > 0 and beta >= 0, got alpha={a!r}, beta={b!r}")
        return float(a), float(b)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file with the bounds of :func:`blemore_core.io.load_json` (size cap, nesting depth);
    :class:`ArtifactError` naming it when missing, malformed or refused."""
    path = Path(path)
    try:
        return load_json(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except BoundedInputError as e:
        raise ArtifactError(str(e)) from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: not valid JSON: {e}") from None


def read_model_dir(path: str | Path, verify: bool = True) -> ModelDir:
    """Read a model directory written by :func:`write_model_dir` (weights are loaded on demand).

    Args:
        path: the directory.
        verify: check every file against the SHA-256 listed in ``model.json``.

    Raises:
        ArtifactError: naming the file: not a model directory, unknown format, a file missing or modified, a
            malformed document or config.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a directory")
    mj = path / "model.json"
    if not mj.is_file():
        raise ArtifactError(f"{mj}: not a blemore model directory (model.json missing)")
    info = read_json(mj)
    if not isinstance(info, dict) or info.get("format") != MODEL_FORMAT:
        raise ArtifactError(f"{mj}: format: expected {MODEL_FORMAT!r}, got "
                            f"{info.get('format') if isinstance(info, dict) else info!r}")
    kind = info.get("kind")
    if kind not in MODEL_KINDS:
        raise ArtifactError(f"{mj}: kind: unknown model kind {kind!r} (valid: {', '.join(MODEL_KINDS)})")
    if verify:
        for name, digest in (info.get("files") or {}).items():
            f = path / name
            if not f.is_file():
                raise ArtifactError(f"{f}: listed in model.json but missing")
            if file_sha256(f) != digest:
                raise ArtifactError(f"{f}: sha256 differs from model.json (file modified or truncated)")
    try:
        cfg = Config.from_yaml(path / "config.yaml")
    except ConfigError as e:
        raise ArtifactError(str(e)) from None
    oof = None
    if (path / "oof.parquet").is_file():
        try:
            oof = read_oof(path / "oof.parquet")
        except ArtifactError:
            raise
        except Exception as e:
            raise ArtifactError(f"{path / 'oof.parquet'}: cannot read OOF predictions: {e}") from None
    # each member is verified as a single model (its own model.json lists its files' digests; the ensemble's
    # model.json lists the digest of each member's model.json)
    members = [read_model_dir(path / m, verify=verify) for m in info.get("members") or []]
    return ModelDir(path, kind, cfg, read_json(path / "thresholds.json"), read_json(path / "metrics.json"), oof,
                    list(info.get("weights") or []), members, info)


# ------------------------------------------------------------------------------------------------ exported YAML


@dataclass
class ConfigFile:
    """A config YAML as ``blemore train`` / ``retrain`` take it: a plain config, an exported trial or an ensemble.

    Attributes:
        config: the resolved config (for an ensemble: the first member's).
        export: the ``export`` section of an exported trial (thresholds, selected epochs, metrics, run id) or None.
        ensemble: the ``ensemble`` section (members, each with its config and export section) or None.
    """

    config: Config
    export: dict[str, Any] | None = None
    ensemble: dict[str, Any] | None = None


def load_config_file(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ConfigFile:
    """Load a plain config, an exported trial (``blemore export``) or an ensemble file (``blemore ensemble``).

    Args:
        path: the YAML file.
        overrides: dotted-key overrides (``--set``) applied to the config (an ensemble: its first member's).

    Raises:
        ConfigError: naming the file, for unreadable YAML or an invalid config (also a member's).
    """
    path = Path(path)
    try:
        d = load_yaml(path)
    except OSError:
        d = None
    except BoundedInputError as e:  # too large, an alias, too deep, or not YAML: refused before any walk
        raise ConfigError(f"{path}: cannot read YAML config: {str(e).removeprefix(f'{path}: ')}") from None
    if not isinstance(d, dict) or (EXPORT_KEY not in d and ENSEMBLE_KEY not in d):
        return ConfigFile(Config.from_yaml(path, overrides))  # a plain config: its errors, as Config reports them
    cf = _load_sections(path, d)
    if overrides:
        cf.config = cf.config.override(overrides, source="--set")
    return cf


def _load_sections(path: Path, d: dict) -> ConfigFile:
    if ENSEMBLE_KEY in d:
        ens = d[ENSEMBLE_KEY]
        _SectionCheck(path).ensemble(ens, d)
        for i, m in enumerate(ens["members"]):
            Config.from_dict(m["config"], source=f"{path} (ensemble.members[{i}].config)")
        return ConfigFile(Config.from_dict(ens["members"][0]["config"],
                                           source=f"{path} (ensemble.members[0].config)"), ensemble=ens)
    exp = d.pop(EXPORT_KEY, None)
    _SectionCheck(path).export(exp, EXPORT_KEY)
    return ConfigFile(Config.from_dict(d, source=str(path)), export=exp)


#: keys of an exported trial's ``export:`` section (``blemore export``) and the checks of their values
EXPORT_FIELDS: tuple[str, ...] = ("experiment", "run_id", "trial_id", "run_name", "tracking_uri", "headline", "score",
                                  "selected_epochs", "thresholds", "fold_metrics", "metric", "rank", "n_finished")
#: keys of an ensemble file's ``ensemble:`` section (``blemore ensemble``) and of each of its members
ENSEMBLE_FIELDS: tuple[str, ...] = ("experiment", "tracking_uri", "protocol", "top_k", "rounds", "init_size", "score",
                                    "best_single", "trajectory", "thresholds", "members")
MEMBER_FIELDS: tuple[str, ...] = ("run_id", "run_name", "weight", "count", "single_score", "config", "export")


class _SectionCheck:
    """Validation of the ``export:`` and ``ensemble:`` sections, like a config's: unknown keys, wrong types and
    non-finite numbers, each error naming the file, the dotted key, its line and the value (ConfigError)."""

    def __init__(self, path: Path):
        self.path, self.errors = path, []

    def bad(self, key: str, problem: str, value: Any) -> None:
        line = key_line(self.path, key)
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        self.errors.append(f"{self.path}: {key}" + (f" (line {line})" if line else "") + f": {problem}, got {shown}")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError("invalid exported file:\n  " + "\n  ".join(self.errors))

    def mapping(self, v: Any, key: str, fields: Sequence[str] | None = None) -> bool:
        if not isinstance(v, Mapping):
            self.bad(key, "expected a mapping", v)
            return False
        for k in v:
            if fields is not None and k not in fields:
                self.bad(f"{key}.{k}", f"unknown key (valid: {', '.join(fields)})", v[k])
        return True

    def number(self, v: Any, key: str, low: float | None = None, optional: bool = False) -> None:
        if v is None and optional:
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.bad(key, "expected a finite number", v)
        elif low is not None and v < low:
            self.bad(key, f"must be >= {low:g}", v)

    def integer(self, v: Any, key: str, low: int = 0) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            self.bad(key, f"expected an integer >= {low}", v)

    def text(self, v: Any, key: str) -> None:
        if v is not None and not isinstance(v, str):
            self.bad(key, "expected a string", v)

    def thresholds(self, th: Any, key: str) -> None:
        if not self.mapping(th, key, ("pooled", "val", "train", "crossfit")):
            return
        pooled = th.get("pooled")
        if self.mapping(pooled, f"{key}.pooled"):
            for k in ("alpha", "beta"):
                if k not in pooled:
                    self.bad(f"{key}.pooled.{k}", "missing", None)
            for k, v in pooled.items():
                self.number(v, f"{key}.pooled.{k}", low=0.0)
        for proto in PROTOCOLS:
            rows = th.get(proto)
            if rows is None:
                continue
            if not isinstance(rows, list):
                self.bad(f"{key}.{proto}", "expected a list of {fold, alpha, beta}", rows)
                continue
            for i, r in enumerate(rows):
                if self.mapping(r, f"{key}.{proto}.{i}", ("fold", "alpha", "beta", "score", "epoch")):
                    self.integer(r.get("fold"), f"{key}.{proto}.{i}.fold")
                    for k in ("alpha", "beta", "score"):
                        self.number(r.get(k), f"{key}.{proto}.{i}.{k}", low=0.0, optional=k == "score")

    def export(self, exp: Any, key: str, final: bool = True) -> None:
        """Check an ``export:`` section at dotted ``key``; raise when ``final`` (else keep the errors)."""
        if exp is not None and self.mapping(exp, key, EXPORT_FIELDS):
            for k in ("experiment", "run_id", "trial_id", "run_name", "tracking_uri", "headline", "metric"):
                self.text(exp.get(k), f"{key}.{k}")
            ep = exp.get("selected_epochs")
            if ep is not None and self.mapping(ep, f"{key}.selected_epochs"):
                for fold, e in ep.items():
                    if not (isinstance(fold, int) and not isinstance(fold, bool) and fold >= 0
                            or isinstance(fold, str) and fold.isdigit()):
                        self.bad(f"{key}.selected_epochs.{fold}", "the fold must be an integer >= 0", fold)
                    self.integer(e, f"{key}.selected_epochs.{fold}", low=1)
            if exp.get("thresholds") is not None:
                self.thresholds(exp["thresholds"], f"{key}.thresholds")
            if exp.get("score") is not None and self.mapping(exp["score"], f"{key}.score"):
                for k, v in exp["score"].items():
                    self.number(v, f"{key}.score.{k}", optional=True)
            for k in ("rank", "n_finished"):
                if k in exp:
                    self.integer(exp[k], f"{key}.{k}", low=1)
        if final:
            self.raise_if_any()

    def ensemble(self, ens: Any, doc: Mapping) -> None:
        """Check an ``ensemble:`` section (and that nothing else is at the top level) and raise on any error."""
        for k in doc:
            if k != ENSEMBLE_KEY:
                self.bad(k, f"unknown key next to {ENSEMBLE_KEY!r}", doc[k])
        if self.mapping(ens, ENSEMBLE_KEY, ENSEMBLE_FIELDS):
            for k in ("top_k", "rounds", "init_size"):
                if k in ens:
                    self.integer(ens[k], f"{ENSEMBLE_KEY}.{k}", low=0)
            if "score" in ens:
                self.number(ens["score"], f"{ENSEMBLE_KEY}.score")
            self.thresholds(ens.get("thresholds"), f"{ENSEMBLE_KEY}.thresholds")
            self.members(ens.get("members"))
        self.raise_if_any()

    def members(self, members: Any) -> None:
        key = f"{ENSEMBLE_KEY}.members"
        if not isinstance(members, list) or not members:
            self.bad(key, "expected a non-empty list", members)
            return
        for i, m in enumerate(members):
            if not self.mapping(m, f"{key}.{i}", MEMBER_FIELDS):
                continue
            self.number(m.get("weight"), f"{key}.{i}.weight", low=0.0)
            if not isinstance(m.get("config"), Mapping):
                self.bad(f"{key}.{i}.config", "expected the member's config (a mapping)", m.get("config"))
            if m.get("export") is None:
                self.bad(f"{key}.{i}.export", "missing (the member's export section)", None)
            self.export(m.get("export"), f"{key}.{i}.export", final=False)


# ------------------------------------------------------------------------------------------------ cross-validation


def pooled_thresholds(probs: np.ndarray, truth: np.ndarray, presence_weight: float = 0.5) -> dict[str, float]:
    """alpha, beta fitted on all OOF predictions at once (what a model trained on every fold decodes with), with
    the (optimistic, in-sample) metrics at that point.

    Args:
        probs: float (N, 6) OOF probabilities; truth: float (N, 6) salience labels.
    """
    from blemore_core.decoding import fit_thresholds

    fit = fit_thresholds(probs, truth, presence_weight=presence_weight)
    return {"alpha": fit.alpha, "beta": fit.beta, "acc_presence": fit.acc_presence,
            "acc_salience": fit.acc_salience, "score": fit.score}


def label_set_confusion(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Counts int64 (16, 16) over the 16 valid label sets, rows truth, columns prediction (salience arrays (N, 6))."""
    from blemore_core.labels import LABEL_SETS, label_set_indices

    n = len(LABEL_SETS)
    conf = np.zeros((n, n), dtype=np.int64)
    np.add.at(conf, (label_set_indices(truth), label_set_indices(pred)), 1)
    return conf


def selected_epochs(metrics: Mapping[str, Any]) -> dict[int, int]:
    """``{fold: epoch}`` whose weights a cross-validation kept (the headline protocol's choice): from
    ``metrics["selected_epochs"]`` (``{fold: epoch}`` or ``{fold: {protocol: epoch}}``), else
    ``metrics["best_epoch"]``."""
    head = metrics.get("headline")
    best = metrics.get("best_epoch") or {}
    out = {}
    for k, v in (metrics.get("selected_epochs") or best).items():
        if isinstance(v, Mapping):
            v = v.get(head, best.get(str(k), best.get(k)))
        if v is not None:
            out[int(k)] = int(v)
    return out


def oof_importances(results: Sequence[Any], data: Any, all_folds: Sequence[int]) -> np.ndarray:
    """Per-clip encoder importances float32 (sum N_k, E) of each fold model on its validation clips (rows in the
    order of ``results``), recomputed with the prediction path of :mod:`blemore_core.refit` (eval mode, inputs
    standardised with the fold's training statistics, exactly as in training)."""
    import dataclasses

    from blemore_core.predict import predict_weights

    as_target = dataclasses.replace(data, target=data.release)
    out = []
    for r in results:
        _, imp = predict_weights(r.config, r.state_dict, as_target, [k for k in all_folds if k != r.fold],
                                 idx=np.asarray(r.val_idx))
        out.append(imp)
    return np.concatenate(out).astype(np.float32)


def write_cv_dir(out: str | Path, cfg: Config, results: Sequence[Any], metrics: Mapping[str, Any], data: Any,
                 with_weights: bool = True, info: Mapping[str, Any] | None = None,
                 writers: Mapping[str, Any] | None = None) -> Path:
    """The model directory of a cross-validation (``blemore train``, a search trial): kind ``cv``.

    Args:
        results: :class:`blemore_core.train.FoldResult` per fold run; metrics: from
            :func:`blemore_core.train.summarize_protocols`; data: the :class:`blemore_core.train.TrainData`.
        with_weights: write ``fold<k>.pt``.
        info, writers: see :func:`write_model_dir`.

    Writes config, thresholds (each protocol's per-fold alpha/beta and the pooled fit on all OOF predictions),
    metrics (:func:`blemore_core.results.metrics_document` plus ``selected_epochs``), the OOF table over the clips
    of the folds run, ``history_fold<k>.json``, ``confusion.json`` (headline protocol; each fold decoded with its
    own alpha, beta) and, for rank-aware models, ``importances.json`` (fold means) and per-clip ``imp_<encoder>``
    columns in the OOF table.
    """
    from blemore_core.decoding import decode
    from blemore_core.results import metrics_document, oof_frame

    results = sorted(results, key=lambda r: r.fold)
    all_folds = sorted(set(np.asarray(data.folds).tolist()))
    truth = np.asarray(data.labels, dtype=np.float32)
    rows = np.concatenate([np.asarray(r.val_idx) for r in results])
    probs = np.concatenate([r.oof_probs for r in results])
    doc = metrics_document(metrics, results)
    headline = metrics["headline"]
    thresholds: dict[str, Any] = {"headline": headline}
    for p in PROTOCOLS:
        if p in metrics:
            thresholds[p] = {"per_fold": [{"fold": r.fold, "alpha": row["alpha"], "beta": row["beta"],
                                           **({"epoch": int(row["epoch"])} if "epoch" in row else {})}
                                          for r, row in zip(results, metrics[p]["per_fold"], strict=True)]}
    thresholds["pooled"] = pooled_thresholds(probs, truth[rows], cfg.thresholds.presence_weight)
    proto = headline if headline in metrics else "val"
    pred = np.concatenate([decode(r.oof_probs, row["alpha"], row["beta"])
                           for r, row in zip(results, metrics[proto]["per_fold"], strict=True)])
    documents: dict[str, Any] = {
        "confusion.json": {"protocol": proto, "rows_truth_cols_pred": label_set_confusion(truth[rows], pred).tolist()}
    }
    for r in results:
        documents[f"history_fold{r.fold}.json"] = r.history
    imps = {str(r.fold): r.importances for r in results if r.importances}
    if imps:
        documents["importances.json"] = imps
    weights = []
    if with_weights:
        for r in results:
            weights.append(WeightsSpec(f"fold{r.fold}.pt", r.state_dict, {
                "fold": int(r.fold), "epoch": int(selected_epochs(doc).get(r.fold, r.best_epoch)),
                "train_folds": [k for k in all_folds if k != r.fold],
                "input_dims": {str(k): int(v) for k, v in data.input_dims.items()}}))
    oof = oof_frame([data.filenames[i] for i in rows], np.asarray(data.folds)[rows], probs)
    if imps:  # per-clip importances of the rank-aware gate, for the importance distribution and top-n frequency
        per_clip = oof_importances(results, data, all_folds)
        for j, e in enumerate(data.encoders):
            oof[f"imp_{e}"] = per_clip[:, j]
    return write_model_dir(out, cfg, kind="cv", weights=weights, thresholds=thresholds, metrics=doc, oof=oof,
                           documents=documents, info=info, writers=writers)
