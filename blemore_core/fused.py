"""Fused folds: the K folds of one cross-validation stepped as ONE batched model (issue 22 item 3, docs/ARCHITECTURE.md 5).

:class:`FusedFolds` takes the :class:`~blemore_core.train.FoldTrainer` of every local fold (duck typing: this
module never imports :mod:`blemore_core.train`, which imports it) and trains their models as one: the K models'
trainable parameters live in one flat float32 (K, P) tensor, each fold's forward, loss and backward run as one
``torch.func.vmap`` over ``torch.func.functional_call`` (the PyTorch model-ensembling recipe; HFTA, MLSys 2021, for
the idea of fusing many small models on one accelerator), and :class:`BatchedAdamW` updates all K rows at once.
Each fold keeps its own data: its mini-batches come from its own ``trainer.gen`` in exactly the order of
``FoldTrainer.train_epoch`` (the permutation at the start of the epoch, then per batch the inputs and, with a
domain term, the target draw), its learning rate from its own cosine schedule, its own AdamW moments and step
count. Folds differ in training-set size, so in number of batches and size of the last batch: every step groups
the folds with a batch left by batch size (and target-batch size) and runs one vmap per group; a fold without a
batch left does not step (its parameters and moments stay untouched). After each epoch every fold's row is
copied back into ``trainer.model``, the epoch record appended to ``trainer.history`` and ``trainer.epoch``
advanced, so that evaluation (deterministic, eval mode), ``keep`` and ``finalize`` are the trainers' own.

Equality with the sequential loop: the batches, initial weights and optimiser arithmetic are the sequential
loop's, so without dropout (``reg.dropout``, ``reg.modality_dropout`` and ``reg.temporal_dropout`` all 0) the
per-fold validation probabilities equal ``execution="sequential"``'s up to float32 rounding of batched kernels
(tests: within 1e-4 absolute after 3 epochs, same selected epochs and thresholds). With dropout > 0 the fused
masks are drawn under ``vmap(randomness="different")`` from one private copy of torch's generator state for the
whole group (started from the first fold's private state), so they differ from the sequential masks (same
distribution): fused and sequential then agree in distribution, not in numbers. A discontinuity can also amplify
rounding: rank_aware's hard top-n selection may pick another encoder for a clip whose importances tie within
float32 rounding (seen on 1 of 522 clips with top_n 1 of 2 encoders), which changes that clip's output.

Which families fuse (:func:`fusable`; tests in ``tests/blemore_core/test_fused.py``): the organisers' baselines
(``model.arch`` linear, mlp256, mlp512 on aggregated features); ``fusion`` models with ``concat``, ``attention``
or ``rank_aware`` fusion (its top-n gating runs under vmap), ``stat``, ``attention`` or ``cls`` pooling and every
head, on sequence or aggregated features, with any loss term (the losses run in their vmap-safe form,
:func:`blemore_core.losses.loss_terms`). Not fused, with the reason :func:`fusable` returns: one fold; ``mixed``
fusion (its stage switch freezes parameters mid-run); ``bilstm`` pooling (packed sequences need host-side
lengths, which vmap cannot batch: the probe step's error); models with running-statistics buffers; any other
model whose probe step fails under vmap.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, vmap
from torch.optim.adamw import adamw

from blemore_core.fold_inputs import NonFiniteLossError, rng_state, set_rng_state
from blemore_core.losses import loss_terms, structured_targets

_FALLBACK_WARNING = "There is a performance drop because we have not yet implemented the batching rule"
"""torch.func's notice that an op (e.g. CPU flash attention, isclose) runs as a loop over the vmapped folds:
correct, slower for that op; silenced inside the fused step."""


class BatchedAdamW:
    """AdamW over K stacked parameter rows, each row with its own moments, step count and learning rate.

    Each row k of ``flat`` (K, P) is one fold's parameters. A step updates only the rows in ``stepped`` (the
    others keep parameters, moments and step count bit for bit) with ``torch.optim.adamw.adamw``, the functional
    form of ``torch.optim.AdamW`` (Loshchilov & Hutter 2019), one call per distinct learning rate over the rows
    as a list of tensors: the same kernel as the folds' own optimisers (``fused`` as theirs: one pass over the
    memory on CPU and CUDA), so each row follows exactly the arithmetic of a per-fold ``torch.optim.AdamW``.

    Args:
        flat: float (K, P) parameters, updated in place (through ``flat.detach()``).
        betas, eps, weight_decay: AdamW hyper-parameters (``trainer.opt.defaults``).
        fused: use PyTorch's fused kernel (as ``trainer.opt.defaults["fused"]``); None: its default choice.
    """

    def __init__(self, flat: Tensor, betas: tuple[float, float], eps: float, weight_decay: float,
                 fused: bool | None = None):
        self.flat = flat
        self.exp_avg = torch.zeros_like(flat)
        self.exp_avg_sq = torch.zeros_like(flat)
        self.fused = fused
        step_device = flat.device if fused else torch.device("cpu")  # where torch.optim.AdamW keeps "step"
        self.steps = [torch.zeros((), dtype=torch.float32, device=step_device) for _ in range(flat.shape[0])]
        self.betas, self.eps, self.weight_decay = (float(betas[0]), float(betas[1])), float(eps), float(weight_decay)

    @torch.no_grad()
    def step(self, grad: Tensor, lr: Sequence[float], stepped: Sequence[int]) -> None:
        """One AdamW step of the rows ``stepped`` (positions 0..K-1).

        Args:
            grad: (K, P) gradients (rows not in ``stepped`` are ignored).
            lr: the learning rate of each row (K floats).
            stepped: the rows that step.
        """
        data = self.flat.detach()
        by_lr: dict[float, list[int]] = defaultdict(list)
        for k in sorted(set(int(s) for s in stepped)):
            by_lr[float(lr[k])].append(k)
        for rate, rows in by_lr.items():
            adamw(
                [data[k] for k in rows], [grad[k] for k in rows], [self.exp_avg[k] for k in rows],
                [self.exp_avg_sq[k] for k in rows], [], [self.steps[k] for k in rows], fused=self.fused,
                amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=rate, weight_decay=self.weight_decay,
                eps=self.eps, maximize=False)


@dataclass
class _Batch:
    """One fold's batch of one step: position in the group, clip rows (B,), inputs, optional target inputs."""

    pos: int
    idx: Tensor
    x: dict[str, Tensor]
    m: dict[str, Tensor] | None
    xt: dict[str, Tensor] | None = None
    mt: dict[str, Tensor] | None = None

    @property
    def key(self) -> tuple[int, int]:
        """(batch size, target batch size): the folds of one vmap share both."""
        nt = 0 if self.xt is None else int(next(iter(self.xt.values())).shape[0])
        return int(self.idx.shape[0]), nt


def _stack(dicts: list[dict[str, Tensor] | None]) -> dict[str, Tensor] | None:
    """``[{e: (B, ...)}] * G`` -> ``{e: (G, B, ...)}`` (None stays None)."""
    if dicts[0] is None:
        return None
    return {e: torch.stack([d[e] for d in dicts]) for e in dicts[0]}


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


class FusedFolds:
    """The fold group of :func:`blemore_core.train.run_lockstep` that steps K folds as one batched model.

    Same four steps and attributes as :class:`blemore_core.train.SequentialFolds` (``folds``, ``execution``,
    :meth:`train_epoch`, :meth:`evaluate`, :meth:`keep`, :meth:`finalize`); see the module docstring for the
    arithmetic and the tolerance. Build it only for trainers :func:`fusable` accepts.

    Args:
        trainers: one ``FoldTrainer`` per local fold (same config; each model already initialised from its
            own seed). Their parameters are copied into one (K, P) tensor; ``trainer.model`` gets each fold's
            weights back after every epoch.

    Raises:
        ValueError: structured head with training labels that are not valid label sets (as the sequential
            loop would at the first batch).
    """

    execution = "fused"

    def __init__(self, trainers: Sequence[Any]):
        self.trainers = list(trainers)
        t0 = self.trainers[0]
        self.cfg, self.device = t0.cfg, t0.device
        self.template = copy.deepcopy(t0.model).train()  # functional_call's module: parameters come from flat
        named = [(n, p) for n, p in t0.model.named_parameters()]
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.buffers = {n: b for n, b in t0.model.named_buffers()}  # identical in every fold (fusable checks)
        with torch.no_grad():
            flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in tr.model.parameters()])
                                for tr in self.trainers])
        self.flat = flat.requires_grad_(True)
        d = t0.opt.defaults
        self.opt = BatchedAdamW(self.flat, d["betas"], d["eps"], d["weight_decay"], d.get("fused"))
        self._rng = copy.deepcopy(getattr(t0, "_rng", rng_state(self.device)))  # the group's dropout stream
        if self.cfg.model.arch == "fusion" and self.cfg.model.head == "structured" and self.cfg.loss.kl > 0:
            for tr in self.trainers:  # the vmap-safe loss does not validate label sets per batch
                structured_targets(tr.labels[tr.train_idx_t])

    @property
    def folds(self) -> tuple[int, ...]:
        """The local folds, in trainer order (row k of the stacked parameters is ``folds[k]``)."""
        return tuple(tr.fold for tr in self.trainers)

    # ------------------------------------------------------------------ one fold's loss (runs under vmap)
    def _params(self, row: Tensor) -> dict[str, Tensor]:
        """One fold's parameters as views of its (P,) row."""
        return {n: v.view(s) for n, v, s in zip(self.names, torch.split(row, self.numels), self.shapes, strict=True)}

    def _call(self, pb: dict[str, Tensor], x, m):
        """The model on ``(x, m)`` with parameters/buffers ``pb`` at ``train.precision`` (as
        :func:`blemore_core.fold_inputs.forward`: bf16 under autocast, outputs float32)."""
        if self.cfg.train.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = functional_call(self.template, pb, (x, m))
            return out.float()
        return functional_call(self.template, pb, (x, m))

    def _fold_loss(self, row: Tensor, x, m, y: Tensor, xt, mt) -> tuple[Tensor, dict[str, Tensor]]:
        """One fold's batch loss and weighted terms (scalars) from its parameter row (P,)."""
        pb = {**self._params(row), **self.buffers}
        out = self._call(pb, x, m)
        emb = None if xt is None else self._call(pb, xt, mt).embedding
        return loss_terms(out, y, self.cfg.loss, emb, vmap_safe=True)

    # ------------------------------------------------------------------ batches and one fused step
    def _draw(self, pos: int, perm: Tensor, s: int) -> _Batch:
        """Fold ``pos``'s batch ``s`` of this epoch, drawn from its own generator as ``FoldTrainer.train_epoch``
        draws it (inputs, then the domain-target rows and inputs)."""
        tr, bs = self.trainers[pos], self.cfg.train.batch_size
        idx = perm[s * bs:(s + 1) * bs]
        x, m = tr.tensors.inputs(idx, train=True, gen=tr.gen)
        b = _Batch(pos, idx, x, m)
        if tr.target_pool is not None:
            pool = tr.target_pool
            tidx = pool[torch.randint(len(pool), (min(bs, len(pool)),), generator=tr.gen, device=self.device)]
            b.xt, b.mt = tr.tensors.inputs(tidx, train=True, gen=tr.gen, target=self.cfg.data.domain_target == "test")
        return b

    def _step(self, batches: list[_Batch], lr: list[float], epoch: int, check: bool = True):
        """One optimiser step of the folds in ``batches`` (one vmap per group of equal batch sizes).

        Returns:
            ``(positions (n,) int64, losses (n,), {term: (n,)})`` of the folds that stepped, detached.

        Raises:
            NonFiniteLossError: (``check``) a fold's loss is NaN or infinite; no parameter changed.
        """
        groups: dict[tuple[int, int], list[_Batch]] = defaultdict(list)
        for b in batches:
            groups[b.key].append(b)
        everyone = list(range(len(self.trainers)))
        pos_all, tot_all, parts_all = [], [], defaultdict(list)
        for members in groups.values():
            pos = [b.pos for b in members]
            rows = self.flat if pos == everyone else self.flat[torch.tensor(pos, device=self.device)]
            y = torch.stack([self.trainers[b.pos].labels[b.idx] for b in members])
            args = (rows, _stack([b.x for b in members]), _stack([b.m for b in members]), y,
                    _stack([b.xt for b in members]), _stack([b.mt for b in members]))
            in_dims = tuple(None if a is None else 0 for a in args)
            tot, parts = vmap(self._fold_loss, in_dims=in_dims, randomness="different")(*args)
            pos_all += pos
            tot_all.append(tot)
            for k, v in parts.items():
                parts_all[k].append(v)
        tot = torch.cat(tot_all)
        parts = {k: torch.cat(v) for k, v in parts_all.items()}
        if check and not bool(torch.isfinite(tot).all()):
            self._raise_non_finite(pos_all, tot, parts, epoch)
        self.flat.grad = None
        tot.sum().backward()
        grad, self.flat.grad = self.flat.grad, None
        self.opt.step(grad, lr, pos_all)
        return torch.tensor(pos_all, device=self.device), tot.detach(), {k: v.detach() for k, v in parts.items()}

    def _raise_non_finite(self, pos: list[int], tot: Tensor, parts: dict[str, Tensor], epoch: int) -> None:
        i = int(torch.nonzero(~torch.isfinite(tot))[0, 0])
        floats = {k: float(v[i].detach()) for k, v in parts.items()}
        floats["total"] = float(tot[i].detach())
        fold = self.trainers[pos[i]].fold
        raise NonFiniteLossError(f"fold {fold}, epoch {epoch}: non-finite loss {floats['total']} (parts {floats})")

    # ------------------------------------------------------------------ the four steps of run_lockstep
    def train_epoch(self) -> dict[int, dict[str, float]]:
        """One training epoch of every fold as one batched model, then one cosine step per fold.

        Returns:
            ``{fold: {"epoch", "train_loss", "lr", "loss_<part>"...}}`` as ``FoldTrainer.train_epoch``.

        Raises:
            NonFiniteLossError: a fold's loss became NaN or infinite ("fold k, epoch e: non-finite loss ...").
        """
        trs, bs, dev = self.trainers, self.cfg.train.batch_size, self.device
        outer = rng_state(dev)
        set_rng_state(dev, self._rng)
        try:
            for tr in trs:
                tr.epoch += 1
            epoch = trs[0].epoch
            lr_now = [float(tr.opt.param_groups[0]["lr"]) for tr in trs]
            perms = [tr.train_idx_t[torch.randperm(len(tr.train_idx_t), generator=tr.gen, device=dev)] for tr in trs]
            sums = torch.zeros(len(trs), dtype=torch.float64, device=dev)
            part_sums: dict[str, Tensor] = {}
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_FALLBACK_WARNING)
                for s in range(max(math.ceil(len(p) / bs) for p in perms)):
                    batches = [self._draw(k, p, s) for k, p in enumerate(perms) if s * bs < len(p)]
                    pos, tot, parts = self._step(batches, lr_now, epoch)
                    n = self._sizes(batches, pos)
                    sums.index_add_(0, pos, tot.double() * n)
                    for k, v in {**parts, "total": tot}.items():
                        part_sums.setdefault(k, torch.zeros_like(sums)).index_add_(0, pos, v.double() * n)
            with warnings.catch_warnings():  # the trainers' own optimisers never step: only their schedules run
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)`")
                for tr in trs:
                    tr.sched.step()
        finally:
            self._rng = rng_state(dev)
            set_rng_state(dev, outer)
        self._copy_back()
        return self._records(epoch, perms, lr_now, sums, part_sums)

    def _sizes(self, batches: list[_Batch], pos: Tensor) -> Tensor:
        """float64 (n,) batch sizes in the order of ``pos`` (the stepped folds' positions)."""
        size = {b.pos: len(b.idx) for b in batches}
        return torch.tensor([size[int(p)] for p in pos.tolist()], dtype=torch.float64, device=self.device)

    def _records(self, epoch: int, perms: list[Tensor], lr_now: list[float], sums: Tensor,
                 part_sums: dict[str, Tensor]) -> dict[int, dict[str, float]]:
        """The epoch records (appended to each trainer's history), as ``FoldTrainer.train_epoch`` builds them."""
        sums_np = sums.cpu().numpy()
        parts_np = {k: v.cpu().numpy() for k, v in part_sums.items()}
        out = {}
        for k, tr in enumerate(self.trainers):
            n = max(len(perms[k]), 1)
            rec = {"epoch": epoch, "train_loss": float(sums_np[k]) / n, "lr": lr_now[k]}
            rec.update({f"loss_{name}": float(v[k]) / n for name, v in parts_np.items()})
            tr.history.append(rec)
            out[tr.fold] = rec
        return out

    @torch.no_grad()
    def _copy_back(self) -> None:
        """Each fold's row of the stacked parameters into its ``trainer.model``."""
        for k, tr in enumerate(self.trainers):
            for p, v in zip(tr.model.parameters(), self._params(self.flat[k]).values(), strict=True):
                p.copy_(v)

    def evaluate(self) -> dict[int, np.ndarray]:
        """``{fold: float32 (N_k, 6) validation probabilities}`` (each trainer's eval-mode model)."""
        return {tr.fold: tr.evaluate() for tr in self.trainers}

    def keep(self, curves) -> None:
        """Each fold keeps the weights of the epochs ``curves`` currently chooses for it."""
        for tr in self.trainers:
            tr.keep(curves.kept_epochs(tr.fold))

    def finalize(self, curves, stopped: bool) -> list:
        """One ``FoldResult`` per local fold (``FoldTrainer.finalize``)."""
        return [tr.finalize(curves, stopped=stopped) for tr in self.trainers]

    def probe(self) -> None:
        """One fused step (forward, backward, AdamW) on this group's own copy of the parameters, with each fold's
        first batch. Consumes the trainers' generators and torch's global generator: :func:`fusable` restores
        them. Raises whatever the batched model raises."""
        dev, bs = self.device, self.cfg.train.batch_size
        lr = [float(tr.opt.param_groups[0]["lr"]) for tr in self.trainers]
        perms = [tr.train_idx_t[torch.randperm(len(tr.train_idx_t), generator=tr.gen, device=dev)][:bs]
                 for tr in self.trainers]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_FALLBACK_WARNING)
            self._step([self._draw(k, p, 0) for k, p in enumerate(perms)], lr, epoch=0, check=False)


def _static_reason(cfg: Any, trainers: Sequence[Any]) -> str | None:
    """A reason visible without running the model (see :func:`fusable`), or None."""
    if len(trainers) < 2:
        return f"fusing needs two or more folds in one process, got {len(trainers)}"
    if cfg.model.arch == "fusion" and cfg.model.fusion == "mixed":
        return ("mixed fusion switches stage mid-run (its branches are frozen after model.mixed_pretrain_epochs), "
                "which one batched model does not follow")
    models = [tr.model for tr in trainers]
    if len({tr.device for tr in trainers}) > 1:
        return f"the folds' models are on different devices ({sorted(str(tr.device) for tr in trainers)})"
    shapes = [[(n, tuple(p.shape), p.dtype) for n, p in mdl.named_parameters()] for mdl in models]
    if any(s != shapes[0] for s in shapes[1:]):
        return "the folds' models do not have identical parameter names, shapes and dtypes"
    if any(not p.requires_grad for mdl in models for p in mdl.parameters()):
        return "a model has frozen parameters (requires_grad False)"
    stats = [type(mod).__name__ for mod in models[0].modules() if getattr(mod, "track_running_stats", False)]
    if stats:
        return f"the model has buffers that change in training (running statistics of {stats[0]})"
    b0 = dict(models[0].named_buffers())
    for mdl in models[1:]:
        b = dict(mdl.named_buffers())
        if b.keys() != b0.keys() or any(not torch.equal(b[n], b0[n]) for n in b0):
            return "the folds' models have different buffers"
    d = [tr.opt.defaults for tr in trainers]
    keys = ("betas", "eps", "weight_decay", "amsgrad", "maximize")
    if any(tuple(x.get(k) for k in keys) != tuple(d[0].get(k) for k in keys) for x in d[1:]):
        return "the folds' optimisers have different hyper-parameters"
    if d[0].get("amsgrad") or d[0].get("maximize"):
        return "the batched AdamW implements neither amsgrad nor maximize"
    return None


def fusable(cfg: Any, trainers: Sequence[Any]) -> str | None:
    """Why the folds of ``trainers`` cannot step as one batched model (one sentence), or None when they can.

    Refuses: fewer than two folds; ``mixed`` fusion; models on different devices, with different parameter
    shapes, frozen parameters, running-statistics buffers or different buffers; optimisers with different
    hyper-parameters. Then probes ONE fused step (:meth:`FusedFolds.probe`, on a copy of the parameters) and
    returns the first line of its error, e.g. for ``bilstm`` pooling. The probe consumes no randomness: each
    ``trainer.gen`` and torch's global generator state are restored, and no trainer's model, optimiser or
    schedule changes.

    Args:
        cfg: the trial's resolved config. trainers: one ``FoldTrainer`` per local fold.
    """
    reason = _static_reason(cfg, trainers)
    if reason is not None:
        return reason
    device = trainers[0].device
    gens = [tr.gen.get_state() for tr in trainers]
    outer = rng_state(device)
    try:
        FusedFolds(trainers).probe()
    except Exception as e:  # noqa: BLE001  (any failure of the batched model is a reason to run sequentially)
        return f"the folds' models do not run as one batched model under torch.func.vmap ({_first_line(e)})"
    finally:
        for tr, state in zip(trainers, gens, strict=True):
            tr.gen.set_state(state)
        set_rng_state(device, outer)
    return None
