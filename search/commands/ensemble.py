"""``blemore ensemble --experiment NAME --top-k 20 --out ensemble.yaml``: ensemble selection over a search's trials.

Greedy forward selection with replacement (Caruana et al., ICML 2004; sorted initialisation; the best point of the
trajectory is kept, as AutoGluon's ``use_best``) over the stored OOF predictions of the top-k finished trials,
averaging probabilities; the objective and the ensemble's thresholds use the cross-fitted protocol. Prints the
ensemble's Score next to the best single trial's, logs both to an MLflow run of the experiment (tag
``role=ensemble``) and writes the ensemble YAML that ``blemore retrain`` takes (each member with its config and
export section, its weight, and the ensemble's thresholds). Errors write nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from search.commands.export import add_tracking
from search.safety import add_overwrite


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``ensemble`` subcommand."""
    p = sub.add_parser("ensemble", help="greedy ensemble selection over the OOF predictions of a search's best trials",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="the search name (= MLflow experiment)")
    p.add_argument("--top-k", type=int, default=20, help="candidates: the k best finished trials by score (default 20)")
    p.add_argument("--rounds", type=int, default=25, help="greedy additions after the initialisation (default 25)")
    p.add_argument("--init-size", type=int, default=1,
                   help="sorted initialisation: the ensemble starts with the best N trials (default 1)")
    p.add_argument("--out", type=Path, required=True, help="output YAML (e.g. ensemble.yaml)")
    add_tracking(p)
    add_overwrite(p)
    p.set_defaults(func=run)


def build_ensemble(experiment: str, top_k: int = 20, rounds: int = 25, init_size: int = 1,
                   tracking_uri: str | None = None) -> dict:
    """Select the ensemble of ``experiment`` and return the ensemble document (not written).

    Raises:
        TrialsError: no experiment / finished trial; ValueError: bad ``top_k``/``rounds``/``init_size``, or
            candidates whose OOF predictions cover different clips (named).
    """
    import numpy as np

    from blemore_core.artifacts import pooled_thresholds
    from blemore_core.decoding import crossfit_thresholds
    from blemore_core.ensemble import blend, select_ensemble
    from blemore_core.labels import soft_labels
    from blemore_core.results import PROB_COLUMNS
    from search.trials import client_for, ranked, trial_document

    if top_k < 1:
        raise ValueError(f"--top-k {top_k}: must be >= 1")
    client, uri = client_for(tracking_uri)
    cands = ranked(client, experiment, uri, "score")[:top_k]
    if not 1 <= init_size <= len(cands):
        raise ValueError(f"--init-size {init_size}: must be in 1..{len(cands)} (the candidates)")
    docs, probs, names, folds = [], [], None, None
    for t in cands:
        doc, oof = trial_document(client, uri, experiment, t)
        oof = oof.sort_values("filename", kind="stable").reset_index(drop=True)
        if names is None:
            names, folds = oof["filename"].tolist(), oof["fold"].to_numpy()
        elif oof["filename"].tolist() != names or not np.array_equal(oof["fold"].to_numpy(), folds):
            raise ValueError(f"run {t.run_id}: its OOF predictions cover other clips or folds than run "
                             f"{cands[0].run_id}'s (different data?)")
        docs.append(doc)
        probs.append(oof[list(PROB_COLUMNS)].to_numpy(np.float64))
    p = np.stack(probs)
    truth = soft_labels(names)
    pw = float(docs[0].get("thresholds", {}).get("presence_weight", 0.5))
    sel = select_ensemble(p, truth, folds, rounds=rounds, init_size=init_size, presence_weight=pw)
    ens = blend(p, sel.weights)
    cf = crossfit_thresholds(ens, truth, folds, presence_weight=pw)
    members = []
    for i in np.flatnonzero(sel.counts):
        d = dict(docs[i])
        export = d.pop("export")
        members.append({"run_id": cands[i].run_id, "run_name": cands[i].name, "weight": float(sel.weights[i]),
                        "count": int(sel.counts[i]), "single_score": float(sel.single_scores[i]),
                        "config": d, "export": export})
    b = sel.best_single
    return {"ensemble": {
        "experiment": experiment, "tracking_uri": uri, "protocol": "crossfit", "top_k": len(cands),
        "rounds": rounds, "init_size": init_size,
        "score": sel.score,
        "best_single": {"run_id": cands[b].run_id, "run_name": cands[b].name, "score": float(sel.single_scores[b])},
        "trajectory": sel.trajectory,
        "thresholds": {"pooled": pooled_thresholds(ens, truth, pw),
                       "crossfit": [{"fold": int(k), **{m: float(v[m]) for m in ("alpha", "beta", "score")}}
                                    for k, v in sorted(cf.items())]},
        "members": members,
    }}


def log_ensemble(doc: dict, path: Path, tracking_uri: str | None) -> str:
    """Log the ensemble's and the best single trial's Score and the YAML to a run of the experiment."""
    from search.trials import client_for

    e = doc["ensemble"]
    client, uri = client_for(tracking_uri)
    exp = client.get_experiment_by_name(e["experiment"]).experiment_id
    run = client.create_run(exp, tags={"role": "ensemble", "mlflow.runName": f"{e['experiment']}-ensemble",
                                       "source_runs": ",".join(m["run_id"] for m in e["members"])})
    rid = run.info.run_id
    client.log_metric(rid, "score", e["score"])
    client.log_metric(rid, "best_single_score", e["best_single"]["score"])
    client.log_metric(rid, "n_members", len(e["members"]))
    for i, v in enumerate(e["trajectory"]):
        client.log_metric(rid, "trajectory/score", v, step=i + 1)
    client.log_artifact(rid, str(path))
    client.set_terminated(rid, "FINISHED")
    return rid


def run(args: argparse.Namespace) -> int:
    """Handler of ``blemore ensemble``: 0 on success; an error raises :class:`InputError` (exit 2, nothing
    written)."""
    from blemore_core.artifacts import ArtifactError
    from search.commands.export import check_tracking_store, tracking_inputs, write_yaml
    from search.errors import InputError
    from search.safety import check_output
    from search.trials import TrialsError

    check_output(args.out, "ensemble", inputs=tracking_inputs(args.tracking_uri), overwrite=args.overwrite)
    check_tracking_store(args.tracking_uri)
    try:
        doc = build_ensemble(args.experiment, args.top_k, args.rounds, args.init_size, args.tracking_uri)
    except (TrialsError, ArtifactError, ValueError) as e:
        raise InputError(str(e)) from None
    write_yaml(doc, args.out)
    e = doc["ensemble"]
    print(f"ensemble of {len(e['members'])} distinct trials ({sum(m['count'] for m in e['members'])} picks) from "
          f"the top {e['top_k']}: crossfit Score {e['score']:.4f}; best single trial {e['best_single']['run_name']}: "
          f"{e['best_single']['score']:.4f}")
    for m in e["members"]:
        print(f"  {m['run_name']}: weight {m['weight']:.3f} (alone {m['single_score']:.4f})")
    try:
        rid = log_ensemble(doc, args.out, args.tracking_uri)
        print(f"MLflow run {rid}; wrote {args.out}")
    except Exception as ex:  # the file is written; the record is a bonus
        print(f"warning: ensemble not logged to MLflow: {ex!r}; wrote {args.out}", file=sys.stderr)
    return 0
