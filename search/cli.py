"""The ``blemore`` command line: ``blemore <command> [options]``.

Commands are registered by the modules of :mod:`search.commands`; each module adds its subparser and sets
``func`` to the handler, which returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand modules, in help order
COMMAND_MODULES: tuple[str, ...] = (
    "search.commands.synth",
    "search.commands.train",
    "search.commands.evaluate",
    "search.commands.search",
    "search.commands.report",
    "search.commands.export",
    "search.commands.retrain",
    "search.commands.predict",
    "search.commands.ensemble",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="blemore",
        description="Blended emotion recognition (BlEmoRe): synthetic data, training, distributed search, export.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # command not built yet
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``blemore`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
