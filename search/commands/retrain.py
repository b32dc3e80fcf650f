"""``blemore retrain best.yaml --data DIR --out DIR [--mode full|folds]``: retrain an exported trial (``blemore
export``) or an ensemble (``blemore ensemble``) into a model directory that ``blemore predict`` reads.

* ``full``: one model on all training clips for the median of the cross-validation's selected epochs;
* ``folds``: the fold models again (fold k on the other folds for fold k's selected epoch), averaged at prediction.

Both decode with the pooled thresholds of the export (fitted on all OOF predictions; for an ensemble, the
ensemble's). The run is logged to MLflow in the search's experiment (tag ``source_run_id``: the trial it came
from) with the model directory as its artifact ``model``, and registered in the MLflow Model Registry as
``<search>-<mode>`` (``<search>-ensemble-<mode>`` for an ensemble).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from search.commands.export import add_tracking
from search.safety import add_overwrite


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``retrain`` subcommand."""
    p = sub.add_parser("retrain", help="retrain an exported trial or an ensemble (full data or the five folds)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="exported YAML (blemore export) or ensemble YAML (blemore ensemble)")
    p.add_argument("--data", type=Path, required=True, help="BlEmoRe release root")
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument("--mode", choices=("full", "folds"), default="full",
                   help="full: one model on all clips for the median selected epoch; folds: the fold models "
                   "averaged (default full)")
    p.add_argument("--no-register", action="store_true", help="log to MLflow but do not register the model")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow at all")
    add_tracking(p)
    add_overwrite(p)
    p.set_defaults(func=run)


def median_epoch(epochs: dict[int, int]) -> int:
    """Median of the selected epochs, halves rounded up (``[3, 4]`` -> 4)."""
    import numpy as np

    return int(math.floor(float(np.median(list(epochs.values()))) + 0.5))


def retrain_member(cfg: Any, export: dict, root: Path, mode: str, out: Path, progress: bool = True) -> Path:
    """Retrain one exported trial into model directory ``out`` (kind ``full`` or ``folds``).

    Raises:
        ValueError: the export lacks selected epochs or pooled thresholds (named), or data errors.
    """
    import numpy as np

    from blemore_core.artifacts import WeightsSpec, write_model_dir
    from blemore_core.refit import fit_epochs, train_rows
    from blemore_core.train import prepare_data

    epochs = {int(k): int(v) for k, v in (export.get("selected_epochs") or {}).items()}
    if not epochs:
        raise ValueError("export.selected_epochs: missing or empty (export the trial with `blemore export`)")
    pooled = (export.get("thresholds") or {}).get("pooled")
    if not pooled:
        raise ValueError("export.thresholds.pooled: missing (export the trial with `blemore export`)")
    data = prepare_data(cfg, root, progress=progress)
    folds = sorted(set(np.asarray(data.folds).tolist()))
    dims = {str(k): int(v) for k, v in data.input_dims.items()}
    weights, history = [], {}
    if mode == "full":
        e = median_epoch(epochs)
        sd, hist = fit_epochs(cfg, data, train_rows(data, folds), e, seed_key=len(folds))
        weights.append(WeightsSpec("model.pt", sd, {"epoch": e, "train_folds": folds, "input_dims": dims}))
        history["model"] = hist
    else:
        missing = [k for k in folds if k not in epochs]
        if missing:
            raise ValueError(f"export.selected_epochs: no epoch for folds {missing}")
        for k in folds:
            others = [f for f in folds if f != k]
            sd, hist = fit_epochs(cfg, data, train_rows(data, others), epochs[k], seed_key=k,
                                  target_idx=train_rows(data, [k]))
            weights.append(WeightsSpec(f"fold{k}.pt", sd, {"fold": k, "epoch": epochs[k], "train_folds": others,
                                                            "input_dims": dims}))
            history[f"fold{k}"] = hist
    thresholds = {"headline": export.get("headline"), "pooled": pooled,
                  **{p: {"per_fold": v} for p, v in (export.get("thresholds") or {}).items() if p != "pooled"}}
    metrics = {"source": {k: export.get(k) for k in ("experiment", "run_id", "trial_id", "score")},
               "fold_metrics": export.get("fold_metrics"), "selected_epochs": epochs,
               "epochs_trained": {w.name: w.meta["epoch"] for w in weights}}
    return write_model_dir(out, cfg, kind=mode, weights=weights, thresholds=thresholds, metrics=metrics,
                           documents={"history.json": history},
                           info={"source_run_id": export.get("run_id"), "experiment": export.get("experiment")})


def retrain(config: Path, root: Path, out: Path, mode: str = "full", progress: bool = True) -> tuple[Path, dict]:
    """Retrain an exported trial or an ensemble into ``out``; returns (out, the file's source section)."""
    from blemore_core.artifacts import load_config_file, write_model_dir
    from blemore_core.config import Config

    cf = load_config_file(config)
    if cf.ensemble is not None:
        ens = cf.ensemble
        with tempfile.TemporaryDirectory(prefix="blemore-members-") as tmp:
            dirs = []
            for i, m in enumerate(ens["members"]):
                mcfg = Config.from_dict(m["config"], source=f"{config} (ensemble.members[{i}].config)")
                try:
                    dirs.append(retrain_member(mcfg, m["export"], root, mode, Path(tmp) / f"m{i}", progress))
                except ValueError as e:
                    raise ValueError(f"{config}: ensemble.members[{i}]: {e}") from None
            thresholds = {"headline": "crossfit", "pooled": ens["thresholds"]["pooled"],
                          "crossfit": {"per_fold": ens["thresholds"].get("crossfit", [])}}
            metrics = {"ensemble": {k: ens.get(k) for k in ("experiment", "score", "best_single", "trajectory")}}
            write_model_dir(out, cf.config, kind="ensemble", thresholds=thresholds, metrics=metrics, members=dirs,
                            info={"member_weights": [float(m["weight"]) for m in ens["members"]],
                                  "member_runs": [m["export"].get("run_id") for m in ens["members"]],
                                  "experiment": ens.get("experiment"), "mode": mode})
        return Path(out), {"experiment": ens.get("experiment"), "run_id": None, "kind": "ensemble",
                           "members": [m["export"].get("run_id") for m in ens["members"]]}
    if cf.export is None:
        raise ValueError(f"{config}: no export section: retrain takes the YAML of `blemore export` or "
                         "`blemore ensemble` (use `blemore train` for a plain config)")
    try:
        retrain_member(cf.config, cf.export, root, mode, Path(out), progress)
    except ValueError as e:
        raise ValueError(f"{config}: {e}") from None
    return Path(out), {"experiment": cf.export.get("experiment"), "run_id": cf.export.get("run_id"), "kind": "trial"}


def registered_name(experiment: str, kind: str, mode: str) -> str:
    """Model Registry name derived from the search: ``<search>-<mode>`` or ``<search>-ensemble-<mode>``."""
    import re

    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment or "blemore")
    return f"{base}-ensemble-{mode}" if kind == "ensemble" else f"{base}-{mode}"


def log_retrain(out: Path, source: dict, mode: str, tracking_uri: str | None, register_model: bool = True) -> dict:
    """Log the retrained model directory as an MLflow run of the source experiment, linked to its source trial
    (tag ``source_run_id``; an ensemble: ``source_runs``), and register it in the Model Registry.

    Returns:
        ``{"run_id", "model_name", "version"}`` (name/version None when not registered).
    """
    from blemore_core.artifacts import read_model_dir
    from search.records import get_or_create_experiment
    from search.trials import client_for

    client, uri = client_for(tracking_uri)
    md = read_model_dir(out)
    exp_name = source.get("experiment") or "blemore-retrain"
    exp_id = get_or_create_experiment(client, exp_name, uri)
    tags = {"role": "retrain", "mode": mode, "kind": source["kind"],
            "mlflow.runName": f"retrain-{source['kind']}-{mode}"}
    if source.get("run_id"):
        tags["source_run_id"] = source["run_id"]
        tags["mlflow.note.content"] = f"Retrained ({mode}) from trial run {source['run_id']}"
    if source.get("members"):
        tags["source_runs"] = ",".join(r for r in source["members"] if r)
    run = client.create_run(exp_id, tags=tags)
    run_id = run.info.run_id
    try:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in md.config.flat().items()]
        for i in range(0, len(params), 90):
            client.log_batch(run_id, params=params[i : i + 90])
        a, b = md.predict_thresholds()
        client.log_metric(run_id, "alpha", a)
        client.log_metric(run_id, "beta", b)
        client.log_artifacts(run_id, str(out), artifact_path="model")
        name = version = None
        if register_model:
            name = registered_name(exp_name, source["kind"], mode)
            try:
                client.get_registered_model(name)
            except Exception:
                client.create_registered_model(name, description=f"blemore models retrained from search {exp_name!r}")
            mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run_id,
                                             tags={"mode": mode, **({"source_run_id": source["run_id"]}
                                                                    if source.get("run_id") else {})})
            version = mv.version
            client.set_tag(run_id, "registered_model", f"{name}/{version}")
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return {"run_id": run_id, "model_name": name, "version": version}


def run(args: argparse.Namespace) -> int:
    """Handler of ``blemore retrain``: 0 on success; a bad file/option raises :class:`InputError` (exit 2, nothing
    written); 1 when the model directory is written but MLflow logging failed."""
    from blemore_core.artifacts import ArtifactError
    from blemore_core.config import ConfigError
    from search.errors import InputError
    from search.safety import check_output, check_tracking_store
    from search.trials import TrialsError

    if not args.data.is_dir():
        raise InputError(f"--data {args.data}: no such directory")
    check_output(args.out, "model", inputs=[args.config, args.data], overwrite=args.overwrite)
    try:
        if not args.no_mlflow:  # a tracking server that is down is reported before any training
            from search.trials import client_for

            check_tracking_store(args.tracking_uri)
            if (args.tracking_uri or "").startswith("http"):
                client_for(args.tracking_uri)
        out, source = retrain(args.config, args.data, args.out, args.mode)
    except (ConfigError, ArtifactError, TrialsError, ValueError) as e:
        raise InputError(str(e)) from None
    print(f"wrote the model directory {out} ({args.mode})")
    if not args.no_mlflow:
        try:
            rec = log_retrain(out, source, args.mode, args.tracking_uri, register_model=not args.no_register)
        except (TrialsError, ArtifactError) as e:
            print(f"blemore retrain: error: {e} (the model directory {out} is complete)", file=sys.stderr)
            return 1
        reg = f"; registered as {rec['model_name']} version {rec['version']}" if rec["model_name"] else ""
        print(f"MLflow run {rec['run_id']}{reg}")
    return 0

