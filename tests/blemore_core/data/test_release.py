"""Release reader and feature cache: hand-made trees, the organisers' npz form, bad input (docs/ARCHITECTURE.md 2.1-2.3)."""

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blemore_core.data import aggregate, load_release
from blemore_core.data import cache as cache_mod
from blemore_core.data.specs import OPENFACE_COLUMNS
from blemore_core.labels import parse_filename, soft_labels

ACTORS = (11, 22, 33, 44, 55)
CLIPS = ("ang_int1", "neu_sit2", "mix_hap_sad_70_30", "fea_int4")


def _meta_row(name, fold):
    c = parse_filename(name)
    blend = c.kind == "blend"
    return {
        "filename": name, "video_id": f"A{c.actor}", "gender": "f", "mix": int(blend), "emotion_1": c.emotions[0],
        "version": c.version, "intensity_level": c.intensity if c.kind == "single" else np.nan,
        "situation": c.situation if c.kind == "neutral" else np.nan,
        "emotion_2": c.emotions[1] if blend else np.nan,
        "emotion_1_salience": c.saliences[0] if blend else np.nan,
        "emotion_2_salience": c.saliences[1] if blend else np.nan, "fold": fold,
    }


def make_tree(root: Path, d: int = 3, seed: int = 0, openface: bool = True) -> dict[str, np.ndarray]:
    """5 actors (one per fold) x 4 clips; ImageBind .npy (T, d) and OpenFace CSVs. Returns the arrays written."""
    rng = np.random.default_rng(seed)
    rows, arrays = [], {}
    folder = root / "pre_extracted_train_data" / "ImageBind_train"
    folder.mkdir(parents=True)
    of = root / "pre_extracted_train_data" / "OpenFace_3_train"
    if openface:
        of.mkdir()
    for f, a in enumerate(ACTORS):
        for c in CLIPS:
            name = f"A{a}_{c}_ver1"
            rows.append(_meta_row(name, f))
            x = rng.standard_normal((int(rng.integers(1, 9)), d)).astype(np.float32)
            np.save(folder / f"{name}.npy", x)
            arrays[name] = x
            if openface:
                t = 3
                df = pd.DataFrame(rng.uniform(0, 1, (t, len(OPENFACE_COLUMNS))), columns=list(OPENFACE_COLUMNS))
                df["emotion_index"] = [0, 3, 7]
                df.to_csv(of / f"{name}.csv", index=False)
    pd.DataFrame(rows).to_csv(root / "train_metadata.csv", index=False)
    return arrays


def _cache_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.glob("*")) if cache_dir.exists() else []


def _no_cache_left(cache_dir: Path) -> bool:
    return not any(n.endswith(".arrow") or ".tmp-" in n or ".raw-" in n for n in _cache_files(cache_dir))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "rel"
    arrays = make_tree(root)
    return root, arrays, tmp_path / "cache"


# -------------------------------------------------------------------------------------------------- reading
def test_hand_made_tree_loads_exactly(tree):
    root, arrays, cdir = tree
    data = load_release(root, ["imagebind", "openface"], cache_dir=cdir, progress=False)
    meta = pd.read_csv(root / "train_metadata.csv")
    assert data.filenames == meta["filename"].tolist()
    np.testing.assert_array_equal(data.folds, meta["fold"])
    np.testing.assert_array_equal(data.actors, np.repeat(ACTORS, len(CLIPS)))
    np.testing.assert_array_equal(data.labels, soft_labels(data.filenames))
    seq = data.sequences["imagebind"]
    assert seq.dim == 3 and seq.frames.dtype == np.float32 and not seq.frames.flags.writeable
    for i, n in enumerate(data.filenames):
        np.testing.assert_array_equal(seq.clip(i), arrays[n])
    of = data.sequences["openface"]
    assert of.dim == 11
    raw = pd.read_csv(root / "pre_extracted_train_data" / "OpenFace_3_train" / f"{data.filenames[0]}.csv")
    want = raw[["emotion_index", "gaze_yaw", "gaze_pitch", "AU01", "AU02", "AU04", "AU06", "AU09", "AU12", "AU25",
                "AU26"]].to_numpy(np.float64)
    want[:, 0] /= 7.0
    np.testing.assert_allclose(of.clip(0), want, atol=1e-6)
    agg = data.aggregated_features("imagebind")
    np.testing.assert_allclose(agg, aggregate(seq.frames, seq.offsets))
    assert data.aggregated_features("imagebind") is agg               # memoised


def test_default_cache_dir_and_reuse_without_rereading(tree, monkeypatch):
    root, arrays, _ = tree
    d1 = load_release(root, ["imagebind"], progress=False)
    files = _cache_files(root / ".blemore_cache")
    assert any(f.startswith("imagebind-train-") and f.endswith(".arrow") for f in files)

    def boom(*a, **k):
        raise AssertionError("rebuilt although nothing changed")

    monkeypatch.setattr(cache_mod, "build_cache", boom)
    monkeypatch.setattr(cache_mod, "read_clip", boom)
    d2 = load_release(root, ["imagebind"], progress=False)
    np.testing.assert_array_equal(d1.sequences["imagebind"].frames, d2.sequences["imagebind"].frames)


def test_changed_input_rebuilds_and_old_cache_is_removed(tree):
    root, arrays, cdir = tree
    load_release(root, ["imagebind"], cache_dir=cdir, progress=False)
    before = _cache_files(cdir)
    name = next(iter(arrays))
    new = np.full((4, 3), 7.0, dtype=np.float32)
    path = root / "pre_extracted_train_data" / "ImageBind_train" / f"{name}.npy"
    np.save(path, new)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    data = load_release(root, ["imagebind"], cache_dir=cdir, progress=False)
    np.testing.assert_array_equal(data.sequences["imagebind"].clip(data.filenames.index(name)), new)
    after = [f for f in _cache_files(cdir) if f.endswith(".arrow")]
    assert len(after) == 1 and after[0] not in before


def test_corrupt_cache_file_is_not_trusted(tree):
    root, arrays, cdir = tree
    load_release(root, ["imagebind"], cache_dir=cdir, progress=False)
    arrow = next(cdir.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])         # truncated, same name (same fingerprint)
    data = load_release(root, ["imagebind"], cache_dir=cdir, progress=False)
    n = data.filenames[2]
    np.testing.assert_array_equal(data.sequences["imagebind"].clip(2), arrays[n])


def test_interrupted_build_leaves_no_cache(tree, monkeypatch):
    root, arrays, cdir = tree
    real = cache_mod.read_clip
    calls = {"n": 0}

    def flaky(path, spec):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(path, spec)

    monkeypatch.setattr(cache_mod, "read_clip", flaky)
    with pytest.raises(KeyboardInterrupt):
        load_release(root, ["imagebind"], cache_dir=cdir, progress=False)
    assert _no_cache_left(cdir)
    monkeypatch.setattr(cache_mod, "read_clip", real)
    data = load_release(root, ["imagebind"], cache_dir=cdir, progress=False)
    assert len(data) == 20


def test_cache_dir_falls_back_when_root_not_writable(tree, monkeypatch, tmp_path):
    root, _, _ = tree
    monkeypatch.setattr(cache_mod.os, "access", lambda *a, **k: False)
    monkeypatch.setenv("BLEMORE_CACHE", str(tmp_path / "home_cache"))
    load_release(root, ["imagebind"], progress=False)
    assert list((tmp_path / "home_cache" / "features").glob("imagebind-train-*.arrow"))


def test_missing_fold_column_assigns_actor_disjoint_folds(tree):
    root, _, cdir = tree
    meta = pd.read_csv(root / "train_metadata.csv").drop(columns="fold")
    meta.to_csv(root / "train_metadata.csv", index=False)
    data = load_release(root, ["imagebind"], cache_dir=cdir, progress=False)
    assert sorted(set(data.folds.tolist())) == [0, 1, 2, 3, 4]
    for a in ACTORS:
        assert len(set(data.folds[data.actors == a].tolist())) == 1


def test_extra_dims_are_flattened_and_1d_is_one_frame(tree):
    root, arrays, cdir = tree
    folder = root / "pre_extracted_train_data" / "ImageBind_train"
    names = list(arrays)
    np.save(folder / f"{names[0]}.npy", np.arange(12, dtype=np.float64).reshape(4, 1, 3))   # (T, 1, D), float64
    np.save(folder / f"{names[1]}.npy", np.arange(3, dtype=np.float32))                      # (D,)
    data = load_release(root, ["imagebind"], cache_dir=cdir, progress=False)
    seq = data.sequences["imagebind"]
    np.testing.assert_array_equal(seq.clip(data.filenames.index(names[0])), np.arange(12).reshape(4, 3))
    assert seq.clip(data.filenames.index(names[1])).shape == (1, 3)


# ------------------------------------------------------------------------------------------------ npz form
def _npz_tree(root: Path, where: str, d: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [_meta_row(f"A{a}_{c}_ver1", f) for f, a in enumerate(ACTORS) for c in CLIPS]
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "train_metadata.csv", index=False)
    names = [r["filename"] for r in rows]
    x = rng.standard_normal((len(names), 7 * d)).astype(np.float32)
    perm = rng.permutation(len(names))
    target = root / where / "imagebind_static_features.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, X=x[perm], filenames=np.array([names[i] + ".mov" for i in perm]))
    return names, x, target


@pytest.mark.parametrize("where", ["", "pre_extracted_train_data"])
def test_organisers_npz_form(tmp_path, where):
    names, x, _ = _npz_tree(tmp_path / "rel", where)
    data = load_release(tmp_path / "rel", ["imagebind"], cache_dir=tmp_path / "c", progress=False)
    assert data.filenames == names and not data.sequences
    np.testing.assert_array_equal(data.aggregated_features("imagebind"), x)   # reordered to metadata order
    assert data.dim("imagebind") == 2


def test_npz_object_filenames_and_test_split(tmp_path):
    root = tmp_path / "rel"
    names, x, target = _npz_tree(root, "")
    np.savez(target, X=x, filenames=np.array(names, dtype=object))
    assert load_release(root, ["imagebind"], progress=False).aggregated["imagebind"].shape == (20, 14)
    tests = [f"test_{i:04d}" for i in range(1, 4)]
    pd.DataFrame({"filename": [t + ".mov" for t in tests]}).to_csv(root / "test_metadata.csv", index=False)
    d = root / "pre_extracted_test_data"
    d.mkdir()
    np.savez(d / "imagebind_static_features_test.npz", X=np.ones((3, 14), np.float32), filenames=np.array(tests))
    t = load_release(root, ["imagebind"], split="test", progress=False)
    assert t.filenames == tests and np.isnan(t.labels).all() and (t.folds == -1).all()


class _Payload:
    """Pickles to a call of ``open(marker, "w")``: unpickling it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("where", ["filenames", "X"])
def test_malicious_npz_is_refused_without_unpickling(tmp_path, where):
    root = tmp_path / "rel"
    names, x, target = _npz_tree(root, "")
    marker = tmp_path / "PWNED"
    evil = np.empty(len(names), dtype=object)
    evil[:] = names
    evil[3] = _Payload(marker)
    if where == "filenames":
        np.savez(target, X=x, filenames=evil)
        match = r"imagebind_static_features.npz: field 'filenames' .*not a plain list of strings.*allow_pickle=True"
    else:
        np.savez(target, X=evil, filenames=np.array(names))
        match = r"imagebind_static_features.npz: field 'X' is an object array"
    with pytest.raises(ValueError, match=match):
        load_release(root, ["imagebind"], cache_dir=tmp_path / "c", progress=False)
    assert not marker.exists()
    # an object array holding something other than strings (no code, still refused)
    odd = np.array([1, 2], dtype=object)
    np.savez(target, X=x[:2], filenames=odd)
    with pytest.raises(ValueError, match="field 'filenames' row 0: expected a string, got int"):
        load_release(root, ["imagebind"], cache_dir=tmp_path / "c", progress=False)


def test_npz_bad_inputs(tmp_path):
    root = tmp_path / "rel"
    names, x, target = _npz_tree(root, "")
    np.savez(target, X=x[:, :13], filenames=np.array(names))
    with pytest.raises(ValueError, match=r"imagebind_static_features.npz.*'X'.*\(20, 13\)"):
        load_release(root, ["imagebind"], progress=False)
    np.savez(target, X=x[1:], filenames=np.array(names[1:]))
    with pytest.raises(ValueError, match=f"{names[0]}.*no row"):
        load_release(root, ["imagebind"], progress=False)
    np.savez(target, features=x, filenames=np.array(names))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['X'\]"):
        load_release(root, ["imagebind"], progress=False)
    x2 = x.copy()
    x2[3, 5] = np.nan
    np.savez(target, X=x2, filenames=np.array(names))
    with pytest.raises(ValueError, match=f"non-finite.*{names[3]}"):
        load_release(root, ["imagebind"], progress=False)
    target.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="unreadable .npz"):
        load_release(root, ["imagebind"], progress=False)


# ------------------------------------------------------------------------------------------------ bad input
def _edit_meta(root, fn):
    meta = pd.read_csv(root / "train_metadata.csv")
    meta = fn(meta)
    meta.to_csv(root / "train_metadata.csv", index=False)


def _npy(root, name):
    return root / "pre_extracted_train_data" / "ImageBind_train" / f"{name}.npy"


def _set_cell(col, row, value):
    def fn(m):
        m[col] = m[col].astype(object)
        m.loc[row, col] = value
        return m
    return fn


BAD_CASES = {
    "missing_column": (lambda r, a: _edit_meta(r, lambda m: m.drop(columns="emotion_1")),
                       [r"train_metadata.csv", r"missing column", "emotion_1"]),
    "no_feature_file": (lambda r, a: os.unlink(_npy(r, "A22_fea_int4_ver1")),
                        ["A22_fea_int4_ver1.npy", "imagebind", "no"]),
    "unparsable_filename": (lambda r, a: _edit_meta(r, _set_cell("filename", 3, "A11_hello")),
                            ["train_metadata.csv", "line 5", "'filename'", "A11_hello"]),
    "unknown_emotion": (lambda r, a: _edit_meta(r, _set_cell("filename", 0, "A11_xyz_int1_ver1")),
                        ["train_metadata.csv", "line 2", "unknown emotion code 'xyz'"]),
    "field_mismatch": (lambda r, a: _edit_meta(r, _set_cell("emotion_1", 2, "ang")),
                       ["train_metadata.csv", "line 4", "'emotion_1'", "'ang'", "expected 'hap'"]),
    "salience_mismatch": (lambda r, a: _edit_meta(r, _set_cell("emotion_1_salience", 2, 30)),
                          ["line 4", "'emotion_1_salience'", "expected 70.0"]),
    "bad_fold": (lambda r, a: _edit_meta(r, _set_cell("fold", 1, 7)), ["line 3", "'fold'", "7"]),
    "actor_in_two_folds": (lambda r, a: _edit_meta(r, _set_cell("fold", 1, 3)),
                           ["train_metadata.csv", "actor A11", r"\[0, 3\]"]),
    "inconsistent_dim": (lambda r, a: np.save(_npy(r, "A33_neu_sit2_ver1"), np.zeros((2, 5), np.float32)),
                         ["A33_neu_sit2_ver1.npy", "D = 5", "D = 3"]),
    "empty_sequence": (lambda r, a: np.save(_npy(r, "A44_ang_int1_ver1"), np.zeros((0, 3), np.float32)),
                       ["A44_ang_int1_ver1.npy", "T = 0"]),
    "nan": (lambda r, a: np.save(_npy(r, "A55_fea_int4_ver1"), np.array([[0, np.nan, 1]], np.float32)),
            ["A55_fea_int4_ver1.npy", "NaN", "frame 0, dim 1"]),
    "inf": (lambda r, a: np.save(_npy(r, "A55_fea_int4_ver1"), np.array([[0, 1, 1], [np.inf, 0, 0]], np.float32)),
            ["A55_fea_int4_ver1.npy", "non-finite", "inf"]),
    "corrupt_npy": (lambda r, a: _npy(r, "A22_ang_int1_ver1").write_bytes(b"\x93NUMPY garbage"),
                    ["A22_ang_int1_ver1.npy", "corrupt"]),
    "truncated_npy": (lambda r, a: _npy(r, "A22_ang_int1_ver1").write_bytes(_npy(r, "A22_ang_int1_ver1").read_bytes()[:-4]),
                      ["A22_ang_int1_ver1.npy", "corrupt"]),
    "object_npy": (lambda r, a: np.save(_npy(r, "A22_ang_int1_ver1"), np.array([{"a": 1}], dtype=object)),
                   ["A22_ang_int1_ver1.npy"]),
    "openface_missing_column": (
        lambda r, a: pd.DataFrame({"frame": [0], "emotion_index": [1]}).to_csv(
            r / "pre_extracted_train_data" / "OpenFace_3_train" / "A11_ang_int1_ver1.csv", index=False),
        ["A11_ang_int1_ver1.csv", "lacks column", "gaze_yaw"]),
    "openface_empty": (
        lambda r, a: (r / "pre_extracted_train_data" / "OpenFace_3_train" / "A11_ang_int1_ver1.csv").write_text(
            ",".join(OPENFACE_COLUMNS) + "\n"),
        ["A11_ang_int1_ver1.csv", "T = 0"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_raises_and_caches_nothing(tree, case):
    root, arrays, cdir = tree
    breaker, patterns = BAD_CASES[case]
    breaker(root, arrays)
    # each encoder's cache is validated and committed on its own: load the encoder the case breaks
    encoders = ["openface"] if case.startswith("openface") else ["imagebind"]
    with pytest.raises(ValueError) as ei:
        load_release(root, encoders, cache_dir=cdir, progress=False)
    msg = str(ei.value)
    for p in patterns:
        assert re.search(p, msg), (p, msg)
    assert _no_cache_left(cdir), _cache_files(cdir)


def test_unknown_encoder_and_missing_features(tree):
    root, _, cdir = tree
    with pytest.raises(ValueError, match="unknown encoder 'resnet'.*imagebind"):
        load_release(root, ["resnet"], cache_dir=cdir, progress=False)
    with pytest.raises(ValueError, match="'wavlm'.*WavLM_large_train.*wavlm_static_features.npz"):
        load_release(root, ["wavlm"], cache_dir=cdir, progress=False)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_release(root, ["imagebind"], split="val", cache_dir=cdir, progress=False)
    with pytest.raises(ValueError, match="test_metadata.csv.*not found"):
        load_release(root, ["imagebind"], split="test", cache_dir=cdir, progress=False)
    assert _no_cache_left(cdir)


def test_feature_file_without_metadata_row_is_warned_and_ignored(tree):
    root, _, cdir = tree
    np.save(_npy(root, "A99_ang_int1_ver1"), np.zeros((2, 3), np.float32))
    with pytest.warns(UserWarning, match=r"ImageBind_train.*1 imagebind feature file.*A99_ang_int1_ver1.npy"):
        data = load_release(root, ["imagebind"], cache_dir=cdir, progress=False)
    assert "A99_ang_int1_ver1" not in data.filenames and len(data) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_release(root, ["openface"], cache_dir=cdir, progress=False)   # other folder: no warning
