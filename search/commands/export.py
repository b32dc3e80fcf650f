"""``blemore export --experiment NAME [--metric score|acc_presence|acc_salience] [--rank K] --out best.yaml``.

Writes the chosen finished trial of a search as one self-contained YAML: its resolved config (what ``blemore
train`` and ``blemore retrain`` load as it is) plus an ``export`` section with its thresholds (each protocol's per
fold, and ``pooled``: fitted on all its OOF predictions, what a retrained model decodes with), its selected epochs,
its fold metrics under each protocol and the MLflow run id it came from. Prints the trial's fold metrics and where
it ranks. Errors (no such experiment, no finished trial, a metric that was not recorded) write nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blemore_core.names import METRICS, OBJECTIVES
from search.errors import InputError
from search.safety import add_overwrite


def add_tracking(p: argparse.ArgumentParser) -> None:
    """``--tracking-uri`` as every post-search command takes it."""
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI: the local store (default sqlite:///./mlflow.db, as `blemore search`) "
                   "or a tracking server http://HOST:PORT")


def check_tracking_store(uri: str | None) -> None:
    """An existing SQLite tracking store must be a complete MLflow store (a file that is not a database is named
    here, before MLflow fails on it with a runtime error).

    Raises:
        InputError: naming the URI and the problem.
    """
    from search.preflight import sqlite_path, sqlite_store_problem

    db = sqlite_path(uri or "")
    if db is not None and db.exists():
        problem = "is a directory, not an MLflow SQLite store" if db.is_dir() else sqlite_store_problem(db)
        if problem:
            raise InputError(f"--tracking-uri {uri}: {problem}")


def tracking_inputs(uri: str | None) -> list[Path]:
    """The local files a tracking URI reads (the SQLite database and its ``mlruns`` folder), for
    :func:`check_output`'s ``inputs``."""
    from search.preflight import sqlite_path

    db = sqlite_path(uri or "sqlite:///mlflow.db")
    return [] if db is None else [db, db.parent / "mlruns"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = sub.add_parser("export", help="write a search's best (or K-th) trial as a self-contained config YAML",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="the search name (= MLflow experiment)")
    p.add_argument("--metric", default="score", choices=OBJECTIVES,
                   help="rank finished trials by this fold mean (headline protocol; default score)")
    p.add_argument("--rank", type=int, default=1, help="export the K-th best trial (default 1)")
    p.add_argument("--out", type=Path, required=True, help="output YAML (e.g. best.yaml)")
    add_tracking(p)
    add_overwrite(p)
    p.set_defaults(func=run)


def write_yaml(doc: dict, out: Path) -> Path:
    """Write ``doc`` as YAML atomically (temporary sibling + rename, :func:`search.safety.staged`), with the
    credentials of any URI in it masked (:func:`search.safety.mask_secrets`)."""
    import yaml

    from search.safety import mask_secrets, write_text_atomic

    return write_text_atomic(out, yaml.safe_dump(mask_secrets(doc), sort_keys=False))


def export(experiment: str, out: Path, metric: str = "score", rank: int = 1, tracking_uri: str | None = None,
           analyse: bool = True) -> tuple[dict, list]:
    """Export the ``rank``-th best finished trial of ``experiment`` by ``metric`` to ``out``.

    Returns:
        (the written document, the ranked trials).

    Raises:
        TrialsError: no experiment / finished trial / metric, ``rank`` out of range; nothing is written then.
    """
    from search.trials import TrialsError, client_for, ranked, trial_document

    if rank < 1:
        raise TrialsError(f"--rank {rank}: must be >= 1")
    client, uri = client_for(tracking_uri)
    order = ranked(client, experiment, uri, metric)
    if rank > len(order):
        raise TrialsError(f"--rank {rank}: experiment {experiment!r} has {len(order)} finished trials with {metric!r}")
    trial = order[rank - 1]
    doc, oof = trial_document(client, uri, experiment, trial)
    doc["export"].update({"metric": metric, "rank": rank, "n_finished": len(order)})
    write_yaml(doc, out)
    if analyse:
        try:
            from search.report import log_trial_analysis

            log_trial_analysis(client, trial.run_id, doc, oof)
        except Exception as e:  # the export itself is done; the plots are a bonus
            print(f"warning: per-trial analysis not logged: {e!r}", file=sys.stderr)
    return doc, order


def run(args: argparse.Namespace) -> int:
    """Handler of ``blemore export``: 0 on success; an error raises :class:`InputError` (exit 2, nothing
    written)."""
    from rich.console import Console
    from rich.table import Table

    from blemore_core.artifacts import ArtifactError
    from search.safety import check_output
    from search.trials import TrialsError

    check_output(args.out, "export", inputs=tracking_inputs(args.tracking_uri), overwrite=args.overwrite)
    check_tracking_store(args.tracking_uri)
    try:
        doc, order = export(args.experiment, args.out, args.metric, args.rank, args.tracking_uri)
    except (TrialsError, ArtifactError, ValueError) as e:
        raise InputError(str(e)) from None
    ex = doc["export"]
    console = Console(width=110)
    console.print(f"trial {ex['run_name']} (run {ex['run_id']}): rank {ex['rank']} of {ex['n_finished']} finished "
                  f"trials by {ex['metric']} = {ex['score'].get(ex['metric'])}")
    for proto, fm in ex["fold_metrics"].items():
        t = Table(title=f"protocol {proto}" + ("  (headline)" if proto == ex["headline"] else ""))
        for c in ("fold", "ACC_presence", "ACC_salience", "Score", "alpha", "beta", "epoch"):
            t.add_column(c, justify="right")
        for k, row in zip(fm["folds"], fm["per_fold"], strict=False):
            t.add_row(str(k), f"{row['acc_presence']:.4f}", f"{row['acc_salience']:.4f}", f"{row['score']:.4f}",
                      f"{row['alpha']:.3f}", f"{row['beta']:.3f}", str(ex["selected_epochs"].get(k, "-")))
        mu, sd = fm["mean"], fm["std"]
        t.add_row("mean ± std", *(f"{mu[c]:.4f} ± {sd[c]:.4f}" for c in METRICS),
                  "", "", "", style="bold")
        console.print(t)
    p = ex["thresholds"]["pooled"]
    console.print(f"pooled thresholds (all OOF predictions): alpha={p['alpha']:.3f} beta={p['beta']:.3f}")
    console.print(f"wrote {args.out}")
    return 0
