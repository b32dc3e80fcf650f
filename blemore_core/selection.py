"""Per-epoch out-of-fold (OOF) probabilities of a cross-validation and the epoch / threshold protocols over them.

docs/ARCHITECTURE.md sections 3 and 5. The folds of a cross-validation train in lock step; after every epoch each fold's
validation probabilities (N_k, 6) are added to one :class:`EpochCurves`, which keeps them for the whole run
(per-epoch OOF probabilities, (N, 6, E)) and makes every decision that reads labels:

* **own-fold curve** of fold j: ``S_j(e)`` = the Score of fold j's epoch-e probabilities with alpha, beta fitted
  on fold j itself (:func:`~blemore_core.decoding.fit_thresholds`, refitted every epoch).
* ``val`` (the organisers' protocol, optimistic): fold k's epoch is ``argmax_e S_k(e)`` and its alpha, beta are
  fitted on fold k at that epoch.
* ``crossfit`` (the headline, leak-free): fold k's epoch is ``e*_k = argmax_e mean_{j != k} S_j(e)`` (the other
  folds' mean own-fold validation Score curve) and its alpha, beta are fitted on the pooled epoch-``e*_k``
  probabilities of the other folds' clips; fold k is then scored at ``e*_k`` with them. Nothing chosen for fold
  k reads fold k's labels.
* ``train`` (seed 002) needs the fold model's predictions on its own training rows, so it is computed once at the
  end by the trainer (:meth:`blemore_core.train.FoldTrainer.finalize`), at the ``crossfit`` epoch.

Ties between epochs go to the earliest epoch; ties in the threshold grid follow :func:`fit_thresholds`. Epochs
before ``first_epoch`` (the pretraining stage of ``mixed`` fusion) are never selected and never count for the stop.

The objective (reported to Tune every epoch, the final number, MLflow's ``score``, the ranking) is
:meth:`EpochCurves.objective`: the fold mean of the headline protocol's Score given the epochs seen so far.
The trial-level stop (:meth:`EpochCurves.should_stop`) is patience on that same number.

**Provisional objective** (issue 20): before ``first_epoch`` (the pretraining stage of ``mixed`` fusion) the
objective is the same headline protocol applied to the pretraining epochs seen so far, i.e. it scores the
pretrain-stage model's fused prediction (the mean of its two branch heads' distributions, what the model returns
in that stage) and is flagged ``Objective.provisional``. So every trial reports a finite objective from epoch 1 and
the scheduler's rungs compare mixed and non-mixed trials alike; MLflow's learning curve of ``score`` has no hole.
It never selects a model (:meth:`EpochCurves.choice` and :meth:`EpochCurves.kept_epochs` only consider epochs
>= ``first_epoch``) and never counts for the patience stop; from ``first_epoch`` on the objective is the
combined-stage one, so it may step down when the combine stage starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from blemore_core import names as _names
from blemore_core.config import HEADLINE_PROTOCOLS, PROTOCOLS
from blemore_core.decoding import ThresholdFit, evaluate_thresholds, fit_thresholds
from blemore_core.names import OBJECTIVES

#: the metrics of one protocol's choice for one fold (and of the fold means)
METRICS: tuple[str, ...] = _names.METRICS

__all__ = ["METRICS", "Choice", "Objective", "EpochCurves"]


@dataclass(frozen=True)
class Choice:
    """What one protocol chose for one fold, and the fold's numbers with that choice.

    Attributes:
        epoch: the selected epoch (1-based).
        alpha, beta: presence and salience thresholds (grid values).
        acc_presence, acc_salience, score: fold k's numbers at ``epoch`` decoded with (alpha, beta), in [0, 1].
    """

    epoch: int
    alpha: float
    beta: float
    acc_presence: float
    acc_salience: float
    score: float

    def as_dict(self) -> dict[str, float]:
        """The fields as a plain dict (``epoch`` an int, the rest floats)."""
        return asdict(self)


@dataclass(frozen=True)
class Objective:
    """Fold means of the headline protocol's choices given the epochs seen so far (the search's objective).

    Attributes:
        score, acc_presence, acc_salience: fold means in [0, 1] (NaN before the first epoch).
        provisional: True before ``first_epoch``: computed over the pretraining epochs (see the module docstring).
    """

    score: float
    acc_presence: float
    acc_salience: float
    provisional: bool = False


class EpochCurves:
    """Per-epoch OOF probabilities of the folds of one cross-validation and the protocols over them.

    Args:
        labels: float32 (N, 6) salience arrays of every training clip.
        folds: int (N,) fold of every clip.
        run_folds: the folds that train (at least one; ``crossfit`` needs two).
        headline: ``"crossfit"`` or ``"val"`` (the protocol of the objective and the stop).
        presence_weight: w of the threshold fit objective w*ACC_presence + (1-w)*ACC_salience.
        first_epoch: the first epoch that may be selected (``mixed``: ``mixed_pretrain_epochs + 1``).
        patience: epochs without an improvement of the objective before :meth:`should_stop` (0 = never).

    Raises:
        ValueError: an unknown headline, no folds, a fold absent from ``folds``, or ``crossfit`` with one fold.
    """

    def __init__(self, labels: np.ndarray, folds: np.ndarray, run_folds: Sequence[int], headline: str = "crossfit",
                 presence_weight: float = 0.5, first_epoch: int = 1, patience: int = 0):
        if headline not in HEADLINE_PROTOCOLS:
            raise ValueError(f"headline: must be one of {list(HEADLINE_PROTOCOLS)}, got {headline!r}")
        self.labels = np.asarray(labels, dtype=np.float32)
        self.folds = np.asarray(folds)
        self.run_folds = sorted(int(k) for k in run_folds)
        if not self.run_folds:
            raise ValueError("run_folds: at least one fold is required")
        present = set(self.folds.tolist())
        missing = [k for k in self.run_folds if k not in present]
        if missing:
            raise ValueError(f"run_folds: folds {missing} do not exist (folds: {sorted(present)})")
        if headline == "crossfit" and len(self.run_folds) < 2:
            raise ValueError(f"headline 'crossfit' needs at least two folds, got {self.run_folds}")
        self.headline = headline
        self.presence_weight = float(presence_weight)
        self.first_epoch = max(1, int(first_epoch))
        self.patience = int(patience)
        self.rows = {k: np.flatnonzero(self.folds == k) for k in self.run_folds}
        self.n = len(self.folds)
        self._probs: list[np.ndarray] = []  # one (N, 6) float32 per epoch, NaN rows for folds not run
        self._own: dict[int, list[ThresholdFit]] = {k: [] for k in self.run_folds}
        self._cf: dict[tuple[int, int], Choice] = {}
        self._best = -np.inf
        self._since = 0

    # ------------------------------------------------------------------ adding epochs
    @property
    def epochs(self) -> int:
        """Epochs added so far."""
        return len(self._probs)

    def add(self, probs: Mapping[int, np.ndarray]) -> int:
        """Add one epoch: ``{fold: float32 (N_k, 6) validation probabilities}`` for every fold of ``run_folds``.

        Returns:
            the 1-based number of the epoch just added.

        Raises:
            ValueError: a fold missing or a wrong shape.
        """
        full = np.full((self.n, 6), np.nan, dtype=np.float32)
        for k in self.run_folds:
            if k not in probs:
                raise ValueError(f"epoch {self.epochs + 1}: no probabilities for fold {k}")
            p = np.asarray(probs[k], dtype=np.float32)
            if p.shape != (len(self.rows[k]), 6):
                raise ValueError(f"epoch {self.epochs + 1}, fold {k}: probabilities must be "
                                 f"({len(self.rows[k])}, 6), got {p.shape}")
            full[self.rows[k]] = p
            self._own[k].append(fit_thresholds(p, self.labels[self.rows[k]], presence_weight=self.presence_weight))
        self._probs.append(full)
        e = self.epochs
        if e >= self.first_epoch:
            obj = self.objective().score
            if obj > self._best + 1e-12:
                self._best, self._since = obj, 0
            else:
                self._since += 1
        return e

    def stack(self) -> np.ndarray:
        """float32 (N, 6, E): the probabilities of every epoch (NaN rows for folds not run)."""
        return np.stack(self._probs, axis=2) if self._probs else np.zeros((self.n, 6, 0), np.float32)

    def probs_at(self, epoch: int) -> np.ndarray:
        """float32 (N, 6): every fold's validation probabilities at ``epoch`` (1-based)."""
        return self._probs[epoch - 1]

    def own_curve(self, fold: int) -> np.ndarray:
        """float64 (E,): fold ``fold``'s own-fold Score S_fold(e) per epoch."""
        return np.array([f.score for f in self._own[fold]], dtype=np.float64)

    def own_fit(self, fold: int, epoch: int) -> ThresholdFit:
        """The own-fold threshold fit of ``fold`` at ``epoch`` (1-based)."""
        return self._own[fold][epoch - 1]

    # ------------------------------------------------------------------ protocols
    def _argmax(self, curve: np.ndarray, start: int | None = None) -> int | None:
        """First epoch >= ``start`` (default first_epoch) maximising ``curve`` (E,), 1-based; None before it."""
        start = self.first_epoch if start is None else start
        if len(curve) < start:
            return None
        return start + int(np.argmax(curve[start - 1 :]))

    def crossfit_epoch(self, fold: int, start: int | None = None) -> int | None:
        """``argmax_e mean_{j != fold} S_j(e)`` over epochs >= ``start`` (default first_epoch): fold ``fold``'s epoch
        chosen on the other folds only."""
        others = [j for j in self.run_folds if j != fold]
        if not others:
            return None
        curve = np.mean([self.own_curve(j) for j in others], axis=0)
        return self._argmax(curve, start)

    def choice(self, protocol: str, fold: int, start: int | None = None) -> Choice | None:
        """The choice of ``protocol`` (``val`` or ``crossfit``) for ``fold`` given the epochs seen so far.

        Args:
            start: first epoch considered; default (and always for model selection) ``first_epoch``; the
                provisional objective passes 1.

        Returns:
            None before the first eligible epoch (or ``crossfit`` with a single fold).

        Raises:
            ValueError: for ``train`` (computed by the trainer at the end) or an unknown protocol.
        """
        if protocol == "val":
            e = self._argmax(self.own_curve(fold), start)
            if e is None:
                return None
            f = self.own_fit(fold, e)
            return Choice(e, f.alpha, f.beta, f.acc_presence, f.acc_salience, f.score)
        if protocol == "crossfit":
            e = self.crossfit_epoch(fold, start)
            if e is None:
                return None
            key = (fold, e)
            if key not in self._cf:
                others = np.concatenate([self.rows[j] for j in self.run_folds if j != fold])
                p = self._probs[e - 1]
                fit = fit_thresholds(p[others], self.labels[others], presence_weight=self.presence_weight)
                mine = self.rows[fold]
                m = evaluate_thresholds(p[mine], self.labels[mine], fit.alpha, fit.beta)
                self._cf[key] = Choice(e, fit.alpha, fit.beta, m["acc_presence"], m["acc_salience"], m["score"])
            return self._cf[key]
        if protocol in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r} is computed at the end of training, not per epoch")
        raise ValueError(f"protocol: must be one of {list(PROTOCOLS)}, got {protocol!r}")

    def per_epoch_protocols(self) -> tuple[str, ...]:
        """The protocols computable per epoch here: ``("val", "crossfit")``, or ``("val",)`` with one fold."""
        return HEADLINE_PROTOCOLS if len(self.run_folds) >= 2 else ("val",)

    def objective(self) -> Objective:
        """Fold means of the headline protocol's choices; before ``first_epoch`` the provisional objective over the
        pretraining epochs (``provisional=True``, see the module docstring); NaN before the first epoch."""
        provisional = self.epochs < self.first_epoch
        ch = [self.choice(self.headline, k, 1 if provisional else None) for k in self.run_folds]
        if any(c is None for c in ch):
            return Objective(float("nan"), float("nan"), float("nan"), provisional)
        return Objective(*(float(np.mean([getattr(c, m) for c in ch])) for m in OBJECTIVES), provisional)

    def kept_epochs(self, fold: int) -> set[int]:
        """Epochs whose weights ``fold`` must keep now: the current choice of every per-epoch protocol."""
        out = set()
        for p in self.per_epoch_protocols():
            c = self.choice(p, fold)
            if c is not None:
                out.add(c.epoch)
        return out

    def should_stop(self) -> bool:
        """True when the objective has not improved for ``patience`` eligible epochs (never with patience 0)."""
        return self.patience > 0 and self._since >= self.patience
