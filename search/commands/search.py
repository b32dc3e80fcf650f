"""``blemore search SPACE.yaml`` (run a distributed hyperparameter search) and ``blemore resume NAME``.

Light at import time: ray, optuna, mlflow and torch are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from search.safety import resume_command


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: auto | ray://HOST:PORT (default: start a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: the machine's)")
    p.add_argument("--storage", default=None, help="Tune storage directory or URI (default: ./ray_results)")
    p.add_argument("--quiet", action="store_true", help="no live progress table")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``search`` and ``resume`` subcommands."""
    p = subparsers.add_parser(
        "search", help="hyperparameter search: Ray Tune + Optuna over 5-fold Ray Train trials, recorded in MLflow",
        description="Run a search space (spaces/*.yaml): one trial = one config trained on all folds in lock step "
        "(fold layout packed: one Ray Train worker per trial; workers: one per fold); Optuna TPE proposes configs, ASHA stops poor trials early; every trial "
        "and fold is recorded in MLflow.",
    )
    p.add_argument("space", help="search-space YAML (e.g. spaces/rank_aware.yaml)")
    p.add_argument("--data", default=None, help="BlEmoRe release directory (default: the space's data.dir, else "
                   "the embedded demo release)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///./mlflow.db with artifacts in ./mlruns)")
    p.add_argument("--name", default=None, help="search name = MLflow experiment (default: the space's name)")
    p.add_argument("--num-samples", type=int, default=None, help="number of trials (default: the space's budget)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at a time (default: the space's budget)")
    p.add_argument("--fold-layout", choices=("packed", "workers"), default=None,
                   help="packed: one Ray Train worker (one process, one CUDA context) trains all folds of a trial; "
                   "workers: one worker per fold, for models too big to share a device (default: the space's "
                   "fold_layout, else packed)")
    p.add_argument("--cpus-per-trial", type=float, default=None,
                   help="packed layout: CPUs of a trial's worker, fractions allowed (default: local Ray: CPUs shared "
                   "evenly by the concurrent trials, at most 1 per fold; cluster: 1 per fold)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="packed layout: GPUs of a trial's worker; 0.1 lets ten trials share one GPU (default 0)")
    p.add_argument("--cpus-per-fold", type=float, default=None,
                   help="workers layout: CPUs per fold worker, fractions allowed (default: local Ray: CPUs shared "
                   "evenly by the concurrent trials, at most 1; cluster: 1)")
    p.add_argument("--gpus-per-fold", type=float, default=0.0,
                   help="workers layout: GPUs per fold worker; fractions let the folds share one GPU (default 0)")
    p.add_argument("--scheduler", choices=("asha", "none"), default=None, help="trial scheduler (default: the space's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler (default 0)")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a failed trial (default 1)")
    p.add_argument("--warm-start", action="append", default=[], metavar="NAME",  # issue 20 (i20)
                   help="seed the sampler with the finished trials of the earlier search NAME (its MLflow "
                   "experiment in the same tracking store); repeatable; adds to the space's warm_start:")
    _common(p)
    p.set_defaults(func=handle_search)

    r = subparsers.add_parser("resume", help="continue an interrupted search (finished trials are not re-run)")
    r.add_argument("name", help="the search name (its directory under --storage)")
    r.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI to use from now on (default: the one the search was started with)")
    _common(r)
    r.set_defaults(func=handle_resume)


def trial_counts(results: Any) -> dict[str, int]:
    """How the trials of a search ended, from Tune's results: ``completed`` (ran to their last epoch or their
    patience stop), ``stopped`` (ended after a result but before that: the scheduler, or the time budget),
    ``cut`` (ended before their first result), ``failed`` (an error)."""
    counts = {"completed": 0, "stopped": 0, "cut": 0, "failed": 0}
    for r in results:
        m = getattr(r, "metrics", None) or {}
        key = ("failed" if getattr(r, "error", None) else "completed" if m.get("final") else
               "stopped" if m.get("score") is not None else "cut")
        counts[key] += 1
    return counts


def ending_line(outcome: Any, requested: int | None, code: int) -> str:
    """The last line of a search: why it ended (all trials ran, Ctrl-C, the time budget, failures), the counts of
    :func:`trial_counts` and the exit code."""
    c = trial_counts(outcome.results)
    n = sum(c.values())
    of = f"{n} of {requested}" if requested else f"{n}"
    if outcome.interrupted:
        why = "interrupted (Ctrl-C)"
    elif requested and n < requested:
        why = "time budget reached"
    elif c["failed"]:
        why = "finished with failed trials"
    else:
        why = "finished"
    return (f"search {outcome.name!r} {why}: {of} trials: {c['completed']} completed, {c['stopped']} stopped early "
            f"(scheduler or budget), {c['cut']} cut before a first result, {c['failed']} failed; exit code {code}")


def _finish(outcome: Any, requested: int | None, storage: str | None) -> int:
    """Summary table, the ending line and the exit code: 130 interrupted, 1 a trial failed, else 0."""
    from search.runner import print_summary

    print_summary(outcome)
    code = 130 if outcome.interrupted else 1 if any(r.error for r in outcome.results) else 0
    print(ending_line(outcome, requested, code), file=sys.stderr if code else sys.stdout)
    if outcome.interrupted:
        print(f"search interrupted; continue it with: {resume_command(outcome.name, storage)}", file=sys.stderr)
    return code


def handle_search(args: argparse.Namespace) -> int:
    """Run ``blemore search``; returns 0, 1 (a trial failed) or 130 (interrupted); invalid space, options or an
    unreachable service raise (exit 2, one line; see :mod:`search.cli`)."""
    from search.runner import SearchOptions, run_search

    opts = SearchOptions(
        name=args.name, data=args.data, address=args.address, num_cpus=args.num_cpus, tracking_uri=args.tracking_uri,
        num_samples=args.num_samples, max_concurrent=args.max_concurrent, cpus_per_fold=args.cpus_per_fold,
        gpus_per_fold=args.gpus_per_fold, fold_layout=args.fold_layout, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, scheduler=args.scheduler, storage=args.storage, seed=args.seed,
        max_failures=args.max_failures, verbose=0 if args.quiet else 1, warm_start=tuple(args.warm_start),
    )
    outcome = run_search(args.space, opts)
    return _finish(outcome, args.num_samples or _space_samples(args.space), args.storage)


def handle_resume(args: argparse.Namespace) -> int:
    """Run ``blemore resume``; returns 0, 1 (a trial failed) or 130 (interrupted again); no such search or an
    unreachable service raise (exit 2, one line)."""
    from search.runner import SearchOptions, resume_search
    from search.safety import check_search_name

    check_search_name(args.name, "blemore resume NAME")
    outcome = resume_search(args.name, storage=args.storage,
                            overrides=SearchOptions(address=args.address, num_cpus=args.num_cpus,
                                                    tracking_uri=args.tracking_uri, verbose=0 if args.quiet else 1))
    return _finish(outcome, None, args.storage)


def _space_samples(space: str) -> int | None:
    """The space file's ``budget.num_samples`` (None when it cannot be read: the count is then not compared)."""
    from blemore_core.io import load_yaml

    try:
        budget = (load_yaml(space) or {}).get("budget") or {}
        n = budget.get("num_samples")
        return n if isinstance(n, int) and not isinstance(n, bool) else None
    except (OSError, ValueError, AttributeError):
        return None
