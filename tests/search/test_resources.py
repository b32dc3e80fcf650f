"""search.resources: device decision, the planner's arithmetic (hand-worked), option rejections, per-node checks;
the Ray part runs a local Ray started with LOGICAL GPUs on this CPU machine (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.resources import (
    ResourceError,
    check_device_options,
    fold_device,
    folds_per_gpu,
    plan_resources,
    probe_node,
)


class _Dev:
    def __init__(self, s: str):
        self.type, self._s = s.split(":")[0], s

    def __str__(self) -> str:
        return self._s


def test_device_decision():
    called = []

    def ray_dev():
        called.append(1)
        return _Dev("cuda:1")

    assert fold_device(0.0, ray_dev) == "cpu" and not called  # a GPU node, no GPU reserved -> CPU, no probe
    assert fold_device(0.2, ray_dev, lambda: True) == "cuda:1" and called  # the device Ray Train assigned, as is
    with pytest.raises(RuntimeError, match=r"--gpus-per-fold 0.2: .*no CUDA device .*= cpu"):
        fold_device(0.2, _Dev("cpu"), lambda: True)
    with pytest.raises(RuntimeError, match=r"no CUDA device .*= cuda:0"):  # Ray assigned a GPU torch cannot use
        fold_device(0.2, _Dev("cuda:0"), lambda: False)


@pytest.mark.parametrize("device,gpus,msg", [
    ("cpu", 0.2, r"train.device: 'cpu' contradicts --gpus-per-fold 0.2"),
    ("cuda", 0.0, r"train.device: 'cuda' needs --gpus-per-fold > 0"),
    ("auto", 1.5, r"whole number of GPUs, got 1.5"),
    ("auto", -0.1, r"must be >= 0"),
])
def test_device_option_rejections(device, gpus, msg):
    with pytest.raises(ResourceError, match=msg):
        check_device_options(device, gpus)


@pytest.mark.parametrize("device,gpus", [("cpu", 0.0), ("auto", 0.0), ("auto", 0.2), ("cuda", 0.1), ("auto", 2.0)])
def test_device_options_accepted(device, gpus):
    check_device_options(device, gpus)


def test_planner_arithmetic_hand_worked():
    # folds per GPU: floor(1/share); 0.3 -> 3 (0.9 of a GPU), 0.35 -> 2 (never 3: 1.05 GPU), 0.2 -> 5, 0.1 -> 10, whole GPUs -> 1
    assert [folds_per_gpu(g) for g in (0, 0.3, 0.35, 0.25, 0.2, 0.1, 1, 2)] == [0, 3, 2, 4, 5, 10, 1, 1]
    # 4 GPUs, 0.2 GPU per fold: 4 x 5 = 20 fold slots / 5 folds = 4 trials; CPU 32 // (5 x 1 + 0.01) = 6 -> gpu-bound
    p = plan_resources({"CPU": 32, "GPU": 4}, 5, 8, 1.0, 0.2, local=True)
    assert (p.trials_at_once, p.folds_per_gpu, p.bound) == (4, 5, "gpu")
    # 0.1 GPU per fold: 40 slots / 5 = 8 trials; CPU 32 // 5.01 = 6 -> cpu-bound
    p = plan_resources({"CPU": 32, "GPU": 4}, 5, 8, 1.0, 0.1, local=True)
    assert (p.trials_at_once, p.folds_per_gpu, p.bound) == (6, 10, "cpu")
    # 0.3 per fold: 3 folds per GPU, 12 slots -> 2 trials (a fold's share never spans two GPUs)
    assert plan_resources({"CPU": 64, "GPU": 4}, 5, 8, 1.0, 0.3, local=True).trials_at_once == 2
    # the request fits: kept
    p = plan_resources({"CPU": 32, "GPU": 4}, 5, 2, 1.0, 0.2, local=True)
    assert (p.trials_at_once, p.bound) == (2, "requested")
    assert "2 trial(s) at once" in p.describe() and "5 fold worker(s) per GPU" in p.describe()
    # CPU only, default share on a local Ray: (4 - 2 x 0.01) / (5 x 2) = 0.398 -> 0.39
    p = plan_resources({"CPU": 4}, 5, 2, None, 0.0, local=True)
    assert p.cpus_per_fold == pytest.approx(0.39) and p.trials_at_once == 2 and p.folds_per_gpu == 0


def test_planner_rejects_what_does_not_fit():
    with pytest.raises(ResourceError, match=r"5 folds x 0.5 GPU .*has 8 CPU, 2 GPU"):
        plan_resources({"CPU": 8, "GPU": 2}, 5, 1, 1.0, 0.5, local=True)  # 2 folds per GPU x 2 GPUs = 4 < 5
    with pytest.raises(ResourceError, match="0 GPU"):
        plan_resources({"CPU": 8}, 5, 1, 1.0, 0.2, local=True)
    # a cluster may grow (autoscaler): the request is kept
    assert plan_resources({"CPU": 8}, 5, 3, 1.0, 0.2, local=False).trials_at_once == 3


def test_probe_node_reports_missing_data_and_unshared_storage(tmp_path):
    from blemore_core.data.release import TRAIN_METADATA

    data = tmp_path / "rel"
    data.mkdir()
    out = probe_node(str(tmp_path / "nope"), None, None)
    assert "no such directory" in out["data_error"] and out["storage_error"] is None
    out = probe_node(str(data), None, None)
    assert TRAIN_METADATA in out["data_error"]
    (data / TRAIN_METADATA).write_text("filename\n")
    marker = tmp_path / "store" / ".marker"
    out = probe_node(str(data), str(marker), "tok")  # the node does not see the driver's marker: not shared
    assert out["data_error"] is None and "not shared" in out["storage_error"]
    marker.parent.mkdir()
    marker.write_text("tok")
    assert probe_node(str(data), str(marker), "tok") == {**out, "storage_error": None}


# ------------------------------------------------------------------------------------------ Ray, logical GPUs


@pytest.fixture(scope="module")
def ray_gpus():
    import ray

    from search.trainable import set_process_env

    set_process_env()
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _placed(gpus: float, tmp: Path) -> dict:
    """Run search.trainable._place in a one-worker Ray Train run (the trial's DataParallelTrainer) reserving ``gpus`` (logical) GPUs; the worker writes
    what it decided to a JSON file (same machine)."""
    import json

    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from blemore_core.config import Config

    out = tmp / f"placed_{gpus}.json"

    def body(cfg_in: dict) -> None:
        import json as _json

        from search import trainable

        try:
            cfg = trainable._place(Config.from_dict(cfg_in["cfg"]), cfg_in["gpus"])
            res = {"device": cfg.train.device, "node": trainable._NODE.get("device"), "error": ""}
        except RuntimeError as e:
            res = {"device": "", "node": "", "error": str(e)}
        Path(cfg_in["out"]).write_text(_json.dumps(res))

    DataParallelTrainer(
        body, train_loop_config={"cfg": Config().to_dict(), "gpus": gpus, "out": str(out)},
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=gpus > 0,
                                               resources_per_worker={"CPU": 0.1, **({"GPU": gpus} if gpus else {})}),
        run_config=ray.train.RunConfig(storage_path=str(tmp / "st")),
    ).fit()
    return json.loads(out.read_text())


@pytest.mark.slow
def test_logical_gpus_device_decision_and_plan(ray_gpus, tmp_path):
    import ray

    # the planner reads the logical GPUs: 2 GPUs x 5 folds per GPU / 5 folds = 2 trials, CPU 2 // (5 x 0.1 + 0.01) = 3
    p = plan_resources(ray.cluster_resources(), 5, 4, 0.1, 0.2, local=True)
    assert (p.total_gpus, p.trials_at_once, p.bound, p.folds_per_gpu) == (2.0, 2, "gpu", 5)
    # no GPU reserved on a node that has GPUs -> the fold runs on the CPU
    m = _placed(0.0, tmp_path)
    assert m["device"] == "cpu" and m["node"] == "cpu" and not m["error"], m
    # a GPU share reserved (Ray assigns a logical GPU, Ray Train's get_device() reads it), but this torch has no
    # CUDA: a clear error in the fold worker itself, never a silent CPU run
    m = _placed(0.5, tmp_path)
    assert m["error"].startswith("--gpus-per-fold 0.5") and "no CUDA device" in m["error"], m
    assert "cuda:0" in m["error"], m


def test_search_rejects_cpu_device_with_gpus_before_ray(tmp_path):
    from search.runner import SearchOptions, run_search

    space = tmp_path / "s.yaml"
    space.write_text(
        "name: s\npreset: rank_aware\nfixed:\n  train.device: cpu\n"
        "params:\n  train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-3}\n"
        "metric: score\nscheduler: none\nbudget: {num_samples: 1, max_concurrent: 1, max_epochs: 1}\n")
    with pytest.raises(ValueError, match="train.device: 'cpu' contradicts --gpus-per-fold 0.2"):
        run_search(space, SearchOptions(gpus_per_fold=0.2, storage=str(tmp_path / "st")))
    assert not Path(tmp_path / "st").exists()


def test_build_feature_cache_builds_each_encoder_set_once(tmp_path, tiny_release):
    """Run on a node before the first trial: the node's cache holds every encoder set's train (and test) features
    afterwards; a second call only validates it (nothing rebuilt)."""
    import shutil

    from search.resources import build_feature_cache

    rel = tmp_path / "rel"
    shutil.copytree(tiny_release, rel, ignore=shutil.ignore_patterns(".blemore_cache"))
    cache = rel / ".blemore_cache"
    assert not cache.exists()
    out = build_feature_cache(str(rel), [("imagebind",), ("imagebind", "wavlm")])
    assert out["host"] and out["seconds"] >= 0
    files = sorted(p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    assert any("imagebind" in f for f in files) and any("wavlm" in f for f in files), files
    assert any("test" in f for f in files), files  # the domain term's target split too
    stamp = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    build_feature_cache(str(rel), [("imagebind", "wavlm")])
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == stamp


def test_local_plan_never_starves_fold_workers():
    """spaces/full.yaml asks for 16 trials at once; on a 2-CPU local Ray that would be 80 fold processes of
    0.02 CPU. The plan runs fewer trials so that each fold gets at least MIN_LOCAL_FOLD_CPUS, and says why."""
    from search.resources import MIN_LOCAL_FOLD_CPUS

    p = plan_resources({"CPU": 2}, 5, 16, None, 0.0, local=True)
    assert (p.trials_at_once, p.cpus_per_fold, p.bound) == (2, 0.19, "cpu")
    assert p.cpus_per_fold >= MIN_LOCAL_FOLD_CPUS
    assert plan_resources({"CPU": 2}, 5, 2, None, 0.0, local=True).cpus_per_fold == 0.19  # as before
    assert plan_resources({"CPU": 16}, 5, 16, None, 0.0, local=True).trials_at_once == 16 // 1  # 16 x 5 x 0.19 fits
    assert plan_resources({"CPU": 2}, 5, 16, 0.02, 0.0, local=True).trials_at_once == 16  # explicit: as asked
    assert plan_resources({"CPU": 2}, 5, 16, None, 0.0, local=False).cpus_per_fold == 1.0  # cluster default


def test_packed_plan_speaks_per_trial_and_never_starves_its_worker():
    """Fold layout packed: one worker per trial trains all five folds, so a trial's worker gets at least five folds'
    worth of CPU (5 x MIN_LOCAL_FOLD_CPUS) locally; a GPU share is per trial (0.1: ten trials per GPU)."""
    from search.resources import MIN_LOCAL_FOLD_CPUS

    p = plan_resources({"CPU": 2}, 1, 16, None, 0.0, local=True, folds_per_worker=5)
    assert (p.layout, p.n_workers, p.trials_at_once, p.bound) == ("packed", 1, 2, "cpu")
    assert p.cpus_per_worker == 0.99 and p.cpus_per_worker >= 5 * MIN_LOCAL_FOLD_CPUS
    line = p.describe()
    assert "2 trial(s) at once" in line and "fold layout packed" in line and "5 folds with 0.99 CPU" in line
    assert plan_resources({"CPU": 1}, 1, 4, None, 0.0, local=True, folds_per_worker=5).trials_at_once == 1
    assert plan_resources({"CPU": 2}, 1, 1, None, 0.0, local=True, folds_per_worker=5).cpus_per_worker == 1.99
    assert plan_resources({"CPU": 64}, 1, 4, None, 0.0, local=False, folds_per_worker=5).cpus_per_worker == 5.0
    g = plan_resources({"CPU": 32, "GPU": 1}, 1, 16, 1.0, 0.1, local=True, folds_per_worker=5)
    assert (g.trials_at_once, g.workers_per_gpu, g.bound) == (10, 10, "gpu")
    assert "10 trial(s) per GPU" in g.describe() and "0.1 GPU" in g.describe()
    with pytest.raises(ValueError, match="lower --cpus-per-trial / --gpus-per-trial"):
        plan_resources({"CPU": 2, "GPU": 1}, 1, 1, 4.0, 0.0, local=True, folds_per_worker=5)


def test_per_fold_flags_are_refused_with_the_packed_layout(tmp_path):
    """A per-fold resource flag with fold layout packed (or a per-trial one with workers) names both flags."""
    from search.runner import SearchOptions, worker_resources
    from search.space import load_space

    space = load_space(Path(__file__).resolve().parents[2] / "spaces" / "rank_aware.yaml")
    with pytest.raises(ValueError, match="--gpus-per-fold: applies to --fold-layout workers.*--gpus-per-trial"):
        worker_resources(space, SearchOptions(gpus_per_fold=0.2))
    with pytest.raises(ValueError, match="--cpus-per-trial: applies to --fold-layout packed.*--cpus-per-fold"):
        worker_resources(space, SearchOptions(fold_layout="workers", cpus_per_trial=1.0))
    assert worker_resources(space, SearchOptions(gpus_per_trial=0.1)) == (None, 0.1)
    assert worker_resources(space, SearchOptions(fold_layout="workers", cpus_per_fold=0.5)) == (0.5, 0.0)


def test_torch_threads_follow_the_planned_cpu_share():
    """floor of the share, at least 1; a packed plan's 1.99 CPU (0.01 is the trial actor's) is two threads."""
    from search.trainable import torch_threads

    assert [torch_threads(c) for c in (0.19, 0.99, 1.0, 1.5, 1.99, 4.0)] == [1, 1, 1, 1, 2, 4]
