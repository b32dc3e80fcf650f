"""The ``blemore`` command line: ``blemore <command> [options]``.

Commands are registered by the modules of :mod:`search.commands`; each module adds its subparser and sets
``func`` to the handler, which returns the process exit code.

One error contract for every command (handled here, so that no command can differ):

* bad input (a file, row, field or option value the user can fix): ONE line on stderr naming the file, the row
  (as the file's line number), the field and the value; exit code 2; nothing written. Handlers signal it by
  raising :class:`InputError` (or a :class:`ValueError` subclass that is an input error by nature:
  ``ConfigError``, ``SpaceError``, ``SubmissionError``, ``PreflightError``); argparse's own errors (``--folds x``)
  follow the same one-line form.
* runtime failure (anything else): exit code 1, the cause in one line and the path of a log file holding the full
  traceback. Tracebacks go to the terminal only with ``-v``.
* Ctrl-C: exit code 130, also when the command then failed because of it (an error raised while a Ctrl-C was
  being handled, or any error after this process received SIGINT: e.g. an SQLite write cut by Ctrl-C leaves
  the store locked for this process, and a later write reports ``database is locked``); the error's traceback
  goes to the log file, named on the ``interrupted`` line.
* disk full while writing ``--out``: exit code 1, ``... error: <path>: no space left on device``.

Everything a command prints goes through :func:`search.safety.mask_uri` (credentials in URIs masked), and its
temporary files live in one folder removed when it ends (:func:`search.safety.command_tempdir`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import os
import re
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterator

from search.errors import InputError, exception_chain

#: subcommand modules, in help order
COMMAND_MODULES: tuple[str, ...] = (
    "search.commands.synth",
    "search.commands.train",
    "search.commands.evaluate",
    "search.commands.search",
    "search.commands.spaces",
    "search.commands.report",
    "search.commands.export",
    "search.commands.retrain",
    "search.commands.predict",
    "search.commands.ensemble",
)

#: exit codes of the error contract
EXIT_RUNTIME = 1
EXIT_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (``blemore train: error: argument --folds: ...``), exit 2."""

    def error(self, message: str) -> None:  # noqa: D102
        self.exit(EXIT_INPUT, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _input_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that are bad input by nature (imported lazily: the CLI must start fast)."""
    types: list[type[BaseException]] = [InputError]
    for mod, name in (("blemore_core.config", "ConfigError"), ("search.space", "SpaceError"),
                      ("blemore_core.submission", "SubmissionError"), ("search.preflight", "PreflightError"),
                      ("blemore_core.io", "BoundedInputError"), ("blemore_core.artifacts", "ArtifactError"),
                      ("search.trials", "TrialsError")):
        m = sys.modules.get(mod)  # only a module a handler already imported can have raised it
        if m is not None and hasattr(m, name):
            types.append(getattr(m, name))
    return tuple(types)


_YAML_ERROR = re.compile(r"^(?P<indent>\s*)(?P<file>[^\s:]+\.ya?ml)(?: \((?P<sub>[\w.\[\]]+)\))?: (?P<rest>.*)$")
_ERROR_KEY = re.compile(r"^(?:(?P<lead>[\w.\[\]]+): )?(?:unknown key '(?P<unknown>[\w.]+)'|)")


def with_yaml_lines(message: str) -> str:
    """Config and space errors (``<file>.yaml: <key>: <problem>``, ``<file>.yaml: unknown key '<key>'``, a member's
    ``<file>.yaml (ensemble.members[0].config): ...``) with the YAML line of the key inserted after the file:
    ``<file>.yaml: line 7: train.lr: expected a number, got 'abc'`` (README: "file, line, field and value"). Lines
    that already give one, or whose key is not found, are left as they are."""
    from blemore_core.io import key_line

    out = []
    for ln in str(message).split("\n"):
        m = _YAML_ERROR.match(ln)
        if m and not re.match(r"line \d+", m["rest"]) and "(line " not in m["rest"]:
            k = _ERROR_KEY.match(m["rest"])
            key = ".".join(p for p in (m["sub"], k["lead"] if k else None, k["unknown"] if k else None) if p)
            key = re.sub(r"\[(\d+)\]", r".\1", key)
            line = key_line(m["file"], key) if key and Path(m["file"]).is_file() else None
            if line:
                sub = f" ({m['sub']})" if m["sub"] else ""
                ln = f"{m['indent']}{m['file']}{sub}: line {line}: {m['rest']}"
        out.append(ln)
    return "\n".join(out)


def one_line(message: str) -> str:
    """A gathered message with a single item (``"invalid config:\\n  f: k: ..."``) as one line; a message listing
    several problems keeps one line per problem."""
    lines = [ln for ln in str(message).splitlines() if ln.strip()]
    if len(lines) == 2 and lines[1].startswith(" "):
        return lines[1].strip()
    return "\n".join(lines) if lines else str(message)


def log_dir() -> Path:
    """Where runtime-failure logs go: ``$BLEMORE_LOG_DIR``, else ``<tmp>/blemore-logs``."""
    return Path(os.environ.get("BLEMORE_LOG_DIR") or Path(tempfile.gettempdir()) / "blemore-logs")


def _write_log(command: str, argv: list[str], exc: BaseException, d: Path | None = None) -> Path | None:
    from search.safety import mask_uri

    try:
        d = d or log_dir()
        d.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = d / f"blemore-{command}-{stamp}-{os.getpid()}.log"
        path.write_text(mask_uri("blemore " + " ".join(argv) + "\n\n" + "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))))
        return path
    except OSError:
        return None


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = _Parser(
        prog="blemore",
        description="Blended emotion recognition (BlEmoRe): synthetic data, training, distributed search, export.",
    )
    parser.add_argument("-v", "--verbose", dest="traceback", action="store_true",
                        help="print the full traceback of a runtime failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():
        if not any("-v" in a.option_strings for a in p._actions):
            p.add_argument("-v", "--verbose", dest="traceback", action="store_true", default=argparse.SUPPRESS,
                           help="print the full traceback of a runtime failure")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``blemore`` console script; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, one line already printed)
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INPUT
    from search.safety import command_tempdir, masked_console

    logs = log_dir()  # before the command's own temporary folder becomes tempfile's default
    with masked_console(), command_tempdir(args.command), _sigint_noted():
        return _run(args, argv, logs)


_SIGINT_RECEIVED = False  # set by the SIGINT handler of _sigint_noted while a command runs


@contextlib.contextmanager
def _sigint_noted() -> Iterator[None]:
    """While the block runs, SIGINT raises KeyboardInterrupt as Python's default handler does and also sets
    ``_SIGINT_RECEIVED`` (read by :func:`_caused_by_ctrl_c`). Ray Tune replaces the handler while ``tuner.fit``
    runs and puts this one back after its first SIGINT. Outside the main thread (no handler can be set): nothing."""
    global _SIGINT_RECEIVED
    _SIGINT_RECEIVED = False

    def _on_sigint(signum: int, frame: Any) -> None:
        global _SIGINT_RECEIVED
        _SIGINT_RECEIVED = True
        raise KeyboardInterrupt

    try:
        saved = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def _caused_by_ctrl_c(exc: BaseException) -> bool:
    """True when ``exc`` was raised while a KeyboardInterrupt was handled (one in its ``__context__`` /
    ``__cause__`` chain, e.g. MLflow's error for the SQLite write the Ctrl-C cut), or after this process received
    SIGINT (a later write then finds the store locked by the cut one)."""
    return any(isinstance(x, KeyboardInterrupt) for x in exception_chain(exc)) or _SIGINT_RECEIVED


def _run(args: argparse.Namespace, argv: list[str], logs: Path) -> int:
    """Run the handler under the error contract (module docstring); messages go out through the masking console."""
    from search.safety import disk_full_message

    prog = f"blemore {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if _caused_by_ctrl_c(e):  # the failure is the interruption's consequence: say interrupted, log the error
            log = _write_log(args.command, argv, e, logs)
            print(f"{prog}: interrupted" + (f" (then {type(e).__name__}; full log: {log})" if log else ""),
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(e, _input_error_types()):
            text = e.with_lines() if hasattr(e, "with_lines") else str(e)  # structured lines (config, space)
            print(f"{prog}: error: {one_line(with_yaml_lines(text))}", file=sys.stderr)
            if getattr(args, "traceback", False):
                traceback.print_exc()
            return EXIT_INPUT
        full = disk_full_message(e, getattr(args, "out", None))
        if full:
            print(f"{prog}: error: {full}", file=sys.stderr)
            return EXIT_RUNTIME
        log = _write_log(args.command, argv, e, logs)
        first = " ".join(str(e).split()) or "(no message)"
        print(f"{prog}: failed: {type(e).__name__}: {first[:500]}"
              + (f" (full log: {log}" if log else " (")
              + ("" if getattr(args, "traceback", False) else "; -v prints the traceback") + ")", file=sys.stderr)
        if getattr(args, "traceback", False):
            traceback.print_exc()
        return EXIT_RUNTIME


def entry() -> None:
    """The console script: exit with :func:`main`'s code.

    After Ctrl-C in a process that imported Ray, the command's own clean-up has run by the time ``main`` returns
    (MLflow runs closed, the name lock released, the Ray it started shut down), and the process then leaves
    through ``os._exit``: Python's own finalisation after an interrupt can crash inside Ray's native threads (seen
    once in CI: ``blemore resume: interrupted``, then SIGSEGV, exit -11, instead of 130)."""
    code = main()
    if code == EXIT_INTERRUPTED and "ray" in sys.modules:
        _hard_exit(code)
    sys.exit(code)


def _hard_exit(code: int) -> None:
    """Flush what was printed and logged, make sure no Ray connection is left (a Ray this process started would
    otherwise outlive it), then exit at once with ``code``."""
    import contextlib
    import logging

    with contextlib.suppress(BaseException):  # a second Ctrl-C or a dead Ray: exit all the same
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    with contextlib.suppress(BaseException):
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):  # a closed pipe
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
