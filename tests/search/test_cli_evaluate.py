"""``blemore evaluate``: metrics printed for a prediction file against train metadata / test labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blemore_core.labels import soft_labels
from blemore_core.submission import write_submission
from search.cli import main

HEADER = "filename,video_id,gender,mix,emotion_1,version,intensity_level,situation,emotion_2,emotion_1_salience,emotion_2_salience,fold\n"
TRAIN_ROWS = [
    "A1_mix_ang_hap_70_30_ver1,v,m,1,ang,1,,,hap,70,30,0",
    "A1_mix_fea_sad_50_50_ver1,v,m,1,fea,1,,,sad,50,50,0",
    "A1_hap_int2_ver1,v,m,0,hap,1,2,,,100,,0",
    "A1_neu_sit1_ver1,v,m,0,neu,1,,1,,100,,0",
]
NAMES = [r.split(",")[0] for r in TRAIN_ROWS]


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    p = tmp_path / "train_metadata.csv"
    p.write_text(HEADER + "\n".join(TRAIN_ROWS) + "\n")
    return p


def _preds_json(tmp_path: Path, preds: dict, name="preds.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps({"predictions": preds}))
    return p


def test_evaluate_json_output(tmp_path, metadata, capsys):
    preds = {
        "A1_mix_ang_hap_70_30_ver1.mov": [{"emotion": "ang", "salience": 70.0}, {"emotion": "hap", "salience": 30.0}],
        "A1_mix_fea_sad_50_50_ver1": [{"emotion": "fea", "salience": 70.0}, {"emotion": "sad", "salience": 30.0}],
        "A1_hap_int2_ver1.mov": [{"emotion": "sad", "salience": 100.0}],
    }
    rc = main(["evaluate", "--predictions", str(_preds_json(tmp_path, preds)), "--metadata", str(metadata), "--json",
               "--allow-partial"])
    out = json.loads(capsys.readouterr().out)
    # presence: clips 1, 2 right of 3 -> 2/3; salience: blends 1 (right) and 2 (wrong ratio) -> 1/2
    assert rc == 0
    assert out == {"acc_presence": 2 / 3, "acc_salience": 0.5, "score": (2 / 3 + 0.5) / 2, "n_clips": 3, "n_blended": 2,
                   "partial": True}


def test_evaluate_table_output_from_zip(tmp_path, metadata, capsys):
    sub = write_submission(tmp_path / "perfect.zip", NAMES, soft_labels(NAMES))
    rc = main(["evaluate", "--predictions", str(sub), "--metadata", str(metadata)])
    text = capsys.readouterr().out
    assert rc == 0
    for label in ("ACC_presence", "ACC_salience", "Score"):
        assert label in text
    assert text.count("1.0000") == 3


def test_evaluate_test_labels(tmp_path, capsys):
    labels = tmp_path / "test_labels.csv"
    labels.write_text(HEADER + "test_0001,v,f,1,fea,1,,,sad,30,70,-1\ntest_0002,v,f,0,disg,1,2,,,100,,-1\n")
    sal = np.zeros((2, 6), dtype=np.float32)
    sal[0, [2, 4]] = [0.3, 0.7]
    sal[1, 0] = 1.0
    sub = write_submission(tmp_path / "sub.zip", ["test_0001", "test_0002"], sal)
    assert main(["evaluate", "--predictions", str(sub), "--labels", str(labels), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["acc_presence"], out["acc_salience"], out["score"]) == (0.5, 1.0, 0.75)


def test_evaluate_unknown_clip_is_a_clear_error(tmp_path, metadata, capsys):
    preds = {"A9_sad_int1_ver1.mov": [{"emotion": "sad", "salience": 100.0}]}
    path = _preds_json(tmp_path, preds)
    assert main(["evaluate", "--predictions", str(path), "--metadata", str(metadata)]) == 2
    err = capsys.readouterr().err
    assert "A9_sad_int1_ver1" in err and "preds.json" in err and "train_metadata.csv" in err


def test_evaluate_malformed_file_names_file_and_clip(tmp_path, metadata, capsys):
    path = _preds_json(tmp_path, {"A1_hap_int2_ver1.mov": [{"emotion": "hapy", "salience": 100}]}, "broken.json")
    assert main(["evaluate", "--predictions", str(path), "--metadata", str(metadata)]) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err and "A1_hap_int2_ver1.mov" in err and "'hapy'" in err


def test_evaluate_warns_on_unusual_pair(tmp_path, metadata, capsys):
    preds = {"A1_mix_fea_sad_50_50_ver1": [{"emotion": "fea", "salience": 60.0}, {"emotion": "sad", "salience": 40.0}]}
    path = _preds_json(tmp_path, preds)
    assert main(["evaluate", "--predictions", str(path), "--metadata", str(metadata), "--json",
                 "--allow-partial"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "A1_mix_fea_sad_50_50_ver1" in captured.err
    out = json.loads(captured.out)
    assert (out["acc_presence"], out["acc_salience"]) == (1.0, 0.0)


def test_evaluate_needs_a_label_source(tmp_path):
    assert main(["evaluate", "--predictions", "x.json"]) == 2


def test_evaluate_refuses_a_partial_submission_unless_allowed(tmp_path, metadata, capsys):
    sub = write_submission(tmp_path / "part.zip", NAMES[:3], soft_labels(NAMES[:3]))
    assert main(["evaluate", "--predictions", str(sub), "--metadata", str(metadata), "--json"]) == 2
    err = capsys.readouterr().err
    assert "part.zip" in err and "1 clip(s) missing" in err and NAMES[3] in err and "--allow-partial" in err
    assert main(["evaluate", "--predictions", str(sub), "--metadata", str(metadata), "--json", "--allow-partial"]) == 0
    captured = capsys.readouterr()
    assert "PARTIAL" in captured.err and "3 of the 4" in captured.err
    assert json.loads(captured.out)["partial"] is True


def test_evaluate_truncated_zip_and_directory(tmp_path, metadata, capsys):
    sub = write_submission(tmp_path / "full.zip", NAMES, soft_labels(NAMES))
    cut = tmp_path / "cut.zip"
    cut.write_bytes(sub.read_bytes()[:-30])
    assert main(["evaluate", "--predictions", str(cut), "--metadata", str(metadata)]) == 2
    err = capsys.readouterr().err
    assert "cut.zip" in err and "truncated or corrupt zip" in err and "Traceback" not in err
    assert main(["evaluate", "--predictions", str(tmp_path), "--metadata", str(metadata)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and str(tmp_path) in err and "Traceback" not in err
