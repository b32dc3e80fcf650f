"""EpochCurves (per-epoch OOF probabilities and the val / crossfit protocols) against plain-loop references, on
synthetic per-epoch probabilities whose quality varies by fold and epoch (fast; no training)."""

from __future__ import annotations

import numpy as np
import pytest

from blemore_core.decoding import evaluate_thresholds, fit_thresholds
from blemore_core.selection import EpochCurves


def _labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random valid salience arrays (N, 6): singles, 50/50 and 70/30 blends of non-neutral emotions."""
    y = np.zeros((n, 6), np.float32)
    for i in range(n):
        kind = rng.integers(3)
        a, b = rng.choice(5, 2, replace=False)
        if kind == 0:
            y[i, rng.integers(6)] = 1.0
        else:
            y[i, a], y[i, b] = (0.5, 0.5) if kind == 1 else (0.7, 0.3)
    return y


@pytest.fixture(scope="module")
def synth():
    """labels (N, 6), folds (N,), probs (N, 6, E): epoch quality varies per fold and epoch."""
    rng = np.random.default_rng(0)
    n, n_epochs = 300, 6
    folds = np.repeat(np.arange(5), n // 5)
    labels = _labels(n, rng)
    quality = rng.uniform(0.0, 0.9, (5, n_epochs))
    probs = np.empty((n, 6, n_epochs), np.float32)
    for e in range(n_epochs):
        noise = rng.dirichlet(np.ones(6), n).astype(np.float32)
        w = quality[folds, e][:, None]
        probs[:, :, e] = w * labels + (1 - w) * noise
    return labels, folds, probs


def _curves(labels, folds, probs, **kw) -> EpochCurves:
    c = EpochCurves(labels, folds, sorted(set(folds.tolist())), **kw)
    for e in range(probs.shape[2]):
        c.add({k: probs[folds == k, :, e] for k in c.run_folds})
    return c


def _reference(labels, folds, probs, k, protocol):
    """Plain loops: (epoch, alpha, beta, score) of fold k under val or crossfit (earliest epoch wins ties)."""
    ks = sorted(set(folds.tolist()))
    pick = [j for j in ks if j != k] if protocol == "crossfit" else [k]
    best, best_e = -1.0, None
    for e in range(probs.shape[2]):
        mean = np.mean([fit_thresholds(probs[folds == j, :, e], labels[folds == j]).score for j in pick])
        if mean > best:
            best, best_e = mean, e + 1
    fit_rows = folds != k if protocol == "crossfit" else folds == k
    fit = fit_thresholds(probs[fit_rows, :, best_e - 1], labels[fit_rows])
    m = evaluate_thresholds(probs[folds == k, :, best_e - 1], labels[folds == k], fit.alpha, fit.beta)
    return best_e, fit.alpha, fit.beta, m["score"]


def test_protocols_match_plain_loop_reference(synth):
    labels, folds, probs = synth
    c = _curves(labels, folds, probs)
    assert c.stack().shape == probs.shape and np.array_equal(c.stack(), probs)
    epochs = set()
    for k in range(5):
        for proto in ("val", "crossfit"):
            ch = c.choice(proto, k)
            e, a, b, s = _reference(labels, folds, probs, k, proto)
            assert (ch.epoch, ch.alpha, ch.beta) == (e, a, b), (k, proto)
            assert ch.score == pytest.approx(s, abs=1e-12)
            epochs.add((proto, e))
    want = np.mean([_reference(labels, folds, probs, k, "crossfit")[3] for k in range(5)])
    assert c.objective().score == pytest.approx(want, abs=1e-12)
    assert len(epochs) > 2  # the folds choose different epochs: the reference comparison has power


def test_crossfit_never_reads_the_folds_own_labels(synth):
    """Leak test: permuting fold k's labels changes none of fold k's crossfit epoch, alpha, beta; val moves."""
    labels, folds, probs = synth
    before = _curves(labels, folds, probs)
    rng = np.random.default_rng(1)
    val_moved = 0
    for k in range(5):
        rows = np.flatnonzero(folds == k)
        permuted = labels.copy()
        permuted[rows] = labels[rng.permutation(rows)]  # labels shuffled across fold k's clips
        relabelled = labels.copy()
        relabelled[rows] = np.roll(labels[rows], 1, axis=1)  # every clip of fold k given other emotions
        for changed in (permuted, relabelled):
            after = _curves(changed, folds, probs)
            b, a = before.choice("crossfit", k), after.choice("crossfit", k)
            assert (a.epoch, a.alpha, a.beta) == (b.epoch, b.alpha, b.beta), k
            bv, av = before.choice("val", k), after.choice("val", k)
            val_moved += (av.epoch, av.alpha, av.beta) != (bv.epoch, bv.alpha, bv.beta)
    assert val_moved >= 6


def test_objective_and_stop_per_epoch(synth):
    """The objective after e epochs uses only the first e epochs; the stop is patience on it (plain loop)."""
    labels, folds, probs = synth
    objectives = [np.mean([_reference(labels, folds, probs[:, :, :e], k, "crossfit")[3] for k in range(5)])
                  for e in range(1, probs.shape[2] + 1)]
    for patience in (1, 2):
        c = EpochCurves(labels, folds, range(5), patience=patience)
        best, since, stop_at = -1.0, 0, None
        for e in range(probs.shape[2]):
            c.add({k: probs[folds == k, :, e] for k in range(5)})
            assert c.objective().score == pytest.approx(objectives[e], abs=1e-12)
            since = 0 if objectives[e] > best + 1e-12 else since + 1
            best = max(best, objectives[e])
            if since >= patience and stop_at is None:
                stop_at = e + 1
            assert c.should_stop() == (stop_at is not None)
        assert stop_at is not None  # the synthetic curve does stall: the check has power


def test_first_epoch_excludes_pretraining_epochs(synth):
    labels, folds, probs = synth
    perfect = probs.copy()
    perfect[:, :, 0] = labels  # a perfect first epoch that must not be chosen
    c = _curves(labels, folds, perfect, first_epoch=2)
    assert all(c.choice(p, k).epoch >= 2 for p in ("val", "crossfit") for k in range(5))
    assert _curves(labels, folds, perfect).choice("val", 0).epoch == 1


def test_provisional_objective_before_first_epoch(synth):
    """Issue 20: before first_epoch (mixed pretraining) the objective is finite and provisional = the headline
    protocol over the pretraining epochs; from first_epoch on it uses the combined-stage epochs only; selection
    and the patience stop never see a pretraining epoch."""
    labels, folds, probs = synth
    first = 4
    c = EpochCurves(labels, folds, range(5), first_epoch=first, patience=1)
    for e in range(1, probs.shape[2] + 1):
        c.add({k: probs[folds == k, :, e - 1] for k in range(5)})
        obj = c.objective()
        window = probs[:, :, :e] if e < first else probs[:, :, first - 1 : e]
        want = np.mean([_reference(labels, folds, window, k, "crossfit")[3] for k in range(5)])
        assert np.isfinite(obj.score) and obj.provisional == (e < first), e
        assert obj.score == pytest.approx(want, abs=1e-12), e
        if e < first:
            assert all(c.choice(p, k) is None and not c.kept_epochs(k) for p in ("val", "crossfit") for k in range(5))
            assert not c.should_stop()
        else:
            assert all(c.choice("crossfit", k).epoch >= first for k in range(5))
    assert EpochCurves(labels, folds, range(5), first_epoch=first).objective().provisional  # no epoch: NaN
    assert np.isnan(EpochCurves(labels, folds, range(5), first_epoch=first).objective().score)


def test_bad_input():
    y = np.eye(6, dtype=np.float32)[np.arange(10) % 6]
    f = np.arange(10) % 2
    with pytest.raises(ValueError, match="crossfit' needs at least two folds"):
        EpochCurves(y, f, [0])
    with pytest.raises(ValueError, match="folds \\[7\\] do not exist"):
        EpochCurves(y, f, [0, 7])
    c = EpochCurves(y, f, [0, 1])
    with pytest.raises(ValueError, match="no probabilities for fold 1"):
        c.add({0: y[f == 0]})
    with pytest.raises(ValueError, match="computed at the end"):
        c.choice("train", 0)
