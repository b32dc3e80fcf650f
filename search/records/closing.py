"""Closing a search's runs: after the search (also on Ctrl-C or a crash) the runs of THIS search still RUNNING end
KILLED: runs this process created or reopened, or tagged with its name-lock token; a concurrent search's runs are
never touched (docs/ARCHITECTURE.md section 6)."""

from __future__ import annotations

from search.records.runs import OWNED, RunIndex
from search.records.store import OWNER_TAG, owner_token


def close_runs(index: RunIndex) -> int:
    """End as KILLED the RUNNING runs of ``index``'s experiment that this search owns; returns how many."""
    tok = owner_token(index.experiment)
    runs = {r.info.run_id: r for r in index.search("attributes.status = 'RUNNING'", 10000)}
    n = 0
    for run_id, run in runs.items():
        if run_id in OWNED or (tok and run.data.tags.get(OWNER_TAG) == tok):
            index.client.set_terminated(run_id, status="KILLED")
            OWNED.discard(run_id)
            n += 1
    index.parents.clear()
    index.children.clear()
    return n


__all__ = ["close_runs"]
