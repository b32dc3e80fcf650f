"""Reading a finished search back from MLflow: its trials, their ranking and their artifacts (docs/ARCHITECTURE.md section 7).

Used by ``blemore export``, ``ensemble`` and ``report``. A trial is the parent run (tag ``role=parent``) of
:mod:`search.records`; a *finished* trial is one that ran every epoch and its final protocols (status
``FINISHED``, tag ``trial_status=completed``): only those carry the headline ``score`` and the artifacts
(``config.yaml``, ``oof.parquet``, ``thresholds.json``, ``metrics.json``). Trials stopped early by the scheduler
and failed trials are not ranked.

Works against the local store (``sqlite:///...``) and a tracking server (``http://...``): a server that does not
answer is reported within seconds, naming it.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blemore_core.names import DEFAULT_OBJECTIVE, OBJECTIVES, PROTOCOLS
from search.errors import InputError

#: metrics ``export``/``ensemble`` may rank by (fold means of the headline protocol)
RANK_METRICS: tuple[str, ...] = OBJECTIVES
#: artifacts of a finished trial's parent run
TRIAL_ARTIFACTS: tuple[str, ...] = ("config.yaml", "metrics.json", "thresholds.json", "oof.parquet")


class TrialsError(InputError):
    """The experiment, a finished trial, a metric or an artifact is missing; the message names it (bad input:
    the CLI reports it as ``blemore <command>: error: ...``, exit 2)."""


def default_uri() -> str:
    """The tracking URI ``blemore search`` uses by default (``sqlite:///./mlflow.db``)."""
    from search.defaults import default_tracking_uri

    return default_tracking_uri(".")


def client_for(tracking_uri: str | None) -> tuple[Any, str]:
    """An ``MlflowClient`` on ``tracking_uri`` (default :func:`default_uri`) and the URI.

    Raises:
        TrialsError: a local SQLite store that does not exist, or an HTTP server that does not answer within
            5 seconds (both named).
    """
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            raise TrialsError(f"--tracking-uri {uri}: no MLflow store at {db} (run `blemore search` first, or pass "
                              "the --tracking-uri the search used)")
    elif uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except (urllib.error.URLError, OSError) as e:
            raise TrialsError(f"--tracking-uri {uri}: the MLflow tracking server does not answer ({e}); start it "
                              "(e.g. cluster/ scripts, or `mlflow server --host 127.0.0.1`)") from None
    from search.compat import quiet_mlflow_console

    quiet_mlflow_console()
    return MlflowClient(uri), uri


@dataclass
class Trial:
    """One trial's parent run.

    Attributes:
        run_id: MLflow run id; name: run name; trial_id: Tune trial id; status: ``completed``, ``stopped`` or
        ``error``; metrics: latest value of every metric; params: the flattened resolved config (strings);
        tags: run tags; start_time: ms since the epoch.
    """

    run_id: str
    name: str
    trial_id: str
    status: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    start_time: int


def experiment_id(client: Any, name: str, uri: str) -> str:
    """Id of experiment ``name``.

    Raises:
        TrialsError: no such experiment (lists the experiments of the store).
    """
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise TrialsError(f"--experiment {name!r}: no such experiment in {uri} (experiments: {names or 'none'})")
    return exp.experiment_id


def trials(client: Any, name: str, uri: str) -> list[Trial]:
    """Every trial (parent run) of experiment ``name``, in start order."""
    from search.records.naming import ROLE_TAG, TRIAL_TAG

    exp = experiment_id(client, name, uri)
    runs = client.search_runs([exp], filter_string=f"tags.{ROLE_TAG} = 'parent'", max_results=50000,
                              order_by=["attributes.start_time ASC"])
    out = []
    for r in runs:
        t = r.data.tags
        status = t.get("trial_status") or ("completed" if r.info.status == "FINISHED" else r.info.status.lower())
        if r.info.status == "FAILED":
            status = "error"
        out.append(Trial(r.info.run_id, r.info.run_name or t.get("mlflow.runName", r.info.run_id),
                         t.get(TRIAL_TAG, ""), status, dict(r.data.metrics), dict(r.data.params), dict(t),
                         int(r.info.start_time or 0)))
    return out


def finished(all_trials: list[Trial]) -> list[Trial]:
    """The trials that completed every epoch and their final protocols."""
    return [t for t in all_trials if t.status == "completed"]


def search_objectives(client: Any, name: str, uri: str) -> tuple[str, ...]:
    """The objectives of search ``name`` as its experiment records them (tag
    :data:`search.records.naming.OBJECTIVES_TAG`); ``("score",)`` for a search recorded before the tag existed.

    Raises:
        TrialsError: no such experiment.
    """
    from search.records.naming import OBJECTIVES_TAG

    tag = client.get_experiment(experiment_id(client, name, uri)).tags.get(OBJECTIVES_TAG)
    return tuple(m for m in tag.split(",") if m) if tag else (DEFAULT_OBJECTIVE,)


def ranked(client: Any, name: str, uri: str, metric: str | None = None) -> list[Trial]:
    """Finished trials of experiment ``name`` best first by ``metric`` (ties: earlier trial first); ``metric`` None:
    the search's objective (:func:`search_objectives`).

    Raises:
        TrialsError: unknown experiment, no finished trial, ``metric`` recorded by none of them (names the
            metrics that were recorded), or ``metric`` None for a Pareto search (two objectives, no single best:
            the message names them, to choose one).
    """
    if metric is None:
        objectives = search_objectives(client, name, uri)
        if len(objectives) > 1:
            raise TrialsError(f"--metric: {name!r} is a Pareto search of {', '.join(objectives)} (no single best "
                              f"trial); choose one with --metric {'|'.join(objectives)}")
        metric = objectives[0]
    if metric not in RANK_METRICS:
        raise TrialsError(f"--metric {metric!r}: not a ranking metric (valid: {', '.join(RANK_METRICS)})")
    all_t = trials(client, name, uri)
    fin = finished(all_t)
    if not fin:
        counts = {s: sum(t.status == s for t in all_t) for s in sorted({t.status for t in all_t})}
        raise TrialsError(f"--experiment {name!r}: no finished trial in {uri} (trials by status: {counts or 'none'})")
    have = [t for t in fin if metric in t.metrics and math.isfinite(t.metrics[metric])]
    if not have:
        rec = sorted({k for t in fin for k in t.metrics if "/" not in k})
        raise TrialsError(f"--metric {metric!r}: not recorded by any finished trial of {name!r} (recorded: {rec})")
    return sorted(have, key=lambda t: (-t.metrics[metric], t.start_time))


def download(client: Any, uri: str, run_id: str, names: tuple[str, ...] | list[str], dest: str | Path | None = None,
             optional: tuple[str, ...] = ()) -> Path:
    """Download artifacts ``names`` of run ``run_id`` (store ``uri``) into ``dest`` (default: a new temporary
    directory).

    Raises:
        TrialsError: an artifact not in ``optional`` is missing (names the run and the artifact).
    """
    import mlflow.artifacts

    dest = Path(dest or tempfile.mkdtemp(prefix="blemore-trial-"))
    present = {os.path.basename(f.path) for f in client.list_artifacts(run_id)}
    for n in names:
        if n not in present:
            if n in optional:
                continue
            raise TrialsError(f"run {run_id}: artifact {n!r} missing (present: {sorted(present)})")
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=n, dst_path=str(dest),
                                            tracking_uri=uri)
    return dest


def trial_document(client: Any, uri: str, experiment: str, trial: Any, dest: Path | None = None) -> tuple[dict, Any]:
    """The exported document of one finished trial and its OOF table (``blemore export`` writes the document;
    the search report analyses the OOF table).

    Returns:
        (``{**config, "export": {...}}``, OOF DataFrame).

    Raises:
        TrialsError: an artifact is missing; ArtifactError / ConfigError: naming a malformed artifact.
    """
    import numpy as np

    from blemore_core.artifacts import ArtifactError, pooled_thresholds, read_json, selected_epochs
    from blemore_core.config import Config
    from blemore_core.labels import soft_labels
    from blemore_core.results import PROB_COLUMNS, read_oof

    d = download(client, uri, trial.run_id, TRIAL_ARTIFACTS, dest)
    cfg = Config.from_yaml(d / "config.yaml")
    metrics = read_json(d / "metrics.json")
    thresholds = read_json(d / "thresholds.json")
    try:
        oof = read_oof(d / "oof.parquet")
    except Exception as e:
        raise ArtifactError(f"run {trial.run_id}: oof.parquet: {e}") from None
    probs = oof[list(PROB_COLUMNS)].to_numpy(np.float32)
    pooled = thresholds.get("pooled") or pooled_thresholds(probs, soft_labels(oof["filename"]),
                                                             cfg.thresholds.presence_weight)
    epochs = selected_epochs(metrics)
    if not epochs:  # older trials: the fold runs' best_epoch
        epochs = {k: int(r.data.metrics["best_epoch"]) for k, r in fold_runs(client, trial).items()
                  if "best_epoch" in r.data.metrics}
    headline = metrics.get("headline", cfg.thresholds.protocol)
    protos = [p for p in PROTOCOLS if p in metrics]
    export = {
        "experiment": experiment,
        "run_id": trial.run_id,
        "trial_id": trial.trial_id,
        "run_name": trial.name,
        "tracking_uri": uri,
        "headline": headline,
        "score": {m: trial.metrics.get(m) for m in OBJECTIVES},
        "selected_epochs": {int(k): int(v) for k, v in sorted(epochs.items())},
        "thresholds": {
            "pooled": {k: float(v) for k, v in pooled.items()},
            **{p: [{"fold": int(r["fold"]), "alpha": float(r["alpha"]), "beta": float(r["beta"])}
                   for r in thresholds[p]["per_fold"]] for p in protos if p in thresholds},
        },
        "fold_metrics": {p: {"folds": [int(k) for k in metrics.get("folds", [])],
                             "per_fold": [{k: float(v) for k, v in row.items()} for row in metrics[p]["per_fold"]],
                             "mean": {k: float(v) for k, v in metrics[p]["mean"].items()},
                             "std": {k: float(v) for k, v in metrics[p]["std"].items()}} for p in protos},
    }
    return {**cfg.to_dict(), "export": export}, oof


def fold_runs(client: Any, parent: Trial) -> dict[int, Any]:
    """``{fold: child run}`` of a trial."""
    from search.records.naming import ROLE_TAG, TRIAL_TAG

    exp = client.get_run(parent.run_id).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.{TRIAL_TAG} = '{parent.trial_id}' and "
                              f"tags.{ROLE_TAG} = 'fold'", max_results=100)
    return {int(r.data.tags["fold"]): r for r in runs}
