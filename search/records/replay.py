"""Replay after an outage: after ``blemore resume``, every trial that ended while the tracking server was down (or
whose records were still queued when the driver died) is recorded exactly once, from Tune's stored results
(docs/ARCHITECTURE.md section 6)."""

from __future__ import annotations

import sys
from typing import Any

from search.compat import tune_results
from search.oof_shards import read_epoch_reports
from search.records.naming import ROLE_TAG, TRIAL_TAG
from search.records.recorder import TrialInfo, TrialRecorder


def replay(recorder: TrialRecorder, results: Any, cut: bool = False) -> int:
    """Record every trial of ``results`` (Tune's ResultGrid after ``fit``) that ended but whose parent run is missing
    or was never ended with a ``trial_status``: its params, learning curves (replayed from the epoch reports its
    last attempt stored next to its OOF shards, :func:`search.oof_shards.read_epoch_reports`; for a search stored
    before those, from Tune's ``result.json``; an earlier partial attempt's runs are replaced), final metrics and
    artifacts, then its status.
    The runs of attempts Tune does not know are deleted first (:func:`drop_forgotten`). Call it with the writer
    threads flushed and the server answering; returns how many trials were recorded now.

    ``cut``: the search ended by its time budget, so a trial the Tune callback never saw end (no final report) was
    cut by the budget: it is tagged ``trial_status=cut`` and the console says so (not a tracking-server outage)."""
    index = recorder.index
    parents = index.search(f"tags.{ROLE_TAG} = 'parent'", 50000)
    ended = {r.data.tags.get(TRIAL_TAG): r for r in parents
             if r.info.status != "RUNNING" and "trial_status" in r.data.tags}
    done = set(ended)
    end_leftovers(recorder, ended)
    drop_forgotten(recorder, parents, {str(m["trial_id"]) for res in results
                                       if (m := res.metrics or {}).get("trial_id")})
    n = 0
    for res in results:
        m = dict(res.metrics or {})
        tid = m.get("trial_id")
        if not tid or tid in done or getattr(res, "error", None) is not None:
            continue
        info = TrialInfo(str(tid), f"trial {tid}", dict(res.config or {}), None, 0)
        recorder.start(info)
        for r in read_epoch_reports(m.get("oof_shards"), m.get("epoch")) or tune_results(res):
            if not r.get("final") and r.get("trial_id", tid) == tid:
                recorder.result(info, r)
        if m.get("final"):
            recorder.result(info, m)
        else:  # stopped by the scheduler: its last epoch is the record (see TrialRecorder.complete)
            recorder.last[str(tid)] = m
        recorder.complete(info, cut=cut)
        n += 1
    if n and cut:
        print(f"MLflow: recorded {n} trial(s) cut by the time budget (trial_status=cut)", file=sys.stderr)
    elif n:
        print(f"MLflow: recorded {n} trial(s) that ended while the tracking server was not reachable",
              file=sys.stderr)
    return n


def end_leftovers(recorder: TrialRecorder, ended: dict[str, Any]) -> int:
    """End the runs still RUNNING of trials whose parent run is already ended and tagged (``ended``: trial id ->
    parent run), with the parent's status and ``trial_status``: what a store written before the parent was ended
    last (:meth:`TrialRecorder._end`) can hold after an outage. Returns how many runs were ended."""
    index, n = recorder.index, 0
    for r in index.search("attributes.status = 'RUNNING'", 10000):
        parent = ended.get(r.data.tags.get(TRIAL_TAG))
        if parent is None or r.info.run_id == parent.info.run_id:
            continue
        index.client.set_tag(r.info.run_id, "trial_status", parent.data.tags["trial_status"])
        index.client.set_terminated(r.info.run_id, status=parent.info.status)
        n += 1
    return n


def drop_forgotten(recorder: TrialRecorder, parents: list, known: set[str]) -> int:
    """Delete the runs of attempts the search will never finish: a parent never ended (no ``trial_status``) whose
    trial Tune does not know (it started after Tune's last saved state when the driver died, so the resumed
    search ran another trial in its place), with its fold runs; deleted runs stay restorable in MLflow.
    Returns how many trials were dropped."""
    index = recorder.index
    gone = {r.data.tags.get(TRIAL_TAG) for r in parents if "trial_status" not in r.data.tags
            and r.data.tags.get(TRIAL_TAG) not in known}
    gone.discard(None)
    for tid in sorted(gone):
        for r in index.search(f"tags.{TRIAL_TAG} = '{tid}'", 1000):
            index.delete(r.info.run_id, running=r.info.status == "RUNNING")
    if gone:
        print(f"MLflow: deleted the runs of {len(gone)} interrupted attempt(s) the resumed search does not "
              f"continue ({', '.join(sorted(gone))})", file=sys.stderr)
    return len(gone)


__all__ = ["replay", "end_leftovers", "drop_forgotten"]
