"""What a reviewer reads in the MLflow UI: run tags, run names, and the shared views behind the printed links.

No MLflow call here (pure functions); the views are stored as experiment tags by
:meth:`search.records.runs.RunIndex.ensure_store` and :meth:`~search.records.runs.RunIndex.parent`.
"""

from __future__ import annotations

from typing import Any

from blemore_core.names import DEFAULT_OBJECTIVE, FOLD_METRICS, OBJECTIVES
from search.defaults import ui_base

#: run tag holding Tune's trial id (parent and fold runs)
TRIAL_TAG = "tune_trial_id"
#: run tag ``parent`` (one per trial) or ``fold`` (one per fold of a trial)
ROLE_TAG = "role"
#: experiment tag naming the search's objectives, comma-separated (``score``; ``acc_presence,acc_salience`` for a
#: Pareto search): what ``export``, ``report`` and the links rank by (:func:`search.trials.search_objectives`)
OBJECTIVES_TAG = "blemore.objectives"
#: metric columns shown in the runs view link (besides the objective, which it is sorted by)
LINK_COLUMNS: tuple[str, ...] = OBJECTIVES
_ABBREV = {"top_n": "top", "learning_rate": "lr", "weight_decay": "wd", "batch_size": "bs", "latent_dim": "d",
           "shared_dim": "ds", "dropout": "drop", "max_epochs": "ep"}


def trial_number(trial_id: str) -> int | None:
    """The counter Tune puts at the end of a trial id (``"4f2c1_00003"`` -> 3); None when there is none."""
    head, sep, tail = str(trial_id).rpartition("_")
    return int(tail) if sep and head and tail.isdigit() else None  # a bare hex id may be all digits: not a counter


def _fmt_value(key: str, v: Any) -> str:
    short = _ABBREV.get(key.rsplit(".", 1)[-1], key.rsplit(".", 1)[-1])
    if isinstance(v, bool):
        return f"{short}={'y' if v else 'n'}"
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "+".join(str(x) for x in v)
    if isinstance(v, int):
        return f"{short}{v}" if short != key.rsplit(".", 1)[-1] or len(short) <= 4 else f"{short}={v}"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
            mant, exp = f"{v:.1e}".split("e")
            return f"{short}={mant}e{int(exp)}"
        return f"{short}={v:.3g}"
    return f"{short}={v}"


def trial_run_name(trial_id: str, config: dict, searched: list[str] | None = None, number: int | None = None) -> str:
    """A parent run's name that says what the trial is: its number and the searched values, e.g.
    ``t03 rank_aware top3 lr=1.1e-3`` (``searched`` orders the keys; default: the config's own order). The number
    is ``number`` when given, else the counter at the end of Tune's trial id (``..._00003``), else the id itself."""
    n = number if number is not None else trial_number(trial_id)
    head = f"t{n:02d}" if n is not None else str(trial_id)
    keys = [k for k in (searched or list(config)) if k in config and not k.startswith("debug.")]
    return " ".join([head] + [_fmt_value(k, config[k]) for k in keys])


def fold_run_name(parent_name: str, fold: int) -> str:
    """A fold run's name: the trial's number, the fold, then the searched values (``t03 fold2 rank_aware ...``),
    so the fold stays visible when the UI truncates long names."""
    head, _, rest = parent_name.partition(" ")
    return f"{head} fold{fold} {rest}".rstrip()


def best_view_key(metric: str = DEFAULT_OBJECTIVE) -> str:
    """Shared-view key of the search's trial runs sorted by ``metric``, best first."""
    return f"blemore-best-{metric}"


def trial_view_key(trial_id: str) -> str:
    """Shared-view key of one trial's fold runs."""
    return f"blemore-trial-{trial_id}"


def best_view_state(metric: str = DEFAULT_OBJECTIVE) -> dict:
    """The runs view of the trials (parent runs) sorted by ``metric`` (best first), key metric columns selected."""
    return {"searchFilter": f"tags.{ROLE_TAG} = 'parent'", "orderByKey": f"metrics.`{metric}`", "orderByAsc": False,
            "selectedColumns": [f"metrics.`{m}`" for m in dict.fromkeys([metric, *LINK_COLUMNS])]}


def trial_view_state(trial_id: str) -> dict:
    """The runs view of one trial's fold runs in fold order, with ACC_presence, ACC_salience, Score, the presence
    threshold alpha, the salience threshold beta (headline protocol) and the node each fold ran on."""
    return {"searchFilter": f"tags.{TRIAL_TAG} = '{trial_id}' and tags.{ROLE_TAG} = 'fold'",
            "orderByKey": "params.`fold`", "orderByAsc": True,
            "selectedColumns": [f"metrics.`{m}`" for m in FOLD_METRICS] + ["tags.`node_id`"]}


def view_link(tracking_uri: str, experiment_id: str, key: str) -> str:
    """Link to a shared view of the experiment's runs (MLflow 3 UI)."""
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}"


def runs_link(tracking_uri: str, experiment_id: str, metric: str = DEFAULT_OBJECTIVE) -> str:
    """Direct link to the search's trials sorted by the objective (best first) with the key metric columns selected
    (the view is stored as an experiment tag by :meth:`search.records.runs.RunIndex.ensure_store`)."""
    return view_link(tracking_uri, experiment_id, best_view_key(metric))


def trial_link(tracking_uri: str, experiment_id: str, trial_id: str) -> str:
    """Direct link to one trial's fold runs (the view is stored when the trial's run is created)."""
    return view_link(tracking_uri, experiment_id, trial_view_key(trial_id))


__all__ = ["TRIAL_TAG", "ROLE_TAG", "OBJECTIVES_TAG", "LINK_COLUMNS", "trial_number", "trial_run_name", "fold_run_name",
           "best_view_key", "trial_view_key", "best_view_state", "trial_view_state", "view_link", "runs_link",
           "trial_link"]
