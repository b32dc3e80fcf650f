"""What a trial's events write to MLflow (run on the writer thread, :mod:`search.records.writer`): params at the
start, learning curves per epoch, final metrics and artifacts, the end status; a trial that starts over gets fresh
runs. The records' layout is in :mod:`search.records`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blemore_core.names import DEFAULT_HEADLINE, FOLD_METRICS, OBJECTIVES
from search.records.naming import ROLE_TAG, TRIAL_TAG
from search.records.runs import RunIndex
from search.records.upload import upload_checkpoint, upload_shards
from search.safety import mask_uri

ERROR_TAG_MAX = 4900  # characters of a failed trial's error text kept in its ``error`` tag (MLflow's limit: 5000)


@dataclass(frozen=True)
class TrialInfo:
    """What the records need of a Tune trial, copied when a hook fires (the writer thread runs later)."""

    trial_id: str
    name: str
    config: dict
    error_file: str | None
    num_failures: int

    @classmethod
    def of(cls, trial: Any) -> TrialInfo:
        """Copy of a Tune ``Trial`` (or any object with ``trial_id`` and ``config``)."""
        return cls(str(trial.trial_id), str(trial), dict(trial.config or {}), getattr(trial, "error_file", None),
                   int(getattr(trial, "num_failures", 0) or 0))

    def __str__(self) -> str:
        return self.name


class TrialRecorder:
    """Writes the events of trials to their runs (found or created through ``index``).

    Args:
        index: the search's run index.
        base: the space's base config (``Config.to_dict()``); a trial's config is base + its sampled params.
        storage: the search's storage URI (artifacts are read from it), or None (checkpoints are local folders).
    """

    def __init__(self, index: RunIndex, base: dict, storage: str | None):
        self.index, self.base, self.storage = index, base, storage
        self.final_seen: set[str] = set()  # trials whose final report was recorded
        self.last: dict[str, dict] = {}  # trial id -> its last epoch report
        self._fresh_checked: set[str] = set()

    @property
    def client(self) -> Any:
        return self.index.client

    def log(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Log ``metrics`` (None values skipped) at ``step``, in batches."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(ms), 900):
            self.client.log_batch(run_id, metrics=ms[i : i + 900])

    def start(self, trial: TrialInfo) -> None:
        """A trial starts (or restarts): its parent run, with the resolved config's params not logged yet."""
        run_id = self.index.parent(trial)
        self.final_seen.discard(trial.trial_id)
        try:
            from mlflow.entities import Param

            from search.space import trial_config

            cfg = trial_config(self.base, trial.config, source=f"trial {trial.trial_id}")
            existing = self.client.get_run(run_id).data.params
            params = [Param(k, str(v)) for k, v in cfg.flat().items() if k not in existing]
            for i in range(0, len(params), 90):
                self.client.log_batch(run_id, params=params[i : i + 90])
        except Exception as e:  # never let tracking break the search
            self.client.set_tag(run_id, "params_error", str(e)[:500])

    def result(self, trial: TrialInfo, result: dict) -> None:
        """A trial reported: an epoch (learning curves ``epoch/<m>``, step = epoch) or its final report."""
        from search.trainable import fold_records

        recs = fold_records(result)
        if result.get("final"):
            self._log_final(trial, result, recs)
            return
        self.last[trial.trial_id] = result
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self._replace_if_restarted(trial, step)
        for tag in ("fold_layout", "fold_execution"):  # where and how the folds ran (packed|workers, fused|sequential)
            if step == 1 and result.get(tag):
                self.client.set_tag(self.index.parent(trial), tag, str(result[tag]))
        self.log(self.index.parent(trial), {f"epoch/{m}": result.get(m) for m in OBJECTIVES}, step)
        headline = result.get("headline", DEFAULT_HEADLINE)
        for r in recs:  # learning curve (own-fold fit of this epoch) and the headline choice so far
            m = {f"epoch/{k}": v for k, v in r.own.items()}
            m.update({"epoch/train_loss": r.train_loss, "epoch/lr": r.lr})
            if headline in r.protocols:
                m[f"epoch/{headline}_score"] = r.protocols[headline]["score"]
            self.log(self.index.child(trial, r.fold), m, r.epoch)

    def _log_fold(self, trial: Any, rec: Any, headline: str) -> dict[str, float]:
        """Log a fold's protocols (``<protocol>/<m>``, headline ones also bare) to its child run."""
        m: dict[str, float] = {}
        for proto, row in rec.protocols.items():
            m.update({f"{proto}/{x}": row.get(x) for x in (*FOLD_METRICS, "epoch")})
        m.update({x: rec.protocols.get(headline, {}).get(x) for x in FOLD_METRICS})
        m["best_epoch"] = rec.protocols.get(headline, {}).get("epoch")
        m["epochs_run"] = rec.epoch
        self.log(self.index.child(trial, rec.fold), m)
        return m

    def _log_final(self, trial: Any, result: dict, recs: list) -> None:
        parent = self.index.parent(trial)
        headline = result.get("headline", DEFAULT_HEADLINE)
        pm = {m: result[m] for m in OBJECTIVES}
        pm.update({k: v for k, v in result.items() if k.count("/") == 1 and k.endswith(("_mean", "_std"))})
        self.log(parent, pm)
        self.client.set_tag(parent, "headline_protocol", headline)
        for r in recs:
            self._log_fold(trial, r, headline)
            child = self.index.child(trial, r.fold)
            self.client.set_tag(child, "stopped_early", str(bool(r.stopped)).lower())
            for tag in ("node_id", "device"):  # where the fold worker ran (search.trainable._place)
                if result.get(f"fold{r.fold}/{tag}"):
                    self.client.set_tag(child, tag, str(result[f"fold{r.fold}/{tag}"]))
        folds = [r.fold for r in recs]
        if folds and result.get(f"fold{min(folds)}/node_id"):  # rank 0 = the first fold: it wrote the artifacts
            self.client.set_tag(parent, "rank0_node_id", str(result[f"fold{min(folds)}/node_id"]))
        ckpt = result.get("checkpoint_path")
        if ckpt:
            try:
                upload_checkpoint(self.client, self.storage, ckpt, parent,
                                  {k: self.index.child(trial, k) for k in folds})
            except Exception as e:  # artifacts are best effort; the metrics are already recorded
                self.client.set_tag(parent, "artifact_error", mask_uri(str(e))[:ERROR_TAG_MAX])
        self.final_seen.add(trial.trial_id)

    def _end(self, trial: Any, status: str, tags: dict[str, str]) -> None:
        """End every run of ``trial`` with ``status`` and ``tags``: the runs this process touched, and any run of
        the trial still RUNNING that it did not (a fold run an earlier process of a resumed search opened and this
        one never reported to), so that no run of an ended trial is left RUNNING.

        The parent run is ended LAST: an ended parent with a ``trial_status`` is what marks a trial recorded
        (:func:`search.records.replay.replay` skips it), so a server that dies in the middle of these writes leaves
        a parent still RUNNING, and the resume records the trial again (its ended fold runs with it)."""
        parent = self.index.parent(trial)
        known = self.index.trial_runs(trial.trial_id)
        stale = [r.info.run_id for r in self.index.search(
            f"tags.{TRIAL_TAG} = '{trial.trial_id}' and attributes.status = 'RUNNING'", 100)]
        runs = [r for r in known if r != parent] + [r for r in stale if r not in known and r != parent] + [parent]
        for run_id in runs:
            for k, v in tags.items():
                self.client.set_tag(run_id, k, mask_uri(v))  # an error text may quote a URI with credentials
            self.client.set_terminated(run_id, status=status)
        self.index.forget(trial.trial_id)

    def complete(self, trial: TrialInfo, cut: bool = False) -> None:
        """A trial ended without error: ``completed``, or ``stopped`` by the scheduler (no final report; the last
        epoch's numbers, the same objective, are the record), or with ``cut=True`` (no final report) ``cut``: ended
        by the search's time budget, not judged by the scheduler."""
        tid = trial.trial_id
        stopped = tid not in self.final_seen
        if stopped:
            from search.trainable import fold_records

            last = self.last.get(tid, {})
            headline = last.get("headline", DEFAULT_HEADLINE)
            for r in fold_records(last):
                self._log_fold(trial, r, headline)
            if last:
                self.log(self.index.parent(trial), {m: last.get(m) for m in OBJECTIVES})
            if last.get("oof_shards"):  # every epoch it ran, assembled once from its per-epoch shards
                try:
                    upload_shards(self.client, last["oof_shards"], self.index.parent(trial), last.get("epoch"))
                except Exception as e:  # artifacts are best effort; the metrics are already recorded
                    self.client.set_tag(self.index.parent(trial), "artifact_error",
                                        mask_uri(str(e))[:ERROR_TAG_MAX])
        status = "completed" if not stopped else "cut" if cut else "stopped"
        self._end(trial, "FINISHED", {"stopped_early": str(stopped).lower(), "trial_status": status})

    def error(self, trial: TrialInfo) -> None:
        """A trial failed: its runs end FAILED with the error file's text (its end) in the tag ``error``."""
        text = ""
        try:
            if trial.error_file and os.path.exists(trial.error_file):
                text = Path(trial.error_file).read_text()
        except Exception:
            pass
        text = text or "trial failed (no error file)"
        self._end(trial, "FAILED", {"error": text[-ERROR_TAG_MAX:], "trial_status": "error",
                                    "num_failures": str(trial.num_failures)})

    def recover(self, trial: TrialInfo) -> None:
        """A failed trial is retried: the parent's tag ``retries``."""
        self.client.set_tag(self.index.parent(trial), "retries", str(trial.num_failures))

    def _replace_if_restarted(self, trial: Any, step: int) -> None:
        """On a trial's first result in this process: if its parent run already holds ``epoch/score`` at a step
        >= ``step`` (the trial started over), delete the previous attempt's runs and open fresh ones (tags such
        as ``retries`` carried over, params logged again), so that no metric step is recorded twice."""
        tid = trial.trial_id
        if tid in self._fresh_checked:
            return
        self._fresh_checked.add(tid)
        old = self.index.parent(trial)
        hist = self.client.get_metric_history(old, "epoch/score")
        if not hist or max(m.step for m in hist) < step:
            return  # a fresh trial, or one continuing from a checkpoint past its recorded epochs
        keep = {k: v for k, v in self.client.get_run(old).data.tags.items() if not k.startswith("mlflow.")
                or k == "mlflow.runName"}
        folds = self.index.search(f"tags.{TRIAL_TAG} = '{tid}' and tags.{ROLE_TAG} = 'fold'", 100)
        for run_id in [old] + [r.info.run_id for r in folds]:
            self.index.delete(run_id)
        self.index.forget(tid)
        new = self.index.parent(trial)
        for k, v in keep.items():
            if k not in (TRIAL_TAG, ROLE_TAG):
                self.client.set_tag(new, k, v)
        self.start(trial)


__all__ = ["ERROR_TAG_MAX", "TrialInfo", "TrialRecorder"]
