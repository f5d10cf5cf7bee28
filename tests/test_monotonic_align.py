"""Monotonic alignment search against a slow reference and its defining properties (spec §5.2 step 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monotonic_align import maximum_path


def _reference_path(scores: np.ndarray, t_y: int, t_x: int) -> np.ndarray:
    """Slow Viterbi over monotonic paths: start at token 0, each frame stays or advances by one."""
    neg = -np.inf
    best = np.full((t_y, t_x), neg)
    best[0, 0] = scores[0, 0]
    for y in range(1, t_y):
        for x in range(t_x):
            stay = best[y - 1, x]
            move = best[y - 1, x - 1] if x > 0 else neg
            if max(stay, move) > neg:
                best[y, x] = scores[y, x] + max(stay, move)
    path = np.zeros((t_y, t_x), dtype=np.int64)
    x = t_x - 1
    for y in range(t_y - 1, -1, -1):
        path[y, x] = 1
        if y > 0 and x > 0 and best[y - 1, x - 1] > best[y - 1, x]:
            x -= 1
    return path


def _random_case(rng, batch, max_y, max_x):
    t_xs = rng.integers(1, max_x + 1, size=batch)
    t_ys = np.array([rng.integers(tx, max_y + 1) for tx in t_xs])
    t_ys[0], t_xs[0] = max_y, min(max_x, max_y)  # one item fills the padded tensor
    scores = rng.normal(size=(batch, max_y, max_x)).astype(np.float32) * 3
    mask = np.zeros((batch, max_y, max_x), dtype=np.float32)
    for b in range(batch):
        mask[b, : t_ys[b], : t_xs[b]] = 1
    return scores, mask, t_ys, t_xs


@pytest.mark.parametrize("seed,batch,max_y,max_x", [(0, 1, 1, 1), (1, 1, 7, 7), (2, 4, 30, 9), (3, 6, 60, 25),
                                                     (4, 3, 120, 40)])
def test_matches_reference_and_properties(seed, batch, max_y, max_x):
    rng = np.random.default_rng(seed)
    scores, mask, t_ys, t_xs = _random_case(rng, batch, max_y, max_x)
    path = maximum_path(torch.from_numpy(scores), torch.from_numpy(mask))
    assert path.dtype == torch.float32 and path.shape == (batch, max_y, max_x)
    path = path.numpy()
    for b in range(batch):
        t_y, t_x = int(t_ys[b]), int(t_xs[b])
        p = path[b]
        assert p[t_y:].sum() == 0 and p[:, t_x:].sum() == 0, "padding must stay zero"
        p = p[:t_y, :t_x]
        np.testing.assert_array_equal(p, _reference_path(scores[b], t_y, t_x))
        assert (p.sum(1) == 1).all(), "each frame maps to exactly one token"
        assert (p.sum(0) >= 1).all(), "each token gets at least one frame"
        tokens = p.argmax(1)
        assert tokens[0] == 0 and tokens[-1] == t_x - 1
        assert set(np.diff(tokens)) <= {0, 1}, "monotonic, one token at a time"


def test_path_is_optimal_among_all_monotonic_paths():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(1, 6, 3)).astype(np.float32)
    path = maximum_path(torch.from_numpy(scores), torch.ones(1, 6, 3))[0].numpy()
    best = -np.inf
    # Every monotonic path of 6 frames over 3 tokens is fixed by its two advance points.
    for a in range(1, 6):
        for c in range(a + 1, 6):
            tokens = [0] * a + [1] * (c - a) + [2] * (6 - c)
            best = max(best, sum(scores[0, y, t] for y, t in enumerate(tokens)))
    assert (scores[0] * path).sum() == pytest.approx(best, abs=1e-5)


def test_equal_lengths_give_the_diagonal_and_dtype_follows_input():
    scores = torch.randn(2, 5, 5, dtype=torch.float64)
    path = maximum_path(scores, torch.ones(2, 5, 5, dtype=torch.float64))
    assert path.dtype == torch.float64
    assert torch.equal(path, torch.eye(5, dtype=torch.float64).expand(2, 5, 5))


def test_strong_scores_are_followed():
    # Token x is by far the best for frames 3x..3x+2: the path must follow that block diagonal.
    scores = torch.full((1, 12, 4), -10.0)
    for x in range(4):
        scores[0, 3 * x: 3 * x + 3, x] = 10.0
    path = maximum_path(scores, torch.ones(1, 12, 4))
    assert path[0].sum(0).tolist() == [3, 3, 3, 3]
    assert path[0].argmax(1).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_input_returns_cuda_path():
    scores = torch.randn(2, 20, 8)
    mask = torch.ones(2, 20, 8)
    cpu = maximum_path(scores, mask)
    gpu = maximum_path(scores.cuda(), mask.cuda())
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)


def test_half_precision_and_bool_masks_count_long_lengths_exactly():
    rng = np.random.default_rng(8)
    scores, mask, t_ys, t_xs = _random_case(rng, 2, 700, 30)
    expected = maximum_path(torch.from_numpy(scores), torch.from_numpy(mask))
    for m in (torch.from_numpy(mask).bfloat16(), torch.from_numpy(mask).bool()):
        assert torch.equal(maximum_path(torch.from_numpy(scores), m), expected)
