"""Exposed-patch selection: the fast paths of both backends equal the official per-patch algorithm."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sep_bench.layers import eps
from sep_bench.layers.eps import (
    BACKEND_ENV,
    candidate_positions,
    candidate_scores,
    ensure_min_size,
    patch_scores,
    resolve_backend,
    score_map,
    select_patch,
    texture_integral,
    texture_score,
)

try:
    import numba  # noqa: F401

    HAVE_NUMBA = True
except ImportError:
    HAVE_NUMBA = False

BACKENDS = [
    "numpy",
    pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")),
]


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


def brute_map(img: np.ndarray, size: int, stride: int) -> np.ndarray:
    img = img if img.ndim == 3 else img[:, :, None]
    h, w = img.shape[:2]
    return np.array(
        [
            [official_score(img[y : y + size, x : x + size]) for x in range(0, w - size + 1, stride)]
            for y in range(0, h - size + 1, stride)
        ]
    ).reshape((h - size) // stride + 1, (w - size) // stride + 1)


def _images(rng):
    yield rng.integers(0, 256, (48, 57, 3), dtype=np.uint8)  # noise
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (9, 10, 3), dtype=np.uint8), 6, 0), 6, 1)
    yield smooth  # flat blocks: many equal scores
    flat = np.full((40, 40, 3), 7, np.uint8)
    flat[20:, 20:] = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    yield flat  # exact ties (score 0)
    yield np.full((33, 70, 3), 255, np.uint8)
    yield rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _variants(img: np.ndarray):
    """The image as the views and callers may pass it: flipped (negative strides), cropped, other integer types."""
    yield "plain", img
    yield "hflip", img[:, ::-1]
    yield "vflip", img[::-1]
    yield "both flips", img[::-1, ::-1]
    yield "channel flip", img[:, :, ::-1]
    yield "crop", img[1:-1, 2:]
    yield "fortran", np.asfortranarray(img)
    yield "uint16", img.astype(np.uint16)
    yield "int32", img.astype(np.int32)
    yield "gray 2-D", img[:, :, 0]
    yield "gray (H, W, 1)", img[:, :, :1]
    yield "4 channels", np.concatenate([img, img[:, :, :1] // 3], axis=2)


@pytest.fixture(autouse=True)
def _no_env_backend(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [1, 2, 5, 32])
def test_scores_equal_the_official_formula(size, backend):
    rng = np.random.default_rng(size)
    for img in _images(rng):
        h, w = img.shape[:2]
        if min(h, w) < size:
            continue
        ys, xs = candidate_positions(h, w, size, 200, rng)
        expected = np.array([official_score(img[y : y + size, x : x + size]) for y, x in zip(ys, xs)])
        assert np.array_equal(candidate_scores(img, ys, xs, size, backend=backend), expected)
        assert np.array_equal(patch_scores(texture_integral(img), ys, xs, size), expected)
        assert [texture_score(img[y : y + size, x : x + size]) for y, x in zip(ys[:5], xs[:5])] == expected[:5].tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_layout_and_dtype_scores_as_the_per_patch_reference(backend):
    rng = np.random.default_rng(11)
    base = rng.integers(0, 256, (45, 53, 3), dtype=np.uint8)
    base[10:30, 5:40] = 90  # a flat region: equal scores
    for name, img in _variants(base):
        h, w = img.shape[:2]
        for size in (1, 3, 16, min(h, w)):
            ys, xs = candidate_positions(h, w, size, 40, rng)
            # the corners and edges of the image
            ys = np.concatenate([ys, [0, 0, h - size, h - size, 0, h - size]])
            xs = np.concatenate([xs, [0, w - size, 0, w - size, (w - size) // 2, (w - size) // 2]])
            ref = img if img.ndim == 3 else img[:, :, None]
            expected = [texture_score(ref[y : y + size, x : x + size]) for y, x in zip(ys, xs)]
            assert candidate_scores(img, ys, xs, size, backend=backend).tolist() == expected, (name, size)
        for size, stride in ((1, 1), (7, 1), (7, 4), (16, 3), (min(h, w), 2)):
            assert np.array_equal(score_map(img, size, stride, backend=backend), brute_map(img, size, stride)), (
                name,
                size,
                stride,
            )


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_patches_and_tall_images(backend):
    """Patch sizes past the 16-bit window sums (numba uses them up to 65), images taller than the 64-row blocks."""
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (300, 90, 3), dtype=np.uint8)
    img[100:250, 10:80] = rng.integers(120, 124, (150, 70, 3), dtype=np.uint8)  # low texture
    for size in (33, 64, 65, 66, 90):
        ys, xs = candidate_positions(300, 90, size, 30, rng)
        expected = [official_score(img[y : y + size, x : x + size]) for y, x in zip(ys, xs)]
        assert candidate_scores(img, ys, xs, size, backend=backend).tolist() == expected, size
    for size, stride in ((64, 5), (66, 7), (90, 1)):
        got = score_map(img, size, stride, backend=backend)
        assert np.array_equal(got, brute_map(img, size, stride)), (size, stride)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_and_dense_candidates(backend):
    """numba sums each box on its own when the candidates are sparse, else in one pass down the rows: both here,
    with boxes taller than the 64-row 16-bit blocks."""
    rng = np.random.default_rng(12)
    img = rng.integers(0, 256, (400, 420, 3), dtype=np.uint8)
    img[50:200, 100:300] //= 16  # low texture

    def boxes_alone(ys, xs, size):  # the numba kernel's choice
        spanned = (ys.max() + size - 1 - ys.min()) * ((xs.max() - xs.min()) * 3 + (size - 1) * 3)
        return eps._DIRECT_COST * len(ys) * (size - 1) * (size - 1) * 3 < spanned

    paths = set()
    for size, n in ((8, 3), (32, 20), (70, 4), (70, 60), (32, 400), (2, 5000)):
        ys, xs = candidate_positions(400, 420, size, n, rng)
        paths.add(boxes_alone(ys, xs, size))
        expected = [official_score(img[y : y + size, x : x + size]) for y, x in zip(ys, xs)]
        assert candidate_scores(img, ys, xs, size, backend=backend).tolist() == expected, (size, n)
    assert paths == {True, False}
    # stripes of 0 and 255: each pixel owns 3 * 255, the most it can, so 16-bit column sums overflow after 85 rows
    # (and vertical pairs alone, 255 each, after 257)
    stripes = np.zeros((400, 420, 3), np.uint8)
    stripes[:, ::2] = 255
    for img in (stripes, stripes.transpose(1, 0, 2)[:400, :400]):
        h, w = img.shape[:2]
        for ys, xs in (([0, h - 100], [0, w - 100]), (rng.integers(0, h - 99, 80), rng.integers(0, w - 99, 80))):
            ys, xs = np.asarray(ys), np.asarray(xs)
            expected = [official_score(img[y : y + 100, x : x + 100]) for y, x in zip(ys, xs)]
            assert candidate_scores(img, ys, xs, 100, backend=backend).tolist() == expected
        for size, stride in ((60, 17), (100, 23)):
            assert np.array_equal(score_map(img, size, stride, backend=backend), brute_map(img, size, stride))


@pytest.mark.parametrize("backend", BACKENDS)
def test_official_mode_picks_the_official_patch(backend):
    rng = np.random.default_rng(0)
    for img in _images(rng):
        h, w = img.shape[:2]
        for n in (1, 64, 256):
            seed = int(rng.integers(1 << 30))
            ys, xs = candidate_positions(h, w, 32, n, np.random.default_rng(seed))
            got = select_patch(img, np.random.default_rng(seed), size=32, n_candidates=n, backend=backend)
            assert got == official_select(img, ys, xs, 32)
            flipped = img[:, ::-1]
            got = select_patch(flipped, np.random.default_rng(seed), size=32, n_candidates=n, backend=backend)
            assert got == official_select(flipped, ys, xs, 32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_first_candidate(backend):
    img = np.zeros((64, 64, 3), np.uint8)  # every patch scores 0
    ys, xs = candidate_positions(64, 64, 32, 50, np.random.default_rng(3))
    assert select_patch(img, np.random.default_rng(3), n_candidates=50, backend=backend) == (int(ys[0]), int(xs[0]))
    assert select_patch(img, np.random.default_rng(3), n_candidates=50, mode="exhaustive", backend=backend) == (0, 0)
    # two separate flat regions of equal score: raster order picks the upper one, official the first drawn
    img = np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    img[40:72, 4:36] = 50
    img[2:34, 44:76] = 50
    assert select_patch(img, None, size=32, n_candidates=1, mode="exhaustive", backend=backend) == (2, 44)
    ys, xs = np.array([40, 2, 40]), np.array([4, 44, 4])
    scores = candidate_scores(img, ys, xs, 32, backend=backend)
    assert scores.tolist() == [0, 0, 0] and int(np.argmin(scores)) == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride", [1, 3])
def test_exhaustive_equals_brute_force(stride, backend):
    rng = np.random.default_rng(stride)
    for img in _images(rng):
        size = 8
        brute = brute_map(img, size, stride)
        assert np.array_equal(score_map(img, size, stride, backend=backend), brute)
        i, j = np.unravel_index(np.argmin(brute), brute.shape)
        got = select_patch(img, rng, size=size, n_candidates=1, mode="exhaustive", stride=stride, backend=backend)
        assert got == (i * stride, j * stride)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exhaustive_finds_the_flat_region(backend):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    img[50:90, 61:101] = 17
    y, x = select_patch(img, rng, n_candidates=1, mode="exhaustive", backend=backend)
    assert 50 <= y <= 58 and 61 <= x <= 69


def test_backends_agree_on_natural_sized_images():
    if not HAVE_NUMBA:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(8)
    base = rng.normal(128, 30, (65, 70, 3))
    img = np.asarray(np.kron(base, np.ones((4, 4, 1))) + rng.normal(0, 4, (260, 280, 3))).clip(0, 255).astype(np.uint8)
    for n in (1, 64, 256):
        for seed in range(5):
            picks = {
                b: select_patch(img, np.random.default_rng(seed), n_candidates=n, backend=b) for b in ("numba", "numpy")
            }
            assert picks["numba"] == picks["numpy"]
    for stride in (1, 4):
        assert np.array_equal(score_map(img, 32, stride, backend="numba"), score_map(img, 32, stride, backend="numpy"))


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_grayscale_inputs(backend):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    flipped = img[:, ::-1]
    ys, xs = candidate_positions(50, 60, 16, 30, rng)
    expected = [official_score(flipped[y : y + 16, x : x + 16]) for y, x in zip(ys, xs)]
    assert candidate_scores(flipped, ys, xs, 16, backend=backend).tolist() == expected
    gray = img[..., 0]
    expected = [official_score(gray[y : y + 16, x : x + 16, None]) for y, x in zip(ys, xs)]
    assert candidate_scores(gray, ys, xs, 16, backend=backend).tolist() == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_validation(backend):
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    ys, xs = np.array([0, 3]), np.array([1, 8])
    wide = img.astype(np.uint16)
    wide[0, 0, 0] = 256
    for bad in (wide, img.astype(np.int16) - 1):
        with pytest.raises(ValueError, match="8-bit"):
            candidate_scores(bad, ys, xs, 16, backend=backend)
        with pytest.raises(ValueError, match="8-bit"):
            score_map(bad, 16, 1, backend=backend)
    with pytest.raises(ValueError, match="integer image"):
        candidate_scores(img.astype(np.float32), ys, xs, 16, backend=backend)
    with pytest.raises(ValueError, match="outside the image"):
        candidate_scores(img, [0, 25], [0, 0], 16, backend=backend)
    with pytest.raises(ValueError, match="outside the image"):
        candidate_scores(img, [0], [-1], 16, backend=backend)
    with pytest.raises(ValueError, match="one length"):
        candidate_scores(img, [0, 1], [0], 16, backend=backend)
    with pytest.raises(ValueError, match="smaller than the patch size"):
        candidate_scores(img, [0], [0], 41, backend=backend)
    with pytest.raises(ValueError, match=">= 1"):
        candidate_scores(img, [0], [0], 0, backend=backend)
    with pytest.raises(ValueError, match=">= 1"):
        score_map(img, 8, 0, backend=backend)
    with pytest.raises(ValueError, match=">= 1"):
        select_patch(img, np.random.default_rng(0), size=0, n_candidates=4, backend=backend)
    assert candidate_scores(img, [], [], 16, backend=backend).tolist() == []


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
    with pytest.raises(ValueError, match="numpy-backend method"):
        candidate_scores(big, ys, xs, 40, method=method, backend="numba")
    with pytest.raises(ValueError, match="unknown method"):
        candidate_scores(big, ys, xs, 40, method="cols")  # type: ignore[arg-type]


# --- backend selection, fallback, compile cache, threads and processes ------------------------------------------


def test_backend_selection(monkeypatch):
    assert resolve_backend("numpy") == "numpy"
    assert resolve_backend() == ("numba" if HAVE_NUMBA else "numpy")
    assert resolve_backend("auto") == resolve_backend()
    monkeypatch.setenv(BACKEND_ENV, "numpy")
    assert resolve_backend() == "numpy"
    assert resolve_backend("auto") == ("numba" if HAVE_NUMBA else "numpy")  # an explicit argument wins
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match=BACKEND_ENV):
        select_patch(np.zeros((40, 40, 3), np.uint8), np.random.default_rng(0), n_candidates=4)
    with pytest.raises(ValueError, match="unknown EPS backend"):
        resolve_backend("torch")


def test_falls_back_to_numpy_without_numba(monkeypatch):
    """As when numba is not installed: `import numba` fails, auto picks numpy, asking for numba explains."""
    monkeypatch.setattr(eps, "_KERNELS", None)
    monkeypatch.setattr(eps, "_KERNELS_ERROR", None)
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    assert resolve_backend() == "numpy"
    with pytest.raises(ImportError, match="numba EPS backend is unavailable"):
        resolve_backend("numba")
    monkeypatch.setenv(BACKEND_ENV, "numba")
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    with pytest.raises(ImportError, match=f"{BACKEND_ENV}=numpy"):
        select_patch(img, np.random.default_rng(0), n_candidates=4)
    monkeypatch.setenv(BACKEND_ENV, "auto")
    ys, xs = candidate_positions(40, 40, 32, 8, np.random.default_rng(0))
    assert select_patch(img, np.random.default_rng(0), n_candidates=8) == official_select(img, ys, xs, 32)


def test_unwritable_cache_directory_warns_and_still_compiles():
    class FakeNumba:  # numba raises this when no cache directory is writable
        @staticmethod
        def njit(cache=False, nogil=False):
            if cache:
                raise RuntimeError("cannot cache function 'f': no locator available for file 'eps.py'")
            return lambda fn: fn

    with pytest.warns(RuntimeWarning, match="not cached on disk"):
        assert eps._jit(FakeNumba, len) is len


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
def test_real_numba_with_no_usable_cache_directory(tmp_path):
    """A fresh process whose only cache location cannot be created: a warning, then the right answer."""
    from numba.core import config

    if not hasattr(config, "CACHE_LOCATOR_CLASSES"):
        pytest.skip("this numba cannot restrict its cache locators")
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(blocker / "cache"),  # below a regular file: cannot be created, even by root
        "NUMBA_CACHE_LOCATOR_CLASSES": "UserProvidedCacheLocator",
        BACKEND_ENV: "numba",
    }
    code = (
        "import warnings, numpy as np\n"
        "from sep_bench.layers.eps import candidate_scores, texture_score\n"
        "img = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    got = candidate_scores(img, [1], [2], 8).tolist()\n"
        "assert got == [texture_score(img[1:9, 2:10])], got\n"
        "print([str(w.message) for w in caught])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "not cached on disk" in out.stdout


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_cold_cache_first_calls_from_threads_and_forked_workers(tmp_path):
    """A fresh process with an empty cache: forked workers compile at once (the parent has not called the selector)
    and write the cache, then the parent's threads load it at once; a second process finds the cache warm."""
    code = (
        "import multiprocessing, numpy as np\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from sep_bench.layers.eps import candidate_positions, select_patch, texture_score\n"
        "img = np.random.default_rng(0).integers(0, 256, (70, 80, 3), dtype=np.uint8)\n"
        "def pick(i):\n"
        "    mode = ('official', 'exhaustive')[i % 2]\n"
        "    return select_patch(img, np.random.default_rng(i), size=16, n_candidates=40, mode=mode)\n"
        "def check(i, got):\n"
        "    if i % 2:\n"
        "        best = min((texture_score(img[y:y + 16, x:x + 16]), y, x) for y in range(55) for x in range(65))\n"
        "        return got == best[1:]\n"
        "    ys, xs = candidate_positions(70, 80, 16, 40, np.random.default_rng(i))\n"
        "    s = [texture_score(img[y:y + 16, x:x + 16]) for y, x in zip(ys, xs)]\n"
        "    return got == (ys[int(np.argmin(s))], xs[int(np.argmin(s))])\n"
        "if __name__ == '__main__':\n"
        "    with multiprocessing.get_context('fork').Pool(2) as pool:\n"
        "        forked = pool.map(pick, range(4))\n"
        "    with ThreadPoolExecutor(4) as ex:\n"
        "        threaded = list(ex.map(pick, range(8)))\n"
        "    assert all(check(i, p) for i, p in enumerate(forked)), forked\n"
        "    assert all(check(i, p) for i, p in enumerate(threaded)), threaded\n"
        "    print('ok')\n"
    )
    script = tmp_path / "first_calls.py"
    script.write_text(code)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), BACKEND_ENV: "numba"}
    for _ in range(2):  # cold, then warm
        out = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
        assert len(list((tmp_path / "cache").rglob("*.nbi"))) == 2  # one index per kernel


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_get_the_sequential_answers(backend):
    rng = np.random.default_rng(9)
    images = [rng.integers(0, 256, (96 + 8 * i, 120, 3), dtype=np.uint8) for i in range(8)]

    def pick(i: int) -> tuple:
        img = images[i % len(images)]
        mode = "official" if i % 2 else "exhaustive"
        return select_patch(img, np.random.default_rng(i), n_candidates=64, mode=mode, stride=2, backend=backend)

    expected = [pick(i) for i in range(32)]
    start = threading.Barrier(4)

    def run(i: int) -> tuple:
        if i < 4:
            start.wait()  # the first calls run at once (in a fresh process: compile concurrently)
        return pick(i)

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(run, range(32))) == expected


def _pick_in_worker(seed: int) -> tuple[str, tuple[int, int], tuple[int, int]]:
    img = np.random.default_rng(seed).integers(0, 256, (90, 100, 3), dtype=np.uint8)
    official = select_patch(img, np.random.default_rng(seed), n_candidates=256)
    exhaustive = select_patch(img, np.random.default_rng(seed), n_candidates=1, mode="exhaustive")
    return resolve_backend(), official, exhaustive


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_forked_workers_get_the_same_answers():
    """As in DataLoader workers (fork): the parent's kernels, or the children's own first compile."""
    expected = [_pick_in_worker(s) for s in range(6)]
    ctx = multiprocessing.get_context("fork")
    # The workers are forks of this test process, which may carry sep-bench's Python-level SIGTERM handler from
    # in-process CLI tests. Pool.terminate() ends them with SIGTERM; when the kernel delivers it to a native thread
    # of the worker (e.g. the pool OpenBLAS restarts in a forked child), the Python handler never runs in the main
    # thread, blocked on the task queue, and the pool waits forever (seen once in a full run: the worker was alive
    # in SemLock.__enter__ with the parent in Pool.terminate's join; a second SIGTERM ended it). The default
    # action ends the whole process, whatever thread receives the signal.
    with ctx.Pool(2, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
        assert pool.map(_pick_in_worker, range(6)) == expected
