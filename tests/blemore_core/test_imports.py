"""blemore_core stays plain PyTorch: importing all of it in a fresh process pulls in no orchestration layer."""

import pkgutil
import subprocess
import sys

import blemore_core


def test_blemore_core_never_imports_orchestration():
    mods = [m.name for m in pkgutil.walk_packages(blemore_core.__path__, "blemore_core.")]
    assert "blemore_core.train" in mods
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('ray', 'optuna', 'mlflow', 'search'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"blemore_core imported: {out.stdout.strip()}"
