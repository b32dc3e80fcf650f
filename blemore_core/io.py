"""Bounded reading of every YAML, JSON and table file the CLI takes (issue 21).

``yaml.safe_load`` is safe against code, not against size: a "billion laughs" document (nine levels of nine
aliases) expands to ~10^9 nodes in the code that walks the result, and an endless file (``/dev/zero``) is read
until memory runs out. Every document of the project is therefore read here, with three bounds:

* the file is read with a byte cap (:data:`MAX_DOC_BYTES` for configs, spaces, exports and model documents,
  :data:`MAX_TABLE_BYTES` for prediction files and label tables): reading stops at the cap, whatever the file is;
  a named pipe is refused before it is opened (opening one would wait for a writer);
* YAML aliases (``*name``, also the merge key ``<<: *name``) are refused: no configuration of the project needs
  them, and without aliases a document's size is bounded by the file's;
* nesting deeper than :data:`MAX_DEPTH` is refused, in YAML while composing (before any recursion) and in JSON
  after parsing (Python's parser stops at ~1000 levels with ``RecursionError``, reported the same way).

Each refusal is a :class:`BoundedInputError` naming the file (and, for YAML, the line), raised within a second:
it is a ``yaml.YAMLError`` (the config and space loaders report it as they report a syntax error) and a
``ValueError`` (the CLI's input-error contract: exit 2).

:func:`key_line` gives the line of a dotted key in a YAML file, so that config and space errors can name the line
as well as the key. This module imports only PyYAML and the standard library (``blemore_core`` never imports
``search``).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

#: byte cap of a YAML or JSON document (config, space, export, ensemble, model.json, metrics.json...)
MAX_DOC_BYTES = 16 * 1024 * 1024
#: byte cap of a prediction file (its JSON, also inside a zip) and of a label / metadata table
MAX_TABLE_BYTES = 64 * 1024 * 1024
#: deepest nesting of mappings and lists accepted in a YAML or JSON document
MAX_DEPTH = 64

__all__ = ["MAX_DOC_BYTES", "MAX_TABLE_BYTES", "MAX_DEPTH", "BoundedInputError", "read_capped", "load_yaml",
           "loads_json", "load_json", "check_depth", "key_line"]


class BoundedInputError(yaml.YAMLError, ValueError):
    """A file refused by a bound (size, aliases, nesting) or unreadable as YAML/JSON; the message names the file
    and, where known, the line."""


def _size_text(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def read_capped(path: str | os.PathLike, limit: int = MAX_DOC_BYTES, what: str = "file") -> bytes:
    """The bytes of ``path``, read up to ``limit`` (an endless device such as ``/dev/zero`` stops there).

    Args:
        path: the file; limit: the byte cap; what: the file's role in messages (``"config"``, ``"predictions"``).

    Raises:
        BoundedInputError: the file is larger than ``limit``, or a named pipe (message names the file and cap).
        OSError: missing or unreadable file (``FileNotFoundError``, ``IsADirectoryError``...), as ``open`` raises.
    """
    path = Path(path)
    if stat.S_ISFIFO(path.stat().st_mode):
        raise BoundedInputError(f"{path}: is a named pipe; a {what} must be a regular file")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise BoundedInputError(f"{path}: {what} larger than the {_size_text(limit)} cap (or endless); refused")
    return data


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and nesting deeper than :data:`MAX_DEPTH` while composing."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            raise BoundedInputError(f"line {ev.start_mark.line + 1}: YAML alias *{ev.anchor} refused (aliases "
                                    "can expand without bound; write the value out)")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise BoundedInputError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels; refused")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(path: str | os.PathLike, text: str | None = None, limit: int = MAX_DOC_BYTES,
              what: str = "YAML file", named: bool = True) -> Any:
    """Parse a YAML document with the bounds of the module docstring (safe types only, as ``yaml.safe_load``).

    Args:
        path: the file (named in errors); text: its text when already read (then only the bounds apply).
        limit: byte cap; what: the file's role in messages.
        named: start messages with the file (False: the caller names it, e.g. ``f"{path}: cannot read: {e}"``).

    Returns:
        The parsed document (None for an empty file).

    Raises:
        BoundedInputError (a ``yaml.YAMLError`` and a ``ValueError``): too large, an alias, too deep, or a YAML
            syntax error; the message starts with the file and gives the line.
        OSError: missing or unreadable file.
    """
    head = f"{path}: " if named else ""
    try:
        raw = read_capped(path, limit, what) if text is None else text
        if text is not None and len(text.encode("utf-8", "surrogatepass")) > limit:
            raise BoundedInputError(f"{path}: {what} larger than the {_size_text(limit)} cap; refused")
    except BoundedInputError as e:
        raise BoundedInputError(f"{head}{str(e).removeprefix(f'{path}: ')}") from None
    try:
        return yaml.load(raw, Loader=_BoundedLoader)  # noqa: S506 - _BoundedLoader is a SafeLoader
    except BoundedInputError as e:
        raise BoundedInputError(f"{head}{e}") from None
    except yaml.YAMLError as e:
        raise BoundedInputError(f"{head}{' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise BoundedInputError(f"{head}not UTF-8 text ({e.reason} at byte {e.start})") from None


def check_depth(obj: Any, limit: int = MAX_DEPTH) -> int:
    """Deepest nesting of mappings and lists in ``obj`` (iterative: safe on any depth).

    Raises:
        ValueError: deeper than ``limit`` (message: the depth cap).
    """
    stack, deepest = [(obj, 1)], 0
    while stack:
        o, d = stack.pop()
        if isinstance(o, Mapping):
            children = list(o.values())
        elif isinstance(o, list):
            children = o
        else:
            continue
        deepest = max(deepest, d)
        if d > limit:
            raise ValueError(f"nested deeper than {limit} levels; refused")
        stack.extend((c, d + 1) for c in children)
    return deepest


def loads_json(raw: bytes | str, where: str) -> Any:
    """Parse JSON text and check its nesting depth.

    Args:
        raw: the bytes (UTF-8) or text; where: the file named in errors (e.g. ``sub.zip!predictions.json``).

    Raises:
        BoundedInputError: invalid UTF-8 or JSON, or nesting deeper than :data:`MAX_DEPTH` (names ``where``).
    """
    try:
        obj = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError as e:
        raise BoundedInputError(f"{where}: not valid JSON (not UTF-8: {e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise BoundedInputError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise BoundedInputError(f"{where}: not valid JSON (nested deeper than {MAX_DEPTH} levels); refused") from None
    try:
        check_depth(obj)
    except ValueError as e:
        raise BoundedInputError(f"{where}: {e}") from None
    return obj


def load_json(path: str | os.PathLike, limit: int = MAX_DOC_BYTES, what: str = "JSON file") -> Any:
    """Read and parse a JSON file with the byte cap and the depth check.

    Raises:
        BoundedInputError: too large, invalid, too deep (names the file). OSError: missing or unreadable.
    """
    return loads_json(read_capped(path, limit, what), str(path))


def key_line(path: str | os.PathLike, dotted: str, text: str | None = None) -> int | None:
    """1-based line of the dotted key ``dotted`` (``"model.top_n"``, ``"params.train.lr"``) in a YAML file.

    A key written flat (``train.lr:`` under ``params:``) and nested (``train: {lr: ...}``) are both found: at each
    level the longest key that is a prefix of the remaining dotted path wins. A list index (``members.0``) selects
    an item.

    Returns:
        The line of the deepest key found (the line of its parent when the last part is missing), or None when
        the file cannot be read or not even the first part is there. Never raises.
    """
    try:
        raw = read_capped(path, MAX_DOC_BYTES).decode("utf-8") if text is None else text
        node = yaml.compose(raw, Loader=_BoundedLoader)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    parts, line = [p for p in dotted.split(".") if p], None
    while parts and node is not None:
        if isinstance(node, yaml.SequenceNode) and parts[0].isdigit() and int(parts[0]) < len(node.value):
            node, parts = node.value[int(parts[0])], parts[1:]
            line = node.start_mark.line + 1
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        best = None
        for k, v in node.value:
            key = str(k.value).split(".")
            if key == parts[: len(key)] and (best is None or len(key) > len(best[0])):
                best = (key, k, v)
        if best is None:
            break
        key, k, node = best
        parts, line = parts[len(key):], k.start_mark.line + 1
    return line
