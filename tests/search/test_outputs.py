"""Issue 21, item 1: one output rule for every command that writes (train, retrain, predict, export, ensemble,
synth, report): an existing --out that is not a complete artifact of the command's kind is refused (exit 2, named)
unless --overwrite; an input given as --out is refused; writes are staged and renamed; a full disk is exit 1 naming
the path and "no space left", within seconds."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search import safety
from search.cli import main


def _user_dir(p: Path) -> Path:
    p.mkdir()
    (p / "thesis.tex").write_text("years of work")
    return p


def _user_file(p: Path) -> Path:
    p.write_text("keep me")
    return p


# case -> (argv builder(tmp, out), out builder(tmp) -> the existing --out, what the message names)
def _cases():
    def train(t, out):
        (t / "c.yaml").write_text("model: {arch: mlp512}\n")
        return ["train", str(t / "c.yaml"), "--data", str(t), "--out", str(out)]

    def retrain(t, out):
        (t / "d").mkdir(exist_ok=True)
        return ["retrain", str(out), "--data", str(t / "d"), "--out", str(out), "--no-mlflow"]

    def predict(t, out):
        (t / "d").mkdir(exist_ok=True)
        return ["predict", str(t / "m"), "--data", str(t / "d"), "--out", str(out)]

    uri = ["--tracking-uri", "sqlite:///{t}/mlflow.db"]
    return {
        "train_into_user_dir": (train, lambda t: _user_dir(t / "runs"), "is not a blemore model directory"),
        "retrain_over_its_input": (retrain, lambda t: _user_file(t / "best.yaml"), "is an input"),
        "predict_over_user_file": (predict, lambda t: _user_file(t / "notes.zip"), "is not a submission"),
        "export_into_directory": (lambda t, o: ["export", "--experiment", "x", "--out", str(o), *uri],
                                  lambda t: _user_dir(t / "best.yaml"), "is not an exported trial YAML"),
        "ensemble_over_user_file": (lambda t, o: ["ensemble", "--experiment", "x", "--out", str(o), *uri],
                                    lambda t: _user_file(t / "ens.yaml"), "is not an ensemble YAML"),
        "synth_into_user_dir": (lambda t, o: ["synth", "--profile", "tiny", "--out", str(o)],
                                lambda t: _user_dir(t / "rel"), "is not a synthetic release"),
        "report_into_user_dir": (lambda t, o: ["report", "--experiment", "x", "--out", str(o), *uri],
                                 lambda t: _user_dir(t / "rep"), "is not a report folder"),
    }


CASES = _cases()


def _snapshot(p: Path) -> dict[str, bytes]:
    if p.is_file():
        return {"": p.read_bytes()}
    return {str(f.relative_to(p)): f.read_bytes() for f in p.rglob("*") if f.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_existing_out_that_is_not_the_commands_artifact_is_refused(case, tmp_path, monkeypatch, capsys):
    argv_of, out_of, said = CASES[case]
    monkeypatch.chdir(tmp_path)
    out = out_of(tmp_path)
    argv = [a.replace("{t}", str(tmp_path)) for a in argv_of(tmp_path, out)]
    before = _snapshot(out)
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith(f"blemore {argv[0]}: error: --out {out}: "), err
    assert said in err[0], err
    if said != "is an input":
        assert "--overwrite" in err[0], err
    assert _snapshot(out) == before  # nothing lost
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")) == []


def test_overwrite_allows_replacing_but_never_an_input(tmp_path):
    d = _user_dir(tmp_path / "out")
    assert safety.check_output(d, "model", overwrite=True) == d
    assert safety.check_output(tmp_path / "empty", "model") == tmp_path / "empty"  # missing: fine
    (tmp_path / "emptydir").mkdir()
    assert safety.check_output(tmp_path / "emptydir", "report") == tmp_path / "emptydir"  # empty dir: nothing lost
    with pytest.raises(safety.InputError, match="is an input"):
        safety.check_output(d, "model", inputs=[d], overwrite=True)
    with pytest.raises(safety.InputError, match="holds the input"):
        safety.check_output(tmp_path, "model", inputs=[d / "thesis.tex"], overwrite=True)


def test_a_failed_staged_write_leaves_the_previous_content(tmp_path):
    out = _user_file(tmp_path / "best.yaml")
    with pytest.raises(OSError):
        with safety.staged(out) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert out.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["best.yaml"]
    with safety.staged(out) as tmp:  # success: renamed into place, no sibling left
        tmp.write_text("new")
    assert out.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["best.yaml"]


def test_no_free_space_stops_at_once_naming_the_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(safety, "free_bytes", lambda p: 4096)
    t = time.time()
    rc = main(["synth", "--profile", "tiny", "--out", str(tmp_path / "rel")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and time.time() - t < 5, err
    assert err.startswith("blemore synth: error: --out ") and str(tmp_path / "rel") in err
    assert "no space left" in err and not (tmp_path / "rel").exists()


def test_disk_full_message_recognises_enospc_and_a_full_filesystem(tmp_path, monkeypatch):
    e = OSError(errno.ENOSPC, "No space left on device")
    assert "no space left" in safety.disk_full_message(e, tmp_path / "o")
    wrapped = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert safety.disk_full_message(wrapped, tmp_path / "o") is None  # free space: another failure
    monkeypatch.setattr(safety, "free_bytes", lambda p: 0)
    assert str(tmp_path / "o") in safety.disk_full_message(wrapped, tmp_path / "o")


def test_disk_full_message_ends_on_an_exception_chain_that_loops(tmp_path):
    """An exception chain may loop back on itself (an error raised while handling one that is its own context, as
    a failed ``ray.init`` gave): the check ends and answers, it never spins."""
    import threading

    a, b = RuntimeError("raylet died"), RuntimeError("while handling")
    a.__context__, b.__context__ = b, a
    got: list = []
    t = threading.Thread(target=lambda: got.append(safety.disk_full_message(a, tmp_path / "o")), daemon=True)
    t.start()
    t.join(10)
    assert got == [None], "disk_full_message did not return within 10 s on a looping chain"
    full = OSError(errno.ENOSPC, "No space left on device")
    b.__context__, full.__context__ = full, a  # the loop holds an ENOSPC: it is found
    assert "no space left" in safety.disk_full_message(a, tmp_path / "o")


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_real_full_disk_is_exit_1_within_seconds_and_keeps_nothing_half_written(tmp_path):
    """Needs root (a small tmpfs); the monkeypatched tests above cover the logic everywhere else."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "17m"):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        (mnt / "rel").mkdir()  # an empty folder: allowed, and still there (empty) after the failure
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        t = time.time()
        p = subprocess.run([sys.executable, "-m", "search.cli", "synth", "--profile", "tiny", "--quiet", "--out",
                            str(mnt / "rel")], capture_output=True, text=True, env=env, timeout=120)
        took = time.time() - t
        assert p.returncode == 1, p.stderr
        assert "no space left" in p.stderr and str(mnt / "rel") in p.stderr and "Traceback" not in p.stderr
        assert took < 60, took
        assert [q.name for q in mnt.iterdir()] == ["rel"] and list((mnt / "rel").iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
