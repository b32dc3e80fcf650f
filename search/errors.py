"""Error types of the command-line contract (see :mod:`search.cli`)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message is one line naming the file, row (line number), field and value (exit 2)."""


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during (``__cause__``, else ``__context__``), outermost
    first; a chain that loops back on itself is cut where it repeats."""
    out: list[BaseException] = []
    x: BaseException | None = exc
    while x is not None and all(x is not y for y in out):
        out.append(x)
        x = x.__cause__ or x.__context__
    return out


__all__ = ["InputError", "exception_chain"]
