"""ACC_presence / ACC_salience / Score (docs/ARCHITECTURE.md section 3) on hand-worked cases, against a port of the organisers'
accuracy functions, and the trivial baselines on real fold names. Exact comparisons (tolerance 0) unless stated."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from blemore_core.labels import EMOTIONS, LABEL_SETS, soft_labels
from blemore_core.metrics import acc_presence, acc_salience, evaluate, score, trivial_baselines

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "blemore_fold_filenames.txt"


def vec(**kw: float) -> np.ndarray:
    v = np.zeros(6, dtype=np.float32)
    for e, s in kw.items():
        v[EMOTIONS.index(e)] = s / 100.0
    return v


def arr(*rows: np.ndarray) -> np.ndarray:
    return np.stack(rows)


# ----------------------------------------------------------------------------------------------------------------
# hand-worked cases


def test_presence_ignores_order_and_salience():
    truth = arr(vec(hap=70, disg=30))
    assert acc_presence(arr(vec(disg=70, hap=30)), truth) == 1.0
    assert acc_presence(arr(vec(hap=50, disg=50)), truth) == 1.0
    assert acc_presence(arr(vec(hap=100)), truth) == 0.0  # missing emotion
    assert acc_presence(arr(vec(hap=50, sad=50)), truth) == 0.0  # wrong emotion


def test_same_blend_listed_in_other_order_is_correct_on_both():
    pred = {"A1_mix_hap_disg_50_50_ver1": [{"emotion": "disg", "salience": 50.0}, {"emotion": "hap", "salience": 50.0}]}
    truth = {"A1_mix_hap_disg_50_50_ver1": [{"emotion": "hap", "salience": 50.0}, {"emotion": "disg", "salience": 50.0}]}
    assert acc_presence(pred, truth) == 1.0
    assert acc_salience(pred, truth) == 1.0
    assert score(pred, truth) == 1.0


def test_right_pair_wrong_ratio():
    pred, truth = arr(vec(ang=30, hap=70)), arr(vec(ang=50, hap=50))
    assert acc_presence(pred, truth) == 1.0
    assert acc_salience(pred, truth) == 0.0
    assert score(pred, truth) == 0.5
    # the reversed 70/30 is wrong too
    assert acc_salience(arr(vec(ang=70, hap=30)), arr(vec(ang=30, hap=70))) == 0.0


def test_single_prediction_on_blend_is_salience_wrong():
    assert acc_salience(arr(vec(hap=100)), arr(vec(hap=70, sad=30))) == 0.0


def test_single_truths_never_enter_salience():
    truth = arr(vec(hap=100), vec(ang=100), vec(hap=70, sad=30), vec(fea=50, sad=50))
    pred = arr(vec(hap=100), vec(sad=100), vec(hap=70, sad=30), vec(fea=70, sad=30))
    # presence: clips 0, 2, 3 right -> 3/4; salience over the two blends: clip 2 right -> 1/2
    assert acc_presence(pred, truth) == 0.75
    assert acc_salience(pred, truth) == 0.5
    assert score(pred, truth) == (0.75 + 0.5) / 2
    assert evaluate(pred, truth) == {"acc_presence": 0.75, "acc_salience": 0.5, "score": 0.625}


def test_no_blended_clip_gives_salience_zero():
    truth = arr(vec(hap=100), vec(neu=100))
    assert acc_salience(truth, truth) == 0.0
    assert acc_presence(truth, truth) == 1.0
    assert score(truth, truth) == 0.5


def test_unusual_pair_scored_as_the_challenge_scores_it():
    truth = arr(vec(hap=50, sad=50), vec(hap=70, sad=30))
    pred = arr(vec(hap=60, sad=40), vec(hap=69.6, sad=30.4))  # 69.6 rounds to 70 -> counts right, as round()
    assert acc_presence(pred, truth) == 1.0
    assert acc_salience(pred, truth) == 0.5


def test_float32_fractions_round_like_their_percents():
    truth = arr(vec(ang=70, fea=30))
    pred = np.array([[0.7, 0, 0.3, 0, 0, 0]], dtype=np.float32)  # 0.69999999 in float32
    assert acc_salience(pred, truth) == 1.0


def test_mapping_inputs_are_aligned_by_filename():
    names = ["A1_mix_ang_hap_70_30_ver1", "A1_sad_int2_ver1", "A2_neu_sit1_ver1"]
    truth = dict(zip(names, soft_labels(names), strict=True))
    pred = {
        "A2_neu_sit1_ver1.mov": [{"emotion": "neu", "salience": 100.0}],
        "A1_mix_ang_hap_70_30_ver1.mov": [{"emotion": "hap", "salience": 30.0}, {"emotion": "ang", "salience": 70.0}],
    }
    assert evaluate(pred, truth) == {"acc_presence": 1.0, "acc_salience": 1.0, "score": 1.0}
    with pytest.raises(ValueError, match="A9_sad_int1_ver1"):
        acc_presence({"A9_sad_int1_ver1": [{"emotion": "sad", "salience": 100.0}]}, truth)
    with pytest.raises(ValueError, match="both"):
        acc_presence(pred, soft_labels(names))


def test_bad_arrays_raise():
    with pytest.raises(ValueError, match="shape"):
        acc_presence(np.zeros((2, 6)), np.zeros((3, 6)))
    with pytest.raises(ValueError, match="N = 0"):
        acc_presence(np.zeros((0, 6)), np.zeros((0, 6)))
    with pytest.raises(ValueError, match="row 1"):
        acc_presence(np.array([[1, 0, 0, 0, 0, 0], [np.nan, 0, 0, 0, 0, 0]]), np.eye(6)[:2])


# ----------------------------------------------------------------------------------------------------------------
# against the organisers' accuracy functions on dicts


def _ref_presence(preds: dict, labels: dict) -> float:
    return np.mean([{x["emotion"] for x in labels[f]} == {x["emotion"] for x in p} for f, p in preds.items()]).item()


def _ref_salience(preds: dict, labels: dict) -> float:
    res = []
    for f, p in preds.items():
        label = labels[f]
        if len(label) != 2:
            continue
        if len(p) == 2:
            res.append({x["emotion"]: round(float(x["salience"])) for x in label}
                       == {x["emotion"]: round(float(x["salience"])) for x in p})
        else:
            res.append(False)
    return np.mean(res).item() if res else 0.0


def _random_label(rng: np.random.Generator, unusual: bool) -> list[dict]:
    s = LABEL_SETS[rng.integers(16)]
    if len(s) == 1:
        return [{"emotion": EMOTIONS[s[0]], "salience": 100.0}]
    if unusual:
        a = float(rng.choice([50, 70, 30, 60, 40, 69.6, 30.4, 70.5, 71.5, 50.5]))
        b = float(rng.choice([100 - a, 50, 30]))
    else:
        a, b = [(50.0, 50.0), (70.0, 30.0), (30.0, 70.0)][rng.integers(3)]
    order = [0, 1] if rng.random() < 0.5 else [1, 0]
    items = [{"emotion": EMOTIONS[s[0]], "salience": a}, {"emotion": EMOTIONS[s[1]], "salience": b}]
    return [items[k] for k in order]


def _to_array(d: dict, names: list[str]) -> np.ndarray:
    out = np.zeros((len(names), 6))
    for r, n in enumerate(names):
        for x in d[n]:
            out[r, EMOTIONS.index(x["emotion"])] = x["salience"] / 100.0
    return out


@pytest.mark.parametrize("seed", range(20))
def test_metrics_match_reference_random(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    names = [f"c{r}" for r in range(n)]
    labels = {f: _random_label(rng, unusual=False) for f in names}
    preds = {f: _random_label(rng, unusual=True) if rng.random() < 0.7 else labels[f] for f in names}
    p, y = _to_array(preds, names), _to_array(labels, names)
    assert acc_presence(p, y) == _ref_presence(preds, labels)
    assert acc_salience(p, y) == _ref_salience(preds, labels)
    assert acc_presence(preds, labels) == _ref_presence(preds, labels)  # the mapping path
    assert acc_salience(preds, labels) == _ref_salience(preds, labels)


# ----------------------------------------------------------------------------------------------------------------
# trivial baselines on the 522 real names of one fold


def test_trivial_baselines_on_real_fold_names():
    names = FIXTURE.read_text().split()
    n = len(names)
    assert n == 522
    truth = soft_labels(names)
    # counted from the names, independently of the labels module:
    singles = Counter(nm.split("_")[1] for nm in names if "_mix_" not in nm)  # hap 41, sad 41, others 40
    top = max(singles.values())
    best_single = min((e for e, c in singles.items() if c == top), key=EMOTIONS.index)  # tie -> lower index
    assert (best_single, top) == ("hap", 41)
    blends = [nm.split("_")[2:6] for nm in names if "_mix_" in nm]
    pairs = Counter(tuple(sorted((e1, e2), key=EMOTIONS.index)) for e1, e2, _, _ in blends)
    (pair, pair_count), = [(p, c) for p, c in pairs.items() if c == max(pairs.values())]
    assert (pair, pair_count) == (("ang", "hap"), 34)
    # 70 on the lower emotion index (ang), 30 on hap
    exact = sum(1 for e1, e2, s1, s2 in blends
                if {e1: int(s1), e2: int(s2)} == {pair[0]: 70, pair[1]: 30})
    assert exact == 12

    out = trivial_baselines(truth)
    assert out["single"]["label"] == [{"emotion": "hap", "salience": 100.0}]
    assert out["single"]["acc_presence"] == top / n
    assert out["single"]["acc_salience"] == 0.0
    assert out["single"]["score"] == top / n / 2
    assert out["blend"]["label"] == [{"emotion": "ang", "salience": 70.0}, {"emotion": "hap", "salience": 30.0}]
    assert out["blend"]["acc_presence"] == pair_count / n
    assert out["blend"]["acc_salience"] == exact / len(blends)
    assert out["blend"]["score"] == (pair_count / n + exact / len(blends)) / 2


def test_trivial_baselines_without_blends():
    truth = np.eye(6)[[0, 0, 1]]
    out = trivial_baselines(truth)
    assert set(out) == {"single"} and out["single"]["acc_presence"] == 2 / 3
