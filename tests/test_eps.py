"""Exposed-patch selection: the fast paths equal the official per-patch algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from sep_bench.sep.eps import (
    candidate_positions,
    candidate_scores,
    ensure_min_size,
    patch_scores,
    score_map,
    select_patch,
    texture_integral,
    texture_score,
)


def official_score(patch: np.ndarray) -> int:
    """The official compute_complexity, written out here independently of the package."""
    p = np.array(patch).astype(np.int64)
    res = np.sum(np.abs(p[:, :-1, :] - p[:, 1:, :])) + np.sum(np.abs(p[:-1, :, :] - p[1:, :, :]))
    res += np.sum(np.abs(p[:-1, :-1, :] - p[1:, 1:, :])) + np.sum(np.abs(p[1:, :-1, :] - p[:-1, 1:, :]))
    return int(res)


def official_select(img: np.ndarray, ys, xs, size: int) -> tuple[int, int]:
    """The official loop given the candidate positions: crop each, sort by score (stable), take the first."""
    crops = [(int(y), int(x), img[y : y + size, x : x + size]) for y, x in zip(ys, xs)]
    crops.sort(key=lambda c: official_score(c[2]))
    return crops[0][0], crops[0][1]


def _images(rng):
    yield rng.integers(0, 256, (48, 57, 3), dtype=np.uint8)  # noise
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (9, 10, 3), dtype=np.uint8), 6, 0), 6, 1)
    yield smooth  # flat blocks: many equal scores
    flat = np.full((40, 40, 3), 7, np.uint8)
    flat[20:, 20:] = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    yield flat  # exact ties (score 0)
    yield np.full((33, 70, 3), 255, np.uint8)
    yield rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [1, 2, 5, 32])
def test_scores_equal_the_official_formula(size):
    rng = np.random.default_rng(size)
    for img in _images(rng):
        h, w = img.shape[:2]
        if min(h, w) < size:
            continue
        ys, xs = candidate_positions(h, w, size, 200, rng)
        expected = np.array([official_score(img[y : y + size, x : x + size]) for y, x in zip(ys, xs)])
        assert np.array_equal(candidate_scores(img, ys, xs, size), expected)
        assert np.array_equal(patch_scores(texture_integral(img), ys, xs, size), expected)
        assert [texture_score(img[y : y + size, x : x + size]) for y, x in zip(ys[:5], xs[:5])] == expected[:5].tolist()


def test_official_mode_picks_the_official_patch():
    rng = np.random.default_rng(0)
    for img in _images(rng):
        h, w = img.shape[:2]
        for n in (1, 64, 256):
            seed = int(rng.integers(1 << 30))
            ys, xs = candidate_positions(h, w, 32, n, np.random.default_rng(seed))
            got = select_patch(img, np.random.default_rng(seed), size=32, n_candidates=n, mode="official")
            assert got == official_select(img, ys, xs, 32)


def test_ties_go_to_the_first_candidate():
    img = np.zeros((64, 64, 3), np.uint8)  # every patch scores 0
    ys, xs = candidate_positions(64, 64, 32, 50, np.random.default_rng(3))
    assert select_patch(img, np.random.default_rng(3), n_candidates=50) == (int(ys[0]), int(xs[0]))
    assert select_patch(img, np.random.default_rng(3), n_candidates=50, mode="exhaustive") == (0, 0)


@pytest.mark.parametrize("stride", [1, 3])
def test_exhaustive_equals_brute_force(stride):
    rng = np.random.default_rng(stride)
    for img in _images(rng):
        h, w = img.shape[:2]
        size = 8
        brute = np.array(
            [[official_score(img[y : y + size, x : x + size]) for x in range(0, w - size + 1, stride)] for y in range(0, h - size + 1, stride)]
        )
        assert np.array_equal(score_map(img, size, stride), brute)
        i, j = np.unravel_index(np.argmin(brute), brute.shape)
        assert select_patch(img, rng, size=size, n_candidates=1, mode="exhaustive", stride=stride) == (i * stride, j * stride)


def test_exhaustive_finds_the_flat_region():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    img[50:90, 61:101] = 17
    y, x = select_patch(img, rng, n_candidates=1, mode="exhaustive")
    assert 50 <= y <= 58 and 61 <= x <= 69


def test_determinism_and_modes():
    img = np.random.default_rng(5).integers(0, 256, (80, 90, 3), dtype=np.uint8)
    for mode in ("official", "exhaustive", "random"):
        a = select_patch(img, np.random.default_rng(11), n_candidates=64, mode=mode)
        b = select_patch(img, np.random.default_rng(11), n_candidates=64, mode=mode)
        assert a == b and 0 <= a[0] <= 48 and 0 <= a[1] <= 58
    picks = {select_patch(img, np.random.default_rng(s), n_candidates=1, mode="random") for s in range(20)}
    assert len(picks) > 10
    with pytest.raises(ValueError, match="unknown EPS mode"):
        select_patch(img, np.random.default_rng(0), n_candidates=4, mode="best")  # type: ignore[arg-type]


def test_non_contiguous_and_grayscale_inputs():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    flipped = img[:, ::-1]
    ys, xs = candidate_positions(50, 60, 16, 30, rng)
    expected = [official_score(flipped[y : y + 16, x : x + 16]) for y, x in zip(ys, xs)]
    assert candidate_scores(flipped, ys, xs, 16).tolist() == expected
    gray = img[..., 0]
    expected = [official_score(gray[y : y + 16, x : x + 16, None]) for y, x in zip(ys, xs)]
    assert candidate_scores(gray, ys, xs, 16).tolist() == expected


def test_small_images():
    img = np.random.default_rng(0).integers(0, 256, (20, 300, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="smaller than the patch size"):
        select_patch(img, np.random.default_rng(0), n_candidates=4)
    big = ensure_min_size(img, 32)
    assert big.shape == (256, 256, 3)
    y, x = select_patch(big, np.random.default_rng(0), n_candidates=4)
    assert 0 <= y <= 224 and 0 <= x <= 224
    ok = np.zeros((32, 32, 3), np.uint8)
    assert ensure_min_size(ok, 32) is ok
    assert select_patch(ok, np.random.default_rng(0), n_candidates=4) == (0, 0)


@pytest.mark.parametrize("method", ["rows", "windows"])
def test_both_scoring_methods_equal_the_official_formula(method):
    rng = np.random.default_rng(7)
    for img in _images(rng):
        h, w = img.shape[:2]
        for size in (3, 32):
            ys, xs = candidate_positions(h, w, size, 50, rng)
            expected = [official_score(img[y : y + size, x : x + size]) for y, x in zip(ys, xs)]
            assert candidate_scores(img, ys, xs, size, method=method).tolist() == expected
            assert candidate_scores(img[::-1, ::-1], ys, xs, size, method=method).tolist() == [
                official_score(img[::-1, ::-1][y : y + size, x : x + size]) for y, x in zip(ys, xs)
            ]
    big = rng.integers(0, 256, (70, 80, 3), dtype=np.uint8)
    ys, xs = candidate_positions(70, 80, 40, 10, rng)  # size > 32: the int16 column sums would overflow
    expected = [official_score(big[y : y + 40, x : x + 40]) for y, x in zip(ys, xs)]
    assert candidate_scores(big, ys, xs, 40, method=method).tolist() == expected
