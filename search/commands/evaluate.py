"""``blemore evaluate``: score a prediction file (CodaBench JSON or zip) against labelled metadata.

Examples::

    blemore evaluate --predictions oof.json --metadata data/train_metadata.csv
    blemore evaluate --predictions submission.zip --labels data/test_labels.csv --json

Prints ACC_presence, ACC_salience and Score (docs/ARCHITECTURE.md section 3). The prediction file must cover every clip of the label
table, exactly (training names are labelled by the filename grammar, test ids by the label columns of a
synthetic release's ``test_labels.csv``); ``--allow-partial`` scores the clips it has, with a loud notice that the
numbers are not comparable to a complete submission. Exit code 0 on success, 2 for a malformed, truncated or
incomplete file (one line naming the file and the clip).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a prediction JSON/zip against train_metadata.csv or test_labels.csv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--predictions", required=True, metavar="FILE",
                   help="submission file: .zip holding one JSON, or .json ({\"predictions\": {name: [...]}})")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--metadata", metavar="CSV", help="train_metadata.csv (labels from the filename grammar)")
    src.add_argument("--labels", metavar="CSV",
                     help="a label table with a filename column, e.g. a synthetic release's test_labels.csv")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object instead of a table")
    p.add_argument("--allow-partial", action="store_true",
                   help="score a prediction file that covers only part of the label table (printed loudly)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler: returns 0 on success; raises :class:`search.cli.InputError` (exit 2) for a malformed, truncated or
    incomplete prediction file or a bad label table."""
    from blemore_core.metrics import align, evaluate
    from blemore_core.submission import check_coverage, read_label_table, read_predictions
    from search.errors import InputError

    table = args.metadata or args.labels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            preds = read_predictions(args.predictions)
            truth = read_label_table(table)
            try:
                names, p, y = align(preds, truth)
            except ValueError as e:
                raise ValueError(f"{args.predictions}: {e} ({table})") from None
            partial = None
            try:
                check_coverage(preds, list(truth), source=str(args.predictions))
            except ValueError as e:
                if not args.allow_partial or len(preds) > len(truth):
                    raise ValueError(f"{e} of the {len(truth)} in {table}"
                                     + ("" if args.allow_partial else "; pass --allow-partial to score a subset")) from None
                partial = f"{len(names)} of the {len(truth)} clips of {table}"
        except ValueError as e:
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
            raise InputError(str(e)) from None
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if partial:
        print(f"WARNING: PARTIAL EVALUATION (--allow-partial): scored {partial}; these numbers are NOT comparable "
              "to a complete submission", file=sys.stderr)

    m = evaluate(p, y)
    n_blend = int(((y > 0).sum(axis=1) == 2).sum())
    result = {**m, "n_clips": len(names), "n_blended": n_blend, **({"partial": True} if partial else {})}
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    print(f"predictions: {args.predictions}\nlabels:      {table}" + (f"\nPARTIAL:     {partial}" if partial else ""))
    t = Table()
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("ACC_presence", f"{m['acc_presence']:.4f}")
    t.add_row("ACC_salience", f"{m['acc_salience']:.4f}")
    t.add_row("Score", f"{m['score']:.4f}")
    t.add_row("clips", str(len(names)))
    t.add_row("blended clips", str(n_blend))
    Console(width=100).print(t)
    return 0
