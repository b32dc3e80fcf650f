"""GPU part: fold training end to end vs the reference loop, and folds packed per GPU (issue 14 items 2, 5).

Runs unchanged on any CUDA machine (one command; about 8 minutes on one H100 with 16 cores)::

    python -m benchmarks --only gpu --out $OUT

Without CUDA it records every GPU target as "not measured: no GPU" and exits.

1. End to end: one fold of the organisers' baseline on ``full`` (ImageBind + WavLM, real dims) by ``fit_fold``
   (fp32 and bf16) and by the reference-style loop (per-sample ``DataLoader``, batches moved to the GPU, per-clip
   threshold grid on the CPU each epoch), both on the GPU, same seeds; target >= 20x, Score within 0.01.
2. Packing: k = 1/fraction fold workers share the GPU (fractions 1, 0.5, 0.25, 0.125, 0.1 -> 1, 2, 4, 8, 10
   processes, each one thread, each training one fold of the same preset for a fixed number of epochs, started
   together). Figures per fraction: aggregate fold-epochs/s, trials/h (5 folds x max_epochs per trial), and each
   worker's peak GPU memory (``torch.cuda.max_memory_reserved`` in the worker; the CUDA context, about 0.5 GiB,
   comes on top). This is the packing of the fold workers themselves, without Ray's placement (a fraction of 1
   cannot place a 5-fold trial on a one-GPU machine); Ray's per-trial overhead is the ``startup`` benchmark's.

Environment: ``BLEMORE_GPU_EPOCHS`` (part 1, default 60), ``BLEMORE_GPU_PACK_PRESET`` (default baseline),
``BLEMORE_GPU_PACK_EPOCHS`` (default 20).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ._common import ROOT, Result, release, subprocess_env

FRACTIONS = (1.0, 0.5, 0.25, 0.125, 0.1)

WORKER = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from blemore_core.config import Config
from blemore_core.train import fit_fold, prepare_data
cfg = Config.from_yaml({preset!r}).override({{"train.max_epochs": {epochs}, "train.patience": 0,
                                              "train.device": "cuda"}})
data = prepare_data(cfg, {root!r}, progress=False)
print("ready", flush=True)
sys.stdin.readline()                       # start together
t = time.perf_counter()
r = fit_fold(cfg, data, {fold})
torch.cuda.synchronize()
print(json.dumps({{"wall_s": time.perf_counter() - t, "epochs": r.epochs_run,
                   "max_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
                   "max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30}}), flush=True)
"""


def packing(res: Result, root: Path, preset: str, epochs: int, fractions=FRACTIONS, n_folds: int = 5) -> None:
    preset_path = str(ROOT / "spaces" / "presets" / f"{preset}.yaml")
    for f in fractions:
        k = int(round(1 / f))
        procs = []
        for i in range(k):
            code = WORKER.format(preset=preset_path, epochs=epochs, root=str(root), fold=i % n_folds)
            procs.append(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=ROOT))
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"packing worker failed to start:\n{p.stderr.read()[-3000:]}")
        t = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = []
        for p in procs:
            o, e = p.communicate(timeout=1800)
            if p.returncode != 0:
                raise RuntimeError(f"packing worker failed:\n{e[-3000:]}")
            outs.append(json.loads(o.strip().splitlines()[-1]))
        wall = time.perf_counter() - t
        fold_epochs = sum(o["epochs"] for o in outs)
        tag = f"fraction={f:g}"
        res.figure(f"packing/{tag}/fold_epochs_per_s", fold_epochs / wall, "fold-epochs/s",
                   note=f"{k} workers, {epochs} epochs each")
        res.figure(f"packing/{tag}/trials_per_hour", 3600 * fold_epochs / wall / (n_folds * epochs), "trials/h",
                   note=f"{n_folds} folds x {epochs} epochs per trial")
        res.figure(f"packing/{tag}/gpu_mem_per_worker_gib", [o["max_reserved_gib"] for o in outs], "GiB",
                   note="torch max_memory_reserved per worker (CUDA context not included)")
        res.figure(f"packing/{tag}/worker_wall_s", [o["wall_s"] for o in outs], "s")


def run(quick: bool, out: Path) -> Result:
    import torch

    from .trainer import compare_with_reference

    res = Result("gpu", quick)
    if not torch.cuda.is_available():
        res.inputs = {"device": None}
        res.notes.append("no CUDA device: GPU figures not measured (run `python -m benchmarks --only gpu` on a "
                         "CUDA machine)")
        for prec in ("fp32", "bf16"):
            res.target(f"speedup_end_to_end_gpu/{prec}", None, ">=", 20.0, "reference-style loop on the same GPU",
                       not_measured="no GPU")
        res.target("packing", None, ">=", 1.0, "one fold worker per GPU", not_measured="no GPU")
        return res
    epochs = 3 if quick else int(os.environ.get("BLEMORE_GPU_EPOCHS", "60"))
    pack_epochs = 2 if quick else int(os.environ.get("BLEMORE_GPU_PACK_EPOCHS", "20"))
    preset = os.environ.get("BLEMORE_GPU_PACK_PRESET", "baseline")
    t = time.perf_counter()
    if quick:
        root = release("demo")
    else:
        from blemore_core.config import Config

        encs = sorted(set(Config.from_yaml(ROOT / "spaces" / "presets" / f"{preset}.yaml").data.encoders)
                      | {"imagebind", "wavlm"})
        root = release("full", encs)
    res.figure("generate_release_s", time.perf_counter() - t, "s")
    res.inputs = {"profile": "demo" if quick else "full", "epochs_end_to_end": epochs, "pack_preset": preset,
                  "pack_epochs": pack_epochs, "fractions": list(FRACTIONS)}
    compare_with_reference(res, root, epochs=epochs, precisions=["fp32", "bf16"], device="cuda", threads=1)
    packing(res, root, preset, pack_epochs, FRACTIONS[:2] if quick else FRACTIONS)
    one = res.figures["packing/fraction=1/trials_per_hour"]["median"]
    for f in (FRACTIONS[:2] if quick else FRACTIONS)[1:]:
        r = res.figures[f"packing/fraction={f:g}/trials_per_hour"]["median"] / one
        res.figure(f"packing/fraction={f:g}/throughput_over_fraction_1", r, "x")
    return res
