"""The CLI's runtime-failure half of the error contract: exit 1, the cause in one line with the path of the full
log, a traceback only with ``-v``; usage errors are one line with exit 2."""

from __future__ import annotations

import sys

import pytest

from search import cli
from search.commands import evaluate


def _boom(args):
    raise RuntimeError("disk on fire\nsecond line of the cause")


def test_runtime_failure_is_one_line_with_the_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLEMORE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(evaluate, "run", _boom)
    rc = cli.main(["evaluate", "--predictions", "p.json", "--metadata", "m.csv"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("blemore evaluate: failed: RuntimeError: disk on fire second line of the cause")
    log = next((tmp_path / "logs").glob("blemore-evaluate-*.log"))
    assert f"full log: {log}" in err[0] and "Traceback" in log.read_text() and "_boom" in log.read_text()
    rc = cli.main(["evaluate", "--predictions", "p.json", "--metadata", "m.csv", "-v"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback (most recent call last)" in err and "_boom" in err


@pytest.mark.parametrize("argv,named", [(["train", "c.yaml", "--out", "o", "--folds", "x"], "--folds"),
                                        (["search", "s.yaml", "--num-samples", "many"], "--num-samples"),
                                        (["nosuch"], "nosuch")])
def test_usage_errors_are_one_line_exit_2(argv, named, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "error:" in err[0], err


def _interrupt(args):
    raise KeyboardInterrupt


class _FakeRay:
    """Stands in for an imported ``ray`` module: records shutdown."""

    def __init__(self, up: bool):
        self.up, self.shut = up, 0

    def is_initialized(self) -> bool:
        return self.up

    def shutdown(self) -> None:
        self.shut += 1
        self.up = False


class _Exited(Exception):
    pass


@pytest.mark.parametrize("ray_up", [True, False])
def test_ctrl_c_after_ray_leaves_through_os_exit_130(ray_up, monkeypatch, capsys):
    """Ctrl-C with Ray imported: 130 through os._exit after Ray is shut down (interpreter finalisation after an
    interrupt crashed inside Ray's native threads once in CI, exit -11)."""
    fake = _FakeRay(ray_up)
    exits: list[int] = []

    def _os_exit(code):
        exits.append(code)
        raise _Exited

    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(cli.os, "_exit", _os_exit)
    monkeypatch.setattr(evaluate, "run", _interrupt)
    monkeypatch.setattr(cli.sys, "argv", ["blemore", "evaluate", "--predictions", "p.json", "--metadata", "m.csv"])
    with pytest.raises(_Exited):
        cli.entry()
    assert exits == [130] and fake.shut == int(ray_up) and not fake.is_initialized()
    assert capsys.readouterr().err.strip() == "blemore evaluate: interrupted"


def test_other_exits_and_ctrl_c_without_ray_use_sys_exit(monkeypatch):
    """Only the interrupted path with Ray imported skips finalisation; everything else exits normally."""
    monkeypatch.setattr(cli.os, "_exit", lambda code: pytest.fail(f"os._exit({code})"))
    monkeypatch.setattr(cli.sys, "argv", ["blemore", "evaluate", "--predictions", "p.json", "--metadata", "m.csv"])
    monkeypatch.setitem(sys.modules, "ray", _FakeRay(True))
    monkeypatch.setattr(evaluate, "run", _boom)
    with pytest.raises(SystemExit) as e:
        cli.entry()
    assert e.value.code == 1
    monkeypatch.delitem(sys.modules, "ray")
    monkeypatch.setattr(evaluate, "run", _interrupt)
    with pytest.raises(SystemExit) as e:
        cli.entry()
    assert e.value.code == 130


def _fails_while_handling_ctrl_c(args):
    """As MLflow does when Ctrl-C cuts an SQLite write: its rollback fails, raised while the interrupt is handled."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise RuntimeError("(sqlite3.OperationalError) database is locked") from None


def _fails_after_ctrl_c(args):
    """SIGINT reaches the process, a library swallows the KeyboardInterrupt; a later write fails on its own."""
    import os
    import signal

    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
    except KeyboardInterrupt:
        pass
    raise RuntimeError("(sqlite3.OperationalError) database is locked")


@pytest.mark.parametrize("command", [_fails_while_handling_ctrl_c, _fails_after_ctrl_c])
def test_an_error_caused_by_ctrl_c_is_an_interruption_with_the_log(command, tmp_path, monkeypatch, capsys):
    """Exit 130 and ``interrupted`` (the error's traceback in the log it names), not a runtime failure (exit 1):
    seen in CI as ``blemore resume`` exiting 1 after a Ctrl-C at start-up."""
    import signal

    before = signal.getsignal(signal.SIGINT)  # an earlier in-process tuner.fit may have left Tune's handler
    monkeypatch.setenv("BLEMORE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(evaluate, "run", command)
    rc = cli.main(["evaluate", "--predictions", "p.json", "--metadata", "m.csv"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 130 and len(err) == 1, err
    log = next((tmp_path / "logs").glob("blemore-evaluate-*.log"))
    assert err[0] == f"blemore evaluate: interrupted (then RuntimeError; full log: {log})"
    assert "database is locked" in log.read_text()
    # the next command of the same process starts with no interrupt on record: its failure is a failure
    monkeypatch.setattr(evaluate, "run", _boom)
    assert cli.main(["evaluate", "--predictions", "p.json", "--metadata", "m.csv"]) == 1
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
