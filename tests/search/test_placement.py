"""ReleaseEndedTrials against a real local Ray (slow): the groups of ended trials are removed, others never."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

pytestmark = pytest.mark.slow


@dataclass
class _Trial:
    trial_id: str


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def _held(ray) -> float:
    return ray.cluster_resources()["CPU"] - ray.available_resources().get("CPU", 0.0)


def _held_settled(ray, expected: float, timeout_s: float = 10.0) -> float:
    """The CPUs held once Ray's resource view has caught up (``available_resources`` is reported by the raylet
    with a lag: right after ``ready()`` or ``remove_placement_group`` it can still show the old figure)."""
    import time

    deadline = time.time() + timeout_s
    held = _held(ray)
    while abs(held - expected) > 1e-6 and time.time() < deadline:
        time.sleep(0.1)
        held = _held(ray)
    return held


def test_groups_of_ended_trials_released_after_grace_others_kept(local_ray, monkeypatch):
    from types import SimpleNamespace

    from ray.util import placement_group, placement_group_table

    import search.placement
    from search.placement import PG_RESULT_KEY, ReleaseEndedTrials

    clock = [1000.0]  # the callback's clock, moved by hand: a busy machine cannot make the grace period pass early
    monkeypatch.setattr(search.placement, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    ray = local_ray
    groups = [placement_group([{"CPU": 0.5}]) for _ in range(3)]
    ray.get([g.ready() for g in groups])
    assert _held_settled(ray, 1.5) == pytest.approx(1.5)
    cb = ReleaseEndedTrials(grace_s=0.5)
    stopped, retried, running = _Trial("stopped"), _Trial("retried"), _Trial("running")
    cb.on_trial_result(1, [], stopped, {PG_RESULT_KEY: groups[0].id.hex(), "score": 0.1})
    cb.on_trial_result(1, [], retried, {PG_RESULT_KEY: groups[1].id.hex()})
    cb.on_trial_result(1, [], running, {PG_RESULT_KEY: groups[2].id.hex()})
    cb.on_trial_result(2, [], running, {"score": 0.2})  # a result without the key changes nothing
    cb.on_trial_complete(2, [], stopped)
    cb.on_trial_recover(2, [], retried)  # failed; Tune retries it: the failed attempt's group goes
    cb.on_step_begin(3, [])  # within the grace period: Ray Train's own clean-up goes first
    assert cb.released == [] and _held(ray) == pytest.approx(1.5)  # settled above; nothing removed since
    clock[0] += 0.6
    cb.on_step_begin(4, [])
    assert sorted(cb.released) == sorted([groups[0].id.hex(), groups[1].id.hex()])
    assert placement_group_table(groups[2])["state"] == "CREATED"  # its trial is still running
    assert _held_settled(ray, 0.5) == pytest.approx(0.5)
    cb.on_experiment_end([stopped, retried, running])  # the end: every remaining group goes, at once
    assert groups[2].id.hex() in cb.released and len(cb.released) == 3
    cb.on_experiment_end([stopped, retried, running])  # already removed: nothing to do twice
    assert len(cb.released) == 3


def test_pickled_state_is_configuration_only():
    import pickle

    from search.placement import ReleaseEndedTrials

    cb = ReleaseEndedTrials(grace_s=3.0)
    cb.on_trial_result(1, [], _Trial("t"), {"placement_group": "ab" * 14})
    again = pickle.loads(pickle.dumps(cb))
    assert again.grace_s == 3.0 and again._groups == {} and again.released == []


def test_release_all_live_frees_running_trials_groups_when_the_search_dies(local_ray):
    """A search ended by an exception (Tune calls no end hook): the runner's release_all_live() removes the groups
    every live callback recorded, running trials' included."""
    from ray.util import placement_group, placement_group_table

    from search.placement import PG_RESULT_KEY, ReleaseEndedTrials, release_all_live

    ray = local_ray
    g = placement_group([{"CPU": 0.5}])
    ray.get(g.ready())
    cb = ReleaseEndedTrials(grace_s=60.0)
    cb.on_trial_result(1, [], _Trial("alive"), {PG_RESULT_KEY: g.id.hex()})
    release_all_live()
    assert cb.released == [g.id.hex()]
    assert placement_group_table(g)["state"] == "REMOVED"


@pytest.mark.parametrize("hook", ["on_trial_complete", "on_trial_error", "on_trial_recover"])
def test_every_end_of_an_attempt_schedules_its_groups(hook, monkeypatch):
    from search.placement import PG_RESULT_KEY, ReleaseEndedTrials

    cb = ReleaseEndedTrials(grace_s=0.0)
    gone = []
    monkeypatch.setattr(cb, "_release", gone.append)
    cb.on_trial_result(1, [], _Trial("a"), {PG_RESULT_KEY: "aa"})
    cb.on_trial_result(1, [], _Trial("b"), {PG_RESULT_KEY: "bb"})
    getattr(cb, hook)(2, [], _Trial("a"))
    cb.on_step_begin(3, [])
    assert gone == ["aa"]  # b has not ended


def _state(ray, pg_hex: str) -> str:
    return ray.util.placement_group_table().get(pg_hex, {}).get("state", "REMOVED")


def test_job_groups_release_what_the_job_and_its_dead_actors_created(local_ray):
    """A group created inside an actor that then died (a Train controller killed while creating its fold workers'
    group) stays held while the job lives; release_job_groups finds it by the job id its id ends with and removes
    it with the driver's own groups; another job's id matches nothing."""
    import ray as _ray
    from ray.util import placement_group

    from search.placement import job_groups, release_job_groups

    ray = local_ray

    @_ray.remote(num_cpus=0)
    class Creator:
        def make(self) -> str:
            g = placement_group([{"CPU": 0.25}])
            _ray.get(g.ready())
            return g.id.hex()

    a = Creator.remote()
    orphan = ray.get(a.make.remote())
    ray.kill(a)
    own = placement_group([{"CPU": 0.25}])
    ray.get(own.ready())
    job = ray.get_runtime_context().get_job_id()
    assert {orphan, own.id.hex()} <= set(job_groups(job))
    assert job_groups("ff" * (len(job) // 2)) == []
    assert _state(ray, orphan) != "REMOVED"  # Ray left it: its creator is dead, its job is not
    removed = release_job_groups(settle_s=0.0)
    assert {orphan, own.id.hex()} <= set(removed)
    assert _state(ray, orphan) == "REMOVED" and _state(ray, own.id.hex()) == "REMOVED"
    assert job_groups(job) == []


def test_resume_releases_the_groups_of_earlier_drivers_of_this_search_only(local_ray, tmp_path, monkeypatch, capsys):
    """release_earlier_drivers removes what a recorded earlier job of the same search on this cluster still holds,
    never a group of a job recorded for another cluster, and records the current job."""
    import json

    from ray.util import placement_group

    import search.placement
    from search.placement import DRIVERS_FILE, release_earlier_drivers
    from search.storage import resolve_storage

    ray = local_ray
    st = resolve_storage(str(tmp_path / "searches"))
    earlier = ray.get_runtime_context().get_job_id()  # this test's job plays the earlier driver
    left = placement_group([{"CPU": 0.25}])
    ray.get(left.ready())
    here = search.placement._cluster_key()
    (tmp_path / "searches" / "s").mkdir(parents=True)
    (tmp_path / "searches" / "s" / DRIVERS_FILE).write_text(json.dumps([{"cluster": "elsewhere", "job": earlier}]))
    monkeypatch.setattr(search.placement, "_job_hex", lambda: "0a000000")  # the resuming driver
    assert release_earlier_drivers(st, "s") == []  # recorded on another cluster: the same id is another job here
    assert _state(ray, left.id.hex()) == "CREATED"
    rows = json.loads((tmp_path / "searches" / "s" / DRIVERS_FILE).read_text())
    assert rows == [{"cluster": here, "job": "0a000000"}]
    rows.insert(0, {"cluster": here, "job": earlier})
    (tmp_path / "searches" / "s" / DRIVERS_FILE).write_text(json.dumps(rows))
    assert release_earlier_drivers(st, "s") == [left.id.hex()]
    assert _state(ray, left.id.hex()) == "REMOVED"
    assert "released 1 placement group(s) an earlier driver of search 's' left reserved" in capsys.readouterr().err
