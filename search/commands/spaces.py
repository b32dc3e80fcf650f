"""``blemore spaces``: list the built-in search spaces, one line each (``blemore search NAME`` runs one).

The built-in spaces ship with the package (``blemore_spaces``, the repository's ``spaces/``), so the list and
``blemore search rank_aware`` work from any directory after ``pip install``. Light at import time.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``spaces`` subcommand."""
    p = subparsers.add_parser(
        "spaces", help="list the built-in search spaces (run one with: blemore search NAME)",
        description="List the search spaces shipped with blemore, one line each: the name to give `blemore search` "
        "and what the space searches. --path prints where each file is (copy one to start your own).",
    )
    p.add_argument("--path", action="store_true", help="print each space's file path instead of its summary")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Print one line per built-in space (``NAME  summary`` or ``NAME  path``); returns 0."""
    from search.space import builtin_spaces, space_summary

    spaces = builtin_spaces()
    width = max((len(n) for n in spaces), default=0)
    for name, path in spaces.items():
        print(f"{name:<{width}}  {path if args.path else space_summary(path)}")
    return 0
