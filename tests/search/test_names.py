"""Issue 21, item 2: a search's name (--name or the space's ``name:``) is one path component, validated in one place
before anything is written; storage paths derived from it stay under the storage root."""

from __future__ import annotations

from pathlib import Path

import pytest

from search import safety
from search.cli import main
from search.storage import Storage, read_manifest, write_manifest

SPACE = """name: {name}
preset: rank_aware
data: {{dir: {data}, encoders: [imagebind, wavlm]}}
fixed: {{model.top_n: 2}}
params:
  train.lr: {{type: loguniform, low: 3.0e-4, high: 3.0e-3}}
budget: {{num_samples: 1, max_concurrent: 1, max_epochs: 1}}
"""


def _listing(p: Path) -> set[str]:
    return {str(q.relative_to(p)) for q in p.rglob("*")}


@pytest.mark.parametrize("space_name,option,source,shown", [
    ("../../escape", None, "space.yaml: name (line 1)", "'../../escape'"),
    ("ok", "x" * 300, "--name", "(300 characters)"),
    ("ok", "a/b", "--name", "'a/b'"),
    ("'dup ü x'", None, "space.yaml: name (line 1)", "'dup ü x'"),
    ("..", None, "space.yaml: name (line 1)", "'..'"),
])
def test_bad_search_name_is_exit_2_naming_source_and_value_before_anything_is_written(
        space_name, option, source, shown, tmp_path, tiny_release, monkeypatch, capsys):
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    space = work / "space.yaml"
    space.write_text(SPACE.format(name=space_name, data=tiny_release))
    argv = ["search", str(space), "--storage", str(work / "st"), "--tracking-uri", f"sqlite:///{work}/mlflow.db"]
    before = _listing(tmp_path)
    rc = main(argv + (["--name", option] if option is not None else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("blemore search: error: ") and source in err[0] and shown in err[0], err
    assert "one path component" in err[0]
    assert _listing(tmp_path) == before  # nothing written, inside or outside the storage


def test_resume_name_is_checked_too(capsys):
    assert main(["resume", "../../etc"]) == 2
    err = capsys.readouterr().err
    assert "blemore resume NAME" in err and "'../../etc'" in err


def test_check_search_name_rule():
    for ok in ("rank_aware", "a.b-c_1", "x" * 100):
        assert safety.check_search_name(ok, "--name") == ok
    for bad in ("", ".", "..", ".hidden", "a/b", "a\\b", "x" * 101, "dup ü", None, 3):
        with pytest.raises(safety.InputError, match="--name"):
            safety.check_search_name(bad, "--name")


def test_storage_paths_stay_under_the_root(tmp_path):
    st = Storage(str(tmp_path / "st"))
    assert st.join("run", "_train") == f"{tmp_path}/st/run/_train"
    assert st.join("/etc/passwd") == f"{tmp_path}/st/etc/passwd"  # a leading slash is stripped: still inside
    for rel in ("../escape", "a/../../b", ".."):
        with pytest.raises(safety.InputError, match="storage root"):
            st.join(rel)
        with pytest.raises(safety.InputError, match="storage root"):
            write_manifest(st, rel, {"x": 1})
        with pytest.raises(safety.InputError, match="storage root"):
            read_manifest(st, rel)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "b").exists()
    s3 = Storage("s3://bucket/prefix")
    assert s3.join("n", MANIFEST := "blemore_search.json") == f"s3://bucket/prefix/n/{MANIFEST}"
    with pytest.raises(safety.InputError):
        s3.join("..", "other")
