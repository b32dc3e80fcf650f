"""Warm start: seed a search's Optuna sampler with the finished trials of earlier searches (issue 20 item 1).

``blemore search SPACE --warm-start NAME`` (repeatable) or ``warm_start: [NAME, ...]`` in the space file. Each NAME is
an earlier search = an MLflow experiment of the same tracking store. Its trials are read from the parent runs
(tag ``role=parent``) whose ``trial_status`` tag says how they ended:

* ``completed``: seeded as an Optuna ``COMPLETE`` trial with the objective(s) the search optimises
  (``score``, or ``acc_presence``/``acc_salience`` for a Pareto space);
* ``stopped`` (early-stopped by the scheduler): seeded as a ``PRUNED`` trial whose intermediate values are its
  ``epoch/score`` learning curve (how Optuna itself records an early-stopped trial: TPE ranks it below the
  completed trials, by the epoch it reached and its score there);
* ``error`` or no status (failed, killed, still running): not used.

A trial's parameters are the run's params (``Config.flat()`` of the resolved config, as strings), read back through
the NEW space's distributions (:func:`past_params`): parameters the new space does not search are dropped, a
parameter whose ``when`` condition does not hold in the new space is left out (as the define-by-run space would),
and a value outside the new range or choices is dropped with a note (so are the parameters conditioned on it).
A trial is not used at all, and counted by reason, when a fixed setting differs from the new search's
(:func:`fixed_mismatch`): the release (experiment tag ``blemore.release``, recorded by a warm-started search; otherwise the release
named in the experiment description the runner writes, "on the release `<dir>`"), ``data.encoders`` when the new space does not
search it, ``train.max_epochs``, the headline protocol ``thresholds.protocol``.

The trials go into the study through Optuna's public API (``optuna.trial.create_trial`` with each parameter's
distribution, ``study.add_trials``) before the first proposal, so TPE's start-up count is already spent when the
seeded trials reach it and its proposals come from the seeded model. The :data:`REPLAY_BEST` best earlier
configurations (single objective: by their score; Pareto: the first front) are evaluated first
(``study.enqueue_trial``, as Ray Tune's ``points_to_evaluate`` does): the new search starts from what the earlier
one found best, measured again under the new search's own scheduler, before TPE proposes anything. The one third-party internal is how
Ray's ``OptunaSearch`` holds its study (:func:`study_of`). ``blemore resume`` keeps the warm start: Tune restores the
searcher with its study, and the names are in the manifest's stored options. The new search's experiment records
what seeded it (tags ``warm_start.experiments``, ``warm_start.trials``, ``warm_start.not_used``; :func:`record`).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: tags of the search records (search/records/naming.py, formerly search/tracking.py; tests check they agree)
ROLE_TAG = "role"
STATUS_TAG = "trial_status"
#: experiment tag: the release directory of a warm-started search (written by :func:`record`)
RELEASE_TAG = "blemore.release"
#: the experiment description written by the runner (``search.runner._description``) names the release as
#: "on the release `<dir>`" (a test checks the two agree)
_DESCRIBED_RELEASE = re.compile(r"on the release `([^`]+)`")
#: trial_status values used for a warm start and the Optuna state each becomes
USED_STATUSES = ("completed", "stopped")
#: fixed settings a trial must share with the new search (Config.flat() keys, besides the release)
FIXED_KEYS = ("train.max_epochs", "thresholds.protocol")
_MAX_RUNS = 50_000
#: how many of the earlier searches' best configurations a warm-started search evaluates first (:func:`seed_study`)
REPLAY_BEST = 2


@dataclass(frozen=True)
class PastTrial:
    """One finished trial of an earlier search, as its MLflow parent run records it.

    Attributes:
        experiment: the earlier search's name (MLflow experiment).
        run_id: the parent run.
        status: ``"completed"`` or ``"stopped"``.
        params: the run's params: ``Config.flat()`` of the trial's resolved config, values as strings.
        metrics: the run's last ``score``, ``acc_presence``, ``acc_salience`` (floats; absent when not logged).
        curve: ``{epoch: score}`` from ``epoch/score`` (read for stopped trials only; empty otherwise).
        release: the release directory of the earlier search, or None when it was not recorded.
        run_name: the parent run's name (``t03 rank_aware top3 lr=1.1e-3``), for the console.
    """

    experiment: str
    run_id: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    curve: dict[int, float] = field(default_factory=dict)
    release: str | None = None
    run_name: str = ""


@dataclass
class WarmStart:
    """The trials that seed a search and what was left out.

    Attributes:
        trials: ``optuna.trial.FrozenTrial`` objects ready for ``study.add_trials``.
        used: seeded trials per experiment name.
        not_used: trials left out, by reason (``"train.max_epochs differs (8 != 10)"``, ...).
        notes: values dropped from used trials, by parameter (``"train.lr: 1.0 outside [1e-05, 0.1]"`` -> count).
        replayed: the MLflow run ids of the earlier configurations the search runs first (:func:`seed_study`).
        replayed_names: the same, as the console names them (run name, short id, search, recorded objective).
    """

    trials: list = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)
    not_used: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    replayed: list = field(default_factory=list)
    replayed_names: list = field(default_factory=list)

    def best(self, k: int) -> list:
        """Up to ``k`` seeded trials with distinct params, best first: one objective: COMPLETE trials by value and
        PRUNED ones by their best intermediate value; two objectives (Pareto): the COMPLETE trials no other
        COMPLETE trial dominates, by the first objective."""
        from optuna.trial import TrialState

        if any(t.values is not None and len(t.values) > 1 for t in self.trials):
            done = [t for t in self.trials if t.state == TrialState.COMPLETE]
            front = [t for t in done if not any(_dominates(o.values, t.values) for o in done)]
            ranked = sorted(front, key=lambda t: -t.values[0])
        else:
            def key(t: Any) -> float:
                if t.state == TrialState.COMPLETE:
                    return t.value
                return max(t.intermediate_values.values(), default=-math.inf)

            ranked = sorted(self.trials, key=lambda t: -key(t))
        out: list = []
        for t in ranked:
            if len(out) < k and all(t.params != o.params for o in out):
                out.append(t)
        return out

    def describe(self) -> list[str]:
        """Lines for the console: what seeded the sampler, what was left out and why."""
        names = ", ".join(f"{n!r} ({k})" for n, k in self.used.items())
        lines = [f"warm start: {len(self.trials)} finished trials seed the sampler ({names or 'none'})"]
        if self.replayed:
            lines.append(f"warm start: the {len(self.replayed)} best earlier configuration(s) run first: "
                         + "; ".join(self.replayed_names or self.replayed))
        if self.not_used:
            why = "; ".join(f"{r}: {c}" for r, c in sorted(self.not_used.items()))
            lines.append(f"warm start: {sum(self.not_used.values())} trials not used ({why})")
        for note, c in sorted(self.notes.items()):
            lines.append(f"note: warm start: {note} (value dropped from {c} trial{'s' if c > 1 else ''})")
        return lines

    def tags(self) -> dict[str, str]:
        """Experiment tags recording the warm start (``warm_start.*``)."""
        return {"warm_start.experiments": json.dumps(self.used), "warm_start.trials": str(len(self.trials)),
                "warm_start.not_used": json.dumps(dict(self.not_used)),
                "warm_start.replayed": json.dumps(self.replayed)}


def described(tags: dict[str, str]) -> str:
    """One Markdown paragraph for the experiment's description from the ``warm_start.*`` tags that
    :meth:`WarmStart.tags` wrote: which searches seeded it with how many trials, how many were left out, which
    configurations ran first. ``""`` for a search that was not warm-started."""
    if "warm_start.trials" not in tags:
        return ""
    used = json.loads(tags.get("warm_start.experiments") or "{}")
    not_used = json.loads(tags.get("warm_start.not_used") or "{}")
    replayed = json.loads(tags.get("warm_start.replayed") or "[]")
    text = (f"Warm-started: {tags['warm_start.trials']} finished trials of earlier searches seeded the sampler ("
            + (", ".join(f"`{n}`: {k}" for n, k in used.items()) or "none") + ")")
    if not_used:
        text += f"; {sum(not_used.values())} not used (" + "; ".join(f"{r}: {c}" for r, c in sorted(not_used.items())) + ")"
    if replayed:
        text += (f"; the {len(replayed)} best earlier configuration(s) ran first (runs "
                 + ", ".join(f"`{r[:8]}`" for r in replayed) + ")")
    return text + ". Tags `warm_start.*` hold the same."


def _dominates(a: Any, b: Any) -> bool:
    """``a`` dominates ``b`` (both maximised): at least as good in every objective, better in one."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def names_of(space: Any, opts: Any) -> tuple[str, ...]:
    """The searches to warm-start from: ``--warm-start`` names, then the space's ``warm_start:``, each once."""
    out: list[str] = []
    for n in (*(getattr(opts, "warm_start", None) or ()), *(getattr(space, "warm_start", None) or ())):
        if n not in out:
            out.append(n)
    return tuple(out)


def check_names(names: tuple[str, ...], name: str, client: Any) -> None:
    """Reject a warm start from the search itself or from a search the store does not hold.

    Raises:
        InputError: naming ``--warm-start`` and the value.
    """
    from search.errors import InputError

    for n in names:
        if n == name:
            raise InputError(f"--warm-start: {n!r} is this search's own name; name an earlier search")
        if client.get_experiment_by_name(n) is None:
            known = sorted(e.name for e in client.search_experiments(max_results=200))
            raise InputError(f"--warm-start: no search named {n!r} in the tracking store (known: "
                             f"{', '.join(known) or 'none'})")


def read_past_trials(client: Any, experiment: str) -> tuple[list[PastTrial], Counter]:
    """The finished trials of ``experiment`` (``trial_status`` completed or stopped) and the count of the others.

    Args:
        client: an ``mlflow.MlflowClient`` of the tracking store.
        experiment: the search name.

    Returns:
        ``(trials, not_used)``: not_used counts failed / unfinished trials by reason.

    Raises:
        ValueError: no such experiment.
    """
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"--warm-start: no search named {experiment!r} in the tracking store")
    release = exp.tags.get(RELEASE_TAG)
    if release is None:
        m = _DESCRIBED_RELEASE.search(exp.tags.get("mlflow.note.content", ""))
        release = m.group(1) if m else None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.{ROLE_TAG} = 'parent'",
                              max_results=_MAX_RUNS)
    out, skipped = [], Counter()
    for r in runs:
        status = r.data.tags.get(STATUS_TAG)
        if status not in USED_STATUSES:
            skipped[f"trial_status {status or 'missing (unfinished)'}"] += 1
            continue
        curve = {}
        if status == "stopped":
            curve = {int(m.step): float(m.value) for m in client.get_metric_history(r.info.run_id, "epoch/score")}
        out.append(PastTrial(experiment, r.info.run_id, status, dict(r.data.params), dict(r.data.metrics), curve,
                             release, r.info.run_name or ""))
    return out, skipped


def fixed_mismatch(space: Any, data_dir: str | None, past: PastTrial) -> str | None:
    """Why ``past`` cannot seed a search of ``space`` on ``data_dir`` (None when it can): the release, the encoders
    when ``data.encoders`` is not searched, ``train.max_epochs``, the headline protocol."""
    if data_dir is not None:
        if past.release is None:
            return "release not recorded"
        if str(past.release) != str(data_dir):
            return "release differs"
    flat = space.base.flat()
    keys = list(FIXED_KEYS)
    if "data.encoders" not in {p.key for p in space.params}:
        keys.append("data.encoders")
    for k in keys:
        mine = str(space.max_epochs) if k == "train.max_epochs" else str(flat[k])
        theirs = past.params.get(k)
        if theirs is None:
            return f"{k} not recorded"
        if theirs != mine:
            return f"{k} differs ({theirs} != {mine})"
    return None


def _distribution(space: Any, p: Any, chosen: dict[str, Any]) -> Any:
    """The distribution ``p`` is sampled from given the values chosen before it (mirrors ``SearchSpace.suggest``:
    ``model.top_n`` is bounded by the size of the encoder set)."""
    import optuna.distributions as od

    from search.space import encoder_set

    d = p.dist
    if p.key == "model.top_n" and isinstance(d, od.IntDistribution):
        n_enc = len(encoder_set(chosen.get("data.encoders", space.base.data.encoders)))
        return od.IntDistribution(d.low, max(d.low, min(d.high, n_enc)), step=d.step, log=d.log)
    return d


def _value(dist: Any, key: str, text: str) -> tuple[Any, bool]:
    """The recorded string ``text`` as a value of ``dist``: ``(value, inside)``; inside False when it is outside
    the range or not among the choices (``value`` is then the parsed value, for the note)."""
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        for c in dist.choices:
            if str(c) == text or (key == "data.encoders" and str(c) == text.replace(",", "+")):
                return c, True
            if isinstance(c, (int, float)) and not isinstance(c, bool):
                try:
                    if float(text) == float(c):
                        return c, True
                except ValueError:
                    pass
        return text, False
    try:
        v = float(text)
    except ValueError:
        return text, False
    if isinstance(dist, od.IntDistribution):
        if v != int(v):
            return v, False
        v = int(v)
        return v, dist.low <= v <= dist.high and (v - dist.low) % dist.step == 0
    return v, math.isfinite(v) and dist.low <= v <= dist.high


def past_params(space: Any, past: PastTrial, notes: Counter) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(params, distributions)`` of ``past`` in the new ``space``, walked in the define-by-run order.

    Dropped: parameters the space does not search (never read), parameters whose ``when`` does not hold, values
    outside the new range or choices (one note per parameter and value in ``notes``) and the parameters conditioned
    on a dropped one.
    """
    params: dict[str, Any] = {}
    dists: dict[str, Any] = {}
    dropped: set[str] = set()
    for p in space.params:
        if any(ck in dropped for ck in p.when):
            dropped.add(p.key)
            continue
        if not space._active(p, params) or p.key not in past.params:
            continue
        d = _distribution(space, p, params)
        v, inside = _value(d, p.key, past.params[p.key])
        if not inside:
            notes[f"{p.key}: {v!r} outside the new space ({_describe(d)})"] += 1
            dropped.add(p.key)
            continue
        params[p.key], dists[p.key] = v, d
    return params, dists


def _describe(d: Any) -> str:
    choices = getattr(d, "choices", None)
    return f"choices {list(choices)}" if choices is not None else f"range [{d.low:g}, {d.high:g}]"


def frozen_trial(space: Any, past: PastTrial, notes: Counter) -> tuple[Any | None, str | None]:
    """``(FrozenTrial, None)`` seeding ``space``'s study from ``past``, or ``(None, reason)`` when it cannot."""
    import optuna
    from optuna.trial import TrialState

    params, dists = past_params(space, past, notes)
    if not params:
        return None, "no parameter of the new space"
    attrs = {"warm_start": past.experiment, "mlflow_run_id": past.run_id, "mlflow_run_name": past.run_name}
    if past.status == "stopped":
        curve = {e: v for e, v in past.curve.items() if math.isfinite(v)}
        if not curve:
            return None, "stopped before a finite score"
        return optuna.trial.create_trial(state=TrialState.PRUNED, params=params, distributions=dists,
                                         intermediate_values=curve, user_attrs=attrs), None
    values = [past.metrics.get(m) for m in space.metrics]
    if any(v is None or not math.isfinite(v) for v in values):
        return None, "no finite objective"
    kw = {"values": values} if len(values) > 1 else {"value": values[0]}
    return optuna.trial.create_trial(state=TrialState.COMPLETE, params=params, distributions=dists,
                                     user_attrs=attrs, **kw), None


def build_warm_start(space: Any, names: tuple[str, ...], client: Any, data_dir: str | None) -> WarmStart:
    """Read the finished trials of the searches ``names`` and turn the compatible ones into Optuna trials.

    Args:
        space: the new search's :class:`~search.space.SearchSpace`.
        names: earlier search names (MLflow experiments of ``client``'s store).
        client: ``mlflow.MlflowClient``.
        data_dir: the new search's release directory (None: the release is not compared).

    Raises:
        ValueError: a name the store does not hold.
    """
    warm = WarmStart()
    for n in names:
        past, skipped = read_past_trials(client, n)
        warm.not_used.update(skipped)
        k = 0
        for t in past:
            reason = fixed_mismatch(space, data_dir, t)
            ft = None
            if reason is None:
                ft, reason = frozen_trial(space, t, warm.notes)
            if ft is None:
                warm.not_used[reason] += 1
                continue
            warm.trials.append(ft)
            k += 1
        warm.used[n] = k
    return warm


def study_of(searcher: Any) -> Any:
    """The ``optuna.Study`` of a Ray Tune ``OptunaSearch``.

    Ray 2.60 (``ray/tune/search/optuna/optuna_search.py``) creates it in ``_setup_study`` as ``self._ot_study``,
    from ``__init__`` when a space is given (our define-by-run callable always is) and saves it with the searcher
    (so a resumed search keeps the seeded trials). The only third-party internal this module reads; a test checks it.

    Raises:
        RuntimeError: the searcher holds no Optuna study there (a Ray Tune that changed it).
    """
    import optuna

    study = getattr(searcher, "_ot_study", None)
    if not isinstance(study, optuna.Study):
        raise RuntimeError(f"warm start: {type(searcher).__name__} holds no optuna.Study in _ot_study (got "
                           f"{type(study).__name__}); this Ray Tune version stores its study elsewhere")
    return study


def seed_study(study: Any, warm: WarmStart, replay: int = REPLAY_BEST) -> int:
    """Add the warm start's trials to ``study`` (``study.add_trials``) and enqueue the params of its ``replay``
    best (:meth:`WarmStart.best`; ``study.enqueue_trial``, user attribute ``warm_start_replay`` = the earlier run):
    the study's next ``replay`` proposals. Records the replayed runs in ``warm.replayed``; returns how many trials
    were added.

    Raises:
        ValueError: a trial Optuna rejects (its number of objectives differs from the study's).
    """
    study.add_trials(warm.trials)
    warm.replayed, warm.replayed_names = [], []
    for t in warm.best(replay):
        run = str(t.user_attrs.get("mlflow_run_id", ""))
        study.enqueue_trial(dict(t.params), user_attrs={"warm_start_replay": run})
        warm.replayed.append(run)
        recorded = "/".join(f"{v:.4f}" for v in t.values)
        warm.replayed_names.append(f"{t.user_attrs.get('mlflow_run_name') or 'run'} {run[:8]} "
                                   f"({t.user_attrs.get('warm_start')}, recorded {recorded})")
    return len(warm.trials)


def warm_start_searcher(searcher: Any, space: Any, names: tuple[str, ...], tracking_uri: str, name: str,
                        data_dir: str | None) -> WarmStart | None:
    """Seed ``searcher``'s study from the searches ``names`` and record what seeded it (nothing without names: no
    MLflow call). Prints what was used and left out (the notes on stderr).

    Raises:
        InputError: a name that is this search's own or that the store does not hold.
    """
    if not names:
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    check_names(names, name, client)
    warm = build_warm_start(space, names, client, data_dir)
    seed_study(study_of(searcher), warm)
    for line in warm.describe():
        print(line, file=sys.stderr if line.startswith("note:") else sys.stdout, flush=True)
    record(client, name, data_dir, warm)
    return warm


def record(client: Any, name: str, data_dir: str | None, warm: WarmStart) -> None:
    """Experiment tags of the warm-started search ``name``: its release (:data:`RELEASE_TAG`) and ``warm.tags()``."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return
    tags = {RELEASE_TAG: str(data_dir)} if data_dir is not None else {}
    tags.update(warm.tags())
    for k, v in tags.items():
        client.set_experiment_tag(exp.experiment_id, k, v)


__all__ = ["PastTrial", "WarmStart", "build_warm_start", "described", "fixed_mismatch", "past_params", "frozen_trial",
           "read_past_trials", "record", "seed_study", "study_of", "warm_start_searcher", "names_of"]
