"""Search efficiency: TPE + ASHA vs random search without early stopping, same fold-epoch budget (issue 14 item 7).

On ``demo`` with the organisers' baseline and :data:`SPACE` (spaces/baseline.yaml's parameters over the wide ranges a
researcher starts from: lr 1e-4..1e-1, weight decay 1e-6..1e-1, dropout 0..0.9; in baseline.yaml's narrow
ranges every configuration reaches 95% of the best Score within three epochs of the first trial, so both methods
tie at 1.0x by construction, as measured before this change), both searches run in one
process with the production pieces: the space's ``SearchSpace.suggest`` (define-by-run), Optuna's TPESampler with
the production settings (seeded, ``n_startup_trials = min(5, max(1, num_samples // 2))``) and Ray Tune's ASHA
bracket (``ray.tune.schedulers.async_hyperband._Bracket``: the exact rule ``ASHAScheduler`` applies, grace period
and reduction factor from the space, ``max_t`` = max_epochs + 2 as in the runner) against Optuna's RandomSampler
with every trial run to max_epochs. A trial's five folds train in lock step (``FoldTrainer`` steps, as in
``cross_validate``); each epoch the fold-mean
headline Score so far is the trial's ``score`` (the production ``epoch_report``, what the trial reports to
Tune), and ASHA decides on it.
Patience is off in both, so only ASHA stops trials early. Random's budget: ``n_random`` trials x max_epochs x 5
fold-epochs; TPE + ASHA starts trials until it has spent the same.

Figure per seed: the fold-epochs each method spent until its best-so-far trial score first reached 95% of the best
score either method found with that seed. Target: TPE + ASHA needs at most 1/3 of random's (median over 3 seeds).

    python -m benchmarks --only efficiency
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from ._common import Result, release

TARGET_FRACTION = 1 / 3

#: the searched space: baseline.yaml's parameters and scheduler, wide ranges (see the module docstring)
SPACE = """
name: efficiency
preset: baseline
data: {dir: null}
params:
  model.arch: {type: choice, values: [linear, mlp256, mlp512]}
  train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}  # the preset's lr_min is 1e-4
  train.weight_decay: {type: loguniform, low: 1.0e-6, high: 1.0e-1}
  reg.dropout: {type: uniform, low: 0.0, high: 0.9, when: {model.arch: [mlp256, mlp512]}}
metric: score
scheduler: {type: asha, grace_period: 5, reduction_factor: 2}
budget: {num_samples: 12, max_concurrent: 2, max_epochs: 40}
"""


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def run_trial(cfg, data, bracket=None, trial_id: str = "t", max_t: int | None = None) -> list[float]:
    """Train the folds of ``cfg`` in lock step (as ``cross_validate`` and the search trial do); returns the
    trial's score after each epoch (the production epoch report's ``score``: the fold-mean headline Score so far).
    With ``bracket`` (an ASHA ``_Bracket``), stops when ASHA says so."""
    from ray.tune.schedulers import TrialScheduler

    from blemore_core.train import FoldTrainer, new_curves
    from search.trainable import epoch_report

    folds = sorted(set(np.asarray(data.folds).tolist()))
    trainers = [FoldTrainer(cfg, data, k) for k in folds]
    curves = new_curves(cfg, data, folds)
    scores: list[float] = []
    for epoch in range(1, cfg.train.max_epochs + 1):
        probs, rows = {}, {}
        for tr in trainers:
            rec = tr.train_epoch()
            probs[tr.fold] = tr.evaluate()
            rows[tr.fold] = (rec["train_loss"], rec["lr"])
        curves.add(probs)
        for tr in trainers:
            tr.keep(curves.kept_epochs(tr.fold))
        scores.append(float(epoch_report(curves, rows)["score"]))
        if bracket is not None:
            act = bracket.on_result(_Trial(trial_id), epoch, scores[-1])
            if act == TrialScheduler.STOP or (max_t is not None and epoch >= max_t):
                break
        if curves.should_stop():
            break
    return scores


def search(space, data, method: str, seed: int, budget: int, n_folds: int, num_samples: int) -> list[dict]:
    """Trials of one search until ``budget`` fold-epochs are spent: [{params, scores, fold_epochs}]."""
    import optuna
    from ray.tune.schedulers.async_hyperband import _Bracket

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if method == "tpe_asha":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, max(1, num_samples // 2)))
        max_t = space.max_epochs + 2
        bracket = _Bracket(space.grace_period, max_t, space.reduction_factor, s=0)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
        bracket, max_t = None, None
    study = optuna.create_study(direction="maximize", sampler=sampler)
    spent, out = 0, []
    while spent < budget:
        t = study.ask()
        params = space.suggest(t)
        cfg = space.resolve(params).override({"train.patience": 0, "seed": seed})
        scores = run_trial(cfg, data, bracket, trial_id=str(t.number), max_t=max_t)
        spent += len(scores) * n_folds
        study.tell(t, scores[-1])
        out.append({"params": params, "scores": scores, "fold_epochs": len(scores) * n_folds})
    return out


def fold_epochs_to_reach(trials: list[dict], level: float) -> float | None:
    """Fold-epochs spent (in trial order, epoch by epoch) until a trial's score first reaches ``level``."""
    spent = 0
    for tr in trials:
        for s in tr["scores"]:
            spent += 5
            if s >= level:
                return float(spent)
    return None


def run(quick: bool, out: Path) -> Result:
    import tempfile

    from blemore_core.train import prepare_data
    from search.space import load_space

    res = Result("efficiency", quick)
    with tempfile.TemporaryDirectory(prefix="bench_efficiency_") as d:
        path = Path(d) / "efficiency.yaml"
        path.write_text(SPACE)
        space = load_space(path)
    if quick:
        seeds, n_random, epochs = (0,), 1, 2
    else:
        seeds, n_random, epochs = (0, 1, 2), 5, 20
    space_max = epochs
    # the space's settings, with max_epochs reduced to the benchmark's (the rungs follow grace/reduction factor)
    space = _with_max_epochs(space, space_max)
    root = release("demo")
    data = prepare_data(space.base, root, progress=False)
    n_folds = len(set(np.asarray(data.folds).tolist()))
    budget = n_random * epochs * n_folds
    res.inputs = {"profile": "demo", "space": SPACE.strip(), "max_epochs": epochs,
                  "grace_period": space.grace_period, "reduction_factor": space.reduction_factor,
                  "random_trials": n_random, "budget_fold_epochs": budget, "seeds": list(seeds), "patience": "off",
                  "reference": "random search (Optuna RandomSampler), every trial to max_epochs, same budget"}
    ratios, ratios99, details = [], [], {}
    for seed in seeds:
        rnd = search(space, data, "random", seed, budget, n_folds, n_random)
        tpe = search(space, data, "tpe_asha", seed, budget, n_folds, n_random)
        best = max(max(t["scores"]) for t in rnd + tpe)
        level = 0.95 * best
        fr, ft = fold_epochs_to_reach(rnd, level), fold_epochs_to_reach(tpe, level)
        res.figure(f"seed{seed}/best_score", best, "Score")
        res.figure(f"seed{seed}/random_fold_epochs_to_95pct", fr if fr is not None else float("nan"), "fold-epochs")
        res.figure(f"seed{seed}/tpe_asha_fold_epochs_to_95pct", ft if ft is not None else float("nan"),
                   "fold-epochs")
        res.figure(f"seed{seed}/tpe_asha_trials", len(tpe), "trials")
        # why a tie is likely: the share of random configurations that reach the level at all (TPE's first
        # n_startup trials are the same draws as random's, seeded alike: a hit among them is a tie by construction)
        res.figure(f"seed{seed}/random_share_reaching_95pct", sum(max(t["scores"]) >= level for t in rnd) / len(rnd),
                   "fraction")
        for m, trials in (("random", rnd), ("tpe_asha", tpe)):
            res.figure(f"seed{seed}/{m}_best_score", max(max(t["scores"]) for t in trials), "Score",
                       note=f"best trial score within the budget of {budget} fold-epochs")
        r99, t99 = fold_epochs_to_reach(rnd, 0.99 * best), fold_epochs_to_reach(tpe, 0.99 * best)
        for m, v in (("random", r99), ("tpe_asha", t99)):
            res.figure(f"seed{seed}/{m}_fold_epochs_to_99pct", v if v is not None else float("nan"), "fold-epochs",
                       note="NaN: not reached within the budget")
        if t99 is not None:  # random not reaching it within the budget counts as the budget (a bound)
            ratios99.append(t99 / (r99 if r99 is not None else budget))
        if fr is not None and ft is not None:
            ratios.append(ft / fr)
        details[f"seed{seed}"] = {"random": rnd, "tpe_asha": tpe}
    if ratios:
        res.figure("ratio_tpe_asha_over_random", ratios, "fraction")
    if ratios99:
        res.figure("ratio_tpe_asha_over_random_at_99pct", ratios99, "fraction",
                   note="the same, to 99 % of the best Score; where random search did not reach it, its whole "
                        "budget stands in (an upper bound on the ratio)")
    res.target("tpe_asha_fraction_of_random_fold_epochs", statistics.median(ratios) if ratios else None, "<=",
               round(TARGET_FRACTION, 4), "random search without early stopping, same fold-epoch budget, same seeds",
               not_measured=None if ratios else "a method never reached 95% of the best Score")
    res.extra = details
    return res


def _with_max_epochs(space, max_epochs: int):
    import dataclasses

    base = space.base.override({"train.max_epochs": max_epochs})
    return dataclasses.replace(space, base=base, max_epochs=max_epochs)
