"""Synthetic release (docs/ARCHITECTURE.md 2.4): layout, composition vs the real fold, determinism, atomicity, CLI."""

import hashlib
import json
import threading
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blemore_core.data import (
    ENCODERS,
    PROFILES,
    aggregate,
    ensure_demo_release,
    generate_release,
    load_release,
)
from blemore_core.data import synth as synth_mod
from blemore_core.labels import parse_filename, soft_labels
from search.cli import main as cli_main

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "blemore_fold_filenames.txt"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "tiny"
    assert cli_main(["synth", "--profile", "tiny", "--out", str(out), "--seed", "0", "--quiet"]) == 0
    return out


def _tree_digest(root: Path, sub: str = "") -> dict[str, str]:
    base = root / sub
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file() and ".blemore_cache" not in p.parts}


# ------------------------------------------------------------------------------------------ layout / loading
def test_tiny_layout_and_load_matches_metadata(tiny, tmp_path):
    meta = pd.read_csv(tiny / "train_metadata.csv")
    assert list(meta.columns) == ["filename", "video_id", "gender", "mix", "emotion_1", "version", "intensity_level",
                                  "situation", "emotion_2", "emotion_1_salience", "emotion_2_salience", "fold"]
    for spec in ENCODERS.values():
        folder = tiny / "pre_extracted_train_data" / f"{spec.folder}_train"
        assert len(list(folder.iterdir())) == len(meta), spec.folder
        assert (tiny / "pre_extracted_test_data" / f"{spec.folder}_test").is_dir()
    data = load_release(tiny, list(ENCODERS), cache_dir=tmp_path / "cache", progress=False)
    assert data.filenames == meta["filename"].tolist()
    np.testing.assert_array_equal(data.folds, meta["fold"].to_numpy())
    np.testing.assert_array_equal(data.actors, [int(v[1:]) for v in meta["video_id"]])
    np.testing.assert_array_equal(data.labels, soft_labels(meta["filename"]))
    manifest = json.loads((tiny / "manifest.json").read_text())
    for key, seq in data.sequences.items():
        assert seq.dim == manifest["encoders"][key]["dim"]
        assert seq.offsets.shape == (len(meta) + 1,) and seq.frames.shape == (seq.offsets[-1], seq.dim)
        assert seq.frames.dtype == np.float32 and (np.diff(seq.offsets) >= 1).all()
        agg = data.aggregated_features(key)
        assert agg.shape == (len(meta), 7 * seq.dim)
    # one clip read back byte-exactly from its .npy
    name = data.filenames[7]
    raw = np.load(tiny / "pre_extracted_train_data" / "ImageBind_train" / f"{name}.npy")
    np.testing.assert_array_equal(data.sequences["imagebind"].clip(7), raw)


def test_tiny_test_split(tiny, tmp_path):
    tm = pd.read_csv(tiny / "test_metadata.csv")
    assert list(tm.columns) == ["filename"]
    assert tm["filename"].tolist() == [f"test_{i:04d}" for i in range(1, len(tm) + 1)]
    data = load_release(tiny, ["wavlm", "openface"], split="test", cache_dir=tmp_path / "c", progress=False)
    assert len(data) == len(tm) and (data.folds == -1).all() and (data.actors == -1).all()
    assert np.isfinite(data.labels).all()
    np.testing.assert_allclose(data.labels.sum(1), 1.0, atol=1e-6)
    labels = pd.read_csv(tiny / "test_labels.csv")
    assert labels["filename"].tolist() == tm["filename"].tolist()
    # test names are shuffled: the label sequence is not sorted by label kind
    assert labels["mix"].diff().abs().sum() > 5


def test_openface_csv_columns(tiny):
    f = next((tiny / "pre_extracted_train_data" / "OpenFace_3_train").iterdir())
    df = pd.read_csv(f)
    assert list(df.columns) == list(synth_mod.OPENFACE_COLUMNS)
    assert df["emotion_index"].between(0, 7).all() and (df["emotion_index"] % 1 == 0).all()


def test_manifest(tiny):
    m = json.loads((tiny / "manifest.json").read_text())
    assert m["profile"] == "tiny" and m["seed"] == 0
    info = m["informativeness"]
    assert set(info) == set(ENCODERS)
    ranked = sorted(info, key=info.get)
    assert set(ranked[:2]) == {"videoswin", "clip"} and info["videoswin"] < 0.1
    assert len(set(info.values())) == len(info)          # varied, so a gate can rank them
    assert m["counts"]["train_clips"] == 522 and m["counts"]["test_clips"] == 72
    text = (tiny / "manifest.json").read_text()
    assert text == json.dumps(m, sort_keys=True, indent=2) + "\n"


# -------------------------------------------------------------------------------------------- composition
def _actor_summary(names):
    by = defaultdict(list)
    for n in names:
        c = parse_filename(n)
        by[c.actor].append(c)
    out = {}
    for a, cs in by.items():
        base = [c for c in cs if c.version == 1]
        out[a] = {
            "n": len(cs),
            "singles": Counter((c.emotions[0], c.intensity) for c in base if c.kind == "single"),
            "neutral": Counter(c.situation for c in base if c.kind == "neutral"),
            "blends": Counter((c.emotions, c.saliences) for c in base if c.kind == "blend"),
            "retakes": [c for c in cs if c.version > 1],
            "names": {c.filename for c in cs},
        }
    return out


def _kind(s):
    if len(s["singles"]) != 20 or len(s["neutral"]) != 4:
        return "other"
    if len(s["blends"]) == 30:
        return "full"
    if not s["blends"]:
        return "partial"
    if len(s["blends"]) == 15 and len(s["retakes"]) == 25:
        return "blend_partial"    # the real A412: 5 pairs x 3 ratios, 25 retakes
    return "other"


def _check_actor(s):
    if _kind(s) == "full":
        # every single emotion x intensity, neutral situation, pair x ratio exactly once at ver1
        assert set(s["singles"].values()) == {1} and set(s["neutral"].values()) == {1}
        assert set(s["blends"].values()) == {1}
        assert {e for e, _ in s["singles"]} == {"ang", "disg", "fea", "hap", "sad"}
        assert {r for _, r in s["blends"]} == {(30, 70), (50, 50), (70, 30)}
    for r in s["retakes"]:   # ver v exists only when ver v-1 does
        prev = r.filename.rsplit("_ver", 1)[0] + f"_ver{r.version - 1}"
        assert prev in s["names"] and r.version <= 4


def test_real_fold_reference_shape():
    """The fixture itself: 8 full actors, one with 5 blend pairs and 25 retakes (64), one partial (26)."""
    real = _actor_summary(FIXTURE.read_text().split())
    kinds = Counter(_kind(s) for s in real.values())
    assert kinds == {"full": 8, "blend_partial": 1, "partial": 1}
    assert sorted(s["n"] for s in real.values()) == [26] + [54] * 8 + [64]
    for s in real.values():
        _check_actor(s)


@pytest.mark.parametrize("profile", ["tiny", "demo", "full"])
def test_composition_mirrors_real_fold(profile):
    real = _actor_summary(FIXTURE.read_text().split())
    ref = {k: next(s for s in real.values() if _kind(s) == k) for k in ("full", "partial", "blend_partial")}
    train, test = synth_mod.compose(PROFILES[profile], np.random.default_rng([0, 0]))
    syn = _actor_summary(train["filename"])
    kinds = Counter(_kind(s) for s in syn.values())
    assert kinds["other"] == 0 and kinds["partial"] >= 1 and kinds["blend_partial"] >= 1 and kinds["full"] >= 8
    for s in syn.values():
        _check_actor(s)
        r = ref[_kind(s)]
        # identical counts per label type at ver1
        assert s["singles"] == r["singles"] and s["neutral"] == r["neutral"] and s["blends"] == r["blends"]
    assert sum(len(s["retakes"]) for s in syn.values()) > 0
    assert max(r.version for s in syn.values() for r in s["retakes"]) >= 3
    # actor-disjoint folds 0..4
    assert train.groupby("actor")["fold"].nunique().max() == 1
    assert sorted(train["fold"].unique()) == [0, 1, 2, 3, 4]
    if profile == "tiny":
        assert sorted(s["n"] for s in syn.values()) == sorted(s["n"] for s in real.values())  # 26, 8x54, 64
        assert (train.groupby("fold")["actor"].nunique() == 2).all()
    else:
        assert len(train) == 2456 and train["actor"].nunique() == 43
        assert len(test) == 594 and test["actor"].nunique() == 15
        assert test["filename"].tolist() == [f"test_{i:04d}" for i in range(1, 595)]
        assert sorted(train.groupby("fold")["actor"].nunique()) == [8, 8, 9, 9, 9]
    assert not set(train["actor"]) & set(test["actor"])
    # hidden test clips are valid labelled names
    for c in test["clip"]:
        assert parse_filename(c).has_label


# ------------------------------------------------------------------------------------ determinism / atomicity
def test_same_seed_same_bytes_and_encoder_subset(tiny, tmp_path):
    sub = generate_release(tmp_path / "sub", "tiny", seed=0, encoders=["openface", "hicmae"], progress=False)
    a, b = _tree_digest(tiny), _tree_digest(sub)
    for rel, h in b.items():
        if rel == "manifest.json":
            continue
        assert a[rel] == h, rel
    assert any("HiCMAE_test" in r for r in b) and not any("ImageBind" in r for r in b)
    other = generate_release(tmp_path / "s1", "tiny", seed=1, encoders=["hicmae"], progress=False)
    c = _tree_digest(other)
    assert c["train_metadata.csv"] != a["train_metadata.csv"]


def test_existing_output_is_refused(tiny, tmp_path):
    with pytest.raises(FileExistsError, match="already exists"):
        generate_release(tiny, "tiny", progress=False)
    # the CLI's output rule (README "Errors"): a folder that is not a complete release is refused, nothing touched
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert cli_main(["synth", "--profile", "tiny", "--out", str(other), "--quiet"]) == 2
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_bad_profile_and_encoder():
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        generate_release("/nonexistent/x", "huge")
    with pytest.raises(ValueError, match="unknown encoder 'foo'"):
        generate_release("/nonexistent/x", "tiny", encoders=["foo"])


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    real = synth_mod._write_encoder
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth_mod, "_write_encoder", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_release(tmp_path / "rel", "tiny", encoders=["imagebind", "wavlm"], progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ensure_demo_release_concurrent_callers_generate_once(tmp_path, monkeypatch):
    calls = []
    real = synth_mod.generate_release

    def small(out, profile, seed=0, **kw):      # the demo profile is slow; the locking logic is the same
        calls.append(out)
        return real(out, "tiny", seed, encoders=["imagebind"], progress=False, overwrite=kw.get("overwrite", False))

    monkeypatch.setattr(synth_mod, "generate_release", small)
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_demo_release(tmp_path))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1
    assert set(results) == {tmp_path / "synthetic" / "demo-seed0"}
    assert (results[0] / "manifest.json").is_file()
    assert ensure_demo_release(tmp_path) == results[0] and len(calls) == 1


@pytest.mark.slow
def test_demo_profile_end_to_end(tmp_path):
    root = ensure_demo_release(tmp_path)
    m = json.loads((root / "manifest.json").read_text())
    assert m["profile"] == "demo" and m["counts"]["train_clips"] == 2456 and m["counts"]["test_clips"] == 594
    data = load_release(root, list(ENCODERS), progress=False)
    meta = pd.read_csv(root / "train_metadata.csv")
    assert data.filenames == meta["filename"].tolist() and len(data) == 2456
    np.testing.assert_array_equal(data.folds, meta["fold"].to_numpy())
    np.testing.assert_array_equal(data.labels, soft_labels(meta["filename"]))
    for key, seq in data.sequences.items():
        assert 11 <= seq.dim <= 64, key
        lengths = np.diff(seq.offsets)
        assert lengths.min() >= 1 and lengths.max() <= 40, key
    test = load_release(root, ["imagebind", "wavlm"], split="test", progress=False)
    assert len(test) == 594 and np.isfinite(test.labels).all()
    agg = aggregate(test.sequences["wavlm"].frames, test.sequences["wavlm"].offsets)
    assert agg.shape == (594, 7 * test.sequences["wavlm"].dim)
