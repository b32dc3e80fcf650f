"""Running and resuming a search: Ray Tune + OptunaSearch (seeded TPE / multi-objective TPE) + ASHA, trials from
:mod:`search.trainable`, records from :mod:`search.records` (docs/ARCHITECTURE.md section 6).

Order of events in :func:`run_search`: validate the space and options (no Ray yet) -> preflight
(:mod:`search.preflight`: paths made absolute, the tracking store and the Ray address answer within seconds;
nothing is written before it passes) -> create the tracking store atomically and take the search-name lock
(:mod:`search.records.store`) -> resolve the release (the embedded demo release when none is named) -> build the
feature cache once in the driver -> start Ray bound to 127.0.0.1 (token authentication on) or join the given
cluster -> write the search manifest (``<storage>/<name>/blemore_search.json``, what :func:`resume_search`
needs) -> ``Tuner.fit()`` -> end the MLflow runs of this search still RUNNING (also on Ctrl-C or a crash) ->
release the name lock -> summary of the best trials.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from blemore_core.names import DEFAULT_OBJECTIVE, OBJECTIVES
from search.defaults import DEFAULT_STORAGE
from search.resources import TRIAL_ACTOR_CPUS, Plan, check_device_options, plan_resources
from search.safety import resume_command
from search.space import SearchSpace, SpaceError, encoder_set, load_space
from search.storage import MANIFEST, Storage, read_manifest, resolve_storage, write_manifest


@dataclass(frozen=True)
class SearchOptions:
    """Command-line options of ``blemore search`` (None = take the default described per field).

    Attributes:
        name: search name = MLflow experiment = Tune experiment directory (default: the space's name).
        data: release directory (default: the space's ``data.dir``, else the embedded demo release).
        address: Ray address (``auto``, ``ray://host:port``); None starts a local Ray.
        num_cpus: CPUs of a local Ray (default: the machine's).
        tracking_uri: MLflow URI (default: ``sqlite:///./mlflow.db``, artifacts in ``./mlruns``).
        num_samples, max_concurrent: budgets (default: the space's ``budget``).
        cpus_per_fold: CPUs per fold worker (default: local Ray: the CPUs shared evenly by ``max_concurrent``
            trials, at most 1; cluster: 1). Torch threads per worker = max(1, floor(cpus_per_fold)).
        gpus_per_fold: GPUs per fold worker (fractions share a GPU between folds; default 0).
        fold_layout: ``packed`` (one Ray Train worker trains all folds of a trial; the default) or ``workers``
            (one worker per fold); default: the space's ``fold_layout``, else ``packed``.
        cpus_per_trial, gpus_per_trial: ``packed`` layout: the trial's worker's reservation (default CPUs: local
            Ray: the CPUs shared evenly by ``max_concurrent`` trials, at most 1 per fold; cluster: 1 per fold;
            GPUs: 0). ``--gpus-per-trial 0.1`` lets ten trials share a GPU.
        scheduler: ``asha`` or ``none`` (default: the space's).
        storage: Tune storage directory or URI (default ``./ray_results``).
        seed: seed of the Optuna sampler.
        max_failures: retries of a failed trial (Tune FailureConfig).
        verbose: Tune verbosity (0 silent, 1 status table, 2 + per-result lines).
        warm_start: earlier search names whose finished trials seed the sampler (``--warm-start``, issue 20; added
            to the space's ``warm_start:``; see :mod:`search.warmstart`).
    """

    name: str | None = None
    data: str | None = None
    address: str | None = None
    num_cpus: int | None = None
    tracking_uri: str | None = None
    num_samples: int | None = None
    max_concurrent: int | None = None
    cpus_per_fold: float | None = None
    gpus_per_fold: float = 0.0
    fold_layout: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float = 0.0
    scheduler: str | None = None
    storage: str | None = None
    seed: int = 0
    max_failures: int = 1
    verbose: int = 1
    warm_start: tuple[str, ...] = ()  # issue 20 (i20): --warm-start NAME, repeatable


@dataclass
class SearchOutcome:
    """What a finished (or interrupted) search returns.

    Attributes:
        name: the search name.
        experiment_path: Tune's experiment directory.
        tracking_uri: the MLflow store.
        results: Tune's ResultGrid.
        summary: rows of the best trials (dicts), best first.
        interrupted: Tune stopped before the budget was spent (Ctrl-C).
        leaked_cpus: logical CPUs still held 20 s after Tune returned (0 when every trial's Ray Train run, including
            those of trials stopped early by ASHA, released its fold workers).
        ui_link: the MLflow UI link to the search's trials, best first.
        objectives: the space's objectives (what the summary ranks by).
    """

    name: str
    experiment_path: str
    tracking_uri: str
    results: Any
    summary: list[dict]
    interrupted: bool = False
    leaked_cpus: float = 0.0
    ui_link: str = ""
    objectives: tuple[str, ...] = (DEFAULT_OBJECTIVE,)


class _DefineByRun:
    """Picklable define-by-run callable for ``OptunaSearch(space=...)`` (the searcher is saved for resume)."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial: Any) -> dict | None:
        self.space.suggest(trial)
        # constants merged into the trial's config: the Optuna trial number, used by the debug.fail_trial knob
        return {"debug.trial_index": trial.number} if self.space.debug else None


def check_options(opts: SearchOptions) -> None:
    """Reject bad option values before anything starts.

    Raises:
        ValueError: naming the option and its value.
    """
    errs = []
    if opts.cpus_per_fold is not None and not opts.cpus_per_fold > 0:
        errs.append(f"--cpus-per-fold: must be > 0, got {opts.cpus_per_fold}")
    if opts.gpus_per_fold < 0:
        errs.append(f"--gpus-per-fold: must be >= 0, got {opts.gpus_per_fold}")
    if opts.cpus_per_trial is not None and not opts.cpus_per_trial > 0:
        errs.append(f"--cpus-per-trial: must be > 0, got {opts.cpus_per_trial}")
    if opts.gpus_per_trial < 0:
        errs.append(f"--gpus-per-trial: must be >= 0, got {opts.gpus_per_trial}")
    if opts.fold_layout not in (None, "packed", "workers"):
        errs.append(f"--fold-layout: must be packed or workers, got {opts.fold_layout!r}")
    for k in ("num_samples", "max_concurrent", "num_cpus"):
        v = getattr(opts, k)
        if v is not None and v < 1:
            errs.append(f"--{k.replace('_', '-')}: must be >= 1, got {v}")
    if opts.scheduler not in (None, "asha", "none"):
        errs.append(f"--scheduler: must be asha or none, got {opts.scheduler!r}")
    if opts.max_failures < 0:
        errs.append(f"--max-failures: must be >= 0, got {opts.max_failures}")
    if any(not isinstance(n, str) or not n for n in opts.warm_start or ()):  # issue 20 (i20)
        errs.append(f"--warm-start: must name an earlier search, got {list(opts.warm_start)!r}")
    # --name: checked with the space's name by search.safety.resolve_search_name (one rule, one place)
    if errs:
        from search.errors import InputError

        raise InputError("invalid search options:\n  " + "\n  ".join(errs))


def fold_layout(space: SearchSpace, opts: SearchOptions) -> str:
    """The search's fold layout: ``--fold-layout``, else the space's ``fold_layout``, else ``packed``."""
    return opts.fold_layout or space.fold_layout or "packed"


def worker_resources(space: SearchSpace, opts: SearchOptions) -> tuple[float | None, float]:
    """``(CPUs or None for the plan's default, GPUs)`` of one Ray Train worker under the search's fold layout.

    Raises:
        InputError: a per-fold flag with the ``packed`` layout or a per-trial flag with ``workers`` (names both).
    """
    from search.errors import InputError

    layout = fold_layout(space, opts)
    per_fold = [f for f, v in (("--cpus-per-fold", opts.cpus_per_fold), ("--gpus-per-fold", opts.gpus_per_fold))
                if v]
    per_trial = [f for f, v in (("--cpus-per-trial", opts.cpus_per_trial), ("--gpus-per-trial", opts.gpus_per_trial))
                 if v]
    if layout == "packed" and per_fold:
        raise InputError(f"{per_fold[0]}: applies to --fold-layout workers; this search packs each trial's folds "
                         f"into one worker (fold layout packed): use {per_fold[0].replace('fold', 'trial')} "
                         "or --fold-layout workers")
    if layout == "workers" and per_trial:
        raise InputError(f"{per_trial[0]}: applies to --fold-layout packed; with --fold-layout workers use "
                         f"{per_trial[0].replace('trial', 'fold')}")
    if layout == "packed":
        return opts.cpus_per_trial, opts.gpus_per_trial
    return opts.cpus_per_fold, opts.gpus_per_fold


def _storage(opts: SearchOptions) -> str:
    s = opts.storage or DEFAULT_STORAGE
    return s if "://" in s else str(Path(s).expanduser().resolve())


def _init_ray(opts: SearchOptions) -> bool:
    """Start (or join) Ray with the search's Train environment; returns True when this call started it.

    A local Ray (no ``--address``) is a new private instance bound to 127.0.0.1 (:data:`search.compat.LOCAL_RAY_ENV`,
    :func:`search.compat.bind_local_ray_to_loopback`), with Ray's token authentication."""
    import ray

    from search.compat import RAY_TRAIN_ENV, bind_local_ray_to_loopback
    from search.trainable import set_process_env

    set_process_env()
    if ray.is_initialized():
        return False
    if opts.address:
        from search.storage import forwarded_env

        ray.init(address=opts.address, runtime_env={"env_vars": {**RAY_TRAIN_ENV, **forwarded_env()}},
                 log_to_driver=opts.verbose > 1)
    else:
        bind_local_ray_to_loopback()
        # address="local": always a new private Ray, never a cluster someone started with `ray start` here
        # the dashboard (loopback only) serves Ray's State API, which Ray Train's PlacementGroupCleaner needs to
        # release the fold workers' placement group of a trial that Tune stopped (ASHA, time budget, Ctrl-C)
        ray.init(address="local", num_cpus=opts.num_cpus or os.cpu_count(), include_dashboard=True,
                 dashboard_host="127.0.0.1", log_to_driver=opts.verbose > 1, _node_ip_address="127.0.0.1")
    return True


def _prepare(space: SearchSpace, opts: SearchOptions) -> tuple[str, int]:
    """Resolve the release and build its feature cache once, in the driver; returns (data_dir, number of folds)."""
    import numpy as np

    from blemore_core.train import prepare_data

    if space.data_dir is not None:
        root = str(space.data_dir)
    else:
        from blemore_core.data import ensure_demo_release

        root = str(ensure_demo_release())
    data = prepare_data(space.base, root, progress=opts.verbose > 0)
    from search.resources import build_feature_cache

    build_feature_cache(root, encoder_sets(space))  # every encoder set a trial may choose, and the test split
    return root, len(set(np.asarray(data.folds).tolist()))


def encoder_sets(space: SearchSpace) -> list[tuple[str, ...]]:
    """The encoder sets a trial of ``space`` may use: the base config's and every choice of ``data.encoders``."""
    sets = {tuple(space.base.data.encoders)}
    for p in space.params:
        if p.key == "data.encoders":
            sets.update(tuple(encoder_set(v)) for v in p.values)
    return sorted(sets)


def _plan_resources(space: SearchSpace, opts: SearchOptions, n_folds: int, max_concurrent: int,
                    local: bool) -> Plan:
    """The resource plan on the running Ray cluster (see :func:`search.resources.plan_resources`)."""
    import ray

    cpus, gpus = worker_resources(space, opts)
    packed = fold_layout(space, opts) == "packed"
    plan = plan_resources(ray.cluster_resources(), 1 if packed else n_folds, max_concurrent, cpus, gpus, local,
                          folds_per_worker=n_folds if packed else 1)
    if local and plan.trials_at_once < max_concurrent:
        print(f"note: {max_concurrent} concurrent trials do not fit; running {plan.trials_at_once} at a time "
              f"({plan.bound}-bound)", file=sys.stderr)
    return plan


def make_sampler(seed: int, num_samples: int) -> Any:
    """Seeded TPE for (conditional) spaces: ``multivariate=True, group=True`` models the parameters jointly within
    each group of co-occurring parameters (Optuna's answer to define-by-run conditionals); single and multiple
    objectives alike. The first ``min(5, num_samples // 2)`` trials (at least 1) are random."""
    import warnings

    import optuna

    with warnings.catch_warnings():  # multivariate / group are flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          n_startup_trials=min(5, max(1, num_samples // 2)))


def _tracker(space: SearchSpace, name: str, storage: Storage, tracking_uri: str) -> Any:
    """The search's MLflow callback (:class:`search.records.callback.MLflowTracker`)."""
    from search.records.callback import MLflowTracker

    return MLflowTracker(tracking_uri, name, base=space.base.to_dict(),
                         search_tags={"search": name, "space": str(space.path)}, storage=storage.uri,
                         searched=[p.key for p in space.params], metric=space.metrics[0],
                         objectives=list(space.metrics))


def scheduler_metric(space: SearchSpace) -> str:
    """The one number ASHA stops trials on: the space's objective; for a Pareto search (two objectives, ASHA
    takes one scalar) its FIRST objective as the space lists it after loading (``acc_presence``), never ``score``,
    which a Pareto search does not optimise. With ``scheduler: asha`` a Pareto search is stopped by
    :class:`search.pareto.ParetoASHAScheduler` instead (issue 20); this is the number the scalar ASHA ranks on."""
    return space.metrics[0]


def _build_tuner(space: SearchSpace, opts: SearchOptions, name: str, storage: Storage | str, data_dir: str,
                 n_folds: int, cpus: float, max_concurrent: int, tracking_uri: str) -> Any:
    storage = storage if isinstance(storage, Storage) else resolve_storage(storage)
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search.placement import ReleaseEndedTrials
    from search.trainable import TrialSetup, run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trial table says what Optuna's INFO lines would
    metrics = list(space.metrics)
    sampler = make_sampler(opts.seed, opts.num_samples or space.num_samples)
    if space.pareto:
        searcher = OptunaSearch(space=_DefineByRun(space), metric=metrics, mode=["max"] * len(metrics),
                                sampler=sampler, seed=opts.seed)
    else:
        searcher = OptunaSearch(space=_DefineByRun(space), metric=metrics[0], mode="max", sampler=sampler,
                                seed=opts.seed)
    # issue 20 (i20): seed the study with earlier searches' finished trials; records this search's release
    from search.warmstart import names_of, warm_start_searcher

    warm_start_searcher(searcher, space, names_of(space, opts), tracking_uri, name, data_dir)
    sched_name = opts.scheduler or space.scheduler
    if sched_name == "asha" and space.pareto:  # issue 20 (i20): Pareto spaces stop by non-dominated sorting
        from search.pareto import ParetoASHAScheduler

        scheduler = ParetoASHAScheduler(metrics, max_t=space.max_epochs + 2, grace_period=space.grace_period,
                                        reduction_factor=space.reduction_factor)
    elif sched_name == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=scheduler_metric(space), mode="max",
                                  max_t=space.max_epochs + 2, grace_period=space.grace_period,
                                  reduction_factor=space.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    setup = TrialSetup(
        base=space.base.to_dict(), space_path=str(space.path), data_dir=data_dir, cpus_per_worker=cpus,
        gpus_per_worker=worker_resources(space, opts)[1], storage=storage.join(name, "_train"),
        debug=dict(space.debug), max_epochs=space.max_epochs, n_folds=n_folds, fold_layout=fold_layout(space, opts),
    )
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"CPU": TRIAL_ACTOR_CPUS})
    tracker = _tracker(space, name, storage, tracking_uri)
    from search.compat import tune_loggers
    from search.progress import LiveTable, TrialEvents, is_terminal

    reporter = LiveTable(
        metric_columns={"epoch": "epoch", "score": "score", "acc_presence": "acc_pres", "acc_salience": "acc_sal",
                        "active_folds": "folds"},
        parameter_columns=[p.key for p in space.params],
        max_report_frequency=30,
    )
    events = [TrialEvents(space.metrics[0], [p.key for p in space.params])] if opts.verbose and not is_terminal() else []
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=opts.num_samples or space.num_samples,
            max_concurrent_trials=max_concurrent, time_budget_s=space.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage.uri, callbacks=[*tune_loggers(), tracker, ReleaseEndedTrials(), *events],
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            progress_reporter=reporter, verbose=opts.verbose,
        ),
    )
    return tuner, trainable


def _write_manifest(storage: Storage, name: str, space: SearchSpace, opts: SearchOptions, data_dir: str | None,
                    tracking_uri: str) -> str:
    """Write the manifest ``<storage>/<name>/blemore_search.json`` (local path, shared filesystem or object store):
    the space file's path, its text and SHA-256, the resolved base config (preset applied), the data directory,
    the tracking URI and the options; :func:`resume_search` searches from the stored space. Written whole (local:
    temporary file + rename; object store: one PUT), so an interruption never leaves a half-written manifest."""
    text = space.path.read_text()
    doc = {"space": str(space.path.resolve()), "space_text": text, "space_sha256": _sha256(text),
           "base": space.base.to_dict(), "data": data_dir, "tracking_uri": tracking_uri, "options": asdict(opts)}
    return write_manifest(storage, name, doc)


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def stored_space(doc: dict, data_dir: str | None = None) -> SearchSpace:
    """The search space a manifest stored (its text and resolved base config), not the file as it is now.

    Prints a note to stderr when the file on disk differs from the stored text (or is gone).
    """
    from blemore_core.config import Config

    path = Path(doc["space"])
    text = doc["space_text"]
    try:
        now = path.read_text()
    except OSError:
        now = None
    if now is None or _sha256(now) != doc.get("space_sha256"):
        state = "is gone" if now is None else "changed"
        print(f"note: {path} {state} since the search started; resuming with the space stored in its manifest "
              f"(sha256 {doc.get('space_sha256', '?')[:12]})", file=sys.stderr)
    space = load_space(path, data_dir=data_dir, text=text)
    return replace(space, base=Config.from_dict(doc["base"], source=f"{path} (stored in the search manifest)"))


def _checked_inputs(space_path: str | Path | SearchSpace, opts: SearchOptions,
                    resume: bool) -> tuple[SearchSpace, str, Any, Storage]:
    """Everything checked before the search touches MLflow or Ray: options, space, device flags, the preflight
    (paths, tracking store, Ray address), a writable storage and a free name; returns (space, name, preflight
    context, storage).

    Raises:
        InputError: any of the above, one line naming the option, file or address.
    """
    from search.errors import InputError
    from search.preflight import PreflightContext, run_preflight
    from search.records.store import running_owner
    from search.safety import name_taken_message, resolve_search_name
    from search.storage import check_writable

    check_options(opts)
    space = space_path if isinstance(space_path, SearchSpace) else load_space(space_path, data_dir=opts.data)
    try:
        flag = ("--gpus-per-trial" if opts.gpus_per_trial or (not opts.gpus_per_fold
                                                              and fold_layout(space, opts) == "packed")
                else "--gpus-per-fold")
        check_device_options(space.base.train.device, opts.gpus_per_trial or opts.gpus_per_fold, flag)
        worker_resources(space, opts)
    except ValueError as e:
        raise InputError(str(e)) from None
    name = resolve_search_name(opts.name, space)  # one path component, checked before anything is written
    ctx = run_preflight(PreflightContext(
        name=name, storage=_storage(opts), tracking_uri=opts.tracking_uri or _default_uri(), address=opts.address,
        data_dir=str(space.data_dir) if space.data_dir is not None else None, space_path=str(space.path)))
    st = resolve_storage(ctx.storage)
    try:
        check_writable(st)  # an unreachable or read-only store fails now, naming it
    except ValueError as e:
        raise InputError(str(e)) from None
    if not resume and read_manifest(st, name) is not None:
        raise InputError(name_taken_message(name, st, opts.storage, running_owner(ctx.tracking_uri, name)))
    return space, name, ctx, st


def _restored(tuner: Any, trainable: Any, path: str, resume: bool) -> Any:
    """``resume``: the Tuner restored from ``path`` (unfinished trials continue, errored ones stay errored), or the
    fresh ``tuner`` when the search was interrupted before Tune saved any state (no trial ran)."""
    from ray import tune

    if resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)
    if resume:
        print(f"note: {path} holds no Tune state yet (interrupted before the first trial); starting the "
              "search from the beginning", file=sys.stderr)
    return tuner


def _checked_plan(ctx: Any, space: SearchSpace, opts: SearchOptions, st: Storage, data_dir: str,
                  n_folds: int) -> Plan:
    """With Ray up: the preflight's Ray checks, every node able to run the trials (it reads the release, shares a
    filesystem storage path and has its feature cache built), then the resource plan.

    Raises:
        InputError: a check failed (one line naming the node, path or resource).
    """
    from search.errors import InputError
    from search.preflight import RAY_CHECKS, run_preflight
    from search.resources import check_nodes

    run_preflight(ctx, RAY_CHECKS)
    try:
        check_nodes(data_dir, st, encoder_sets=encoder_sets(space))
        return _plan_resources(space, opts, n_folds, opts.max_concurrent or space.max_concurrent,
                               local=opts.address is None)
    except ValueError as e:
        raise InputError(str(e)) from None


def run_search(space_path: str | Path | SearchSpace, opts: SearchOptions = SearchOptions(),
               resume: bool = False) -> SearchOutcome:
    """Run (or with ``resume=True``, continue) a search; see the module docstring for the order of events.

    Args:
        space_path: a space file, or an already loaded :class:`SearchSpace` (resume: the stored one).

    Raises:
        SpaceError: the space file is invalid (raised before Ray starts).
        InputError: bad options, an unreachable service, or a search of that name exists already (use ``resume``).
        TrackingServerDown: the MLflow server stopped answering mid-search (the message says how to resume).
    """
    from search.errors import InputError
    from search.records.store import NameLock

    space, name, ctx, st = _checked_inputs(space_path, opts, resume)
    storage, tracking_uri = ctx.storage, ctx.tracking_uri
    exp_path = st.join(name)
    tracker = _tracker(space, name, st, tracking_uri)
    exp_id = tracker.ensure_store()  # atomic creation: the store exists, complete, before anything else runs
    lock = NameLock(tracker.client, exp_id, name, tracking_uri).acquire()
    started = False
    ray_was_up = _ray_is_up()  # a Ray this search did not start (tests, a notebook) is left running
    try:
        if not resume:  # from here on, `blemore resume NAME --storage URI` can continue whatever happens
            _write_manifest(st, name, space, replace(opts, storage=storage, tracking_uri=tracking_uri,
                                                     address=opts.address), ctx.data_dir, tracking_uri)
        try:
            data_dir, n_folds = _prepare(space, opts)
        except (ValueError, OSError) as e:
            raise InputError(" ".join(str(e).split())) from None
        started = _init_ray(opts)
        _release_earlier_drivers(st, name, on_cluster=started and bool(opts.address))
        plan = _checked_plan(ctx, space, opts, st, data_dir, n_folds)
        cpus, max_conc = plan.cpus_per_worker, plan.trials_at_once
        tuner = _restored(*_build_tuner(space, opts, name, st, data_dir, n_folds, cpus, max_conc, tracking_uri),
                          exp_path, resume)
        from search.warmstart import described

        warm = described(tracker.client.get_experiment(exp_id).tags)  # the tags the warm start wrote, if any
        tracker.describe_experiment(_description(space, opts, name, st, data_dir, plan, warm))
        from search.records.naming import runs_link

        link = runs_link(tracking_uri, exp_id, space.metrics[0])
        if opts.verbose:
            print(f"search {name!r}: space {space.path}, data {data_dir}, storage {exp_path}; MLflow {tracking_uri}")
        print(plan.describe())  # also with --quiet: what runs at once, and where to watch it
        print(f"MLflow runs of this search, best first: {link}", flush=True)
        t_fit = time.time()
        results = _fit(tuner, name, opts, exp_path)
        elapsed = time.time() - t_fit
        summary = summarize(results, space)
        budget_hit = space.time_budget_s is not None and elapsed >= space.time_budget_s - 1.0
        tracker.reconcile(results, cut=budget_hit)  # trials cut by the budget, or ended during an outage: once
        tracker.close()  # every trial's record is written before the search-level report reads them
        from search.report import report_after_search

        report_after_search(name, tracking_uri, verbose=opts.verbose)
        # measured only on a Ray this search started (a shared cluster may run other jobs), which is shut down just
        # below, so nothing stays reserved for the user; a trial cut by the time budget before its first report
        # (its worker group never named to ReleaseEndedTrials) may still be tearing down here. Tests read the value.
        leaked = _wait_released(timeout=20.0) if started else 0.0
        return SearchOutcome(name, exp_path, tracking_uri, results, summary,
                             interrupted=_interrupted(results, opts.num_samples or space.num_samples, elapsed, space),
                             leaked_cpus=leaked, ui_link=link, objectives=tuple(space.metrics))
    finally:
        _clean_up(tracker, lock, on_cluster=started and bool(opts.address), ray_was_up=ray_was_up)


def _clean_up(tracker: Any, lock: Any, on_cluster: bool, ray_was_up: bool) -> None:
    """The end of every search, normal or not: MLflow runs closed, the name lock released, placement groups
    released, the Ray this search started shut down.

    While an exception propagates, unreachable objects are collected first: an MLflow SQLite write cut by Ctrl-C
    leaves its connection orphaned, holding the store's write lock until it is collected, and every write of this
    clean-up would otherwise wait MLflow's SQLite busy timeout (20 s) and fail with ``database is locked``."""
    if sys.exc_info()[0] is not None:
        import gc

        gc.collect()
    try:
        tracker.close()
    except Exception as e:  # pragma: no cover - never mask the real error
        print(f"warning: could not close MLflow runs: {e}", file=sys.stderr)
    lock.release()
    _release_trial_groups()
    _release_job_groups(on_cluster=on_cluster)  # a local Ray is shut down below
    # not `if started`: a Ctrl-C inside ray.init (or right after it, before `started` is set) leaves a Ray up
    # that only interpreter exit would stop, with the local Ray's processes already hit by the same SIGINT
    if not ray_was_up and _ray_is_up():
        import ray

        ray.shutdown()


def _ray_is_up() -> bool:
    """Whether this process is connected to a Ray (without importing Ray when nothing did)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _release_trial_groups() -> None:
    """Remove the placement groups this search's trials still hold (see :func:`search.placement.release_all_live`);
    best effort, never masks the search's own error."""
    try:
        import ray

        if ray.is_initialized():
            from search.placement import release_all_live

            release_all_live()
    except Exception as e:  # pragma: no cover - best effort
        print(f"warning: could not release the trials' placement groups: {e!r}", file=sys.stderr)


def _release_earlier_drivers(st: Storage, name: str, on_cluster: bool) -> None:
    """On a cluster this driver joined (``on_cluster``): what earlier drivers of search ``name`` left reserved goes
    first (:func:`search.placement.release_earlier_drivers`, which also records this driver)."""
    if on_cluster:
        from search.placement import release_earlier_drivers

        release_earlier_drivers(st, name)


def _release_job_groups(on_cluster: bool) -> None:
    """On a cluster this driver joined (``on_cluster``; a local Ray is shut down instead), remove every placement
    group its Ray job still holds (:func:`search.placement.release_job_groups`); best effort, never masks the
    search's own error."""
    if not on_cluster:
        return
    try:
        import ray

        if ray.is_initialized():
            from search.placement import release_job_groups

            if gone := release_job_groups():
                print(f"released {len(gone)} placement group(s) this search's trials left reserved", file=sys.stderr)
    except Exception as e:  # pragma: no cover - best effort
        print(f"warning: could not release this job's placement groups: {e!r}", file=sys.stderr)


def _fit(tuner: Any, name: str, opts: SearchOptions, exp_path: str) -> Any:
    """``tuner.fit()``; a tracking server that stopped answering ends the search with what to do next.

    Raises:
        TrackingServerDown: the MLflow server stopped answering; the message says how to resume.
    """
    from search.compat import one_line_superseded_uploads
    from search.records.writer import TrackingServerDown

    try:
        with one_line_superseded_uploads():
            return tuner.fit()
    except TrackingServerDown as e:
        head, _, cause = str(e).partition(" (cause: ")
        raise TrackingServerDown(
            f"{head}; start it again, then run `{resume_command(name, opts.storage)}` (unfinished trials run again, "
            f"trials that ended meanwhile are recorded once; Tune's state: {exp_path}) (cause: {cause}") from None


def _description(space: SearchSpace, opts: SearchOptions, name: str, storage: Storage, data_dir: str,
                 plan: Plan, warm: str = "") -> str:
    """Markdown description of the search's MLflow experiment: what it is and how to read it; ``warm``: the warm
    start's paragraph (:func:`search.warmstart.described`), placed after the first one."""
    metric = space.metrics[0]
    searched = ", ".join(f"`{p.key}`" for p in space.params) or "(none)"
    return (
        f"**blemore search `{name}`**: hyperparameter search over `{space.path.name}` (preset-based config; "
        f"searched: {searched}) on the release `{data_dir}`, {opts.num_samples or space.num_samples} trials, "
        f"objective `{metric}` (maximised).\n\n"
        + (f"{warm}\n\n" if warm else "")
        + "How to read it: one parent run per trial (named `tNN` + the values searched), with `score`, "
        "`acc_presence`, `acc_salience` = mean over the folds of the headline threshold protocol "
        "(Score = mean of ACC_presence and ACC_salience); sort by `score` for the best trial. Expand a trial to see "
        "its fold runs: per fold ACC_presence, ACC_salience, the presence threshold `alpha` and salience threshold "
        "`beta`, the best epoch and learning curves (`epoch/*`). Trials tagged `stopped_early=true` were stopped "
        "by the scheduler and keep their last epoch's numbers; `trial_status=error` runs failed (tag `error`).\n\n"
        f"Artifacts (config, out-of-fold predictions, thresholds, fold weights) are in each run; Ray state and "
        f"checkpoints in `{storage.join(name)}`; continue an interrupted search with "
        f"`{resume_command(name, storage.uri)}`. {plan.describe()}."
    )


def _wait_released(timeout: float) -> float:
    """Wait until every logical CPU of the cluster is free again; returns the CPUs still held at ``timeout``."""
    import ray

    deadline = time.time() + timeout
    while True:
        held = ray.cluster_resources().get("CPU", 0.0) - ray.available_resources().get("CPU", 0.0)
        if held <= 1e-6 or time.time() > deadline:
            return max(0.0, held)
        time.sleep(0.5)


def _interrupted(results: Any, want: int, elapsed: float, space: SearchSpace) -> bool:
    """True when trials were left unfinished by an interruption (not by the space's time budget)."""
    if space.time_budget_s is not None and elapsed >= space.time_budget_s - 1.0:
        return False
    return results.num_terminated + results.num_errors < want


def _default_uri() -> str:
    from search.defaults import default_tracking_uri

    return default_tracking_uri(".")


def resume_search(name: str, storage: str | None = None, overrides: SearchOptions | None = None) -> SearchOutcome:
    """Continue an interrupted search from ``<storage>/<name>`` (finished trials are not re-run; MLflow runs are
    found again by their trial-id tags, so none is duplicated).

    Raises:
        ValueError: no such search (names the directory).
    """
    from search.errors import InputError
    from search.safety import unmasked_tracking_uri

    st = resolve_storage(storage)
    doc = read_manifest(st, name)
    if doc is None:
        raise InputError(f"{st.join(name, MANIFEST)}: no search named {name!r} (looked for its manifest)")
    opts = SearchOptions(**doc["options"])
    opts = replace(opts, name=name, storage=st.uri, data=doc["data"], tracking_uri=doc["tracking_uri"])
    if overrides is not None:
        keep = ("address", "num_cpus", "verbose", "tracking_uri")
        opts = replace(opts, **{k: v for k, v in asdict(overrides).items() if v is not None and k in keep})
    opts = replace(opts, tracking_uri=unmasked_tracking_uri(opts.tracking_uri))  # the manifest stores no password
    if "space_text" not in doc:  # a manifest written before the space was stored
        return run_search(doc["space"], opts, resume=True)
    return run_search(stored_space(doc, data_dir=opts.data), opts, resume=True)


def summarize(results: Any, space: SearchSpace, top: int = 5) -> list[dict]:
    """Best trials by the space's objective (fold means of the headline protocol; for a stopped trial, at its last
    epoch: the same numbers OptunaSearch received), best first: trial id, status, metrics, epochs and params.
    A Pareto search has no single best: the trials on the front of its objectives (column ``front`` = ``yes``)
    come first, each group by the first objective; it is never ranked on ``score``."""
    rows = []
    for r in results:
        m = r.metrics or {}
        row = {"trial": str(m.get("trial_id", "?")), "status": "error" if r.error else
               ("completed" if m.get("final") else "stopped"), **{k: m.get(k) for k in OBJECTIVES},
               "epochs": m.get("epoch")}
        for p in space.params:
            row[p.key] = (r.config or {}).get(p.key, "-")
        rows.append(row)
    objectives = space.metrics

    def value(row: dict, key: str) -> float:
        v = row[key]
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf

    if space.pareto and rows:
        import numpy as np

        from search.report import pareto_mask

        front = pareto_mask(np.array([[value(r, k) for k in objectives] for r in rows]))
        for r, on in zip(rows, front):
            r["front"] = "yes" if on else ""
    rows.sort(key=lambda r: (r.get("front", "yes") != "yes", -value(r, objectives[0])))
    return rows[:top]


def print_summary(outcome: SearchOutcome) -> None:
    """Rich table of the best trials (parameters abbreviated to their last name part) and the MLflow command."""
    from rich.console import Console
    from rich.table import Table

    from search.defaults import ui_command

    console = Console(width=max(Console().width, 120))
    by = " and ".join(outcome.objectives)
    kind = "Pareto front first" if len(outcome.objectives) > 1 else "best first"
    n = len(outcome.results) if outcome.results is not None else len(outcome.summary)
    shown = f"the {len(outcome.summary)} best of {n} trials" if n > len(outcome.summary) else "trials"
    table = Table(title=f"{shown} of {outcome.name!r} by {by} ({kind}; fold means, headline protocol)")
    short = {"acc_presence": "ACC_pres", "acc_salience": "ACC_sal", "epochs": "ep"}
    if outcome.summary:
        for col in outcome.summary[0]:
            table.add_column(short.get(col, col.rsplit(".", 1)[-1]), justify="left" if col in ("trial", "status")
                             else "right", no_wrap=True)
        for row in outcome.summary:
            table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()])
    console.print(table)
    console.print(f"MLflow experiment {outcome.name!r} in {outcome.tracking_uri}; review it with:")
    if not outcome.tracking_uri.startswith(("http://", "https://")):
        console.print(f"  {ui_command(outcome.tracking_uri)}", soft_wrap=True)
    if outcome.ui_link:
        console.print(f"  runs, best first: {outcome.ui_link}", soft_wrap=True)


__all__ = ["SearchOptions", "SearchOutcome", "SpaceError", "run_search", "resume_search", "print_summary",
           "check_options", "summarize"]
