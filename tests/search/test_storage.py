"""search.storage on a local path and on an S3-compatible server (moto's server mode on 127.0.0.1, in-process):
manifest round trip, the probe write, checkpoint download; and the runner's use of it before Ray starts."""

from __future__ import annotations

import json

import pytest

from search.storage import (
    MANIFEST,
    check_writable,
    download_checkpoint,
    forwarded_env,
    read_manifest,
    resolve_storage,
    write_manifest,
)

BUCKET = "blemore-unit"


def test_resolve_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    st = resolve_storage(None)
    assert st.uri == str(tmp_path / "ray_results") and st.is_local
    assert resolve_storage("s3://b/x/").uri == "s3://b/x" and not resolve_storage("s3://b/x").is_local
    assert resolve_storage("file:///abs/p").uri == "/abs/p"
    assert resolve_storage("s3://b/x").join("name", "_train") == "s3://b/x/name/_train"
    with pytest.raises(ValueError, match="--storage: empty value"):
        resolve_storage("  ")
    with pytest.raises(ValueError, match="file:// URI must hold an absolute path"):
        resolve_storage("file://rel/p")


def test_manifest_round_trip_local(tmp_path):
    st = resolve_storage(str(tmp_path / "st"))
    assert read_manifest(st, "s1") is None
    loc = write_manifest(st, "s1", {"space": "/x.yaml", "n": 1})
    assert loc == f"{tmp_path}/st/s1/{MANIFEST}"
    assert read_manifest(st, "s1") == {"space": "/x.yaml", "n": 1}
    assert not list((tmp_path / "st" / "s1").glob(".*tmp"))  # the temp file was renamed, not left behind


def test_manifest_round_trip_and_checkpoint_on_s3(s3, tmp_path):
    import boto3

    st = resolve_storage(f"s3://{BUCKET}/searches")
    check_writable(st)
    assert read_manifest(st, "s2") is None
    write_manifest(st, "s2", {"tracking_uri": "http://127.0.0.1:5000"})
    assert read_manifest(st, "s2") == {"tracking_uri": "http://127.0.0.1:5000"}
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"searches/s2/{MANIFEST}")["Body"].read()
    assert json.loads(body) == {"tracking_uri": "http://127.0.0.1:5000"}
    # a checkpoint directory as Ray Train persists it: read back through the storage's filesystem
    for name, data in (("config.yaml", b"a: 1\n"), ("fold0.pt", b"\x00\x01")):
        boto3.client("s3").put_object(Bucket=BUCKET, Key=f"searches/s2/_train/t/checkpoint_0/{name}", Body=data)
    d = download_checkpoint(st, f"{BUCKET}/searches/s2/_train/t/checkpoint_0", tmp_path / "dl")
    assert (d / "config.yaml").read_bytes() == b"a: 1\n" and (d / "fold0.pt").read_bytes() == b"\x00\x01"
    assert forwarded_env()["AWS_ENDPOINT_URL"] == s3["AWS_ENDPOINT_URL"]
    assert "AWS_SECRET_ACCESS_KEY" not in forwarded_env()  # credentials are never forwarded


def test_check_writable_names_the_storage(tmp_path, s3):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=rf"--storage {blocker}/sub: not writable"):
        check_writable(resolve_storage(str(blocker / "sub")))
    with pytest.raises(ValueError, match=r"--storage s3://no-such-bucket-x/p: not writable.*AWS_ENDPOINT_URL"):
        check_writable(resolve_storage("s3://no-such-bucket-x/p"))


def test_existing_search_on_s3_refused_before_ray(s3, tmp_path):
    from blemore_core.data import generate_release
    from search.runner import SearchOptions, run_search

    tiny = generate_release(tmp_path / "tiny", "tiny", progress=False)
    space = tmp_path / "s.yaml"
    space.write_text(
        f"name: dup\npreset: rank_aware\ndata: {{dir: {tiny}, encoders: [imagebind, wavlm]}}\n"
        "fixed: {model.top_n: 2}\nparams:\n  train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-3}\n"
        "metric: score\nscheduler: none\nbudget: {num_samples: 1, max_concurrent: 1, max_epochs: 1}\n")
    st = resolve_storage(f"s3://{BUCKET}/dups")
    write_manifest(st, "dup", {"space": str(space)})
    with pytest.raises(ValueError, match=r"a search named 'dup' exists in s3://.*blemore resume dup --storage s3://"):
        run_search(space, SearchOptions(storage=st.uri))
    import ray

    assert not ray.is_initialized()


def test_resume_reads_the_manifest_from_s3(s3):
    from search.runner import resume_search

    with pytest.raises(ValueError, match=rf"s3://{BUCKET}/none/nosuch/{MANIFEST}: no search named 'nosuch'"):
        resume_search("nosuch", storage=f"s3://{BUCKET}/none")
