"""The wheel (issue 19 item 8): built from the source, installed into a fresh venv, and used from a directory
outside the checkout: ``blemore spaces`` lists the built-in spaces, ``blemore search rank_aware`` resolves the
built-in space by its name, and a one-trial search of a space that names a built-in preset (``preset: rank_aware``,
resolved inside the installed package) runs on the tiny synthetic release with the small settings of
``tests/search/test_search_e2e.py``.

Slow (a wheel build, a venv and a Ray search). The venv reuses the installed dependencies
(``--system-site-packages``: torch, ray ...) but must not see the checkout: no PYTHONPATH, a temporary working
directory, and the test checks that ``blemore`` and its packages come from the venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
#: what building the wheel needs from the checkout (nothing else is copied: the build must not depend on it)
SOURCES = ("pyproject.toml", "README.md", "blemore_core", "search", "spaces")
#: a space of the user's own, outside the checkout, naming a built-in preset (test_search_e2e.py's small settings)
SMALL = """
name: small
preset: rank_aware
data: {encoders: [imagebind, wavlm]}
fixed:
  model.pooling: stat
  model.latent_dim: 16
  model.shared_dim: 16
  model.top_n: 2
  loss.domain: 0.0
  train.patience: 0
params:
  train.lr: {type: loguniform, low: 3.0e-4, high: 3.0e-3}
scheduler: none
budget: {num_samples: 1, max_concurrent: 1, max_epochs: 2}
"""


def _run(cmd: list, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_wheel_installs_and_searches_a_builtin_space_from_anywhere(tmp_path):
    src, wheels, venv, work = (tmp_path / d for d in ("src", "wheels", "venv", "work"))
    src.mkdir()
    work.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / name).is_dir() else {}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-q", "-w", wheels],
         tmp_path, env)
    (wheel,) = wheels.glob("blemore-*.whl")
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], tmp_path, env)
    py, blemore = venv / "bin" / "python", venv / "bin" / "blemore"
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel], tmp_path, env)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["BLEMORE_LOG_DIR"] = str(tmp_path / "logs")

    # the packages and the spaces come from the venv, not from the checkout
    where = _run([py, "-c", "import search, blemore_core, search.space as s; "
                  "print(search.__file__, blemore_core.__file__, s.SPACES_DIR, sep='\\n')"], work, env).stdout
    site = (venv / "lib").resolve()
    for line in where.split():
        assert Path(line).resolve().is_relative_to(site), where
    assert shutil.which("blemore", path=env["PATH"]) == str(blemore)

    listed = _run([blemore, "spaces"], work, env).stdout.splitlines()
    assert {line.split()[0] for line in listed} >= {"baseline", "attention_fusion", "rank_aware", "full"}, listed

    _run([blemore, "synth", "--profile", "tiny", "--out", work / "tiny", "--quiet"], work, env)
    # the built-in name resolves to the packaged file (refused at once here: the data directory does not exist)
    r = subprocess.run([str(blemore), "search", "rank_aware", "--data", str(work / "nope")], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert str(venv / "lib") in r.stderr and "blemore_spaces/rank_aware.yaml" in r.stderr and "--data" in r.stderr, r.stderr

    (work / "small.yaml").write_text(SMALL)
    r = _run([blemore, "search", "small.yaml", "--data", work / "tiny", "--num-samples", 1, "--max-concurrent", 1,
              "--num-cpus", 2, "--cpus-per-trial", 0.95, "--quiet"], work, env, timeout=900)
    assert (work / "mlflow.db").is_file() and (work / "ray_results" / "small" / "blemore_search.json").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("small")
    parents = [x for x in client.search_runs([exp.experiment_id]) if x.data.tags.get("role") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", r.stdout[-2000:] + r.stderr[-2000:]
    assert parents[0].data.params["model.fusion"] == "rank_aware"  # from the packaged preset
