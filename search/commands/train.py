"""``blemore train CONFIG.yaml [--data DIR] --out DIR``: 5-fold cross-validation of one config in one process.

Prints per-fold and mean ACC_presence, ACC_salience and Score for the three threshold protocols and writes the
model directory of :func:`blemore_core.artifacts.write_cv_dir` to ``--out`` (``config.yaml``, ``metrics.json``,
``thresholds.json``, ``oof.parquet``, ``fold<k>.pt``, ``model.json``). CONFIG may be an exported trial
(``blemore export``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser("train", help="cross-validate one config in one process (no Ray)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="config YAML (e.g. spaces/presets/baseline.yaml)")
    p.add_argument("--data", type=Path, default=None,
                   help="BlEmoRe release root (default: the embedded synthetic demo release, generated once)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--folds", type=str, default=None, help="comma-separated folds to run (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.max_epochs=20 (YAML value syntax); repeatable")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-weights", action="store_true", help="do not write fold<k>.pt")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict:
    """``["a.b=1", "c.d=[x, y]"]`` -> ``{"a.b": 1, "c.d": ["x", "y"]}`` (values parsed as YAML).

    Raises:
        ValueError: for an item without ``=``.
    """
    import yaml

    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--set {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def run(args: argparse.Namespace) -> int:
    """Handler of ``blemore train``."""
    import json
    import sys

    import torch
    from rich.console import Console
    from rich.table import Table

    from blemore_core.artifacts import load_config_file, write_cv_dir
    from blemore_core.config import ConfigError
    from blemore_core.data import ensure_demo_release
    from blemore_core.train import PROTOCOL_KEYS, cross_validate, prepare_data

    console = Console()
    try:
        cfg = load_config_file(args.config).config
        if args.overrides:
            cfg = cfg.override(parse_overrides(args.overrides), source="--set")
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.data
    if root is None:
        root = ensure_demo_release()
        console.print(f"[dim]no --data: using the synthetic demo release at {root}[/dim]")
    elif not Path(root).is_dir():
        print(f"error: --data {root}: no such directory", file=sys.stderr)
        return 2
    folds = [int(x) for x in args.folds.split(",")] if args.folds else None
    data = prepare_data(cfg, root)
    cv = cross_validate(cfg, data, folds=folds, progress=True)

    out = write_cv_dir(args.out, cfg, cv.folds, cv.metrics, data, with_weights=not args.no_weights)
    doc = json.loads((out / "metrics.json").read_text())

    for proto in PROTOCOL_KEYS:
        if proto not in cv.metrics:
            continue
        m = cv.metrics[proto]
        title = f"protocol: {proto}" + ("  (headline)" if proto == cv.metrics["headline"] else "")
        tab = Table(title=title)
        for col in ("fold", "ACC_presence", "ACC_salience", "Score", "alpha", "beta"):
            tab.add_column(col, justify="right")
        for k, row in zip(cv.metrics["folds"], m["per_fold"]):
            tab.add_row(str(k), f"{row['acc_presence']:.4f}", f"{row['acc_salience']:.4f}",
                        f"{row['score']:.4f}", f"{row['alpha']:.3f}", f"{row['beta']:.3f}")
        mu, sd = m["mean"], m["std"]
        tab.add_row("mean ± std", *(f"{mu[c]:.4f} ± {sd[c]:.4f}" for c in ("acc_presence", "acc_salience", "score")),
                    "", "", style="bold")
        console.print(tab)
    if "encoder_importances" in doc:
        imp = doc["encoder_importances"]["mean"]
        console.print("encoder importances (mean over folds): " +
                      ", ".join(f"{k}={v:.3f}" for k, v in sorted(imp.items(), key=lambda kv: -kv[1])))
    console.print(f"wrote the model directory {out} (config.yaml, metrics.json, thresholds.json, oof.parquet"
                  f"{'' if args.no_weights else ', fold<k>.pt'})")
    return 0
