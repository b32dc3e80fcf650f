"""The CLI error contract (issue 11), one parametrised case per class of bad input: exit code 2, ONE error line on
stderr naming the offending file / line / field / value, and nothing written (no output folder, no feature
cache, no file in the working directory)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blemore_core.labels import soft_labels
from blemore_core.submission import write_submission
from search.cli import main

CONFIG = """data: {encoders: [imagebind], features: aggregated}
model: {arch: mlp512}
train: {max_epochs: 1, patience: 0}
thresholds: {protocol: val}
"""
SPACE = """name: bad
preset: rank_aware
data: {{dir: {data}, encoders: [imagebind, wavlm]}}
fixed: {{model.top_n: 2, {fixed}}}
params:
  train.lr: {{type: loguniform, low: 3.0e-4, high: 3.0e-3}}
budget: {{num_samples: 1, max_concurrent: 1, max_epochs: 1}}
"""


@pytest.fixture
def release(tmp_path, tiny_release) -> Path:
    """A copy of the shared tiny release holding the metadata and the ImageBind features only."""
    root = tmp_path / "rel"
    root.mkdir()
    for f in ("train_metadata.csv", "test_metadata.csv", "test_labels.csv"):
        shutil.copy(tiny_release / f, root / f)
    for split, folder in (("train", "ImageBind_train"), ("test", "ImageBind_test")):
        shutil.copytree(tiny_release / f"pre_extracted_{split}_data" / folder,
                        root / f"pre_extracted_{split}_data" / folder)
    return root


def _npy(root: Path, i: int = 0) -> Path:
    return sorted((root / "pre_extracted_train_data" / "ImageBind_train").glob("*.npy"))[i]


def _meta(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "train_metadata.csv", dtype={"filename": str})


def _write_meta(root: Path, df: pd.DataFrame) -> None:
    df.to_csv(root / "train_metadata.csv", index=False)


def _set(root: Path, col: str, row: int, value) -> None:
    df = _meta(root)
    df[col] = df[col].astype(object)
    df.loc[row, col] = value
    _write_meta(root, df)


def _duplicate_row(root: Path) -> None:
    df = _meta(root)
    _write_meta(root, pd.concat([df.iloc[:4], df.iloc[[1]], df.iloc[4:]], ignore_index=True))


def _two_folds(root: Path) -> str:
    df = _meta(root)
    actor = df.loc[0, "filename"].split("_")[0]
    rows = df.index[df["filename"].str.startswith(actor + "_")]
    df.loc[rows[1], "fold"] = (int(df.loc[rows[0], "fold"]) + 1) % 5
    _write_meta(root, df)
    return actor


def _train_case(breaker, patterns, config: str = CONFIG, extra=()):
    return ("train", breaker, patterns, config, list(extra))


# case -> (command, breaker(root) -> extra patterns or None, patterns (with {root}, {npy0}), config, extra args)
CASES = {
    # ---- the release (blemore train --data)
    "missing_metadata": _train_case(lambda r: (r / "train_metadata.csv").unlink(),
                                    ["train_metadata.csv", "not found"]),
    "empty_metadata": _train_case(lambda r: (r / "train_metadata.csv").write_text(""),
                                  ["train_metadata.csv", "unreadable CSV"]),
    "garbled_metadata": _train_case(lambda r: (r / "train_metadata.csv").write_bytes(b"\x00\xff\x13garbage\n\x01"),
                                    ["train_metadata.csv"]),
    "truncated_feature": _train_case(lambda r: _npy(r).write_bytes(_npy(r).read_bytes()[:-8]),
                                     ["{npy0}", "corrupt"]),
    "wrong_dims": _train_case(lambda r: np.save(_npy(r), np.zeros((3, 5), np.float32)), ["{npy0}", "D = 5"]),
    "nan_feature": _train_case(lambda r: np.save(_npy(r), np.full((3, 8), np.nan, np.float32)), ["{npy0}", "NaN"]),
    "inf_feature": _train_case(lambda r: np.save(_npy(r), np.full((3, 8), np.inf, np.float32)),
                               ["{npy0}", "non-finite"]),
    "unknown_emotion": _train_case(lambda r: _set(r, "filename", 2, "A105_xyz_int1_ver1"),
                                   ["train_metadata.csv", "line 4", "'filename'", "xyz"]),
    "bad_salience": _train_case(lambda r: _set(r, "emotion_1_salience", 0, 30),
                                ["train_metadata.csv", "line 2", "'emotion_1_salience'", "30"]),
    "duplicate_row": _train_case(_duplicate_row, ["train_metadata.csv", "line 6", "repeats line 3"]),
    "actor_in_two_folds": _train_case(_two_folds, ["train_metadata.csv", "actor"]),
    # ---- the config (blemore train CONFIG, --set, --folds)
    "bad_yaml": _train_case(None, ["config.yaml", "cannot read YAML"], config="data: [imagebind\n"),
    "unknown_key": _train_case(None, ["config.yaml", "unknown key 'model.nope'"],
                               config=CONFIG.replace("model: {arch: mlp512}", "model: {arch: mlp512, nope: 1}")),
    "wrong_type": _train_case(None, ["config.yaml", "train.lr", "expected a number", "'abc'"],
                              config=CONFIG.replace("max_epochs: 1", "max_epochs: 1, lr: abc")),
    "nan_value": _train_case(None, ["config.yaml", "loss.kl", "finite", "nan"], config=CONFIG + "loss: {kl: .nan}\n"),
    "impossible_top_n": _train_case(None, ["config.yaml", "model.top_n", "got 3"],
                                    config=CONFIG.replace("model: {arch: mlp512}",
                                                          "model: {arch: fusion, fusion: rank_aware, top_n: 3}")
                                    .replace("features: aggregated", "features: sequence")),
    "set_inf": _train_case(None, ["--set", "train.lr", "inf"], extra=["--set", "train.lr=.inf"]),
    "set_unknown": _train_case(None, ["--set", "unknown key 'train.nope'"], extra=["--set", "train.nope=1"]),
    "folds_not_numbers": _train_case(None, ["--folds", "'x'"], extra=["--folds", "x"]),
    "fold_not_in_release": _train_case(None, ["--folds", "fold 7"], extra=["--folds", "7"]),
    # ---- prediction files (blemore evaluate)
    "missing_test_clips": ("evaluate-partial", None, ["part.zip", "clip(s) missing", "--allow-partial"], None, []),
    "truncated_zip": ("evaluate-truncated", None, ["cut.zip", "truncated or corrupt zip"], None, []),
    "directory_as_predictions": ("evaluate-dir", None, ["is a directory"], None, []),
    "garbled_json": ("evaluate-garbled", None, ["bad.json", "not valid JSON"], None, []),
    # ---- a search space (blemore search, refused before anything starts)
    "space_unknown_key": ("search", None, ["bad.yaml", "nope"], "model.nope: 1", []),
    "space_nan": ("search", None, ["bad.yaml", "loss.kl"], "loss.kl: .nan", []),
}


def _listing(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, release, monkeypatch, capsys):
    command, breaker, patterns, config, extra = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("BLEMORE_LOG_DIR", str(tmp_path / "logs"))
    out = tmp_path / "out"
    npy0 = _npy(release)
    if breaker is not None:
        breaker(release)
    if command == "train":
        cfg = tmp_path / "config.yaml"
        cfg.write_text(config)
        argv = ["train", str(cfg), "--data", str(release), "--out", str(out), *extra]
    elif command.startswith("evaluate"):
        labels = release / "test_labels.csv"
        names = pd.read_csv(labels)["filename"].tolist()
        if command == "evaluate-partial":
            pred = write_submission(tmp_path / "part.zip", names[:3], np.eye(6)[[0, 1, 2]])
        elif command == "evaluate-truncated":
            full = write_submission(tmp_path / "full.zip", names, np.eye(6)[np.arange(len(names)) % 6])
            pred = tmp_path / "cut.zip"
            pred.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
        elif command == "evaluate-dir":
            pred = tmp_path
        else:
            pred = tmp_path / "bad.json"
            pred.write_text('{"predictions": {"test_0001": [')
        argv = ["evaluate", "--predictions", str(pred), "--labels", str(labels)]
    else:  # search
        space = tmp_path / "bad.yaml"
        space.write_text(SPACE.format(data=release, fixed=config))
        argv = ["search", str(space), "--storage", str(tmp_path / "ray_results"),
                "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    before = _listing(release)
    rc = main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    errors = [ln for ln in err if "error:" in ln]
    assert rc == 2, err
    assert len(errors) == 1 and errors[0] == err[-1], err
    for p in patterns:
        p = p.replace("{npy0}", npy0.name)
        assert p in errors[0], (p, errors[0])
    assert "Traceback" not in "\n".join(err)
    # nothing written: no output, no cache, no store, no log, nothing in the working directory
    assert not out.exists()
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "logs").exists()
    assert _listing(work) == set()
    if case == "fold_not_in_release":  # the release itself is valid: its feature cache may be kept
        return
    assert not [f for f in _listing(release) - before if f.endswith(".arrow") or ".tmp" in f], \
        _listing(release) - before
