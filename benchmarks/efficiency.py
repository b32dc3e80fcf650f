"""Search efficiency: TPE + ASHA vs random search without early stopping, same fold-epoch budget (issue 14 item 7).

On ``demo`` with spaces/baseline.yaml's space (model.arch, lr, weight decay, dropout), both searches run in one
process with the production pieces: the space's ``SearchSpace.suggest`` (define-by-run), Optuna's TPESampler with
the production settings (seeded, ``n_startup_trials = min(5, max(1, num_samples // 2))``) and Ray Tune's ASHA
bracket (``ray.tune.schedulers.async_hyperband._Bracket``: the exact rule ``ASHAScheduler`` applies, grace period
and reduction factor from the space, ``max_t`` = max_epochs + 2 as in the runner) against Optuna's RandomSampler
with every trial run to max_epochs. A trial's five folds train in lock step (one thread per fold,
:func:`blemore_core.train.fit_fold`, a barrier per epoch); each epoch the fold mean of the folds' best-so-far
validation Scores is the trial's ``score`` (what the production trial reports to Tune), and ASHA decides on it.
Patience is off in both, so only ASHA stops trials early. Random's budget: ``n_random`` trials x max_epochs x 5
fold-epochs; TPE + ASHA starts trials until it has spent the same.

Figure per seed: the fold-epochs each method spent until its best-so-far trial score first reached 95% of the best
score either method found with that seed. Target: TPE + ASHA needs at most 1/3 of random's (median over 3 seeds).

    python -m benchmarks --only efficiency
"""

from __future__ import annotations

import statistics
import threading
from pathlib import Path

import numpy as np

from ._common import ROOT, Result, release

TARGET_FRACTION = 1 / 3


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def run_trial(cfg, data, bracket=None, trial_id: str = "t", max_t: int | None = None) -> list[float]:
    """Train the folds of ``cfg`` in lock step; returns the trial's score after each epoch run (fold mean of the
    folds' best-so-far validation Scores). With ``bracket`` (an ASHA ``_Bracket``), stops when ASHA says so."""
    import torch

    from blemore_core.train import fit_fold

    folds = sorted(set(np.asarray(data.folds).tolist()))
    best = {k: -np.inf for k in folds}
    scores: list[float] = []
    state = {"stop": False}

    def decide() -> None:
        s = float(np.mean([best[k] for k in folds]))
        scores.append(s)
        epoch = len(scores)
        if bracket is not None:
            from ray.tune.schedulers import TrialScheduler

            act = bracket.on_result(_Trial(trial_id), epoch, s)
            if act == TrialScheduler.STOP or (max_t is not None and epoch >= max_t):
                state["stop"] = True

    barrier = threading.Barrier(len(folds), action=decide)
    errors: list[BaseException] = []

    def on_epoch(rec) -> bool:
        best[rec.fold] = rec.best_score
        barrier.wait()
        return state["stop"]

    def work(k: int) -> None:
        try:
            torch.set_num_threads(1)
            fit_fold(cfg, data, k, on_epoch=on_epoch)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(k,)) for k in folds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
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
    from blemore_core.train import prepare_data
    from search.space import load_space

    res = Result("efficiency", quick)
    space = load_space(ROOT / "spaces" / "baseline.yaml")
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
    res.inputs = {"profile": "demo", "space": "spaces/baseline.yaml", "max_epochs": epochs,
                  "grace_period": space.grace_period, "reduction_factor": space.reduction_factor,
                  "random_trials": n_random, "budget_fold_epochs": budget, "seeds": list(seeds), "patience": "off",
                  "reference": "random search (Optuna RandomSampler), every trial to max_epochs, same budget"}
    ratios, details = [], {}
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
        if fr is not None and ft is not None:
            ratios.append(ft / fr)
        details[f"seed{seed}"] = {"random": rnd, "tpe_asha": tpe}
    if ratios:
        res.figure("ratio_tpe_asha_over_random", ratios, "fraction")
    res.target("tpe_asha_fraction_of_random_fold_epochs", statistics.median(ratios) if ratios else None, "<=",
               round(TARGET_FRACTION, 4), "random search without early stopping, same fold-epoch budget, same seeds",
               not_measured=None if ratios else "a method never reached 95% of the best Score")
    res.extra = details
    return res


def _with_max_epochs(space, max_epochs: int):
    import dataclasses

    base = space.base.override({"train.max_epochs": max_epochs})
    return dataclasses.replace(space, base=base, max_epochs=max_epochs)
