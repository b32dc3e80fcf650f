"""``blemore train CONFIG.yaml [--data DIR] --out DIR``: 5-fold cross-validation of one config in one process.

Prints per-fold and mean ACC_presence, ACC_salience and Score for the three threshold protocols and writes the
model directory of :func:`blemore_core.artifacts.write_cv_dir` to ``--out`` (``config.yaml``, ``metrics.json``,
``thresholds.json``, ``oof.parquet``, ``fold<k>.pt``, ``model.json``). CONFIG may be an exported trial
(``blemore export``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from search.safety import add_overwrite


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser("train", help="cross-validate one config in one process (no Ray)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="config YAML (e.g. spaces/presets/baseline.yaml)")
    p.add_argument("--data", type=Path, default=None,
                   help="BlEmoRe release root (default: the embedded synthetic demo release, generated once)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--folds", type=_fold_list, default=None, help="comma-separated folds to run (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.max_epochs=20 (YAML value syntax); repeatable")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-weights", action="store_true", help="do not write fold<k>.pt")
    add_overwrite(p)
    p.set_defaults(func=run)


def _fold_list(text: str) -> list[int]:
    """``"0,2"`` -> ``[0, 2]`` (argparse type: a bad value is a one-line usage error, exit 2)."""
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fold numbers such as 0,2, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one fold number, got {text!r}")
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["a.b=1", "c.d=[x, y]"]`` -> ``{"a.b": 1, "c.d": ["x", "y"]}`` (values parsed as YAML).

    Raises:
        ValueError: for an item without ``=``.
    """
    import yaml

    from blemore_core.io import load_yaml

    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--set {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = load_yaml("--set", text=v, named=False)  # bounded as every YAML (no aliases)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {it!r}: value is not valid YAML ({' '.join(str(e).split())})") from None
    return out


def run(args: argparse.Namespace) -> int:
    """Handler of ``blemore train``: returns 0; bad input raises (exit 2, see :mod:`search.cli`), before ``--out``
    is created."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from blemore_core.artifacts import load_config_file, write_cv_dir
    from blemore_core.data import ensure_demo_release
    from blemore_core.io import load_json
    from blemore_core.train import PROTOCOL_KEYS, cross_validate, prepare_data
    from search.cli import InputError
    from search.safety import check_output

    console = Console()
    # ---- input: everything the user can get wrong is checked before anything is written (exit 2, one line)
    check_output(args.out, "model", inputs=[args.config, args.data], overwrite=args.overwrite)
    try:
        overrides = parse_overrides(args.overrides) if args.overrides else None
    except ValueError as e:
        raise InputError(str(e)) from None
    cf = load_config_file(args.config, overrides)  # a plain config, or the YAML of `blemore export`
    cfg = cf.config
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads: must be >= 1, got {args.threads}")
    root = args.data
    if root is None:
        root = ensure_demo_release()
        console.print(f"[dim]no --data: using the synthetic demo release at {root}[/dim]")
    elif not Path(root).is_dir():
        raise InputError(f"--data {root}: no such directory")
    try:
        data = prepare_data(cfg, root)
    except (ValueError, OSError) as e:
        raise InputError(" ".join(str(e).split())) from None
    folds = args.folds
    have = sorted(set(int(f) for f in data.folds.tolist()))
    if folds is not None and any(f not in have for f in folds):
        raise InputError(f"--folds {','.join(map(str, folds))}: fold {next(f for f in folds if f not in have)} "
                         f"is not one of the release's folds {have}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cv = cross_validate(cfg, data, folds=folds, progress=True)

    out = write_cv_dir(args.out, cfg, cv.folds, cv.metrics, data, with_weights=not args.no_weights)
    doc = load_json(out / "metrics.json")

    for proto in PROTOCOL_KEYS:
        if proto not in cv.metrics:
            continue
        m = cv.metrics[proto]
        title = f"protocol: {proto}" + ("  (headline)" if proto == cv.metrics["headline"] else "")
        tab = Table(title=title)
        for col in ("fold", "ACC_presence", "ACC_salience", "Score", "alpha", "beta", "epoch"):
            tab.add_column(col, justify="right")
        for k, row in zip(cv.metrics["folds"], m["per_fold"]):
            tab.add_row(str(k), f"{row['acc_presence']:.4f}", f"{row['acc_salience']:.4f}",
                        f"{row['score']:.4f}", f"{row['alpha']:.3f}", f"{row['beta']:.3f}", str(row["epoch"]))
        mu, sd = m["mean"], m["std"]
        tab.add_row("mean ± std", *(f"{mu[c]:.4f} ± {sd[c]:.4f}" for c in ("acc_presence", "acc_salience", "score")),
                    "", "", "", style="bold")
        console.print(tab)
    if "encoder_importances" in doc:
        imp = doc["encoder_importances"]["mean"]
        console.print("encoder importances (mean over folds): " +
                      ", ".join(f"{k}={v:.3f}" for k, v in sorted(imp.items(), key=lambda kv: -kv[1])))
    console.print(f"wrote the model directory {out} (config.yaml, metrics.json, thresholds.json, oof.parquet"
                  f"{'' if args.no_weights else ', fold<k>.pt'})")
    return 0
