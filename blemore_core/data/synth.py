"""Synthetic BlEmoRe release: the exact real layout with a known signal (docs/ARCHITECTURE.md section 2.4).

Layout and composition
----------------------
:func:`generate_release` writes the layout of docs/ARCHITECTURE.md section 2.1 (see :mod:`blemore_core.data.specs`) plus
``test_labels.csv`` (synthetic only, so exported submissions can be scored) and ``manifest.json`` (the
generator's ground truth). Per actor it mirrors the real release (tests/fixtures/blemore_fold_filenames.txt):
a *full* actor has 54 clips at ver1 (5 emotions x 4 intensities, neutral x 4 situations, 10 pairs x 3 ratios),
some full actors have retakes (ver2, and chains up to ver4, mostly of blends), *partial* actors have only
the 24 singles + neutral clips (training partial actors carry 2 single-emotion retakes, like the real A428),
and *blend-partial* actors (like the real A412) have the singles, neutral and only 5 of the 10 blend pairs,
with 25 retakes of those blends.

* ``demo`` and ``full``: 43 training actors in 5 actor-disjoint folds (sizes 9, 9, 9, 8, 8): 39 full (170
  retakes spread over 15 of them), 2 partial (26 clips), 2 like the real A412 (64 clips: the blends of only
  5 pairs, 25 retakes of them) -> exactly 2,456 clips; 15 test actors (9 full, 6 partial with 18 of
  their 24 single/neutral clips) -> exactly 594 clips named ``test_0001``..``test_0594`` in shuffled order, so
  names do not leak labels.
* ``tiny``: exactly the real fold's composition: 10 training actors (2 per fold: 8 full, 1 like A412 with
  64 clips, 1 partial of 26) = 522 clips, and 2 test actors (1 full, 1 partial) = 72 clips.

Signal model
------------
A clip has an emotion weight vector ``w`` (6,) = its salience fractions x an intensity gain (single
intensity 1..4 -> 0.55, 0.7, 0.85, 1.0; neutral 1.0; blends 0.85). Per emotion there is a prototype
``P_j`` (unit norm, K = 16 latent dims). Encoder ``e`` has per-emotion informativeness ``r_e`` (6,)
(= a scalar informativeness ``info_e`` x per-emotion factors in [0.5, 1.5] with mean 1), a random projection
``A_e`` (D_e, K), an actor projection ``B_e``, a per-dimension offset and scale, and noise levels. Frame t of
clip c seen by encoder e is::

    x_t = scale_e * (A_e @ (env(t) * sum_j w_j r_ej P_j + s_clip * eps_c) + B_e @ a_actor
                     + s_clipnoise * n_ce + s_frame * m_cet) + offset_e

with ``env(t)`` a rise-and-plateau envelope in [0.5, 1], ``eps_c`` clip-level latent jitter shared by all
encoders, ``a_actor`` an actor style vector, ``n_ce`` clip-level noise of the encoder (not averaged away by
aggregation) and ``m_cet`` temporally smoothed frame noise. OpenFace CSVs see the same latent through a
projection to 8 emotion logits (``emotion_index`` = argmax), gaze yaw/pitch and 8 AU intensities in [0, 5].
``videoswin`` and ``clip`` are near-uninformative; ``hicmae`` and ``videomae`` the most informative; the
baseline pair (imagebind, wavlm) is set so that the organisers' MLP lands near ACC_presence 0.3 on demo.
``manifest.json`` records ``info_e`` (the ground truth a rank-aware gate should recover), ``r_e``, dims,
rates, noise levels and counts.

Rates: clip durations ~ U(2, 5) s; an encoder with rate ``rate`` Hz gets ``max(1, round(duration * rate))``
frames. ``full``: per-frame video encoders (imagebind, clip, openface) at 15 fps (half the real 30 fps, to keep
disk reasonable), videomae 4.57 Hz (~16 per clip), hicmae 1.14 Hz (~4 per clip), wavlm/hubert 50 Hz,
videoswin 0.86 Hz (2..4 per clip), real dims. ``demo``: dims 11..64 and 2..40 frames per clip. ``tiny``:
dims 4..16 and 1..15 frames.

Determinism: same (profile, seed) -> same bytes. Every random draw comes from a ``numpy.random.Generator``
seeded by ``[seed, stream, ...]`` (per encoder and per clip for frames), so generating a subset of encoders
gives the same bytes for those encoders. Output is written into ``<out>.tmp-*`` and renamed into place
when complete: an interrupted run leaves nothing that looks like a release.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from ..labels import EMOTIONS, parse_filename
from ..names import cache_root as _cache_root  # the parameter of ensure_demo_release is named cache_root
from .specs import (
    ENCODERS,
    OPENFACE_AUS,
    OPENFACE_COLUMNS,
    OPENFACE_EMOTION_CLASSES,
    SPLIT_DIRS,
    TEST_LABEL_COLUMNS,
    TEST_LABELS,
    TEST_METADATA,
    TRAIN_METADATA,
    encoder_spec,
)

GENERATOR_VERSION = 2
LATENT_DIM = 16
_BASIC = tuple(e for e in EMOTIONS if e != "neu")                         # ang, disg, fea, hap, sad
_PAIRS = tuple(combinations(_BASIC, 2))                                    # 10 pairs in emotion order
_RATIOS = ((30, 70), (50, 50), (70, 30))
_INTENSITY_GAIN = {1: 0.55, 2: 0.7, 3: 0.85, 4: 1.0}
_BLEND_GAIN = 0.85

#: scalar informativeness per encoder (ground truth recorded in manifest.json)
INFORMATIVENESS: dict[str, float] = {
    "imagebind": 0.50, "videomae": 0.80, "hicmae": 1.00, "wavlm": 0.45,
    "hubert": 0.35, "openface": 0.30, "clip": 0.12, "videoswin": 0.03,
}


@dataclass(frozen=True)
class Profile:
    """Size settings of one synthetic profile.

    Attributes:
        name: ``tiny``, ``demo`` or ``full``.
        dims: encoder key -> D (openface is always 11).
        rates: encoder key -> frames per second of clip.
        train_full / train_partial / train_retakes: full actors, partial actors and retakes spread over full
            actors in the training split; ``retake_actors`` of the full actors carry the retakes.
        train_blend_partial: actors like the real A412: all singles and neutral clips, the blends of only the
            first 5 pairs (ang+disg, ang+fea, ang+hap, ang+sad, disg+fea; 15 clips) and 25 retakes of those
            blends -> 64 clips.
        test_full / test_partial / test_partial_clips: test actors and clips per partial test actor.
        clip_noise / frame_noise: encoder-space noise levels (clip-level and per frame) at the reference dims
            and rates (:data:`REFERENCE_DIMS`, :data:`REFERENCE_RATES`); scaled by sqrt(D / D_ref) and
            sqrt(rate / rate_ref) so that aggregation over more dimensions or frames does not make a profile easier.
        shared_noise: clip-level noise of the expression itself (latent, shared by every encoder, scaled by each
            encoder's informativeness): no fusion can average it away; caps what combining encoders gains.
        latent_noise: clip-level latent noise of each encoder (independent across encoders).
    """

    name: str
    dims: dict
    rates: dict
    train_full: int
    train_partial: int
    train_retakes: int
    retake_actors: int
    train_blend_partial: int
    test_full: int
    test_partial: int
    test_partial_clips: int
    clip_noise: float = 0.5
    frame_noise: float = 1.0
    shared_noise: float = 0.16
    latent_noise: float = 0.10


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        "tiny",
        dims={"imagebind": 16, "videomae": 12, "hicmae": 16, "wavlm": 16, "hubert": 8, "openface": 11,
              "clip": 8, "videoswin": 4},
        rates={"imagebind": 2.0, "videomae": 1.5, "hicmae": 1.0, "wavlm": 3.0, "hubert": 3.0, "openface": 2.0,
               "clip": 2.0, "videoswin": 0.86},
        train_full=8, train_partial=1, train_retakes=0, retake_actors=0, train_blend_partial=1,
        test_full=1, test_partial=1, test_partial_clips=18,
    ),
    "demo": Profile(
        "demo",
        dims={"imagebind": 64, "videomae": 48, "hicmae": 64, "wavlm": 64, "hubert": 48, "openface": 11,
              "clip": 32, "videoswin": 32},
        rates={"imagebind": 6.0, "videomae": 3.0, "hicmae": 1.14, "wavlm": 8.0, "hubert": 8.0, "openface": 6.0,
               "clip": 6.0, "videoswin": 0.86},
        train_full=39, train_partial=2, train_retakes=170, retake_actors=15, train_blend_partial=2,
        test_full=9, test_partial=6, test_partial_clips=18,
    ),
    "full": Profile(
        "full",
        dims={"imagebind": 1024, "videomae": 1408, "hicmae": 2048, "wavlm": 1024, "hubert": 1024, "openface": 11,
              "clip": 768, "videoswin": 1024},
        rates={"imagebind": 15.0, "videomae": 4.57, "hicmae": 1.14, "wavlm": 50.0, "hubert": 50.0,
               "openface": 15.0, "clip": 15.0, "videoswin": 0.86},
        train_full=39, train_partial=2, train_retakes=170, retake_actors=15, train_blend_partial=2,
        test_full=9, test_partial=6, test_partial_clips=18,
    ),
}
N_FOLDS = 5
#: encoder-space noise is defined at these dims and rates (the demo profile's), see :class:`Profile`
REFERENCE_DIMS: dict[str, int] = dict(PROFILES["demo"].dims)
REFERENCE_RATES: dict[str, float] = dict(PROFILES["demo"].rates)


# ----------------------------------------------------------------------------------------------- composition
def _full_clips(actor: int) -> list[str]:
    singles = [f"A{actor}_{e}_int{i}_ver1" for e in _BASIC for i in range(1, 5)]
    neutral = [f"A{actor}_neu_sit{s}_ver1" for s in range(1, 5)]
    blends = [f"A{actor}_mix_{a}_{b}_{s1}_{s2}_ver1" for a, b in _PAIRS for s1, s2 in _RATIOS]
    return singles + neutral + blends


def _with_version(name: str, v: int) -> str:
    return name.rsplit("_ver", 1)[0] + f"_ver{v}"


def _add_retakes(base: list[str], n: int, rng: np.random.Generator, pool: list[str]) -> list[str]:
    """n retakes: new ver2 of pool clips, or a further version (up to ver4) of an existing chain."""
    chains: dict[str, int] = {}
    order = list(rng.permutation(len(pool)))
    out: list[str] = []
    while len(out) < n:
        extendable = [c for c, v in chains.items() if v < 4]
        if extendable and (not order or rng.random() < 0.35):
            c = extendable[int(rng.integers(len(extendable)))]
        elif order:
            c = pool[order.pop()]
            chains[c] = 1
        else:
            raise ValueError("too many retakes for one actor")
        chains[c] += 1
        out.append(_with_version(c, chains[c]))
    return base + out


def _split_count(total: int, parts: int, rng: np.random.Generator, low: int = 2) -> list[int]:
    if parts == 0:
        return []
    extra = rng.multinomial(total - low * parts, np.ones(parts) / parts)
    return [low + int(x) for x in extra]


def _balanced_folds(counts: dict[int, int], rng: np.random.Generator) -> dict[int, int]:
    """Actor -> fold: actors by clip count (largest first, random tie order) go to the fold with the fewest
    clips among folds below their actor quota (n // 5, the first n % 5 folds one more)."""
    actors = list(counts)
    order = sorted(rng.permutation(len(actors)).tolist(), key=lambda k: -counts[actors[k]])
    n = len(actors)
    quota = [n // N_FOLDS + (1 if f < n % N_FOLDS else 0) for f in range(N_FOLDS)]
    load, members = [0] * N_FOLDS, [0] * N_FOLDS
    out = {}
    for k in order:
        open_folds = [f for f in range(N_FOLDS) if members[f] < quota[f]]
        f = min(open_folds, key=lambda f: (load[f], f))
        out[actors[k]] = f
        load[f] += counts[actors[k]]
        members[f] += 1
    return out


def compose(profile: Profile, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clip lists of both splits: train rows (filename, actor, fold) and test rows (filename, actor, label name).

    Returns:
        (train, test) DataFrames; train sorted by filename; test in test-id order with the hidden clip name
        in column ``clip``.
    """
    n_train = profile.train_full + profile.train_partial + profile.train_blend_partial
    n_test = profile.test_full + profile.test_partial
    ids = np.sort(rng.choice(np.arange(1, 600), size=n_train + n_test, replace=False))
    ids = ids[rng.permutation(len(ids))]
    train_ids, test_ids = ids[:n_train], ids[n_train:]
    # training actors: which are partial, which carry retakes, which fold
    special = train_ids[rng.choice(n_train, profile.train_partial + profile.train_blend_partial, replace=False)]
    partial = set(special[: profile.train_partial].tolist())
    blend_partial = set(special[profile.train_partial :].tolist())
    full_ids = [a for a in train_ids.tolist() if a not in partial and a not in blend_partial]
    retake_ids = [full_ids[i] for i in rng.choice(len(full_ids), profile.retake_actors, replace=False)]
    counts = _split_count(profile.train_retakes, profile.retake_actors, rng)
    retakes = dict(zip(retake_ids, counts, strict=True))
    per_actor: dict[int, list[str]] = {}
    for a in train_ids.tolist():
        clips = _full_clips(a)
        if a in partial:
            base = clips[:24]
            names = _add_retakes(base, 2, rng, clips[:20])
        elif a in blend_partial:
            base = clips[:24] + clips[24 : 24 + 15]          # first 5 pairs x 3 ratios, like A412
            names = _add_retakes(base, 25, rng, clips[24 : 24 + 15])
        elif a in retakes:
            # retakes mostly of blends, like the real A412
            names = _add_retakes(clips, retakes[a], rng, clips[24:] + clips[:20])
        else:
            names = clips
        per_actor[a] = names
    fold_of = _balanced_folds({a: len(v) for a, v in per_actor.items()}, rng)
    rows = [(n, a, fold_of[a]) for a, names in per_actor.items() for n in names]
    train = pd.DataFrame(rows, columns=["filename", "actor", "fold"]).sort_values("filename", kind="stable")
    train = train.reset_index(drop=True)
    trows = []
    for k, a in enumerate(test_ids.tolist()):
        clips = _full_clips(a)
        if k >= profile.test_full:
            sel = sorted(rng.choice(24, profile.test_partial_clips, replace=False).tolist())
            clips = [clips[i] for i in sel]
        trows += [(c, a) for c in clips]
    perm = rng.permutation(len(trows))
    test = pd.DataFrame([trows[i] for i in perm], columns=["clip", "actor"])
    test.insert(0, "filename", [f"test_{i + 1:04d}" for i in range(len(test))])
    return train, test


def _label_columns(names: list[str]) -> dict[str, list]:
    """Metadata label columns (mix, emotion_1, ...) of clip names, in the organisers' form (NaN = empty)."""
    cols: dict[str, list] = {k: [] for k in ("mix", "emotion_1", "version", "intensity_level", "situation",
                                             "emotion_2", "emotion_1_salience", "emotion_2_salience")}
    for n in names:
        c = parse_filename(n)
        blend = c.kind == "blend"
        cols["mix"].append(int(blend))
        cols["emotion_1"].append(c.emotions[0])
        cols["version"].append(c.version)
        cols["intensity_level"].append(float(c.intensity) if c.intensity else np.nan)
        cols["situation"].append(float(c.situation) if c.situation else np.nan)
        cols["emotion_2"].append(c.emotions[1] if blend else np.nan)
        cols["emotion_1_salience"].append(float(c.saliences[0]) if blend else np.nan)
        cols["emotion_2_salience"].append(float(c.saliences[1]) if blend else np.nan)
    return cols


# ------------------------------------------------------------------------------------------------- signal
def _emotion_weights(names: list[str]) -> np.ndarray:
    w = np.zeros((len(names), len(EMOTIONS)), dtype=np.float64)
    for i, n in enumerate(names):
        c = parse_filename(n)
        gain = _INTENSITY_GAIN[c.intensity] if c.kind == "single" else (_BLEND_GAIN if c.kind == "blend" else 1.0)
        w[i] = c.salience_vector() * gain
    return w


def _encoder_params(key: str, dim: int, seed: int) -> dict:
    k = list(ENCODERS).index(key)
    rng = np.random.default_rng([seed, 1, k])
    info = INFORMATIVENESS[key]
    factors = rng.uniform(0.5, 1.5, size=len(EMOTIONS))
    factors /= factors.mean()
    out_dim = {"openface": OPENFACE_EMOTION_CLASSES + 2 + len(OPENFACE_AUS)}.get(key, dim)
    return {
        "r": info * factors,
        "A": rng.standard_normal((out_dim, LATENT_DIM)) / np.sqrt(LATENT_DIM) * 3.0,
        "B": rng.standard_normal((out_dim, LATENT_DIM)) / np.sqrt(LATENT_DIM),
        "offset": rng.normal(0.0, 0.5, size=out_dim),
        "scale": rng.lognormal(0.0, 0.5, size=out_dim),
    }


def _write_openface(path: Path, y: np.ndarray, rate: float) -> None:
    """y (T, 18): 8 emotion logits, 2 gaze, 8 AU pre-activations -> OpenFace 3 CSV."""
    t = y.shape[0]
    emo = y[:, :OPENFACE_EMOTION_CLASSES].argmax(1)
    gaze = 0.15 * y[:, OPENFACE_EMOTION_CLASSES : OPENFACE_EMOTION_CLASSES + 2]
    aus = np.clip(1.0 + 0.8 * y[:, OPENFACE_EMOTION_CLASSES + 2 :], 0.0, 5.0)
    buf = io.StringIO()
    buf.write(",".join(OPENFACE_COLUMNS) + "\n")
    for i in range(t):
        vals = ",".join(f"{v:.5f}" for v in np.concatenate([gaze[i], aus[i]]))
        buf.write(f"{i},{i / rate:.4f},{int(emo[i])},{vals}\n")
    path.write_bytes(buf.getvalue().encode())


def _write_encoder(
    spec_key: str, dim: int, rate: float, names: list[str], out_dir: Path, uid: np.ndarray, latent: np.ndarray,
    weights: np.ndarray, actor_style: np.ndarray, durations: np.ndarray, params: dict, profile: Profile,
    seed: int, bar, shared: np.ndarray,
) -> None:
    spec = encoder_spec(spec_key)
    k = list(ENCODERS).index(spec_key)
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = latent                                     # (6, K)
    r = params["r"]
    # clip-level draws seeded by the split's first uid, so train and test clips never share noise
    clip_rng = np.random.default_rng([seed, 3, k, int(uid[0])])
    clip_noise = clip_rng.standard_normal((len(names), params["A"].shape[0]))
    eta = np.random.default_rng([seed, 7, k, int(uid[0])]).standard_normal((len(names), LATENT_DIM))
    emo = (weights * r[None, :]) @ protos                # (N, K) emotion part per clip
    # clip-level latent noise: the expression's own (shared by all encoders, seen through info_e) + the encoder's
    base = INFORMATIVENESS[spec_key] * profile.shared_noise * shared + profile.latent_noise * eta
    # encoder-space noise defined at the reference dim and rate: more dims or frames do not average it away
    ref_dim = REFERENCE_DIMS[spec_key] if spec.kind != "openface_csv" else dim
    s_clip = profile.clip_noise * np.sqrt(dim / ref_dim)
    s_frame = profile.frame_noise * np.sqrt(dim / ref_dim) * np.sqrt(max(rate / REFERENCE_RATES[spec_key], 1e-9))
    for i, name in enumerate(names):
        rng = np.random.default_rng([seed, 4, k, int(uid[i])])
        t = max(1, int(round(durations[i] * rate)))
        env = 0.5 + 0.5 * np.minimum(1.0, np.linspace(0.0, 1.6, t))
        z = env[:, None] * emo[i][None, :] + base[i][None, :]    # (T, K)
        y = z @ params["A"].T + actor_style[i] @ params["B"].T + s_clip * clip_noise[i]
        eps = rng.standard_normal((t + 1, y.shape[1]))
        y = y + s_frame * (eps[1:] + eps[:-1]) / np.sqrt(2.0)
        if spec.kind == "openface_csv":
            _write_openface(out_dir / f"{name}.csv", y, rate)
        else:
            x = (y * params["scale"] + params["offset"]).astype(np.float32)
            with open(out_dir / f"{name}.npy", "wb") as f:
                np.save(f, x)
        if bar is not None:
            bar.update(1)


def _clip_latents(n_total: int, actors: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 2])
    protos = rng.standard_normal((len(EMOTIONS), LATENT_DIM))
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    durations = rng.uniform(2.0, 5.0, size=n_total)
    ua = np.unique(actors)
    style = rng.standard_normal((len(ua), LATENT_DIM)) * 0.6
    actor_style = style[np.searchsorted(ua, actors)]
    return protos, durations, actor_style


def generate_release(
    out: str | os.PathLike,
    profile: str | Profile = "demo",
    seed: int = 0,
    encoders: list[str] | tuple[str, ...] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic BlEmoRe release (docs/ARCHITECTURE.md section 2.4) to ``out`` and return its path.

    Args:
        out: target directory; must not exist unless ``overwrite``.
        profile: ``tiny``, ``demo`` or ``full`` (see :data:`PROFILES` and the module docstring), or a
            :class:`Profile` (e.g. ``dataclasses.replace(PROFILES["demo"], shared_noise=0.2)`` for calibration).
        seed: generator seed; same (profile, seed, encoder) -> same bytes.
        encoders: encoder keys to write (default: all 8); metadata, labels and manifest are always written.
        progress: show a tqdm progress bar.
        overwrite: replace an existing ``out``.
    Returns:
        ``Path(out)``, complete (written under a temporary name, then renamed).
    Raises:
        ValueError: unknown profile or encoder key. FileExistsError: ``out`` exists and not ``overwrite``.
    """
    from tqdm.auto import tqdm

    if isinstance(profile, Profile):
        prof = profile
    elif profile not in PROFILES:
        raise ValueError(f"profile: unknown profile {profile!r} (valid: {', '.join(PROFILES)})")
    else:
        prof = PROFILES[profile]
    keys = list(ENCODERS) if encoders is None else [encoder_spec(e).key for e in encoders]
    if len(set(keys)) != len(keys):
        raise ValueError(f"encoders: duplicate encoder key in {keys}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True / --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _generate_into(tmp, prof, int(seed), keys, progress, tqdm)
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, trash)
            os.rename(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _generate_into(root: Path, prof: Profile, seed: int, keys: list[str], progress: bool, tqdm) -> None:
    rng = np.random.default_rng([seed, 0])
    train, test = compose(prof, rng)
    genders = {a: ("f" if rng.random() < 0.5 else "m") for a in sorted(set(train["actor"]) | set(test["actor"]))}

    # metadata
    names = train["filename"].tolist()
    meta = pd.DataFrame({"filename": names, "video_id": [f"A{a}" for a in train["actor"]],
                         "gender": [genders[a] for a in train["actor"]]})
    for col, vals in _label_columns(names).items():
        meta[col] = vals
    meta["fold"] = train["fold"].to_numpy()
    meta = meta[["filename", "video_id", "gender", "mix", "emotion_1", "version", "intensity_level", "situation",
                 "emotion_2", "emotion_1_salience", "emotion_2_salience", "fold"]]
    meta.to_csv(root / TRAIN_METADATA, index=False, lineterminator="\n")
    pd.DataFrame({"filename": test["filename"]}).to_csv(root / TEST_METADATA, index=False, lineterminator="\n")
    tl = pd.DataFrame({"filename": test["filename"]})
    for col, vals in _label_columns(test["clip"].tolist()).items():
        tl[col] = vals
    tl[list(TEST_LABEL_COLUMNS)].to_csv(root / TEST_LABELS, index=False, lineterminator="\n")

    # latent state shared by all encoders: train clips get uid 0..N-1, test clips N..N+M-1
    all_clips = names + test["clip"].tolist()
    actors = np.concatenate([train["actor"].to_numpy(), test["actor"].to_numpy()])
    protos, durations, actor_style = _clip_latents(len(all_clips), actors, seed)
    weights = _emotion_weights(all_clips)
    # clip-level jitter of the emotional expression, shared across encoders
    jitter = np.random.default_rng([seed, 5]).standard_normal((len(all_clips), len(EMOTIONS))) * 0.15
    weights = weights * (1.0 + jitter) * (weights > 0)
    # the expression's own clip-level latent noise, shared by every encoder (no fusion averages it away)
    shared = np.random.default_rng([seed, 6]).standard_normal((len(all_clips), LATENT_DIM))
    uid = np.arange(len(all_clips))
    n_train = len(names)
    split_rows = {"train": (names, slice(0, n_train)),
                  "test": (test["filename"].tolist(), slice(n_train, len(all_clips)))}
    enc_manifest = {}
    total = len(keys) * len(all_clips)
    with tqdm(total=total, desc=f"synth {prof.name}", disable=not progress, unit="clip") as bar:
        for key in keys:
            spec = encoder_spec(key)
            dim, rate = prof.dims[key], prof.rates[key]
            params = _encoder_params(key, dim, seed)
            for split, (fnames, sl) in split_rows.items():
                out_dir = root / SPLIT_DIRS[split] / spec.split_folder(split)
                _write_encoder(key, dim, rate, fnames, out_dir, uid[sl], protos, weights[sl], actor_style[sl],
                               durations[sl], params, prof, seed, bar, shared[sl])
            enc_manifest[key] = {
                "folder": spec.folder, "kind": spec.kind, "dim": dim, "rate_hz": rate,
                "informativeness": INFORMATIVENESS[key],
                "per_emotion_informativeness": {e: round(float(v), 6) for e, v in zip(EMOTIONS, params["r"], strict=True)},
                "clip_noise": prof.clip_noise, "frame_noise": prof.frame_noise,
                "shared_noise": prof.shared_noise, "latent_noise": prof.latent_noise,
            }
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "profile": prof.name,
        "seed": seed,
        "latent_dim": LATENT_DIM,
        "encoders": enc_manifest,
        "informativeness": {k: INFORMATIVENESS[k] for k in keys},
        "duration_s": [2.0, 5.0],
        "counts": {
            "train_clips": n_train, "test_clips": len(test), "train_actors": int(train["actor"].nunique()),
            "test_actors": int(test["actor"].nunique()), "folds": N_FOLDS,
            "clips_per_fold": {str(k): int(v) for k, v in train["fold"].value_counts().sort_index().items()},
        },
    }
    (root / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")


def ensure_demo_release(cache_root: str | os.PathLike | None = None, progress: bool = False) -> Path:
    """Generate the demo profile (seed 0) once and return its path.

    The release lives at ``<cache_root>/synthetic/demo-seed0`` (cache_root: argument, else ``$BLEMORE_CACHE``,
    else ``~/.cache/blemore``). Concurrent callers serialise on an ``fcntl`` lock file next to it; the release
    itself appears by an atomic rename, so a reader never sees a half-written tree. A release written by an
    older generator (``generator_version`` in its manifest) is regenerated.
    """
    root = Path(cache_root).expanduser() if cache_root is not None else _cache_root()
    target = root / "synthetic" / "demo-seed0"
    if _current(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / "demo-seed0.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if not _current(target):
                generate_release(target, "demo", 0, progress=progress, overwrite=target.exists())
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return target


def _current(target: Path) -> bool:
    """True when ``target`` holds a complete release of this generator version."""
    try:
        return json.loads((target / "manifest.json").read_text()).get("generator_version") == GENERATOR_VERSION
    except (OSError, ValueError):
        return False
