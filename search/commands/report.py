"""``blemore report --experiment NAME``: what mattered in a search.

Rebuilds an Optuna study from the finished trials' MLflow runs, computes fANOVA hyperparameter importances for the
objective(s) and prints them as a table; logs a search-level run (tag ``role=search_report``) with the importances,
the best-so-far curve, a parallel-coordinates plot, the Pareto front of a two-objective search, the top trials and
the best trial's analyses (see :mod:`search.report`). ``blemore search`` writes the same report when it ends.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from search.commands.export import add_tracking
from search.safety import add_overwrite


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    p = sub.add_parser("report", help="hyperparameter importances and plots of a search (search-level MLflow run)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="the search name (= MLflow experiment)")
    p.add_argument("--out", type=Path, default=None, help="also keep the report files in this directory")
    p.add_argument("--top", type=int, default=10, help="rows of the top-trials table (default 10)")
    add_tracking(p)
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``blemore report``: 0 on success; an error raises :class:`InputError` (exit 2; ``--out`` is
    written whole or not at all)."""
    import contextlib

    from search.commands.export import check_tracking_store, tracking_inputs
    from search.errors import InputError
    from search.report import print_report, search_report
    from search.safety import check_output, staged
    from search.trials import TrialsError

    if args.out is not None:
        check_output(args.out, "report", inputs=tracking_inputs(args.tracking_uri), overwrite=args.overwrite)
    check_tracking_store(args.tracking_uri)
    try:
        with staged(args.out, directory=True) if args.out is not None else contextlib.nullcontext() as tmp:
            rep = search_report(args.experiment, args.tracking_uri, out_dir=tmp, top_k=args.top)
    except (TrialsError, ValueError) as e:
        raise InputError(str(e)) from None
    print_report(rep)
    return 0
