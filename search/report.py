"""What mattered in a search: the search-level MLflow run of ``blemore report`` (also written at the end of every
search) and the per-trial analyses of an exported trial (docs/ARCHITECTURE.md section 7).

Search level (one run per experiment, tag ``role=search_report``, updated in place by a later report):

* hyperparameter importances for each objective: an Optuna study is rebuilt from the finished trials' MLflow
  runs (the searched parameters and their distributions come from the space file the runs are tagged with; when
  it cannot be read, from the parameters that vary between the runs), and ``optuna.importance`` scores it with
  fANOVA (Hutter et al., ICML 2014; ``FanovaImportanceEvaluator(seed=0)``). Metrics ``importance/<objective>/<param>``,
  ``importances.json``, ``plots/importances.png``;
* ``plots/best_so_far.png`` (objective per trial in start order and its running maximum),
  ``plots/parallel_coordinates.png`` (``optuna.visualization.matplotlib``), ``plots/pareto_front.png`` for a
  two-objective search; ``top_trials.csv`` / ``top_trials.md``;
* the analyses below for the best trial, under ``analysis/``.

Per trial (``analysis/`` of the trial's run, logged by ``blemore export``): the confusion matrix over the 16 label
sets, per-emotion presence accuracy, and for rank-aware models the distribution of the per-clip encoder importances
and how often each encoder is among the top-n (seed 001's analyses), all on the OOF predictions decoded with each
fold's headline-protocol thresholds.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blemore_core.names import OBJECTIVES

REPORT_ROLE = "search_report"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------------------ per trial


def trial_analysis(doc: dict, oof: Any, out: Path) -> dict[str, Any]:
    """Write the per-trial analyses of an exported trial into ``out`` (JSON + PNG); returns the numbers.

    Args:
        doc: the exported document (config + ``export`` section, see ``blemore export``).
        oof: OOF table (filename, fold, p_ang..p_neu, and ``imp_<encoder>`` columns for rank-aware models).

    Returns:
        ``{"presence_accuracy": {emotion: fraction}, "confusion": int[16][16], "encoder_importance": {...}}``.
    """
    from blemore_core.artifacts import label_set_confusion
    from blemore_core.decoding import decode
    from blemore_core.labels import EMOTIONS, soft_labels
    from blemore_core.results import PROB_COLUMNS
    from search import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ex = doc["export"]
    truth = soft_labels(oof["filename"])
    probs = oof[list(PROB_COLUMNS)].to_numpy(np.float32)
    folds = oof["fold"].to_numpy()
    per_fold = {int(r["fold"]): r for r in ex["thresholds"].get(ex["headline"], [])}
    pooled = ex["thresholds"]["pooled"]
    pred = np.zeros_like(probs)
    for k in np.unique(folds):
        th = per_fold.get(int(k), pooled)
        m = folds == k
        pred[m] = decode(probs[m], th["alpha"], th["beta"])
    conf = label_set_confusion(truth, pred)
    (out / "confusion.json").write_text(json.dumps({"protocol": ex["headline"], "rows_truth_cols_pred": conf.tolist()}))
    plots.confusion_plot(out / "confusion.json", out / "confusion.png")
    pres = {e: float(np.mean((pred[:, j] > 0) == (truth[:, j] > 0))) for j, e in enumerate(EMOTIONS)}
    res: dict[str, Any] = {"presence_accuracy": pres, "confusion": conf.tolist()}
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(list(pres), list(pres.values()), color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("presence accuracy (OOF)")
    ax.set_title("per-emotion presence accuracy")
    fig.tight_layout()
    fig.savefig(out / "presence_accuracy.png", dpi=110)
    plt.close(fig)
    imp_cols = [c for c in oof.columns if c.startswith("imp_")]
    if imp_cols:
        enc = [c[4:] for c in imp_cols]
        imp = oof[imp_cols].to_numpy(np.float64)
        top_n = int(doc.get("model", {}).get("top_n", 1) or 1)
        order = np.argsort(-imp, axis=1, kind="stable")[:, :top_n]
        freq = {e: float(np.mean((order == j).any(axis=1))) for j, e in enumerate(enc)}
        res["encoder_importance"] = {"top_n": top_n, "top_n_frequency": freq,
                                     "mean": {e: float(imp[:, j].mean()) for j, e in enumerate(enc)},
                                     "quantiles": {e: np.quantile(imp[:, j], [0.1, 0.5, 0.9]).tolist()
                                                   for j, e in enumerate(enc)}}
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        axes[0].boxplot([imp[:, j] for j in range(len(enc))], tick_labels=enc)
        axes[0].set_title("per-clip encoder importance (OOF)")
        axes[1].bar(enc, [freq[e] for e in enc], color="tab:orange")
        axes[1].set_ylim(0, 1)
        axes[1].set_title(f"fraction of clips with the encoder in the top-{top_n}")
        fig.tight_layout()
        fig.savefig(out / "encoder_importance.png", dpi=110)
        plt.close(fig)
    (out / "analysis.json").write_text(json.dumps(res, indent=1))
    return res


def log_trial_analysis(client: Any, run_id: str, doc: dict, oof: Any, artifact_path: str = "analysis") -> dict:
    """:func:`trial_analysis` logged as artifacts of ``run_id`` under ``artifact_path``."""
    with tempfile.TemporaryDirectory() as tmp:
        res = trial_analysis(doc, oof, Path(tmp))
        client.log_artifacts(run_id, tmp, artifact_path=artifact_path)
    return res


# ------------------------------------------------------------------------------------------------ search level


@dataclass
class SearchReport:
    """What :func:`search_report` computed.

    Attributes:
        experiment: the search; run_id: the search-level MLflow run; objectives: objective metric names;
        importances: ``{objective: {param: importance}}`` (sorted, largest first; empty when fewer than two
        trials); n_trials: trials in the study; top: rows of the top-trials table; files: local copies of the
        logged files (in ``out_dir``).
    """

    experiment: str
    run_id: str
    objectives: tuple[str, ...]
    importances: dict[str, dict[str, float]]
    n_trials: int
    top: list[dict]
    files: list[Path] = field(default_factory=list)


def _space_of(trials: list) -> Any:
    from search.space import load_space

    for t in trials:
        p = t.tags.get("space")
        if p and Path(p).is_file():
            try:
                return load_space(p)
            except Exception:
                return None
    return None


def _norm(v: Any) -> str:
    """One string form for a choice value, as the space holds it and as the run's params hold it (encoder sets:
    ``"a+b"`` in the space, ``"a,b"`` in the params)."""
    return (",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)).replace("+", ",")


def study_params(trials: list, space: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Optuna distributions of the searched parameters and each trial's values (absent when inactive).

    Choice values become one string form (:func:`_norm`); float and int parameters keep the space's
    distributions. Without a space, the parameters whose values differ between runs are used (numeric -> float range,
    log scale when it spans two decades; otherwise categorical).
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists: dict[str, Any] = {}
    rows: list[dict[str, Any]] = [{} for _ in trials]
    if space is not None:
        flat = space.base.flat()
        for p in space.params:
            d = p.dist
            dists[p.key] = CategoricalDistribution(sorted({_norm(v) for v in d.choices})) \
                if isinstance(d, CategoricalDistribution) else d
        for row, t in zip(rows, trials, strict=True):
            for p in space.params:
                active = all(_norm(row.get(k, t.params.get(k, flat.get(k)))) in {_norm(v) for v in acc}
                             for k, acc in p.when.items())
                if not active or p.key not in t.params:
                    continue
                raw, d = t.params[p.key], dists[p.key]
                row[p.key] = _norm(raw) if isinstance(d, CategoricalDistribution) else \
                    (int(float(raw)) if isinstance(d, IntDistribution) else float(raw))
        return _widen(dists, rows), rows
    keys = sorted({k for t in trials for k in t.params})
    for k in keys:
        vals = [t.params.get(k) for t in trials]
        if any(v is None for v in vals) or len(set(vals)) < 2 or k == "fold":
            continue
        try:
            nums = [float(v) for v in vals]
        except ValueError:
            dists[k] = CategoricalDistribution(sorted(set(vals)))
            for row, v in zip(rows, vals, strict=True):
                row[k] = v
            continue
        lo, hi = min(nums), max(nums)
        dists[k] = FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 100)
        for row, v in zip(rows, nums, strict=True):
            row[k] = v
    return dists, rows


def _widen(dists: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Distributions widened to hold every recorded value (a space file edited after the search)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for k, d in dists.items():
        vals = [r[k] for r in rows if k in r]
        if isinstance(d, CategoricalDistribution):
            extra = sorted({v for v in vals if v not in d.choices})
            out[k] = CategoricalDistribution(list(d.choices) + extra) if extra else d
        elif vals and (min(vals) < d.low or max(vals) > d.high):
            lo, hi = min(d.low, min(vals)), max(d.high, max(vals))
            out[k] = IntDistribution(int(lo), int(hi)) if isinstance(d, IntDistribution) else \
                FloatDistribution(lo, hi, log=d.log and lo > 0)
        else:
            out[k] = d
    return out


def build_study(trials: list, objectives: tuple[str, ...], space: Any) -> Any:
    """An in-memory Optuna study holding the trials as COMPLETE trials (values = ``objectives``, maximised)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists, rows = study_params(trials, space)
    study = optuna.create_study(directions=["maximize"] * len(objectives))
    for t, row in zip(trials, rows, strict=True):
        study.add_trial(optuna.trial.create_trial(
            params=row, distributions={k: dists[k] for k in row}, values=[t.metrics[m] for m in objectives]))
    return study


def importances(study: Any, n_objectives: int) -> dict[int, dict[str, float]]:
    """fANOVA importances per objective index (``{}`` for an objective when fewer than two trials)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    out: dict[int, dict[str, float]] = {}
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for i in range(n_objectives):
        if len(done) < 2 or not any(t.params for t in done):
            out[i] = {}
            continue
        target = (lambda t, i=i: t.values[i]) if n_objectives > 1 else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), target=target)
        out[i] = {k: float(v) for k, v in imp.items()}
    return out


def _bar(imp: dict[str, float], title: str, path: Path) -> Path:
    plt = _plt()
    keys = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(keys) + 1.5))
    ax.barh(keys, [imp[k] for k in keys], color="tab:green")
    ax.set_xlabel("fANOVA importance")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _best_so_far(values: list[float], name: str, path: Path) -> Path:
    plt = _plt()
    x = np.arange(1, len(values) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, values, "o", alpha=0.6, label=f"trial {name}")
    ax.step(x, np.maximum.accumulate(values), where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial (start order)")
    ax.set_ylabel(name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean (N,) mask of the non-dominated rows of ``points`` (N, 2), both maximised."""
    p = np.asarray(points, dtype=np.float64)
    ge = (p[None, :, :] >= p[:, None, :]).all(axis=2)
    gt = (p[None, :, :] > p[:, None, :]).any(axis=2)
    return ~(ge & gt).any(axis=1)


def _pareto(points: np.ndarray, names: tuple[str, ...], path: Path) -> Path:
    plt = _plt()
    m = pareto_mask(points)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(points[~m, 0], points[~m, 1], alpha=0.5, label="dominated")
    front = points[m][np.argsort(points[m, 0])]
    ax.plot(front[:, 0], front[:, 1], "o-", color="tab:red", label="Pareto front")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _parallel(study: Any, objectives: tuple[str, ...], path: Path) -> Path | None:
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    plt = _plt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {"target": (lambda t: t.values[0]), "target_name": objectives[0]} if len(objectives) > 1 else \
            {"target_name": objectives[0]}
        ax = plot_parallel_coordinate(study, **kw)
    fig = ax.figure
    fig.set_size_inches(9, 4.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def search_report(experiment: str, tracking_uri: str | None = None, out_dir: str | Path | None = None,
                  top_k: int = 10, analyse_best: bool = True) -> SearchReport:
    """Compute and log the search-level report of ``experiment`` (see the module docstring).

    Raises:
        TrialsError: no such experiment or no trial with the objective recorded.
    """
    import pandas as pd

    from search.trials import TrialsError, client_for, finished, search_objectives
    from search.trials import trials as all_trials

    client, uri = client_for(tracking_uri)
    every = all_trials(client, experiment, uri)
    space = _space_of(every)
    objectives = tuple(space.metrics) if space is not None else search_objectives(client, experiment, uri)
    pool = [t for t in finished(every) if all(math.isfinite(t.metrics.get(m, math.nan)) for m in objectives)]
    if len(pool) < 2:  # too few completed trials: also use those stopped early (their last recorded numbers)
        pool = [t for t in every if t.status in ("completed", "stopped")
                and all(math.isfinite(t.metrics.get(m, math.nan)) for m in objectives)]
    if not pool:
        raise TrialsError(f"--experiment {experiment!r}: no trial has {list(objectives)} recorded in {uri}")
    out = Path(out_dir or tempfile.mkdtemp(prefix="blemore-report-"))
    (out / "plots").mkdir(parents=True, exist_ok=True)
    study = build_study(pool, objectives, space)
    imps = importances(study, len(objectives))
    named = {objectives[i]: v for i, v in imps.items()}
    files = [out / "importances.json"]
    files[0].write_text(json.dumps(named, indent=1))
    for obj, v in named.items():
        if v:
            files.append(_bar(v, f"what mattered for {obj} ({len(pool)} trials)", out / "plots" / f"importances_{obj}.png"))
    files.append(_best_so_far([t.metrics[objectives[0]] for t in pool], objectives[0], out / "plots" / "best_so_far.png"))
    if len(objectives) == 2:
        pts = np.array([[t.metrics[m] for m in objectives] for t in pool])
        files.append(_pareto(pts, objectives, out / "plots" / "pareto_front.png"))
    if study.trials and study.trials[0].params:
        try:
            files.append(_parallel(study, objectives, out / "plots" / "parallel_coordinates.png"))
        except Exception as e:  # a plot is never worth failing the report
            warnings.warn(f"parallel coordinates not drawn: {e!r}", stacklevel=2)
    keys = list(study_params(pool, space)[0])
    ordered = sorted(pool, key=lambda t: -t.metrics[objectives[0]])
    top = [{"trial": t.name, "run_id": t.run_id, "status": t.status,
            **{m: t.metrics.get(m) for m in OBJECTIVES},
            **{k: t.params.get(k) for k in keys}} for t in ordered[:top_k]]
    df = pd.DataFrame(top)
    df.to_csv(out / "top_trials.csv", index=False)
    (out / "top_trials.md").write_text(df.to_markdown(index=False) if _has_tabulate() else df.to_string(index=False))
    files += [out / "top_trials.csv", out / "top_trials.md"]

    run_id = _log_report_run(client, uri, experiment, out, named, pool, objectives, analyse_best)
    return SearchReport(experiment, run_id, objectives, named, len(pool), top, files)


def _log_report_run(client: Any, uri: str, experiment: str, out: Path, named: dict, pool: list,
                    objectives: tuple[str, ...], analyse_best: bool) -> str:
    """Log the report (importances, ``n_trials``, ``best/<objective>``, the files of ``out``, with
    ``analyse_best`` the best finished trial's analyses) to the search-level run (tag ``role=search_report``,
    reopened if it exists); the run ends FINISHED, or FAILED on an error. Returns its id."""
    from search.trials import TrialsError

    exp_id = client.get_experiment_by_name(experiment).experiment_id
    found = client.search_runs([exp_id], filter_string=f"tags.role = '{REPORT_ROLE}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_id = client.create_run(exp_id, tags={"role": REPORT_ROLE, "mlflow.runName": f"{experiment}-report",
                                                 "search": experiment}).info.run_id
    try:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(f"importance/{o}/{k}", float(v), ts, 0) for o, d in named.items() for k, v in d.items()]
        ms.append(Metric("n_trials", float(len(pool)), ts, 0))
        ms += [Metric(f"best/{m}", float(max(t.metrics[m] for t in pool)), ts, 0) for m in objectives]
        client.log_batch(run_id, metrics=ms)
        client.log_artifacts(run_id, str(out))
        if analyse_best:
            try:
                from search.trials import ranked, trial_document

                best = ranked(client, experiment, uri, objectives[0])[0]
                doc, oof = trial_document(client, uri, experiment, best)
                log_trial_analysis(client, run_id, doc, oof, artifact_path=f"analysis/{best.name}")
                client.set_tag(run_id, "best_run_id", best.run_id)
            except TrialsError:
                pass
        client.set_terminated(run_id, status="FINISHED")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    return run_id


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def print_report(rep: SearchReport) -> None:
    """The importances as a rich table (one column per objective) and the search-level run id."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=110)
    t = Table(title=f"what mattered in {rep.experiment!r} (fANOVA importance, {rep.n_trials} trials)")
    t.add_column("parameter")
    for o in rep.objectives:
        t.add_column(o, justify="right")
    first = rep.importances.get(rep.objectives[0], {})
    keys = list(first) + [k for o in rep.objectives for k in rep.importances.get(o, {}) if k not in first]
    for k in dict.fromkeys(keys):
        t.add_row(k, *(f"{rep.importances.get(o, {}).get(k, float('nan')):.3f}" for o in rep.objectives))
    console.print(t)
    if not first:
        console.print("(importances need at least two trials with the objective recorded)")
    console.print(f"search-level MLflow run {rep.run_id}")


def report_after_search(experiment: str, tracking_uri: str, verbose: int = 1) -> SearchReport | None:
    """:func:`search_report` at the end of ``blemore search`` / ``resume``: never fails the search (a problem is
    printed as a warning); prints the importance table when ``verbose``."""
    import sys

    try:
        rep = search_report(experiment, tracking_uri)
    except Exception as e:
        print(f"warning: search-level report not written: {e}", file=sys.stderr)
        return None
    if verbose:
        print_report(rep)
    return rep
