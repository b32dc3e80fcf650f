"""The fold trainer: the steps of one fold (:class:`FoldTrainer`) and ``cross_validate``, which runs the folds in
lock step in one process.

docs/ARCHITECTURE.md section 5. AdamW with a cosine decay of the learning rate from ``train.lr`` to ``train.lr_min`` over
``train.max_epochs``, mini-batches of ``train.batch_size`` drawn from tensors that live on the device (no
DataLoader, no per-sample Python). The folds of a cross-validation train in lock step: after every epoch all
folds' validation probabilities go into one :class:`~blemore_core.selection.EpochCurves` (per-epoch OOF
probabilities, thresholds refit every epoch), which chooses each fold's epoch and thresholds per protocol
(``val``, ``crossfit``; ``train`` at the end) and decides the stop: patience on the fold-mean headline Score.
Each fold keeps CPU copies of the weights of its currently chosen epochs only.

The epoch loop is :func:`run_lockstep`, the one loop of the project: ``cross_validate`` runs it in one process
(:class:`LocalExchange`), a search trial runs it in its Ray Train worker(s) (``search/trainable.py``: all folds in
one worker, or one worker per fold joined by a Ray actor), so ``cross_validate`` and a search trial give the same
numbers for the same config, seed, device, torch thread count and fold execution (:func:`fold_group`: fused or
sequential). Reproducibility: all randomness flows from per-fold seeds (:func:`fold_seeds`: one seed for torch's
generator, whose state each fold keeps privately, and one for its batches).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from blemore_core.config import PROTOCOLS as PROTOCOL_KEYS  # protocol names are defined once, in config
from blemore_core.config import Config
from blemore_core.data import fold_indices
from blemore_core.decoding import fit_and_evaluate
from blemore_core.fold_inputs import (  # noqa: F401  (TrainData, prepare_data, resolve_device, forward: re-exported)
    FoldInputs,
    NonFiniteLossError,
    TrainData,
    forward,
    predict_probs,
    prepare_data,
    resolve_device,
    rng_state,
    set_rng_state,
)
from blemore_core.losses import compute_loss
from blemore_core.models import build_model
from blemore_core.names import FOLD_METRICS
from blemore_core.selection import EpochCurves

METRIC_KEYS: tuple[str, ...] = FOLD_METRICS


def fold_seeds(seed: int, key: int) -> tuple[int, int]:
    """The two seeds of one fold model: ``(torch global generator seed, batch generator seed)``.

    ``key`` is the fold index in a cross-validation and the seed key of a retraining
    (:func:`blemore_core.refit.fit_epochs`), so that retraining fold k repeats the cross-validation's fold-k run.
    This is the one place the seeding rule lives.
    """
    return seed * 1009 + key, seed * 7919 + key


def make_optimizer(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the model's parameters with ``train.lr`` and ``train.weight_decay`` (docs/ARCHITECTURE.md section 5).

    Uses PyTorch's fused AdamW kernel where it exists (CPU and CUDA floating-point parameters: one kernel for the
    whole update instead of several multi-tensor passes) and the default kernel otherwise.
    """
    fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in model.parameters())
    kwargs = {"lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay}
    if fused:
        try:
            return torch.optim.AdamW(model.parameters(), fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a build or device without the fused kernel
            pass
    return torch.optim.AdamW(model.parameters(), **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# results


@dataclass
class FoldResult:
    """The outcome of one fold of a lock-step cross-validation (:meth:`FoldTrainer.finalize`).

    Attributes:
        fold: fold index 0..4.
        val_idx: int64 (N_k,) rows of the training release that form the validation fold.
        filenames: the N_k validation clip names.
        oof_probs: float32 (N_k, 6) out-of-fold probabilities at the headline protocol's selected epoch.
        selected_epochs: ``{protocol: 1-based epoch}`` for ``val``, ``crossfit`` (when run with >= 2 folds) and
            ``train`` (which uses the ``crossfit`` epoch, or the ``val`` epoch with one fold).
        best_epoch: the headline protocol's selected epoch (whose weights are ``state_dict``).
        epochs_run: epochs trained (all folds of a cross-validation train the same number).
        stopped: True when the trial-level stop (patience on the objective) ended training before ``max_epochs``.
        thresholds: ``{protocol: {epoch, alpha, beta, acc_presence, acc_salience, score}}`` on the validation fold.
        history: one dict per epoch: epoch, train_loss, lr, loss_<part>, and the own-fold threshold fit of that
            epoch (val_score, acc_presence, acc_salience, alpha, beta).
        state_dict: CPU weights of the headline protocol's selected epoch.
        state_dicts: ``{protocol: CPU weights}`` of each protocol's selected epoch (shared when the epochs agree).
        importances: mean rank-aware importance per encoder on the validation fold (headline weights), or None.
        config: the resolved config.
    """

    fold: int
    val_idx: np.ndarray
    filenames: list[str]
    oof_probs: np.ndarray
    selected_epochs: dict[str, int]
    best_epoch: int
    epochs_run: int
    stopped: bool
    thresholds: dict[str, dict[str, float]]
    history: list[dict[str, Any]]
    state_dict: dict[str, torch.Tensor]
    state_dicts: dict[str, dict[str, torch.Tensor]]
    importances: dict[str, float] | None
    config: Config


@dataclass
class CVResult:
    """The outcome of :func:`cross_validate`.

    Attributes:
        folds: one :class:`FoldResult` per fold run.
        oof_probs: float32 (N, 6) over all training clips at each fold's headline epoch (NaN rows: folds not run).
        metrics: see :func:`summarize_protocols`.
        curves: the per-epoch OOF probabilities and protocol decisions (:class:`EpochCurves`; ``stack()`` gives
            (N, 6, E)).
        execution: how the folds were stepped: ``"fused"`` or ``"sequential"`` (:func:`fold_group`).
    """

    folds: list[FoldResult]
    oof_probs: np.ndarray
    metrics: dict[str, Any]
    curves: EpochCurves
    execution: str = "sequential"


class FoldTrainer:
    """One fold of a lock-step cross-validation, as plain steps (docs/ARCHITECTURE.md section 5): set-up (the constructor), one epoch
    (:meth:`train_epoch`), evaluate (:meth:`evaluate`), keep weights (:meth:`keep`), finalise (:meth:`finalize`).

    :func:`cross_validate` drives all folds in one process and the search's fold worker drives one fold per Ray
    Train worker, both through these steps and one :class:`EpochCurves`, so the two give the same numbers.
    Each fold owns its random streams (a private copy of torch's global generator state, swapped in around every
    step, and a seeded ``torch.Generator`` for batches), so stepping several folds in one process gives the same
    numbers as one fold per process.

    Args:
        cfg: resolved configuration.
        data: from :func:`prepare_data`.
        fold: validation fold index (a value of ``data.folds``): trains on the other folds and validates on it.
        train_idx, val_idx: instead of ``fold``, explicit int64 rows of the training clips and (optionally) of the
            validation clips; without ``val_idx`` the trainer only trains (:func:`blemore_core.refit.fit_epochs`).
        seed_key: the seed key (:func:`fold_seeds`); default ``fold``.
        target_idx: unlabeled rows for the domain term when ``data.domain_target == "val"`` (default: the
            validation rows, else the training rows).
        label: how errors name this model (default ``"fold <k>"``).

    Raises:
        ValueError: unknown fold, neither ``fold`` nor ``train_idx``, an empty training or validation set, CUDA
            requested without a GPU.
    """

    def __init__(self, cfg: Config, data: TrainData, fold: int | None = None, *, train_idx: np.ndarray | None = None,
                 val_idx: np.ndarray | None = None, seed_key: int | None = None,
                 target_idx: np.ndarray | None = None, label: str | None = None):
        if fold is not None:
            folds = np.asarray(data.folds)
            if fold not in set(folds.tolist()):
                raise ValueError(f"fold {fold} does not exist in the release (folds: {sorted(set(folds.tolist()))})")
            train_idx, val_idx = fold_indices(folds, fold)
        elif train_idx is None or seed_key is None:
            raise ValueError("FoldTrainer: give a fold, or train_idx and seed_key")
        self.train_idx = np.asarray(train_idx, dtype=np.int64)
        self.val_idx = None if val_idx is None else np.asarray(val_idx, dtype=np.int64)
        self.label = label or f"fold {fold}"
        if len(self.train_idx) == 0 or (self.val_idx is not None and len(self.val_idx) == 0):
            raise ValueError(f"{self.label}: empty training ({len(self.train_idx)}) or validation "
                             f"({0 if self.val_idx is None else len(self.val_idx)}) set")
        seed_key = fold if seed_key is None else seed_key
        self.cfg, self.data, self.fold = cfg, data, fold
        self.device = device = resolve_device(cfg.train.device)
        outer = rng_state(device)
        try:
            torch_seed, batch_seed = fold_seeds(cfg.seed, seed_key)
            torch.manual_seed(torch_seed)
            self.gen = torch.Generator(device=device)
            self.gen.manual_seed(batch_seed)
            self.tensors = FoldInputs(data, cfg, self.train_idx, device)
            self.labels = torch.as_tensor(np.asarray(data.labels, dtype=np.float32), device=device)
            self.train_idx_t = torch.as_tensor(self.train_idx, device=device)
            self.target_pool = None
            if cfg.loss.domain > 0 and cfg.data.domain_target == "val":
                rows = next(r for r in (target_idx, self.val_idx, self.train_idx) if r is not None)
                self.target_pool = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)
            elif cfg.loss.domain > 0:
                self.target_pool = torch.arange(self.tensors.n_target, device=device)
            self.model = build_model(cfg, data.input_dims).to(device)
            self.mixed = cfg.model.arch == "fusion" and cfg.model.fusion == "mixed"
            if self.mixed:
                self.model.set_stage("pretrain")
            self.opt = make_optimizer(self.model, cfg, device)
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=cfg.train.max_epochs,
                                                                    eta_min=cfg.train.lr_min)
            self._rng = rng_state(device)
        finally:
            set_rng_state(device, outer)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self._kept: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def first_epoch(self) -> int:
        """The first selectable epoch: 1, or for ``mixed`` fusion the first combine-stage epoch."""
        return first_selectable_epoch(self.cfg)

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch over the training folds (mini-batches of ``train.batch_size``, then one cosine step).

        Returns:
            ``{"epoch", "train_loss", "lr", "loss_<part>"...}`` (lr: the learning rate used in this epoch).

        Raises:
            NonFiniteLossError: the loss became NaN or infinite.
        """
        cfg, t, device, gen, model = self.cfg, self.tensors, self.device, self.gen, self.model
        outer = rng_state(device)
        set_rng_state(device, self._rng)
        try:
            self.epoch += 1
            epoch = self.epoch
            if self.mixed and epoch == cfg.model.mixed_pretrain_epochs + 1:
                model.set_stage("combine")  # seed 002: branches frozen, the combining attention trains
            model.train()
            prec, bs = cfg.train.precision, cfg.train.batch_size
            perm = self.train_idx_t[torch.randperm(len(self.train_idx_t), generator=gen, device=device)]
            total, n_seen, parts_sum = 0.0, 0, {}
            for s in range(0, len(perm), bs):
                idx = perm[s : s + bs]
                x, m = t.inputs(idx, train=True, gen=gen)
                out = forward(model, x, m, prec, device)
                target_emb = None
                if self.target_pool is not None:
                    pool = self.target_pool
                    tidx = pool[torch.randint(len(pool), (min(bs, len(pool)),), generator=gen, device=device)]
                    xt, mt = t.inputs(tidx, train=True, gen=gen, target=cfg.data.domain_target == "test")
                    target_emb = forward(model, xt, mt, prec, device).embedding
                loss, parts = compute_loss(out, self.labels[idx], cfg.loss, target_embedding=target_emb)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"{self.label}, epoch {epoch}: non-finite loss {loss.item()} (parts {parts})")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total += loss.item() * len(idx)
                n_seen += len(idx)
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v) * len(idx)
            lr_now = self.opt.param_groups[0]["lr"]
            self.sched.step()
        finally:
            self._rng = rng_state(device)
            set_rng_state(device, outer)
        rec = {"epoch": epoch, "train_loss": total / max(n_seen, 1), "lr": float(lr_now)}
        rec.update({f"loss_{k}": v / max(n_seen, 1) for k, v in parts_sum.items()})
        self.history.append(rec)
        return rec

    def evaluate(self) -> np.ndarray:
        """float32 (N_k, 6): eval-mode validation probabilities of the current weights (no randomness drawn)."""
        probs, _ = predict_probs(self.model, self.tensors, self.val_idx, precision=self.cfg.train.precision)
        return probs

    def keep(self, epochs: set[int]) -> None:
        """Keep a CPU copy of the current weights when ``self.epoch`` is in ``epochs`` (the current choices of the
        protocols, :meth:`EpochCurves.kept_epochs`) and drop the copies of epochs no longer chosen."""
        if self.epoch in epochs:
            self._kept[self.epoch] = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        for e in [e for e in self._kept if e not in epochs]:
            del self._kept[e]

    def finalize(self, curves: EpochCurves, stopped: bool = False) -> FoldResult:
        """Final protocols of this fold from ``curves`` (which holds every fold's epochs) -> :class:`FoldResult`.

        ``val`` and ``crossfit`` come from ``curves``; ``train`` fits alpha, beta on this fold model's predictions
        for its own training rows at the ``crossfit`` epoch (the ``val`` epoch with one fold) and scores the
        validation fold with them.

        Raises:
            RuntimeError: when the weights of a selected epoch were not kept (``keep`` not called every epoch).
        """
        cfg, pw = self.cfg, self.cfg.thresholds.presence_weight
        protos = curves.per_epoch_protocols()
        choices = {p: curves.choice(p, self.fold) for p in protos}
        if any(c is None for c in choices.values()):
            raise RuntimeError(f"fold {self.fold}: no selectable epoch (epochs run {self.epoch}, first selectable "
                               f"{curves.first_epoch})")
        missing = [c.epoch for c in choices.values() if c.epoch not in self._kept]
        if missing:
            raise RuntimeError(f"fold {self.fold}: weights of epochs {missing} were not kept")
        val_truth = np.asarray(self.data.labels, dtype=np.float32)[self.val_idx]
        headline = cfg.thresholds.protocol if cfg.thresholds.protocol in choices else "val"
        train_from = "crossfit" if "crossfit" in choices else "val"
        weights = {p: self._kept[c.epoch] for p, c in choices.items()}
        weights["train"] = weights[train_from]
        thresholds = {p: c.as_dict() for p, c in choices.items()}
        self.model.load_state_dict(weights[train_from])
        e_train = choices[train_from].epoch
        train_probs, _ = predict_probs(self.model, self.tensors, self.train_idx, precision=cfg.train.precision)
        train_truth = np.asarray(self.data.labels, dtype=np.float32)[self.train_idx]
        tr = fit_and_evaluate(train_probs, train_truth, curves.probs_at(e_train)[self.val_idx], val_truth, pw)
        thresholds["train"] = {"epoch": e_train, **{k: float(v) for k, v in tr.items()}}
        self.model.load_state_dict(weights[headline])
        _, imps = predict_probs(self.model, self.tensors, self.val_idx, precision=cfg.train.precision)
        importances = None
        if imps is not None:
            importances = {e: float(v) for e, v in zip(self.data.encoders, imps.mean(axis=0))}
        for h in self.history:  # the own-fold threshold fit of every epoch (the learning curve)
            f = curves.own_fit(self.fold, h["epoch"])
            h.update(val_score=f.score, acc_presence=f.acc_presence, acc_salience=f.acc_salience, alpha=f.alpha,
                     beta=f.beta)
        return FoldResult(
            fold=self.fold, val_idx=self.val_idx, filenames=[self.data.filenames[i] for i in self.val_idx],
            oof_probs=curves.probs_at(choices[headline].epoch)[self.val_idx].copy(),
            selected_epochs={p: int(thresholds[p]["epoch"]) for p in PROTOCOL_KEYS if p in thresholds},
            best_epoch=choices[headline].epoch, epochs_run=self.epoch, stopped=stopped, thresholds=thresholds,
            history=self.history, state_dict=weights[headline], state_dicts=weights, importances=importances,
            config=cfg,
        )


def first_selectable_epoch(cfg: Config) -> int:
    """1, or ``model.mixed_pretrain_epochs + 1`` for mixed fusion (the kept model is always a combined one)."""
    if cfg.model.arch == "fusion" and cfg.model.fusion == "mixed":
        return cfg.model.mixed_pretrain_epochs + 1
    return 1


def new_curves(cfg: Config, data: TrainData, folds: Sequence[int]) -> EpochCurves:
    """The :class:`EpochCurves` of a cross-validation of ``folds`` under ``cfg`` (headline, patience, mixed).

    With one fold the headline falls back to ``val`` (``crossfit`` needs the other folds).
    """
    headline = cfg.thresholds.protocol if len(folds) >= 2 else "val"
    return EpochCurves(data.labels, np.asarray(data.folds), folds, headline=headline,
                       presence_weight=cfg.thresholds.presence_weight, first_epoch=first_selectable_epoch(cfg),
                       patience=cfg.train.patience)


def summarize_protocols(results: Sequence[FoldResult], curves: EpochCurves) -> dict[str, Any]:
    """Per-fold numbers of every protocol with fold mean and std (population, ddof=0).

    Returns:
        ``{"headline": protocol, "folds": [k...], "epochs_run": E, "<protocol>": {"per_fold": [{epoch, alpha,
        beta, acc_presence, acc_salience, score}, ...], "mean": {...}, "std": {...}}}`` for ``val``, ``train``
        and (with >= 2 folds) ``crossfit``. ``metrics[headline]["mean"]["score"]`` equals
        ``curves.objective().score``.
    """
    results = sorted(results, key=lambda r: r.fold)
    out: dict[str, Any] = {"headline": curves.headline, "folds": [r.fold for r in results],
                           "epochs_run": curves.epochs}
    for proto in PROTOCOL_KEYS:
        if proto not in results[0].thresholds:
            continue
        rows = [r.thresholds[proto] for r in results]
        arr = {k: np.array([row[k] for row in rows], dtype=np.float64) for k in rows[0]}
        out[proto] = {"per_fold": rows, "mean": {k: float(a.mean()) for k, a in arr.items()},
                      "std": {k: float(a.std()) for k, a in arr.items()}}
    return out


def assemble_oof(results: Sequence[FoldResult], n: int) -> np.ndarray:
    """OOF probabilities float32 (n, 6) from fold results; rows of folds not run are NaN."""
    oof = np.full((n, 6), np.nan, dtype=np.float32)
    for r in results:
        oof[r.val_idx] = r.oof_probs
    return oof


# ---------------------------------------------------------------------------------------------------------------
# the lock-step driver (one epoch loop for cross_validate, the packed trial and the fold workers of a trial)


class Exchange(Protocol):
    """How the processes of one lock step share per-fold objects (docs/ARCHITECTURE.md section 6).

    ``local`` maps this process's folds to their objects; the answer maps every fold of the lock step to its
    object. :class:`LocalExchange` serves folds that all run in one process; ``search.exchange.RayExchange``
    serves one Ray Train worker per fold through a Ray actor.
    """

    def all_gather(self, key: Hashable, local: Mapping[int, Any]) -> dict[int, Any]:
        """Every fold's object, in every process (blocks until all processes have given theirs)."""

    def gather(self, key: Hashable, local: Mapping[int, Any]) -> dict[int, Any] | None:
        """Every fold's object in the lead process (the one holding the first fold); ``None`` elsewhere."""


class LocalExchange:
    """The :class:`Exchange` of a lock step whose folds all run in this process: gathering returns the input."""

    def all_gather(self, key: Hashable, local: Mapping[int, Any]) -> dict[int, Any]:
        """``dict(local)``: every fold is local."""
        return dict(local)

    def gather(self, key: Hashable, local: Mapping[int, Any]) -> dict[int, Any] | None:
        """``dict(local)``: this process is the lead."""
        return dict(local)


class SequentialFolds:
    """Folds of one process stepped one after the other, each through its own :class:`FoldTrainer`.

    The fold group every model family supports; :class:`blemore_core.fused.FusedFolds` steps folds with
    identical parameter shapes as one batched model instead. Both expose the same four steps to
    :func:`run_lockstep`.

    Args:
        trainers: one :class:`FoldTrainer` per local fold (each with a validation fold).
    """

    execution = "sequential"

    def __init__(self, trainers: Sequence[FoldTrainer]):
        self.trainers = list(trainers)

    @property
    def folds(self) -> tuple[int, ...]:
        """The local folds, in trainer order."""
        return tuple(tr.fold for tr in self.trainers)

    def train_epoch(self) -> dict[int, dict[str, float]]:
        """One training epoch of every fold: ``{fold: FoldTrainer.train_epoch() record}``."""
        return {tr.fold: tr.train_epoch() for tr in self.trainers}

    def evaluate(self) -> dict[int, np.ndarray]:
        """``{fold: float32 (N_k, 6) validation probabilities}`` of the current weights."""
        return {tr.fold: tr.evaluate() for tr in self.trainers}

    def keep(self, curves: EpochCurves) -> None:
        """Each fold keeps the weights of the epochs ``curves`` currently chooses for it."""
        for tr in self.trainers:
            tr.keep(curves.kept_epochs(tr.fold))

    def finalize(self, curves: EpochCurves, stopped: bool) -> list[FoldResult]:
        """One :class:`FoldResult` per local fold (see :meth:`FoldTrainer.finalize`)."""
        return [tr.finalize(curves, stopped=stopped) for tr in self.trainers]


def fold_group(cfg: Config, data: TrainData, folds: Sequence[int], execution: str = "auto"):
    """The fold group that trains ``folds`` in this process.

    Args:
        execution: ``"sequential"``; ``"fused"`` (one batched model: raises ValueError naming the reason when the
            folds cannot be fused); ``"auto"``: fused where :func:`blemore_core.fused.fusable` allows (two or more
            folds of a supported family), else sequential.

    Returns:
        :class:`SequentialFolds` or :class:`blemore_core.fused.FusedFolds` (``.execution`` says which).
    """
    from blemore_core import fused

    if execution not in ("auto", "fused", "sequential"):
        raise ValueError(f"fold execution: expected auto, fused or sequential, got {execution!r}")
    trainers = [FoldTrainer(cfg, data, k) for k in folds]
    if execution == "sequential":
        return SequentialFolds(trainers)
    reason = fused.fusable(cfg, trainers)
    if reason is None:
        return fused.FusedFolds(trainers)
    if execution == "fused":
        raise ValueError(f"fold execution 'fused': {reason}")
    return SequentialFolds(trainers)


EpochHook = Callable[[EpochCurves, dict[int, tuple[float, float]]], None]


def run_lockstep(group: Any, curves: EpochCurves, exchange: Exchange, max_epochs: int,
                 on_epoch: EpochHook | None = None) -> bool:
    """The epoch loop of a cross-validation (docs/ARCHITECTURE.md section 5): train, evaluate, exchange, add, keep, report, stop.

    Each epoch every local fold trains one epoch and evaluates its validation fold; the folds' probabilities
    (N_k x 6 float32, with the epoch's training loss and learning rate) are exchanged so that every process holds
    the same :class:`EpochCurves`, whose choices say which weights each fold keeps; ``on_epoch(curves, {fold:
    (train_loss, lr)})`` then runs (the search reports to Tune there). Training stops for all folds when the
    objective has not improved for ``train.patience`` epochs, or after ``max_epochs``.

    Args:
        group: the local folds (:class:`SequentialFolds` or :class:`blemore_core.fused.FusedFolds`).
        curves: empty curves of all folds of the lock step (:func:`new_curves`).
        exchange: :class:`LocalExchange` when ``group`` holds every fold, else one joining the other processes.
        max_epochs: ``train.max_epochs``.
        on_epoch: called after every epoch, in every process.

    Returns:
        True when the patience stop ended training before ``max_epochs``.
    """
    for epoch in range(1, max_epochs + 1):
        recs = group.train_epoch()
        probs = group.evaluate()
        mine = {k: (probs[k], float(recs[k]["train_loss"]), float(recs[k]["lr"])) for k in group.folds}
        rows = exchange.all_gather(("epoch", epoch), mine)
        curves.add({k: r[0] for k, r in rows.items()})
        group.keep(curves)
        if on_epoch is not None:
            on_epoch(curves, {k: (r[1], r[2]) for k, r in rows.items()})
        if curves.should_stop():
            return epoch < max_epochs
    return False


def cross_validate(
    cfg: Config, data: TrainData, folds: Sequence[int] | None = None, progress: bool = True,
    execution: str = "auto",
) -> CVResult:
    """Train the folds in one process in lock step and compute every protocol (docs/ARCHITECTURE.md section 3, 5).

    Runs :func:`run_lockstep` with a :class:`LocalExchange`, the loop a search trial runs too.

    Args:
        folds: which folds to run (default: every fold present in the release, ascending).
        progress: show a tqdm bar over all epochs of all folds.
        execution: see :func:`fold_group` (``CVResult.execution`` says which ran).

    Raises:
        ValueError: see :class:`FoldTrainer`; NonFiniteLossError: a NaN or infinite loss.
    """
    all_folds = sorted(set(np.asarray(data.folds).tolist()))
    folds = sorted(all_folds if folds is None else folds)
    group = fold_group(cfg, data, folds, execution)
    curves = new_curves(cfg, data, folds)
    bar, hook = None, None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(folds) * cfg.train.max_epochs, desc="cross-validate", unit="epoch", leave=True)

        def hook(c: EpochCurves, _rows: dict) -> None:
            bar.update(len(folds))
            bar.set_postfix(score=f"{c.objective().score:.3f}", refresh=False)

    try:
        stopped = run_lockstep(group, curves, LocalExchange(), cfg.train.max_epochs, hook)
    finally:
        if bar is not None:
            bar.close()
    results = group.finalize(curves, stopped)
    return CVResult(results, assemble_oof(results, len(data.filenames)), summarize_protocols(results, curves), curves,
                    execution=group.execution)


def fit_fold(cfg: Config, data: TrainData, fold: int) -> FoldResult:
    """Train and evaluate one fold alone (``cross_validate(cfg, data, [fold])``): the ``val`` protocol selects
    its epoch and thresholds, since ``crossfit`` needs the other folds.

    Raises:
        ValueError: unknown fold, an empty training or validation set, CUDA requested without a GPU.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    return cross_validate(cfg, data, folds=[fold], progress=False).folds[0]
