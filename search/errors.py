"""Error types of the command-line contract (see :mod:`search.cli`)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message is one line naming the file, row (line number), field and value (exit 2)."""


__all__ = ["InputError"]
