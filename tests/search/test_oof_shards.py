"""search.oof_shards: one shard per epoch (bytes linear in epochs), every epoch exactly once, on a local path and
on an S3-compatible store (moto on 127.0.0.1)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from search.oof_shards import CLIPS, ShardWriter, read_epoch_reports, read_oof_epochs, report_name, shard_name


def _data(n: int = 40):
    rng = np.random.default_rng(0)
    return types.SimpleNamespace(folds=rng.integers(0, 5, n), filenames=[f"A{i}_hap_int1_ver1" for i in range(n)])


def _probs(n: int, seed: int) -> np.ndarray:
    p = np.random.default_rng(seed).random((n, 6)).astype(np.float32)
    return p / p.sum(axis=1, keepdims=True)


def test_shards_assemble_every_epoch_once_and_grow_linearly(tmp_path):
    data = _data()
    w = ShardWriter(str(tmp_path / "_train"), "trial_1", data)
    want = [_probs(40, e) for e in range(1, 7)]
    for e, p in enumerate(want, start=1):
        w.write(e, p)
    d = Path(w.uri)
    files = sorted(f.name for f in d.iterdir())
    assert files == [CLIPS] + [shard_name(e) for e in range(1, 7)]  # one file per epoch, nothing rewritten
    sizes = [(d / shard_name(e)).stat().st_size for e in range(1, 7)]
    assert max(sizes) <= 1.2 * min(sizes), sizes  # each epoch's shard holds that epoch only: linear, not quadratic
    got = read_oof_epochs(w.uri)
    assert got["probs"].shape == (40, 6, 6) and got["probs"].dtype == np.float32
    np.testing.assert_array_equal(got["probs"], np.stack(want, axis=2))
    np.testing.assert_array_equal(got["folds"], data.folds)
    assert list(got["filenames"]) == data.filenames
    # a stopped trial's worker may write the shard of the epoch after its last report: read up to that report
    np.testing.assert_array_equal(read_oof_epochs(w.uri, 4)["probs"], np.stack(want[:4], axis=2))
    with pytest.raises(ValueError, match=r"epochs \[7, 8\] are missing"):
        read_oof_epochs(w.uri, 8)


def test_epoch_reports_are_written_once_read_in_order_and_outlive_the_probability_shards(tmp_path):
    """Each epoch's Tune report is one small file written once (what the replay reads instead of a result.json
    that grows every epoch); deleting the shards after the final checkpoint keeps the reports; a gap ends the
    reading (an attempt never has one: epochs are written in order)."""
    data = _data()
    w = ShardWriter(str(tmp_path / "_train"), "trial_1", data)
    reports = [{"epoch": e, "score": 0.1 * e, "folds": [{"fold": k, "epoch": e} for k in range(5)]}
               for e in range(1, 5)]
    for e, r in enumerate(reports, start=1):
        w.write(e, _probs(40, e), r)
    d = Path(w.uri)
    assert sorted(f.name for f in d.glob("report_*")) == [report_name(e) for e in range(1, 5)]
    sizes = [(d / report_name(e)).stat().st_size for e in range(1, 5)]
    assert max(sizes) < 1.2 * min(sizes), sizes  # each holds its own epoch only
    assert read_epoch_reports(w.uri) == reports
    assert read_epoch_reports(w.uri, 2) == reports[:2]  # up to the last epoch Tune received
    w.delete()
    assert sorted(f.name for f in d.iterdir()) == [report_name(e) for e in range(1, 5)]  # npz gone, reports kept
    assert read_epoch_reports(w.uri) == reports
    (d / report_name(3)).unlink()
    assert read_epoch_reports(w.uri) == reports[:2]
    assert read_epoch_reports(None) == [] and read_epoch_reports(str(tmp_path / "nothing")) == []


def test_a_missing_epoch_is_named_and_attempts_never_mix(tmp_path):
    data = _data()
    first = ShardWriter(str(tmp_path), "trial_1", data)
    for e in (1, 2, 3):
        first.write(e, _probs(40, e))
    retry = ShardWriter(str(tmp_path), "trial_1", data)  # a retried attempt starts over in its own directory
    retry.write(1, _probs(40, 99))
    assert retry.uri != first.uri
    assert read_oof_epochs(retry.uri)["probs"].shape[2] == 1
    assert read_oof_epochs(first.uri)["probs"].shape[2] == 3
    (Path(first.uri) / shard_name(2)).unlink()
    with pytest.raises(ValueError, match=r"epochs \[2\] are missing"):
        read_oof_epochs(first.uri)
    with pytest.raises(FileNotFoundError, match="no OOF shards"):
        read_oof_epochs(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match=r"expected \(40, 6\)"):
        first.write(4, np.zeros((40, 5), np.float32))


def test_delete_removes_the_attempt(tmp_path):
    w = ShardWriter(str(tmp_path), "t", _data())
    w.write(1, _probs(40, 1))
    w.delete()
    assert not Path(w.uri).exists()


def test_shards_on_s3(s3):
    import boto3

    from tests.conftest import BUCKET

    data = _data()
    w = ShardWriter(f"s3://{BUCKET}/searches/s/_train", "trial_9", data)
    for e in (1, 2):
        w.write(e, _probs(40, e))
    keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(
        Bucket=BUCKET, Prefix="searches/s/_train/oof/trial_9/")["Contents"])
    files = [k.rsplit("/", 1)[1] for k in keys if not k.endswith("/")]  # pyarrow adds directory markers
    assert files == [CLIPS, shard_name(1), shard_name(2)]
    got = read_oof_epochs(w.uri)
    np.testing.assert_array_equal(got["probs"][:, :, 1], _probs(40, 2))
