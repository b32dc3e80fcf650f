"""Issue 20 item 2: a space mixing ``mixed`` and non-mixed fusion; every trial reports a finite objective from its
first epoch (the mixed one provisional during pretraining), so ASHA's first rung ranks both, and the mixed trial's
kept model is still a combined-stage epoch. Real training on the tiny release through the production lock-step
driver and epoch report."""

from __future__ import annotations

import math

import numpy as np
from ray.tune.schedulers.async_hyperband import _Bracket

from blemore_core.train import LocalExchange, fold_group, new_curves, prepare_data, run_lockstep
from search.space import load_space
from search.trainable import epoch_report

SPACE = """
name: mixed_and_concat
preset: attention_mixed
data: {encoders: [imagebind, wavlm]}
fixed:
  model.latent_dim: 8
  model.shared_dim: 8
  model.seq_len: 4
  model.heads: 1
  model.mixed_pretrain_epochs: 2
  train.patience: 0
params:
  model.fusion: {type: choice, values: [concat, mixed]}
metric: score
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
budget: {num_samples: 2, max_epochs: 4}
"""


class _T:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def test_mixed_and_concat_trials_are_ranked_from_the_first_rung(tmp_path, tiny_release):
    p = tmp_path / "space.yaml"
    p.write_text(SPACE)
    space = load_space(p, data_dir=tiny_release)
    bracket = _Bracket(space.grace_period, space.max_epochs + 2, space.reduction_factor, s=0)
    reported: dict[str, list] = {}
    for fusion in ("concat", "mixed"):
        cfg = space.resolve({"model.fusion": fusion})
        data = prepare_data(cfg, str(tiny_release), progress=False)
        folds = sorted(set(np.asarray(data.folds).tolist()))
        curves = new_curves(cfg, data, folds)
        reports = reported.setdefault(fusion, [])

        def on_epoch(c, rows, reports=reports, fusion=fusion):
            r = epoch_report(c, rows)  # what the trial reports to Tune (and MLflow logs as epoch/score)
            reports.append((r["score"], c.objective().provisional))
            bracket.on_result(_T(fusion), c.epochs, r["score"])

        run_lockstep(fold_group(cfg, data, folds, "sequential"), curves, LocalExchange(), space.max_epochs, on_epoch)
        if fusion == "mixed":  # the kept model: a combined-stage epoch, for every fold and protocol
            assert all(curves.choice(p, k).epoch >= 3 for p in ("val", "crossfit") for k in folds)
    assert all(math.isfinite(s) for rep in reported.values() for s, _ in rep), reported
    assert [prov for _, prov in reported["mixed"]] == [True, True, False, False]
    assert not any(prov for _, prov in reported["concat"])
    rung1 = dict(bracket._rungs)[1]  # Tune's ASHA bracket: (milestone, {trial id: value}) per rung
    assert set(rung1) == {"concat", "mixed"}
    assert all(math.isfinite(v) for v in rung1.values())  # both ranked at the first rung (a NaN is never ranked)
