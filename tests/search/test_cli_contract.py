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
