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
  the best score random or TPE + ASHA recorded with that seed within the shared budget, over random search's (every
  trial to max_epochs); median over seeds <= 1/3. Where good configurations are rare, random search often has not
  recorded that level by the end of the shared budget: a search that has not goes on past it (the same sampler,
  seed and stopping; the level stays the one set within the budget) up to :data:`EXTEND` x the budget, so that its
  fold-epochs are measured instead of bounded by the budget; one still not there counts as that cap (random: the
  seed's ratio is an upper bound; TPE + ASHA: a lower bound).
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
    python -m benchmarks.efficiency --replay-from benchmarks/results/efficiency.json   # reuse an earlier run's trials
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
#: rare good region a few times; a full run takes about 45-55 minutes with one worker on 2 cores (42 min within the
#: budget, then the searches past it; 10 min when the budget's trials are replayed with --replay-from)
RANDOM_TRIALS = 36
#: a search that has not recorded the level of the TPE + ASHA target by the end of the shared budget goes on up to
#: EXTEND x the budget (see the module docstring)
EXTEND = 4
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
           seeded: list[dict] | None = None, until: float | None = None,
           replay: list[dict] | None = None) -> list[dict]:
    """One search until ``budget`` fold-epochs are spent: [{params, rows, fold_epochs}] in trial order.

    ``sampler``: ``random`` or ``tpe`` (the runner's :func:`make_sampler`); ``seeded``: trials of an earlier search
    seeding the study through the warm start's own functions; ``until``: also stop after the first trial recording
    at least this Score; ``replay``: the trials of an earlier run of the same search (same sampler, seed, stopping
    and seeding), taken in order instead of training them again (:func:`_replay`; the first is trained again and
    must give the same epochs, see :func:`_check_replay`). Raises RuntimeError when a replay diverges."""
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
        flat = {k: str(v) for k, v in cfg.flat().items()}
        if len(out) < len(replay or ()):
            if not out:
                _check_replay(cfg, data, replay[0])
            rows = _replay(replay[len(out)], flat, decide(str(t.number)), len(out))
        else:
            rows = run_trial(cfg, data, decide(str(t.number)))
        spent += len(rows) * N_FOLDS
        last = rows[-1]
        study.tell(t, [last[1], last[2]] if pareto else last[0])
        out.append({"params": params, "rows": rows, "fold_epochs": len(rows) * N_FOLDS, "flat": flat,
                    "stopped": len(rows) < space.max_epochs})
        if until is not None and last[0] >= until - 1e-12:
            break
    return out


def _replay(earlier: dict, flat: dict, decide, i: int) -> list[tuple[float, float, float]]:
    """Trial ``i`` of an earlier run of the same search, fed to this search's scheduler instead of being trained
    again (training seed 0: a configuration trains to the same epochs in every search). Raises RuntimeError when
    the sampler proposed another configuration or the scheduler stops the trial at another epoch than before."""
    if earlier["flat"] != flat:
        raise RuntimeError(f"replay diverged at trial {i}: the sampler proposed another configuration than the "
                           "earlier run (another space, seed or Optuna version?)")
    rows = [tuple(float(x) for x in r) for r in earlier["rows"]]
    for n, r in enumerate(rows, 1):
        go = decide is None or decide(n, r)
        if (not go and n < len(rows)) or (go and n == len(rows) and earlier["stopped"]):
            raise RuntimeError(f"replay diverged at trial {i}: the scheduler {'stops' if not go else 'continues'} "
                               f"it at epoch {n}, the earlier run {'stopped it' if earlier['stopped'] else 'ran'} "
                               f"to epoch {len(rows)}")
        if not go:
            break
    return rows


#: largest difference allowed between a replayed trial's Scores and the same trial trained again
REPLAY_TOLERANCE = 1e-9


def _check_replay(cfg, data, earlier: dict) -> None:
    """Train the first replayed trial again (no stopping) and compare its epochs with the earlier run's; raises
    RuntimeError when a Score differs by more than :data:`REPLAY_TOLERANCE` (the replay is of other code or data)."""
    rows = run_trial(cfg, data)[:len(earlier["rows"])]
    diff = max(abs(a - b) for r, e in zip(rows, earlier["rows"]) for a, b in zip(r, e))
    if len(rows) != len(earlier["rows"]) or diff > REPLAY_TOLERANCE:
        raise RuntimeError(f"replayed trials are not what this code trains: the first trial gives {rows}, the "
                           f"earlier run recorded {earlier['rows']}")


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


def rare_space(quick: bool):
    """The benchmark's search space :data:`RARE_SPACE` (max_epochs 2 when quick)."""
    import tempfile

    from search.space import load_space

    with tempfile.TemporaryDirectory(prefix="bench_efficiency_") as d:
        path = Path(d) / "efficiency_rare.yaml"
        path.write_text(RARE_SPACE)
        space = load_space(path)
    return _with_max_epochs(space, 2) if quick else space


def _load(quick: bool):
    """The benchmark's space and the tiny release's training data."""
    from blemore_core.train import prepare_data

    space = rare_space(quick)
    return space, prepare_data(space.base, release("tiny"), progress=False)


def _init_worker(quick: bool) -> None:
    import torch

    torch.set_num_threads(1)  # one thread per worker process (the machine is shared)
    _W["space"], _W["data"] = _load(quick)


def _task(job: tuple) -> list[dict]:
    """One search in a worker: ``(kind, seed, budget, seeded, replay, until)`` (see :func:`search`)."""
    kind, seed, budget, seeded, replay, until = job
    space, data = _W["space"], _W["data"]
    more = {"replay": replay, "until": until}
    if kind == "random":
        return search(space, data, "random", seed, budget, None, **more)
    if kind in ("tpe_asha", "warm"):
        return search(space, data, "tpe", seed, budget, "asha", seeded=seeded, **more)
    return search(_pareto(space), data, "tpe", seed, budget, "pareto" if kind == "pareto_stop" else "asha",
                  pareto=True, **more)


def run(quick: bool, out: Path, replay_from: Path | None = None) -> Result:
    """The benchmark; ``replay_from``: an earlier efficiency.json of the same inputs whose trials (``details``) are
    replayed instead of trained again (see :func:`search`), e.g. to add the searches past the budget to a run."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    res = Result("efficiency", quick)
    space = rare_space(quick)
    seeds, n_random = ((0, 1), 1) if quick else ((0, 1, 2, 3, 4), RANDOM_TRIALS)
    budget = n_random * space.max_epochs * N_FOLDS
    res.inputs = {"profile": "tiny", "space": RARE_SPACE.strip(), "max_epochs": space.max_epochs,
                  "grace_period": space.grace_period, "reduction_factor": space.reduction_factor,
                  "random_trials": n_random, "budget_fold_epochs": budget, "extend": EXTEND, "seeds": list(seeds),
                  "patience": "off", "training_seed": 0, "workers": WORKERS}
    old = _earlier_trials(replay_from, res.inputs) if replay_from else {}
    if replay_from:
        res.notes.append(f"trials replayed from {replay_from} (started {old.pop('started_utc')}), not trained again; "
                         "the first of each search was trained again and gave the same epochs")
    kinds = ("random", "tpe_asha", "pareto_stop", "pareto_asha")

    def again(s, k):
        return old.get(f"seed{s}", {}).get(k)

    with ProcessPoolExecutor(WORKERS, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(quick,)) as pool:
        jobs = {(k, s): pool.submit(_task, (k, s, budget, None, again(s, k), None)) for s in seeds for k in kinds}
        runs = {s: {k: jobs[(k, s)].result() for k in kinds} for s in seeds}
        nxt = {s: seeds[(seeds.index(s) + 1) % len(seeds)] for s in seeds}  # warm: seeded from s, sampler seed s+1
        warm = {s: pool.submit(_task, ("warm", nxt[s], budget, runs[s]["tpe_asha"], again(s, "warm_from_tpe_asha"),
                                       None)) for s in seeds}
        beyond = {}
        for s in seeds:  # the TPE + ASHA target's searches that have not recorded its level go on past the budget
            level = _level(runs[s])
            for k in ("random", "tpe_asha"):
                if fold_epochs_to_reach(runs[s][k], level) is None:
                    earlier = runs[s][k] + (again(s, f"{k}_beyond_budget") or [])
                    beyond[(s, k)] = pool.submit(_task, (k, s, EXTEND * budget, None, earlier, level))
        for s in seeds:
            runs[s]["warm_from_tpe_asha"] = warm[s].result()
        for (s, k), f in beyond.items():
            runs[s][f"{k}_beyond_budget"] = f.result()[len(runs[s][k]):]
    _score_targets(res, runs, budget)
    _warm_targets(res, runs, budget)
    _pareto_targets(res, runs, budget)
    res.extra = {f"seed{s}": r for s, r in runs.items()}
    return res


def _level(run: dict) -> float:
    """The TPE + ASHA target's level of one seed: 95 % of the best Score random or TPE + ASHA recorded within the
    shared budget (their trials past it do not move it)."""
    return 0.95 * max(_best(run["random"]), _best(run["tpe_asha"]))


def _score_targets(res: Result, runs: dict, budget: int) -> None:
    cap = EXTEND * budget
    ratios, facts = [], {"random": [], "tpe_asha": [], "share": [], "upper": 0, "lower": 0}
    for s, r in runs.items():
        level = _level(r)
        rnd = r["random"] + r.get("random_beyond_budget", [])
        tpe = r["tpe_asha"] + r.get("tpe_asha_beyond_budget", [])
        fr, ft = fold_epochs_to_reach(rnd, level), fold_epochs_to_reach(tpe, level)
        share = sum(recorded(t) >= level - 1e-12 for t in rnd) / len(rnd)
        res.figure(f"seed{s}/best_score", level / 0.95, "Score", note="the best recorded within the shared budget")
        for m, v, trials in (("random", fr, rnd), ("tpe_asha", ft, tpe)):
            res.figure(f"seed{s}/{m}_fold_epochs_to_95pct", v if v is not None else float("nan"), "fold-epochs",
                       note=f"past the budget ({budget}) the search went on up to {cap}; NaN: not reached by then")
            res.figure(f"seed{s}/{m}_trials", len(trials), "trials", note="including those past the budget")
            res.figure(f"seed{s}/{m}_best_score", _best(r[m]), "Score", note="within the shared budget")
        res.figure(f"seed{s}/random_share_reaching_95pct", share, "fraction",
                   note="how rare good configurations are: random trials (all run) reaching 95 % of the best")
        ratios.append((ft if ft is not None else cap) / (fr if fr is not None else cap))
        facts["upper"] += fr is None and ft is not None
        facts["lower"] += ft is None and fr is not None
        facts["random"].append(fr if fr is not None else cap)
        facts["tpe_asha"].append(ft if ft is not None else cap)
        facts["share"].append(share)
    res.figure("ratio_tpe_asha_over_random", ratios, "fraction",
               note=f"a search not reaching the level by {EXTEND}x the budget counts as that: random, an upper "
                    "bound of the seed's ratio; TPE + ASHA, a lower bound")
    t = res.target("tpe_asha_fraction_of_random_fold_epochs", statistics.median(ratios) if ratios else None, "<=",
                   round(TARGET_FRACTION, 4), "random search, every trial to max_epochs, same sampler seeds; the "
                   "level set within the same budget", not_measured=None if ratios else "no seeds")
    res.notes.append(_why("TPE + ASHA vs random", t, (
        f"median fold-epochs to 95 % of the best recorded within the shared budget ({budget} fold-epochs): random "
        f"{_med(facts['random'])}, TPE + ASHA {_med(facts['tpe_asha'])}; a search not there by the end of the budget "
        f"went on (same sampler, seed and stopping) up to {cap}, one not there by then counts as {cap}: random in "
        f"{facts['upper']} of {len(ratios)} seeds (that seed's ratio an upper bound), TPE + ASHA in {facts['lower']} "
        f"(a lower bound); per seed ratios {[round(x, 3) for x in ratios]}; median share of random trials reaching "
        f"the level {_med(facts['share'])}")))


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


def _earlier_trials(path: Path, inputs: dict) -> dict:
    """The ``details`` (trials per seed and search) of an earlier efficiency.json of the same inputs, and its
    ``started_utc``. Raises ValueError naming the file and field when its inputs differ."""
    import json

    doc = json.loads(Path(path).read_text())
    for key in ("space", "max_epochs", "random_trials", "budget_fold_epochs", "seeds", "training_seed"):
        if doc.get("inputs", {}).get(key) != inputs[key]:
            raise ValueError(f"{path}: inputs.{key} is {doc.get('inputs', {}).get(key)!r}, this run's is "
                             f"{inputs[key]!r}: its trials cannot be replayed")
    return {**doc.get("details", {}), "started_utc": doc.get("started_utc")}


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


if __name__ == "__main__":
    import argparse

    from ._common import DEFAULT_OUT

    ap = argparse.ArgumentParser(description="python -m benchmarks.efficiency [--replay-from JSON]: the efficiency "
                                             "benchmark (as python -m benchmarks --only efficiency), optionally "
                                             "replaying an earlier run's trials instead of training them again")
    ap.add_argument("--replay-from", type=Path, default=None, help="an earlier efficiency.json of the same inputs")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args()
    r = run(False, a.out, a.replay_from)
    print(f"wrote {r.write(a.out)}")
    for k, v in r.targets.items():
        print(f"   target {k}: {v['measured']} (target {v['target']}): {v['holds']}")
