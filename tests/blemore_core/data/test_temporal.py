"""standardise_length and aggregate against simple per-clip loop references (docs/ARCHITECTURE.md 2.3)."""

import numpy as np
import pytest
import torch

from blemore_core.data import aggregate, standardise_length
from blemore_core.data.temporal import segment_bounds


def _clips(lengths, d=3, seed=0):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    frames = rng.standard_normal((int(offsets[-1]), d)).astype(np.float32)
    return frames, offsets


def _reference_eval(frames, offsets, i, L):
    """Per-clip loop: segment centres for T >= L, zero padding for T < L."""
    clip = frames[offsets[i] : offsets[i + 1]]
    T, D = clip.shape
    x = np.zeros((L, D), dtype=np.float32)
    m = np.zeros(L, dtype=bool)
    if T < L:
        x[:T], m[:T] = clip, True
        return x, m
    for j in range(L):
        s, e = (j * T) // L, ((j + 1) * T) // L
        x[j] = clip[(s + e - 1) // 2]
        m[j] = True
    return x, m


LENGTHS = [1, 2, 5, 7, 8, 9, 16, 17, 31, 64, 100]


@pytest.mark.parametrize("L", [1, 4, 8, 16])
def test_eval_mode_matches_loop_exactly(L):
    frames, offsets = _clips(LENGTHS)
    idx = torch.tensor([10, 0, 3, 3, 5, 1, 9, 2, 4, 6, 7, 8])
    x, mask = standardise_length(torch.from_numpy(frames), torch.from_numpy(offsets), idx, L, train=False, generator=None)
    assert x.shape == (len(idx), L, 3) and x.dtype == torch.float32
    assert mask.shape == (len(idx), L) and mask.dtype == torch.bool
    for b, i in enumerate(idx.tolist()):
        rx, rm = _reference_eval(frames, offsets, i, L)
        np.testing.assert_array_equal(x[b].numpy(), rx)
        np.testing.assert_array_equal(mask[b].numpy(), rm)


def test_accepts_numpy_readonly_memmap_like_input():
    frames, offsets = _clips(LENGTHS)
    frames.setflags(write=False)
    x, mask = standardise_length(frames, offsets, np.arange(len(LENGTHS)), 8, train=False)
    rx, _ = _reference_eval(frames, offsets, 9, 8)
    np.testing.assert_array_equal(x[9].numpy(), rx)


def test_train_mode_frames_lie_in_their_segments_and_are_reproducible():
    L = 8
    lengths = [8, 9, 15, 16, 17, 40, 100, 3]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # frame value = its position inside its clip, so the chosen position can be read back
    frames = np.concatenate([np.arange(t) for t in lengths]).astype(np.float32)[:, None]
    idx = torch.arange(len(lengths)).repeat(20)
    g = torch.Generator().manual_seed(123)
    x, mask = standardise_length(torch.from_numpy(frames), torch.from_numpy(offsets), idx, L, True, g)
    T = torch.tensor(lengths)[idx]
    start, end = segment_bounds(T, L)
    pos = x[..., 0].to(torch.int64)
    long = T >= L
    assert bool(((pos >= start) & (pos < end))[long].all())
    assert bool(mask[long].all())
    # short clip: real frames then zero padding
    short = ~long
    assert bool((pos[short][:, :3] == torch.arange(3)).all()) and not bool(mask[short][:, 3:].any())
    # randomness: not always the centre, and over many draws every frame of a long segment is reachable
    centre = (start + end - 1) // 2
    assert bool((pos != centre)[long].any())
    assert len(set(pos[idx == 6][:, 0].tolist())) > 5    # clip of 100 frames, segment 0 has 12 frames
    # same generator seed -> same batch; another seed -> another batch
    x2, _ = standardise_length(torch.from_numpy(frames), torch.from_numpy(offsets), idx, L, True,
                               torch.Generator().manual_seed(123))
    x3, _ = standardise_length(torch.from_numpy(frames), torch.from_numpy(offsets), idx, L, True,
                               torch.Generator().manual_seed(124))
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_standardise_rejects_bad_arguments():
    frames, offsets = _clips([3, 4])
    with pytest.raises(ValueError, match="L must be"):
        standardise_length(frames, offsets, [0], 0, train=False)
    with pytest.raises(ValueError, match="out of range"):
        standardise_length(frames, offsets, [2], 4, train=False)


def _reference_aggregate(frames, offsets):
    rows = []
    for i in range(len(offsets) - 1):
        c = frames[offsets[i] : offsets[i + 1]].astype(np.float64)
        stats = [c.mean(0), c.std(0)] + [np.percentile(c, q, axis=0) for q in (10, 25, 50, 75, 90)]
        rows.append(np.concatenate(stats))
    return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize("chunk", [1 << 24, 50])   # 50 elements forces one clip per chunk
def test_aggregate_matches_numpy_loop(chunk):
    frames, offsets = _clips([1, 2, 3, 4, 5, 10, 11, 37, 100], d=5, seed=3)
    frames *= 10.0
    out = aggregate(frames, offsets, chunk_elements=chunk)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (9, 35)
    np.testing.assert_allclose(out, _reference_aggregate(frames, offsets), rtol=0, atol=1e-5)


def test_aggregate_hand_worked_and_layout():
    # one clip, D = 2: column 0 = 1..5, column 1 = constant 7
    frames = np.array([[1, 7], [2, 7], [3, 7], [4, 7], [5, 7]], dtype=np.float32)
    out = aggregate(torch.from_numpy(frames), torch.tensor([0, 5]))
    assert isinstance(out, torch.Tensor)
    std0 = np.sqrt(2.0)   # population std of 1..5
    # stat-major: [mean0, mean1, std0, std1, p10_0, p10_1, ...]; p10 of 1..5 = 1 + 0.4 = 1.4
    want = [3, 7, std0, 0, 1.4, 7, 2, 7, 3, 7, 4, 7, 4.6, 7]
    np.testing.assert_allclose(out.numpy()[0], want, atol=1e-6)


def test_aggregate_rejects_empty_clip():
    frames, _ = _clips([3])
    with pytest.raises(ValueError, match="T = 0"):
        aggregate(frames, np.array([0, 0, 3]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
def test_train_mode_on_cuda_with_a_cuda_generator_matches_eval_shapes():
    # the fold trainer keeps frames on the GPU and seeds a CUDA generator: the training draw must run there
    rng = np.random.default_rng(0)
    lengths = np.array([3, 9, 20])
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), device="cuda")
    frames = torch.tensor(rng.normal(size=(int(lengths.sum()), 4)), dtype=torch.float32, device="cuda")
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    x, m = standardise_length(frames, offsets, torch.arange(3, device="cuda"), 5, train=True, generator=gen)
    assert x.device.type == "cuda" and x.shape == (3, 5, 4)
    assert m.sum(dim=1).tolist() == [3, 5, 5]
