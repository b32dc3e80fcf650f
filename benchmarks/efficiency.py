"""Search efficiency where good configurations are rare (issue 20 item 4; the former wide-space figure of issue 14
showed TPE + ASHA at 1.0x random search because 40-80 % of random configurations reached 95 % of the best there).

:data:`RARE_SPACE`: a conditional space over fusion (concat, attention, mixed, rank_aware with its top_n) x pooling x
head x encoder set x loss coefficients (kl, bce, rank) x dropouts x a wide learning-rate range, with cheap models
(latent width 8, 4 frames) on the ``tiny`` synthetic release, so one trial trains its five folds in seconds. Every
search runs in one process with the production pieces: ``SearchSpace.suggest`` (define-by-run), the runner's sampler
(:func:`search.runner.make_sampler`: seeded multivariate grouped TPE, single- or multi-objective), the lock-step
driver and epoch report of a trial (:func:`blemore_core.train.run_lockstep`, :func:`search.trainable.epoch_report`;
a ``mixed`` trial reports its provisional objective during pretraining), Ray Tune's ASHA bracket
(``ray.tune.schedulers.async_hyperband._Bracket``, ``max_t`` = max_epochs + 2 as in the runner), the Pareto-aware
rungs (:class:`search.pareto.ParetoRungs`) and the warm start's own conversion and seeding
(:func:`search.warmstart.frozen_trial`, :func:`search.warmstart.seed_study`). Training seed 0 for every trial (the
same configuration scores the same in every search); the sampler seed is the benchmark seed. Patience off.
Seeds 0-4; every search spends the same budget of fold-epochs (``random_trials`` x max_epochs x 5 folds; a search
starts trials until the budget is spent).

Targets (each in the JSON, met or missed, with a note giving the reason):

Scores are what a search records for a trial (:func:`recorded`: its last epoch's objective), and a level is
reached at the end of the first trial recording it.

* ``tpe_asha_fraction_of_random_fold_epochs``: fold-epochs TPE + ASHA spends until a trial first records 95 % of
  the best score random or TPE + ASHA recorded with that seed, over random search's (every trial to max_epochs);
  median over seeds <= 1/3.
* ``warm_fraction_of_cold_fold_epochs``: the earlier search = TPE + ASHA with seed s; a warm-started search (sampler
  seed s+1 mod 5, seeded with every trial of the earlier search as ``blemore search --warm-start`` does: completed
  trials COMPLETE, ASHA-stopped ones PRUNED with their learning curve, the earlier search's best configurations
  evaluated first) and the cold search (the same sampler seed, not seeded: TPE + ASHA of seed s+1 mod 5) race to
  the earlier search's best score; fold-epochs warm / cold, median over seeds <= 1/4 (a search that never gets
  there within the budget counts as the budget: a cold one makes the ratio an upper bound, a warm one a lower
  bound).
* ``pareto_stopping_hypervolume_ratio``: a Pareto search (metrics acc_presence, acc_salience; multi-objective TPE)
  stopped by :class:`~search.pareto.ParetoRungs` vs the same search stopped by ASHA on the scalar score, equal
  budget and seeds: hypervolume (reference point (0, 0)) of the (acc_presence, acc_salience) of every trial's last
  epoch within the budget; median over seeds of the ratio >= 1.

    python -m benchmarks --only efficiency
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import numpy as np

from ._common import Result, release

TARGET_FRACTION = 1 / 3
#: random search's trials to max_epochs within the shared budget: enough that TPE leaves its 5 random start-up
#: trials far behind (at 3, the former budget, every TPE proposal was a start-up one) and random search meets the
#: rare good region a few times; a full run takes about 30 minutes on 2 cores
RANDOM_TRIALS = 36
WARM_TARGET_FRACTION = 1 / 4
N_FOLDS = 5

#: the searched space (see the module docstring); data.encoders comes before model.top_n (its bound depends on it)
RARE_SPACE = """
name: efficiency_rare
preset: attention_mixed
data: {encoders: [imagebind, videomae, wavlm, hubert]}
fixed:
  model.latent_dim: 8
  model.shared_dim: 8
  model.seq_len: 4
  model.heads: 1
  model.layers: 1
  model.mixed_pretrain_epochs: 2
  train.patience: 0
params:
  data.encoders: {type: choice, values: [[imagebind], [wavlm], [imagebind, wavlm], [videomae, hubert],
                                         [imagebind, videomae, wavlm, hubert]]}
  model.fusion: {type: choice, values: [concat, attention, mixed, rank_aware]}
  model.top_n: {type: int, low: 1, high: 3, when: {model.fusion: rank_aware}}
  model.pooling: {type: choice, values: [stat, attention, cls]}
  model.head: {type: choice, values: [softmax, presence_salience, structured]}
  train.lr: {type: loguniform, low: 1.0e-4, high: 3.0e-1}
  loss.kl: {type: uniform, low: 0.0, high: 1.0}
  loss.bce: {type: uniform, low: 0.0, high: 1.0}
  loss.rank: {type: uniform, low: 0.0, high: 1.0}
  reg.dropout: {type: uniform, low: 0.0, high: 0.9}
  reg.modality_dropout: {type: uniform, low: 0.0, high: 0.9}
metric: score
scheduler: {type: asha, grace_period: 1, reduction_factor: 3}
budget: {num_samples: 30, max_epochs: 5}
"""


class _Stop(Exception):
    """Raised from the epoch hook when the scheduler stops the trial."""


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def run_trial(cfg, data, decide=None) -> list[tuple[float, float, float]]:
    """Train the folds of ``cfg`` with the production lock-step driver; returns the trial's epoch reports as
    ``(score, acc_presence, acc_salience)``. ``decide(epoch, row) -> bool`` (False = stop) is the scheduler."""
    from blemore_core.train import LocalExchange, fold_group, new_curves, run_lockstep
    from search.trainable import epoch_report

    folds = sorted(set(np.asarray(data.folds).tolist()))
    curves = new_curves(cfg, data, folds)
    rows: list[tuple[float, float, float]] = []

    def on_epoch(c, fold_rows):
        r = epoch_report(c, fold_rows)
        rows.append((float(r["score"]), float(r["acc_presence"]), float(r["acc_salience"])))
        if decide is not None and not decide(c.epochs, rows[-1]):
            raise _Stop

    try:
        run_lockstep(fold_group(cfg, data, folds, "sequential"), curves, LocalExchange(), cfg.train.max_epochs,
                     on_epoch)
    except _Stop:
        pass
    return rows


def _decider(kind: str | None, space):
    """A fresh scheduler of ``kind`` (None: every trial to max_epochs; ``asha``: Tune's bracket on the score;
    ``pareto``: ParetoRungs on (acc_presence, acc_salience)) -> ``decide(trial_id) -> (epoch, row) -> bool``."""
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.schedulers.async_hyperband import _Bracket

    from search.pareto import ParetoRungs

    max_t = space.max_epochs + 2
    if kind == "asha":
        b = _Bracket(space.grace_period, max_t, space.reduction_factor, s=0)
        return lambda tid: lambda e, r: b.on_result(_Trial(tid), e, r[0]) == TrialScheduler.CONTINUE
    if kind == "pareto":
        rungs = ParetoRungs(space.grace_period, max_t, space.reduction_factor)
        return lambda tid: lambda e, r: rungs.on_result(tid, e, r[1:])
    return lambda tid: None


def search(space, data, sampler: str, seed: int, budget: int, stop: str | None, pareto: bool = False,
           seeded: list[dict] | None = None) -> list[dict]:
    """One search until ``budget`` fold-epochs are spent: [{params, rows, fold_epochs}] in trial order.

    ``sampler``: ``random`` or ``tpe`` (the runner's :func:`make_sampler`); ``seeded``: trials of an earlier search
    seeding the study through the warm start's own functions."""
    import optuna
    from optuna.trial import TrialState

    from blemore_core.config import ConfigError
    from search import warmstart
    from search.runner import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    smp = optuna.samplers.RandomSampler(seed=seed) if sampler == "random" else make_sampler(seed, space.num_samples)
    study = optuna.create_study(directions=["maximize"] * (2 if pareto else 1), sampler=smp)
    if seeded:
        warm = warmstart.WarmStart()
        for t in seeded:
            ft, _ = warmstart.frozen_trial(space, _past(t), warm.notes)
            if ft is not None:
                warm.trials.append(ft)
        warmstart.seed_study(study, warm)
    decide = _decider(stop, space)
    spent, out = 0, []
    while spent < budget:
        t = study.ask()
        params = space.suggest(t)
        try:
            cfg = space.resolve(params).override({"seed": 0})
        except ConfigError:
            study.tell(t, state=TrialState.FAIL)
            continue
        rows = run_trial(cfg, data, decide(str(t.number)))
        spent += len(rows) * N_FOLDS
        last = rows[-1]
        study.tell(t, [last[1], last[2]] if pareto else last[0])
        out.append({"params": params, "rows": rows, "fold_epochs": len(rows) * N_FOLDS,
                    "flat": {k: str(v) for k, v in cfg.flat().items()}, "stopped": len(rows) < space.max_epochs})
    return out


def _pareto(space):
    import dataclasses

    return dataclasses.replace(space, metrics=("acc_presence", "acc_salience"))


def _past(t: dict):
    """A trial of a benchmark search as the warm start reads it from MLflow (see search.warmstart.PastTrial)."""
    from search.warmstart import PastTrial

    last = t["rows"][-1]
    return PastTrial("earlier", "-", "stopped" if t["stopped"] else "completed", t["flat"],
                     {"score": last[0], "acc_presence": last[1], "acc_salience": last[2]},
                     curve={e + 1: r[0] for e, r in enumerate(t["rows"])})


def recorded(trial: dict) -> float:
    """The Score a search records for ``trial``: its last epoch's objective (a completed trial's final Score, a
    stopped one's at the stop), what the search's summary ranks and the sampler is told; an epoch's objective
    before the last is not a result the search can hand on (the objective changes as epochs are added)."""
    return trial["rows"][-1][0]


def fold_epochs_to_reach(trials: list[dict], level: float) -> float | None:
    """Fold-epochs spent (in trial order) until the end of the first trial whose recorded Score (:func:`recorded`)
    reaches ``level``; None when none does."""
    spent = 0
    for tr in trials:
        spent += len(tr["rows"]) * N_FOLDS
        if recorded(tr) >= level - 1e-12:
            return float(spent)
    return None


def front_hypervolume(trials: list[dict], budget: int) -> float:
    """Hypervolume of the (acc_presence, acc_salience) of each trial's last epoch within ``budget`` fold-epochs."""
    from search.pareto import hypervolume_2d

    pts, spent = [], 0
    for tr in trials:
        n = min(len(tr["rows"]), max(0, (budget - spent) // N_FOLDS))
        if n:
            pts.append(tr["rows"][n - 1][1:])
        spent += len(tr["rows"]) * N_FOLDS
    return hypervolume_2d(pts)


def _best(trials: list[dict]) -> float:
    """The best recorded Score of a search (:func:`recorded`)."""
    return max(recorded(t) for t in trials)


#: worker processes of the benchmark (searches of different seeds and methods are independent)
WORKERS = int(os.environ.get("BLEMORE_EFFICIENCY_WORKERS", "5"))
_W: dict = {}


def _load(quick: bool):
    """The benchmark's space (max_epochs 2 when quick) and the tiny release's training data."""
    import tempfile

    from blemore_core.train import prepare_data
    from search.space import load_space

    with tempfile.TemporaryDirectory(prefix="bench_efficiency_") as d:
        path = Path(d) / "efficiency_rare.yaml"
        path.write_text(RARE_SPACE)
        space = load_space(path)
    if quick:
        space = _with_max_epochs(space, 2)
    return space, prepare_data(space.base, release("tiny"), progress=False)


def _init_worker(quick: bool) -> None:
    import torch

    torch.set_num_threads(1)  # one thread per worker process (the machine is shared)
    _W["space"], _W["data"] = _load(quick)


def _task(job: tuple) -> list[dict]:
    """One search in a worker: ``(kind, seed, budget, seeded)``."""
    kind, seed, budget, seeded = job
    space, data = _W["space"], _W["data"]
    if kind == "random":
        return search(space, data, "random", seed, budget, None)
    if kind in ("tpe_asha", "warm"):
        return search(space, data, "tpe", seed, budget, "asha", seeded=seeded)
    return search(_pareto(space), data, "tpe", seed, budget, "pareto" if kind == "pareto_stop" else "asha",
                  pareto=True)


def run(quick: bool, out: Path) -> Result:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    res = Result("efficiency", quick)
    space, _ = _load(quick)
    seeds, n_random = ((0, 1), 1) if quick else ((0, 1, 2, 3, 4), RANDOM_TRIALS)
    budget = n_random * space.max_epochs * N_FOLDS
    res.inputs = {"profile": "tiny", "space": RARE_SPACE.strip(), "max_epochs": space.max_epochs,
                  "grace_period": space.grace_period, "reduction_factor": space.reduction_factor,
                  "random_trials": n_random, "budget_fold_epochs": budget, "seeds": list(seeds), "patience": "off",
                  "training_seed": 0, "workers": WORKERS}
    kinds = ("random", "tpe_asha", "pareto_stop", "pareto_asha")
    with ProcessPoolExecutor(WORKERS, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(quick,)) as pool:
        jobs = {(k, s): pool.submit(_task, (k, s, budget, None)) for s in seeds for k in kinds}
        runs = {s: {k: jobs[(k, s)].result() for k in kinds} for s in seeds}
        nxt = {s: seeds[(seeds.index(s) + 1) % len(seeds)] for s in seeds}  # warm: seeded from s, sampler seed s+1
        warm = {s: pool.submit(_task, ("warm", nxt[s], budget, runs[s]["tpe_asha"])) for s in seeds}
        for s in seeds:
            runs[s]["warm_from_tpe_asha"] = warm[s].result()
    _score_targets(res, runs, budget)
    _warm_targets(res, runs, budget)
    _pareto_targets(res, runs, budget)
    res.extra = {f"seed{s}": r for s, r in runs.items()}
    return res


def _score_targets(res: Result, runs: dict, budget: int) -> None:
    ratios, facts = [], {"random": [], "tpe_asha": [], "share": []}
    for s, r in runs.items():
        rnd, tpe = r["random"], r["tpe_asha"]
        best = max(_best(rnd), _best(tpe))
        fr, ft = fold_epochs_to_reach(rnd, 0.95 * best), fold_epochs_to_reach(tpe, 0.95 * best)
        share = sum(recorded(t) >= 0.95 * best for t in rnd) / len(rnd)
        res.figure(f"seed{s}/best_score", best, "Score")
        for m, v, trials in (("random", fr, rnd), ("tpe_asha", ft, tpe)):
            res.figure(f"seed{s}/{m}_fold_epochs_to_95pct", v if v is not None else float("nan"), "fold-epochs",
                       note="NaN: not reached within the budget")
            res.figure(f"seed{s}/{m}_trials", len(trials), "trials")
            res.figure(f"seed{s}/{m}_best_score", _best(trials), "Score")
        res.figure(f"seed{s}/random_share_reaching_95pct", share, "fraction",
                   note="how rare good configurations are: random trials reaching 95 % of the best")
        if ft is not None:
            ratios.append(ft / (fr if fr is not None else budget))
        facts["random"].append(fr if fr is not None else budget)
        facts["tpe_asha"].append(ft if ft is not None else budget)
        facts["share"].append(share)
    if ratios:
        res.figure("ratio_tpe_asha_over_random", ratios, "fraction",
                   note="random search not reaching the level counts as its budget (an upper bound)")
    t = res.target("tpe_asha_fraction_of_random_fold_epochs", statistics.median(ratios) if ratios else None, "<=",
                   round(TARGET_FRACTION, 4), "random search, every trial to max_epochs, same budget and seeds",
                   not_measured=None if ratios else "TPE + ASHA never reached 95 % of the best Score")
    res.notes.append(_why("TPE + ASHA vs random", t, (
        f"median fold-epochs to 95 % of the best: random {_med(facts['random'])}, TPE + ASHA "
        f"{_med(facts['tpe_asha'])} (the budget where not reached); median share of random trials reaching it "
        f"{_med(facts['share'])}; budget {budget} fold-epochs")))


def _warm_targets(res: Result, runs: dict, budget: int) -> None:
    seeds = sorted(runs)
    ratios, facts = [], {"warm": [], "cold": []}
    for s in seeds:
        s2 = seeds[(seeds.index(s) + 1) % len(seeds)]
        earlier, cold, warm = runs[s]["tpe_asha"], runs[s2]["tpe_asha"], runs[s]["warm_from_tpe_asha"]
        level = _best(earlier)
        fw, fc = fold_epochs_to_reach(warm, level), fold_epochs_to_reach(cold, level)
        res.figure(f"seed{s}/earlier_best_score", level, "Score")
        res.figure(f"seed{s}/warm_fold_epochs_to_earlier_best", fw if fw is not None else float("nan"),
                   "fold-epochs", note=f"sampler seed {s2}, seeded with {len(earlier)} trials; NaN: not reached")
        res.figure(f"seed{s}/cold_fold_epochs_to_earlier_best", fc if fc is not None else float("nan"),
                   "fold-epochs", note=f"TPE + ASHA, sampler seed {s2}; NaN: not reached within the budget")
        ratios.append((fw if fw is not None else budget) / (fc if fc is not None else budget))
        facts["warm"].append(fw)
        facts["cold"].append(fc)
    t = res.target("warm_fraction_of_cold_fold_epochs", statistics.median(ratios) if ratios else None, "<=",
                   WARM_TARGET_FRACTION, "the same search (sampler seed) without the warm start, same budget",
                   not_measured=None if ratios else "no seeds")
    n = len(seeds)
    res.notes.append(_why("warm start", t, (
        f"searches reaching the earlier search's best within the budget: warm {sum(v is not None for v in facts['warm'])}"
        f"/{n}, cold {sum(v is not None for v in facts['cold'])}/{n}; median fold-epochs where reached: warm "
        f"{_med([v for v in facts['warm'] if v is not None])}, cold {_med([v for v in facts['cold'] if v is not None])}")))


def _pareto_targets(res: Result, runs: dict, budget: int) -> None:
    ratios, hv = [], {"pareto": [], "asha": []}
    for s in sorted(runs):
        hv_p = front_hypervolume(runs[s]["pareto_stop"], budget)
        hv_a = front_hypervolume(runs[s]["pareto_asha"], budget)
        res.figure(f"seed{s}/hypervolume_pareto_stopping", hv_p, "ACC_presence x ACC_salience")
        res.figure(f"seed{s}/hypervolume_score_asha", hv_a, "ACC_presence x ACC_salience")
        if hv_a > 0:
            ratios.append(hv_p / hv_a)
        hv["pareto"].append(hv_p)
        hv["asha"].append(hv_a)
    t = res.target("pareto_stopping_hypervolume_ratio", statistics.median(ratios) if ratios else None, ">=", 1.0,
                   "the same multi-objective TPE search stopped by ASHA on the score, same budget and seeds",
                   not_measured=None if ratios else "score-ASHA's front had no hypervolume")
    res.notes.append(_why("Pareto-aware stopping", t, (
        f"median hypervolume: Pareto-aware {_med(hv['pareto'])}, score-ASHA {_med(hv['asha'])}; per seed ratios "
        f"{[round(r, 3) for r in ratios]}")))


def _med(values: list) -> str:
    return f"{statistics.median(values):.3g}" if values else "n/a"


def _why(what: str, t: dict, facts: str) -> str:
    """The note of one target: met, missed or not measured, and the measured facts behind it."""
    state = t["status"] if t["holds"] is None else (
        f"target {'met' if t['holds'] else 'missed'} ({t['measured']:.3g} {t['target']})")
    return f"{what}: {state}; {facts}"


def _with_max_epochs(space, max_epochs: int):
    import dataclasses

    base = space.base.override({"train.max_epochs": max_epochs,
                                "model.mixed_pretrain_epochs": min(space.base.model.mixed_pretrain_epochs,
                                                                   max_epochs - 1)})
    return dataclasses.replace(space, base=base, max_epochs=max_epochs)
