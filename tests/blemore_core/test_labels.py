"""Tests of blemore_core.labels on the real fold's clip names (tests/fixtures/blemore_fold_filenames.txt)."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from blemore_core.labels import (
    EMOTIONS,
    LABEL_SETS,
    challenge_to_vector,
    label_set_indices,
    parse_filename,
    soft_labels,
    strip_extension,
    vector_to_challenge,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "blemore_fold_filenames.txt"
REAL_NAMES = [line.strip() for line in FIXTURE.read_text().splitlines() if line.strip()]


def test_fixture_has_the_real_fold():
    assert len(REAL_NAMES) == 522


@pytest.mark.parametrize("name", REAL_NAMES)
def test_every_real_name_parses(name):
    c = parse_filename(name)
    assert c.filename == name
    assert c.kind in ("single", "neutral", "blend")
    assert name.startswith(f"A{c.actor}_")
    assert name.endswith(f"_ver{c.version}")


def test_real_names_soft_labels():
    y = soft_labels(REAL_NAMES)
    assert y.shape == (522, 6) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(1), 1.0, atol=1e-6)
    kinds = Counter(parse_filename(n).kind for n in REAL_NAMES)
    n_two = int(((y > 0).sum(1) == 2).sum())
    assert n_two == kinds["blend"]
    # neutral is one-hot on index 5 and never part of a blend
    neu = np.array([parse_filename(n).kind == "neutral" for n in REAL_NAMES])
    assert (y[neu, 5] == 1.0).all() and (y[~neu, 5] == 0.0).all()
    # every row is one of the 16 valid label sets
    idx = label_set_indices(y)
    assert idx.min() >= 0 and idx.max() < len(LABEL_SETS)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("A102_ang_int1_ver1", {"ang": 1.0}),
        ("A26_neu_sit3_ver1", {"neu": 1.0}),
        ("A412_mix_ang_disg_30_70_ver2", {"ang": 0.3, "disg": 0.7}),
        ("A74_mix_hap_sad_50_50_ver1.mov", {"hap": 0.5, "sad": 0.5}),
        ("A303_mix_fea_hap_70_30_ver1.npy", {"fea": 0.7, "hap": 0.3}),
    ],
)
def test_soft_label_hand_worked(name, expected):
    v = parse_filename(name).salience_vector()
    want = np.zeros(6, dtype=np.float32)
    for e, s in expected.items():
        want[EMOTIONS.index(e)] = s
    np.testing.assert_allclose(v, want, atol=1e-7)


def test_parsed_fields():
    c = parse_filename("A412_mix_ang_hap_70_30_ver4")
    assert (c.kind, c.actor, c.emotions, c.saliences, c.version) == ("blend", 412, ("ang", "hap"), (70, 30), 4)
    c = parse_filename("A26_disg_int3_ver1")
    assert (c.kind, c.intensity, c.situation) == ("single", 3, None)
    c = parse_filename("A26_neu_sit2_ver1")
    assert (c.kind, c.situation, c.intensity) == ("neutral", 2, None)
    c = parse_filename("test_0594.mov")
    assert (c.kind, c.test_index, c.has_label) == ("test", 594, False)
    assert strip_extension("dir/sub/A1_ang_int1_ver1.npy") == "A1_ang_int1_ver1"


@pytest.mark.parametrize(
    "bad",
    [
        "A102_xyz_int1_ver1",          # unknown emotion code
        "A102_ang_int5_ver1",          # intensity out of range
        "A102_neu_int1_ver1",          # neutral with an intensity
        "A102_mix_ang_neu_50_50_ver1",  # neutral never blends
        "A102_mix_ang_ang_50_50_ver1",  # same emotion twice
        "A102_mix_ang_hap_60_40_ver1",  # not an allowed ratio
        "A102_mix_ang_foo_50_50_ver1",  # unknown emotion in a blend
        "B102_ang_int1_ver1",
        "A102_ang_int1",
        "test_12",
        "",
    ],
)
def test_bad_names_raise_naming_the_file(bad):
    with pytest.raises(ValueError) as ei:
        parse_filename(bad)
    assert repr(bad) in str(ei.value)


def test_soft_labels_rejects_test_clip():
    with pytest.raises(ValueError, match="test_0001"):
        soft_labels(["A1_ang_int1_ver1", "test_0001"])


def test_challenge_round_trip_on_real_names():
    for n in REAL_NAMES[:60]:
        c = parse_filename(n)
        v = c.salience_vector()
        back = challenge_to_vector(vector_to_challenge(v), n)
        np.testing.assert_allclose(back, v, atol=1e-6)
