"""Submission files (docs/ARCHITECTURE.md section 3): round trip, atomic write, malformed files, label tables."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from blemore_core.decoding import decode
from blemore_core.metrics import evaluate
from blemore_core.submission import (
    SUBMISSION_JSON_NAME,
    SubmissionError,
    check_coverage,
    predictions_to_json,
    read_label_table,
    read_predictions,
    write_submission,
)


def _sal(*rows):
    out = np.zeros((len(rows), 6), dtype=np.float32)
    for r, row in enumerate(rows):
        for j, v in row.items():
            out[r, j] = v
    return out


def test_round_trip_zip(tmp_path: Path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(6), size=50)
    sal = decode(probs, 0.15, 0.1)
    names = [f"test_{i:04d}" for i in range(1, 51)]
    out = write_submission(tmp_path / "sub.zip", names, sal)
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == [SUBMISSION_JSON_NAME]
        obj = json.loads(zf.read(SUBMISSION_JSON_NAME))
    assert list(obj) == ["predictions"] and list(obj["predictions"])[0] == "test_0001.mov"
    back = read_predictions(out)
    assert list(back) == names
    # float64 fractions from the percents: equal to the float32 array within float32 rounding (< 1e-7)
    np.testing.assert_allclose(np.stack(list(back.values())), sal, rtol=0, atol=1e-7)
    assert ((sal > 0).sum(1) == 2).any()
    assert evaluate(np.stack(list(back.values())), sal) == {"acc_presence": 1.0, "acc_salience": 1.0, "score": 1.0}


def test_written_format_matches_codabench_example(tmp_path: Path):
    sal = _sal({3: 0.7, 4: 0.3}, {5: 1.0}, {0: 0.5, 2: 0.5})
    obj = predictions_to_json(["test_0001", "test_0002.mov", "test_0003"], sal)
    assert obj == {"predictions": {
        "test_0001.mov": [{"emotion": "hap", "salience": 70.0}, {"emotion": "sad", "salience": 30.0}],
        "test_0002.mov": [{"emotion": "neu", "salience": 100.0}],
        "test_0003.mov": [{"emotion": "ang", "salience": 50.0}, {"emotion": "fea", "salience": 50.0}],
    }}
    p = write_submission(tmp_path / "sub.json", ["test_0001", "test_0002", "test_0003"], sal)
    assert json.loads(p.read_text()) == obj


def test_write_is_atomic_and_leaves_no_temp(tmp_path: Path, monkeypatch):
    target = tmp_path / "sub.zip"
    write_submission(target, ["test_0001"], _sal({0: 1.0}))
    before = target.read_bytes()

    import blemore_core.submission as sub

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sub.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_submission(target, ["test_0001"], _sal({1: 1.0}))
    assert target.read_bytes() == before  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["sub.zip"]  # temp removed


def test_write_rejects_bad_rows(tmp_path: Path):
    with pytest.raises(SubmissionError, match="test_0002.*three|test_0002.*got 3"):
        write_submission(tmp_path / "s.zip", ["test_0001", "test_0002"], _sal({0: 1.0}, {0: 0.4, 1: 0.3, 2: 0.3}))
    with pytest.raises(SubmissionError, match="test_0001.*more than once"):
        write_submission(tmp_path / "s.zip", ["test_0001", "test_0001.mov"], _sal({0: 1.0}, {1: 1.0}))
    with pytest.raises(SubmissionError, match="2 filenames but 1"):
        write_submission(tmp_path / "s.zip", ["test_0001", "test_0002"], _sal({0: 1.0}))
    with pytest.raises(SubmissionError, match=r"\.zip or \.json"):
        write_submission(tmp_path / "s.txt", ["test_0001"], _sal({0: 1.0}))
    assert not list(tmp_path.iterdir())


def _write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("{not json", r"bad\.json: not valid JSON"),
        ({"preds": {}}, r"bad\.json: missing top-level key 'predictions'"),
        ([1, 2], r"bad\.json: missing top-level key 'predictions'"),
        ({"predictions": [1]}, r"bad\.json: 'predictions' must map"),
        ({"predictions": {"test_0007.mov": [{"emotion": "joy", "salience": 100}]}},
         r"bad\.json: clip 'test_0007\.mov': unknown emotion code 'joy'"),
        ({"predictions": {"test_0007.mov": [{"emotion": "hap", "salience": "high"}]}},
         r"bad\.json: clip 'test_0007\.mov': salience of 'hap' must be a non-negative number"),
        ({"predictions": {"test_0007.mov": [{"emotion": "hap", "salience": 40}, {"emotion": "sad", "salience": 30},
                                            {"emotion": "ang", "salience": 30}]}},
         r"bad\.json: clip 'test_0007\.mov': at most two emotions"),
        ({"predictions": {"test_0007.mov": [{"emotion": "hap", "salience": 100}, {"emotion": "sad", "salience": 0}]}},
         r"bad\.json: clip 'test_0007\.mov': a listed emotion has salience 0"),
        ({"predictions": {"test_0007.mov": []}}, r"bad\.json: clip 'test_0007\.mov'"),
        ({"predictions": {"test_0007.mov": [{"emotion": "hap", "salience": 100}],
                          "test_0007": [{"emotion": "hap", "salience": 100}]}},
         r"bad\.json: clip 'test_0007' is listed twice"),
    ],
)
def test_malformed_submissions(tmp_path: Path, content, pattern):
    path = _write_json(tmp_path / "bad.json", content)
    with pytest.raises(SubmissionError, match=pattern):
        read_predictions(path)


def test_zip_must_hold_one_json(tmp_path: Path):
    p = tmp_path / "two.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a.json", "{}")
        zf.writestr("b.json", "{}")
    with pytest.raises(SubmissionError, match="exactly one .json"):
        read_predictions(p)
    with pytest.raises(SubmissionError, match="no such file"):
        read_predictions(tmp_path / "missing.zip")


def test_unusual_pair_warns_and_is_kept(tmp_path: Path):
    path = _write_json(tmp_path / "odd.json", {"predictions": {
        "A1_mix_hap_sad_50_50_ver1.mov": [{"emotion": "hap", "salience": 60}, {"emotion": "sad", "salience": 40}],
        "A1_hap_int1_ver1.mov": [{"emotion": "hap", "salience": 100}],
    }})
    with pytest.warns(UserWarning, match=r"odd\.json: 1 prediction.*'A1_mix_hap_sad_50_50_ver1\.mov'"):
        preds = read_predictions(path)
    np.testing.assert_array_equal(preds["A1_mix_hap_sad_50_50_ver1"], [0, 0, 0, 0.6, 0.4, 0])
    truth = {"A1_mix_hap_sad_50_50_ver1": [{"emotion": "hap", "salience": 50.0}, {"emotion": "sad", "salience": 50.0}],
             "A1_hap_int1_ver1": [{"emotion": "hap", "salience": 100.0}]}
    assert evaluate(preds, truth) == {"acc_presence": 1.0, "acc_salience": 0.0, "score": 0.5}


def test_usual_file_does_not_warn(tmp_path: Path):
    path = write_submission(tmp_path / "ok.zip", ["test_0001", "test_0002"], _sal({0: 0.7, 1: 0.3}, {5: 1.0}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_predictions(path)


def test_check_coverage():
    check_coverage({"test_0001.mov": 1, "test_0002.mov": 1}, ["test_0002", "test_0001"])
    with pytest.raises(SubmissionError, match=r"sub\.zip: 1 clip\(s\) missing \(e\.g\. \['test_0003'\]\)"):
        check_coverage({"test_0001.mov": 1}, ["test_0001", "test_0003"], source="sub.zip")
    with pytest.raises(SubmissionError, match=r"not expected \(e\.g\. \['test_0009'\]\)"):
        check_coverage({"test_0001.mov": 1, "test_0009": 1}, ["test_0001"])


# ----------------------------------------------------------------------------------------------------------------
# label tables

HEADER = "filename,video_id,gender,mix,emotion_1,version,intensity_level,situation,emotion_2,emotion_1_salience,emotion_2_salience,fold\n"


def test_read_label_table_train_and_test(tmp_path: Path):
    train = tmp_path / "train_metadata.csv"
    train.write_text(HEADER
                     + "A1_mix_ang_hap_30_70_ver1,v,m,1,ang,1,,,hap,30,70,0\n"
                     + "A1_neu_sit2_ver1,v,m,0,neu,1,,2,,,,0\n")
    lab = read_label_table(train)
    assert list(lab) == ["A1_mix_ang_hap_30_70_ver1", "A1_neu_sit2_ver1"]
    np.testing.assert_allclose(lab["A1_mix_ang_hap_30_70_ver1"], [0.3, 0, 0, 0.7, 0, 0], atol=1e-7)
    test = tmp_path / "test_labels.csv"
    test.write_text(HEADER + "test_0001,v,f,1,fea,1,,,sad,70,30,-1\ntest_0002,v,f,0,disg,1,2,,,100,,-1\n")
    lab = read_label_table(test)
    np.testing.assert_array_equal(lab["test_0001"], [0, 0, 0.7, 0, 0.3, 0])
    np.testing.assert_array_equal(lab["test_0002"], [0, 1, 0, 0, 0, 0])


@pytest.mark.parametrize(
    "body, pattern",
    [
        ("name\nx\n", r"no 'filename' column"),
        (HEADER + "test_0001,v,f,1,joy,1,,,sad,70,30,-1\n", r"clip 'test_0001', column 'emotion_1': unknown emotion 'joy'"),
        (HEADER + "test_0001,v,f,1,fea,1,,,sad,seventy,30,-1\n", r"clip 'test_0001', column 'emotion_1_salience'"),
        (HEADER + "B7_happy,v,f,1,fea,1,,,sad,70,30,-1\n", r"'B7_happy'"),
        ("filename\ntest_0001\n", r"test clip 'test_0001' needs label columns"),
    ],
)
def test_read_label_table_errors(tmp_path: Path, body, pattern):
    p = tmp_path / "labels.csv"
    p.write_text(body)
    with pytest.raises(SubmissionError, match=pattern) as e:
        read_label_table(p)
    assert "labels.csv" in str(e.value)
