"""Exposed-patch selection (EPS): the 32x32 patch of least texture.

Texture score of a patch ``p`` (RGB, integer arithmetic), as the official ``compute_complexity``
(1112348/SEP-for-AIGCDetection ``data/dataset.py``; the same formula as SSP)::

    sum|p[:, :-1] - p[:, 1:]| + sum|p[:-1, :] - p[1:, :]| + sum|p[:-1, :-1] - p[1:, 1:]| + sum|p[1:, :-1] - p[:-1, 1:]|

summed over all pixels and channels: the absolute differences of every horizontal, vertical, diagonal and
anti-diagonal pixel pair inside the patch.

Modes of `select_patch`:

- ``"official"``: ``n_candidates`` random positions drawn uniformly (as torchvision ``RandomCrop``: ``y`` in
  ``[0, H - size]``, ``x`` in ``[0, W - size]``), the candidate of least score wins; ties go to the first
  candidate drawn (the official code sorts the candidate list with Python's stable sort and takes element 0).
  The official code uses 64 candidates in training and 256 at evaluation.
- ``"exhaustive"``: every position on the grid ``(i * stride, j * stride)``; ties go to the first position in
  raster order (smallest ``y``, then smallest ``x``).
- ``"random"``: one uniformly drawn position (the ablation "without EPS").

Backends, with identical results (exact integer arithmetic, the same tie rules; ``tests/test_eps.py`` checks both
against the per-patch formula):

- ``numba`` (the default when numba imports): compiled loops over the uint8 image. The kernels compile on first
  use (about 5 s; numba is imported only then) and are cached on disk in the user's cache directory
  (``NUMBA_CACHE_DIR``, default ``$XDG_CACHE_HOME/sep-bench/numba``, i.e. ``~/.cache/sep-bench/numba``: never the
  source tree, whose hash DVC stages depend on), so that happens once per machine; if no cache directory is writable they compile
  once per process, with a warning. A process's first call still costs about 0.5 s (numba's start-up, loading
  the cache); forked DataLoader workers inherit kernels the parent has used. They release the GIL.
- ``numpy``: loop-free array code, the fallback.

A call's ``backend`` argument chooses; else the environment variable ``SEP_BENCH_EPS_BACKEND`` (``numba``,
``numpy`` or ``auto``); ``auto``: numba when it can be imported, numpy otherwise (`resolve_backend`).

Algorithm. Each pixel owns the pairs it starts (right, down, down-right, and its right neighbour with the pixel
below). A patch's score is the owner map summed over its box (its first ``size - 1`` rows and columns), plus the
horizontal pairs of its last row and the vertical pairs of its last column. Costs, for N candidates, C channels:

- ``official``, numba: one pass down the rows the candidates span accumulates the column sums of the owner map and
  of the vertical pairs (vectorised across columns: 8-bit differences, 16-bit sums). Candidates are
  counting-sorted by row; a box (and the last column) is the column sums when the pass reaches the candidate's
  bottom row minus those at its top row, so nothing image-sized is stored; the last row is read directly. When the
  boxes cover less than an eighth of the area the candidates span (64 candidates in a 1024x1024 image), each
  patch is summed on its own instead. O(C * min(A, 8 * N * size**2) + N * C * size), A the area spanned (about
  H * W for random candidates).
- ``official``, numpy: ``rows`` (the owner map's row prefix sums over the image, then O(size) vectorised gathers
  per candidate) or ``windows`` (the candidate windows gathered and scored at once), whichever is cheaper:
  O(C * min(H * W, N * size**2)).
- ``exhaustive``, numba: the owner map and the vertical pairs summed over windows of ``size - 1`` rows, slid
  down the image (one row in, one out), then per grid row a prefix sum along x gives every position:
  O(C * H * W) plus O(C * W) per grid row, independent of ``size``.
- ``exhaustive``, numpy: `texture_integral`'s summed-area tables (numpy only; also behind `patch_scores`), then
  O(1) per position: O(C * H * W).

The score is invariant under flips, so in official mode a flipped view is scored as the unflipped array at
mirrored positions (no copy); other non-contiguous views, and numba's inputs that are not uint8, are copied. Both
backends work in "interleaved" column space, the image viewed as ``(H, W * C)``: pixel columns ``[x, x + w)`` are
columns ``[C * x, C * (x + w))``, so summing a column range also sums the channels. Speed against the official
loop: ``benchmarks/eps.py``.

Determinism: all randomness comes from the numpy Generator passed in; the same seed gives the same patch.
Deviation from the official code: it draws candidates with torchvision's ``RandomCrop`` from torch's global RNG
(and never seeds evaluation), so the official candidate positions cannot be reproduced; the distribution is the
same.

Images smaller than the patch: `select_patch` raises ``ValueError``. The official rule, applied by
`ensure_min_size` (and by SEP's views), is to resize the whole image to 256x256 (bilinear) when its short side is
below the patch size, then select as usual; the returned position refers to the resized image.
"""

from __future__ import annotations

import os
import threading
import warnings
from types import SimpleNamespace
from typing import Literal

import numpy as np

__all__ = [
    "BACKEND_ENV",
    "SMALL_IMAGE_SIZE",
    "Backend",
    "Mode",
    "candidate_positions",
    "candidate_scores",
    "ensure_min_size",
    "patch_scores",
    "resolve_backend",
    "score_map",
    "select_patch",
    "texture_integral",
    "texture_score",
]

Mode = Literal["official", "exhaustive", "random"]
Backend = Literal["numba", "numpy"]

#: The official rule: an image whose short side is below the patch size is resized to this square first.
SMALL_IMAGE_SIZE = 256

#: Environment variable choosing the default backend: ``numba``, ``numpy`` or ``auto``.
BACKEND_ENV = "SEP_BENCH_EPS_BACKEND"


def texture_score(patch: np.ndarray) -> int:
    """The official texture score of one patch (H, W, C): the per-patch reference the fast paths must match."""
    p = np.asarray(patch).astype(np.int64)
    return int(
        np.abs(p[:, :-1] - p[:, 1:]).sum()
        + np.abs(p[:-1, :] - p[1:, :]).sum()
        + np.abs(p[:-1, :-1] - p[1:, 1:]).sum()
        + np.abs(p[1:, :-1] - p[:-1, 1:]).sum()
    )


# --- work buffers --------------------------------------------------------------------------------------------
# Fresh multi-megabyte arrays cost page faults on first touch, which cost as much as the arithmetic; each thread
# (and each DataLoader worker process) keeps up to _WORKSPACE_MAX_BYTES of buffers for the next image (enough for
# official mode on 1024x1024 images); larger needs get fresh arrays. Returned buffers are scratch: their content
# is overwritten by the next call in the same thread.

_WORKSPACE = threading.local()
_WORKSPACE_MAX_BYTES = 48 << 20


def _buffer(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pool: dict[str, np.ndarray] = _WORKSPACE.__dict__.setdefault("pool", {})
    buf = pool.get(name)
    if buf is None or buf.nbytes < nbytes:
        held = sum(b.nbytes for k, b in pool.items() if k != name)
        if held + nbytes > _WORKSPACE_MAX_BYTES:
            return np.empty(shape, dtype)
        buf = pool[name] = np.empty(nbytes, np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def _as_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.dtype.kind not in "ui":
        raise ValueError(f"expected an integer image (H, W, C), got {img.dtype} {img.shape}")
    return img


def _check_8bit(img: np.ndarray) -> None:
    if img.dtype != np.uint8 and (int(img.max(initial=0)) > 255 or int(img.min(initial=0)) < 0):
        raise ValueError("texture scores are defined on 8-bit images (values 0..255)")


def _interleaved(img: np.ndarray, name: str = "img") -> np.ndarray:
    """The image as int16 (H, W * C) in a work buffer (int16 holds every difference of 8-bit values)."""
    h, w, c = img.shape
    _check_8bit(img)
    a = _buffer(name, (h, w * c), np.int16)
    np.copyto(a, img.reshape(h, w * c))
    return a


def _absdiff(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.subtract(x, y, out=out)
    return np.abs(out, out=out)


def texture_integral(img: np.ndarray) -> np.ndarray:
    """Summed-area tables of the pair-difference maps, for O(1) texture scores at any position and size.

    Args:
        img: (H, W, C) 8-bit image.

    Returns:
        Array (3, H + 1, W + 1), int32 when every total fits (int64 otherwise): the summed-area tables, with a
        leading zero row and column, of the channel-summed maps ``|I[r, x] - I[r, x + 1]|`` (horizontal),
        ``|I[r, x] - I[r + 1, x]|`` (vertical) and ``|I[r, x] - I[r + 1, x + 1]| + |I[r + 1, x] - I[r, x + 1]|``
        (both diagonals), each pair stored at its top-left pixel ``(r, x)``. Use with `patch_scores` / `score_map`.

    Example:
        >>> sat = texture_integral(img); patch_scores(sat, [0, 5], [3, 9], 32)
    """
    img = _as_image(img)
    h, w, c = img.shape
    a = _interleaved(img)
    wc = w * c
    dtype = np.int32 if 2 * 255 * h * wc < 2**31 else np.int64
    maps = _buffer("sat_maps", (3, h, wc), np.int16)
    maps[0, :, wc - c :] = 0
    maps[1:, h - 1 :] = 0
    maps[2, :, wc - c :] = 0
    _absdiff(a[:, :-c], a[:, c:], maps[0, :, :-c])
    _absdiff(a[:-1], a[1:], maps[1, :-1])
    _absdiff(a[:-1, :-c], a[1:, c:], maps[2, :-1, :-c])
    maps[2, :-1, :-c] += _absdiff(a[1:, :-c], a[:-1, c:], _buffer("tmp", (h - 1, wc - c), np.int16))
    wide = _buffer("sat_wide", (3, h, wc), dtype)
    np.copyto(wide, maps)
    rowsum = _buffer("sat_rowsum", (3, h, wc), dtype)
    np.cumsum(wide, axis=2, out=rowsum)  # summing interleaved columns also sums the channels
    sat = np.zeros((3, h + 1, w + 1), dtype)
    sat[:, 1:, 1:] = rowsum[:, :, c - 1 :: c]  # prefix up to each pixel boundary
    _prefix_rows(sat[:, 1:, 1:])
    return sat


def _prefix_rows(x: np.ndarray, block: int = 16) -> None:
    """In-place inclusive prefix sum along axis 1 of (P, R, C), by row blocks (numpy's strided cumsum is slow)."""
    p, r, n = x.shape
    start = 1
    nb = r // block
    if nb >= 2:
        body = x[:, : nb * block].reshape(p, nb, block, n)
        for j in range(1, block):
            np.add(body[:, :, j], body[:, :, j - 1], out=body[:, :, j])
        last = body[:, :, block - 1]
        for b in range(1, nb):
            np.add(last[:, b], last[:, b - 1], out=last[:, b])
        body[:, 1:, : block - 1] += last[:, :-1, None]
        start = nb * block
    for i in range(start, r):
        np.add(x[:, i], x[:, i - 1], out=x[:, i])


def _box(sat: np.ndarray, y0, x0, y1, x1) -> np.ndarray:
    """Sum over rows [y0, y1) and columns [x0, x1) from a summed-area table with a leading zero row/column."""
    return sat[y1, x1].astype(np.int64) - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]


def patch_scores(integral: np.ndarray, ys, xs, size: int) -> np.ndarray:
    """Texture scores (int64) of the patches at (ys[i], xs[i]) of side `size`, from `texture_integral`, O(1) each.

    A patch's horizontal pairs start in its rows [y, y + size) and columns [x, x + size - 1); vertical pairs in
    rows [y, y + size - 1) and columns [x, x + size); diagonal pairs in rows and columns [., . + size - 1).
    """
    ys = np.asarray(ys, dtype=np.int64)
    xs = np.asarray(xs, dtype=np.int64)
    s = int(size)
    hz = _box(integral[0], ys, xs, ys + s, xs + s - 1)
    vt = _box(integral[1], ys, xs, ys + s - 1, xs + s)
    dg = _box(integral[2], ys, xs, ys + s - 1, xs + s - 1)
    return hz + vt + dg


# --- backends ------------------------------------------------------------------------------------------------

_KERNELS: SimpleNamespace | None = None
_KERNELS_ERROR: str | None = None
_KERNELS_LOCK = threading.Lock()


def resolve_backend(backend: str | None = None) -> Backend:
    """The backend a call given `backend` runs on: ``"numba"`` or ``"numpy"``.

    ``None`` reads ``SEP_BENCH_EPS_BACKEND`` (unset: ``auto``); ``"auto"`` is numba when it can be imported, else
    numpy. Asking for numba where it cannot be imported raises ``ImportError``.
    """
    if backend is None:
        backend = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
        if backend not in ("auto", "numba", "numpy"):
            raise ValueError(f"{BACKEND_ENV}={backend!r}: expected 'numba', 'numpy' or 'auto'")
    if backend == "numpy":
        return "numpy"
    if backend == "auto":
        return "numba" if _numba_kernels(required=False) is not None else "numpy"
    if backend == "numba":
        _numba_kernels(required=True)
        return "numba"
    raise ValueError(f"unknown EPS backend {backend!r}; expected 'numba', 'numpy' or 'auto'")


def _numba_kernels(required: bool) -> SimpleNamespace | None:
    """The compiled kernels (wrapped on first use; each compiles, or loads from numba's cache, on its first call)."""
    global _KERNELS, _KERNELS_ERROR
    if _KERNELS is None and _KERNELS_ERROR is None:
        with _KERNELS_LOCK:
            if _KERNELS is None and _KERNELS_ERROR is None:
                os.environ.setdefault("NUMBA_CACHE_DIR", str(_user_cache_dir() / "numba"))
                _name_generic_cpu()
                try:
                    import numba
                except (ImportError, OSError) as err:  # not installed, built for another numpy, no LLVM
                    _KERNELS_ERROR = f"{type(err).__name__}: {err}"
                else:
                    _KERNELS = SimpleNamespace(
                        candidate_scores=_jit(numba, _nb_candidate_scores),
                        score_map=_jit(numba, _nb_score_map),
                    )
    if _KERNELS is None and required:
        raise ImportError(
            f"the numba EPS backend is unavailable ({_KERNELS_ERROR}); install numba, or set {BACKEND_ENV}=numpy"
        )
    return _KERNELS


def numba_target() -> str:
    """The CPU name numba compiles the kernels for (``NUMBA_CPU_NAME`` or LLVM's name of this host)."""
    if os.environ.get("NUMBA_CPU_NAME"):
        return os.environ["NUMBA_CPU_NAME"]
    try:
        import llvmlite.binding as ll
    except ImportError:
        return "unknown"
    return ll.get_host_cpu_name()


def _name_generic_cpu() -> None:
    """When LLVM cannot name this CPU (it says ``generic``: a CPU newer than its tables, or a hypervisor that masks
    the CPU's identity) numba compiles baseline x86-64 code (SSE2): the kernels then run about 3x slower (measured:
    exhaustive mode at 512x512, 6.6 ms generic vs 2.1 ms host / 1.2 ms haswell on an AMD EPYC with AVX-512).
    Name the newest target the CPU's flags allow instead (the user's ``NUMBA_CPU_NAME`` always wins)."""
    if os.environ.get("NUMBA_CPU_NAME") or numba_target() != "generic":
        return
    from sep_bench.hostinfo import cpu_flags

    flags = cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        os.environ["NUMBA_CPU_NAME"] = "skylake-avx512"
    elif {"avx2", "fma", "bmi2"} <= flags:
        os.environ["NUMBA_CPU_NAME"] = "haswell"


def _user_cache_dir():
    from pathlib import Path

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sep-bench"


def _jit(numba, fn):
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError as err:  # numba finds no writable cache directory
        warnings.warn(
            f"EPS kernels are not cached on disk and compile in every process ({err}); "
            "set NUMBA_CACHE_DIR to a writable directory",
            RuntimeWarning,
            stacklevel=4,
        )
        return numba.njit(nogil=True)(fn)


def _flat_uint8(img: np.ndarray) -> np.ndarray:
    """The (H, W, C) image as a flat C-contiguous read-only uint8 array (a view when it already is one)."""
    if img.dtype != np.uint8:
        _check_8bit(img)
        img = img.astype(np.uint8, order="C")
    elif not img.flags.c_contiguous:
        img = np.ascontiguousarray(img)
    return _readonly(img.reshape(-1))


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view: numba compiles one specialisation per writability, so kernel inputs are always read-only."""
    view = a.view()
    view.flags.writeable = False
    return view


# --- public API ----------------------------------------------------------------------------------------------


def score_map(
    img: np.ndarray,
    size: int = 32,
    stride: int = 1,
    *,
    integral: np.ndarray | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """Texture score of every patch position on the stride grid, in O(H * W).

    Args:
        img: (H, W, C) 8-bit image.
        size: patch side.
        stride: grid step.
        integral: `texture_integral` of `img`, if already computed (then the summed-area tables are used).
        backend: ``numba`` | ``numpy`` | ``auto``; default: `resolve_backend`.

    Returns:
        int64 array (ny, nx); entry (i, j) scores the patch at ``(i * stride, j * stride)``.
    """
    img = _as_image(img)
    h, w, c = img.shape
    size, stride = int(size), int(stride)
    if size < 1 or stride < 1:
        raise ValueError(f"patch size and stride must be >= 1, got {size} and {stride}")
    if h < size or w < size:
        raise ValueError(f"image {h}x{w} is smaller than the patch size {size}")
    ny = (h - size) // stride + 1
    nx = (w - size) // stride + 1
    if integral is None and resolve_backend(backend) == "numba":
        flat = _flat_uint8(img)  # a flipped view is copied: the map itself is not flip-invariant
        window = np.uint16 if (size - 1) * 4 * 255 < 2**16 else np.int32  # modular 16-bit sums are exact then
        out = np.empty((ny, nx), np.int64)
        _numba_kernels(True).score_map(
            flat, h, w, c, size, stride, out, np.zeros(w * c - c, window), np.zeros(w * c, window)
        )
        return out
    sat = texture_integral(img) if integral is None else integral

    def grid(start: int, n: int) -> slice:
        return slice(start, start + (n - 1) * stride + 1, stride)

    def box(plane: int, dy: int, dx: int) -> np.ndarray:
        t = sat[plane]
        y0, y1, x0, x1 = grid(0, ny), grid(dy, ny), grid(0, nx), grid(dx, nx)
        return t[y1, x1].astype(np.int64) - t[y0, x1] - t[y1, x0] + t[y0, x0]

    out = box(0, size, size - 1)
    out += box(1, size - 1, size)
    out += box(2, size - 1, size - 1)
    return out


def candidate_positions(h: int, w: int, size: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` uniform top-left positions of a size x size patch in an h x w image: (ys, xs), int64 arrays."""
    if h < size or w < size:
        raise ValueError(f"image {h}x{w} is smaller than the patch size {size}")
    ys = rng.integers(0, h - size + 1, size=n)
    xs = rng.integers(0, w - size + 1, size=n)
    return ys.astype(np.int64, copy=False), xs.astype(np.int64, copy=False)


def candidate_scores(
    img: np.ndarray,
    ys,
    xs,
    size: int,
    *,
    method: Literal["auto", "rows", "windows"] = "auto",
    backend: str | None = None,
) -> np.ndarray:
    """Texture scores (int64) of the patches at (ys[i], xs[i]); the fast path of the ``official`` mode.

    Args:
        img: (H, W, C) 8-bit image (or (H, W)); any strides, flipped views included.
        ys, xs: 1-D top-left positions, each patch inside the image.
        size: patch side.
        method: ``auto``: the backend's method; ``rows`` or ``windows``: that numpy method (see the module
            docstring; ``auto`` on numpy takes ``windows`` when the candidates cover no more area than the image,
            ``N * size**2 <= H * W``, else ``rows``).
        backend: ``numba`` | ``numpy`` | ``auto``; default: `resolve_backend`.
    """
    img = _as_image(img)
    h, w = img.shape[:2]
    ys = np.asarray(ys, dtype=np.int64)
    xs = np.asarray(xs, dtype=np.int64)
    s = int(size)
    if ys.ndim != 1 or ys.shape != xs.shape:
        raise ValueError(f"ys and xs must be 1-D and of one length, got shapes {ys.shape} and {xs.shape}")
    if s < 1:
        raise ValueError(f"patch size must be >= 1, got {s}")
    if h < s or w < s:
        raise ValueError(f"image {h}x{w} is smaller than the patch size {s}")
    if ys.size and (ys.min() < 0 or xs.min() < 0 or ys.max() > h - s or xs.max() > w - s):
        raise ValueError("candidate position outside the image")
    if method not in ("auto", "rows", "windows"):
        raise ValueError(f"unknown method {method!r}")
    if method != "auto" and backend == "numba":
        raise ValueError(f"method {method!r} is a numpy-backend method")
    return _scores(img, ys, xs, s, method, backend)


def _scores(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, s: int, method: str, backend: str | None) -> np.ndarray:
    """`candidate_scores` for validated positions."""
    h, w, c = img.shape
    # The score is invariant under flips (horizontal and vertical pairs map to themselves, the two diagonals to each
    # other), so a flipped view (the training flip) is scored as the unflipped array at mirrored positions.
    if img.strides[1] < 0:
        img, xs = img[:, ::-1], w - s - xs
    if img.strides[0] < 0:
        img, ys = img[::-1], h - s - ys
    if method == "auto" and resolve_backend(backend) == "numba":
        out = np.empty(len(ys), np.int64)
        _numba_kernels(True).candidate_scores(
            _flat_uint8(img), h, w, c, _readonly(np.ascontiguousarray(ys)), _readonly(np.ascontiguousarray(xs)), s, out
        )
        return out
    if method == "auto":
        method = "windows" if len(ys) * s * s <= h * w else "rows"
    if method == "windows":
        return _window_scores(img, ys, xs, s)
    return _row_prefix_scores(img, ys, xs, s)


# --- numpy backend: official-mode methods --------------------------------------------------------------------


def _window_scores(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, s: int) -> np.ndarray:
    _check_8bit(img)
    h, w, c = img.shape
    n, sc = len(ys), s * c
    if not img.flags.c_contiguous:  # e.g. a flipped view: interleaved rows must be contiguous
        buf = _buffer("contiguous", img.shape, img.dtype)
        np.copyto(buf, img)
        img = buf
    flat = img.reshape(h, w * c)
    windows = np.lib.stride_tricks.sliding_window_view(flat, (s, sc))[ys, c * xs]  # (N, s, s*c) copy
    a = _buffer("win", (n, s, sc), np.int16)
    np.copyto(a, windows)
    acc = _buffer("win_acc", (n, s, sc), np.int16)  # each window's owner map; entries <= 4 * 255
    t = _buffer("win_tmp", (n, s, sc), np.int16)
    acc[:, :, sc - c :] = 0
    _absdiff(a[:, :, :-c], a[:, :, c:], acc[:, :, :-c])
    acc[:, :-1] += _absdiff(a[:, :-1], a[:, 1:], t[:, :-1])
    td = t[:, :-1, :-c]
    acc[:, :-1, :-c] += _absdiff(a[:, :-1, :-c], a[:, 1:, c:], td)
    acc[:, :-1, :-c] += _absdiff(a[:, 1:, :-c], a[:, :-1, c:], td)
    column_dtype = np.int16 if s * 4 * 255 < 2**15 else np.int64  # int16 sums over rows are fast and fit for s <= 32
    return np.add.reduce(acc, axis=1, dtype=column_dtype).sum(1, dtype=np.int64)


def _row_prefix_scores(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, s: int) -> np.ndarray:
    h, w, c = img.shape
    a = _interleaved(img)
    wc = w * c
    # owner map, with a leading zero column so that prefix[r, k] = sum of row r's first k entries
    mo = _buffer("owner", (h, wc + 1), np.int16)
    mo[:, 0] = 0
    m = mo[:, 1:]
    m[:, wc - c :] = 0
    _absdiff(a[:, :-c], a[:, c:], m[:, :-c])  # horizontal
    t = _buffer("tmp", (h - 1, wc), np.int16)
    m[:-1] += _absdiff(a[:-1], a[1:], t)  # vertical
    td = t[:, : wc - c]
    m[:-1, :-c] += _absdiff(a[:-1, :-c], a[1:, c:], td)  # diagonal
    m[:-1, :-c] += _absdiff(a[1:, :-c], a[:-1, c:], td)  # anti-diagonal
    mo32 = _buffer("owner32", (h, wc + 1), np.int32)
    np.copyto(mo32, mo)
    prefix = _buffer("prefix", (h, wc + 1), np.int32 if 4 * 255 * wc < 2**31 else np.int64)
    np.cumsum(mo32, axis=1, out=prefix)

    flat = prefix.ravel()
    rows = (ys[:, None] + np.arange(s - 1)) * (wc + 1)  # (N, s-1)
    box = (flat.take(rows + (c * (xs + s - 1))[:, None]) - flat.take(rows + (c * xs)[:, None])).sum(1, dtype=np.int64)

    # the last row (left to right) and the last column (top to bottom), each gathered as s pixels x c channels, so
    # that in both the pixel pairs are entries k and k + c
    flat_img = a.ravel()
    row_offsets = np.arange(s * c)
    col_offsets = (np.arange(s)[:, None] * wc + np.arange(c)).ravel()
    edges = np.concatenate(
        [
            flat_img.take(((ys + s - 1) * wc + c * xs)[:, None] + row_offsets),
            flat_img.take((ys * wc + c * (xs + s - 1))[:, None] + col_offsets),
        ],
        axis=1,
    ).reshape(len(ys), 2, s * c)
    d = edges[:, :, :-c] - edges[:, :, c:]
    np.abs(d, out=d)
    return box + d.reshape(len(ys), -1).sum(1, dtype=np.int64)


# --- numba backend ------------------------------------------------------------------------------------------
# The kernels below are plain Python until `_numba_kernels` compiles them (on first use, so importing this module
# does not import numba). They read the image as a flat C-contiguous uint8 array and index it with unsigned
# offsets (numba checks signed indices for negative wraparound, which stops LLVM from vectorising); the callers
# validate every position first, because compiled code does not check bounds. Absolute differences are taken in
# 8 bits (max - min) and summed in 16, which vectorises widest.

#: Official mode scores each box on its own when the boxes' total area, times this, is below the area they span.
#: Measured per pixel, a lone 32x32 box costs 2 to 3 times the pass down the rows when the image is in the CPU's
#: cache, about 9 times when it is not (the pass streams rows, the boxes jump between them).
_DIRECT_COST = 8


def _nb_candidate_scores(flat, h, w, c, ys, xs, s, out):  # pragma: no cover - compiled by numba
    """Scores of the size-`s` patches at (ys[i], xs[i]) into out[i]: from one pass down the rows the candidates
    span or, when their boxes cover much less than that area, from each patch on its own."""
    u8, u16, u64 = np.uint8, np.uint16, np.uint64
    n = ys.shape[0]
    if n == 0 or s < 2:
        for i in range(n):
            out[i] = 0
        return
    row = u64(w * c)
    cc = u64(c)
    inner = (s - 1) * c  # interleaved columns of a box (a patch's first s - 1 pixel columns)
    y0 = ys.min()
    y1 = ys.max() + s - 1
    k0 = xs.min() * c
    nk = xs.max() * c + inner - k0  # interleaved columns [k0, k0 + nk) cover every box
    if _DIRECT_COST * n * (s - 1) * inner < (y1 - y0) * nk:
        # each patch on its own: its box's owner-map columns summed down its rows (16 bits, flushed every 64 rows),
        # plus the vertical pairs of its last column and the horizontal pairs of its last row
        col = np.zeros(inner, np.uint16)
        for i in range(n):
            corner = u64(ys[i]) * row + u64(xs[i] * c)
            t = 0
            for r in range(s - 1):
                if r % 64 == 63:
                    for k in range(inner):
                        t += col[k]
                        col[k] = 0
                b0 = corner + u64(r) * row
                b1 = b0 + row
                for k in range(inner):
                    kk = u64(k)
                    p = flat[b0 + kk]
                    ph = flat[b0 + kk + cc]
                    q = flat[b1 + kk]
                    qh = flat[b1 + kk + cc]
                    d = u16(u16(u8(max(p, ph) - min(p, ph))) + u16(u8(max(p, q) - min(p, q))))
                    d = u16(d + u16(u16(u8(max(p, qh) - min(p, qh))) + u16(u8(max(q, ph) - min(q, ph)))))
                    col[k] = u16(col[k] + d)
                for k in range(inner, inner + c):
                    p = flat[b0 + u64(k)]
                    q = flat[b1 + u64(k)]
                    t += u8(max(p, q) - min(p, q))
            for k in range(inner):
                t += col[k]
                col[k] = 0
            b0 = corner + u64(s - 1) * row  # the last row's horizontal pairs
            for k in range(inner):
                p = flat[b0 + u64(k)]
                q = flat[b0 + u64(k) + cc]
                t += u8(max(p, q) - min(p, q))
            out[i] = t
    else:
        # candidates by top row (counting sort): those starting at row r are order[first[r]:first[r + 1]]
        first = np.zeros(h + 1, np.int64)
        for i in range(n):
            first[ys[i] + 1] += 1
        for r in range(h):
            first[r + 1] += first[r]
        fill = first.copy()
        order = np.empty(n, np.int64)
        for i in range(n):
            order[fill[ys[i]]] = i
            fill[ys[i]] += 1
        # column sums over rows [y0, r) of the owner map (acc, blk) and of the vertical pairs (accv, blkv, one pixel
        # column further: the patches' last columns): acc* hold the rows up to the last flush, blk* (16 bits,
        # flushed every 64 rows) the rows since
        nv = nk + c
        acc = np.zeros(nk, np.int32)
        blk = np.zeros(nk, np.uint16)
        accv = np.zeros(nv, np.int32)
        blkv = np.zeros(nv, np.uint16)
        nblk = 0
        for i in range(n):
            out[i] = 0
        for r in range(y0, y1 + 1):
            # a patch's box and last column (rows [y, y + s - 1)): the column sums at its bottom minus at its top;
            # at its bottom row, also that row's horizontal pairs
            for side in range(2):
                y = r if side == 0 else r - s + 1
                if y < y0:
                    continue
                for j in range(first[y], first[y + 1]):
                    i = order[j]
                    base = u64(xs[i] * c - k0)
                    t = 0
                    for k in range(inner):
                        t += acc[base + u64(k)] + np.int32(blk[base + u64(k)])
                    for k in range(inner, inner + c):
                        t += accv[base + u64(k)] + np.int32(blkv[base + u64(k)])
                    if side == 0:
                        out[i] -= t
                        continue
                    b0 = u64(r) * row + u64(xs[i] * c)  # the last row's horizontal pairs
                    for k in range(inner):
                        p = flat[b0 + u64(k)]
                        q = flat[b0 + u64(k) + cc]
                        t += u8(max(p, q) - min(p, q))
                    out[i] += t
            if r == y1:
                break
            if nblk == 64:  # 64 rows of at most 4 * 255 fill 16 bits
                for k in range(nk):
                    acc[k] += np.int32(blk[k])
                    blk[k] = 0
                for k in range(nv):
                    accv[k] += np.int32(blkv[k])
                    blkv[k] = 0
                nblk = 0
            b0 = u64(r) * row + u64(k0)
            b1 = b0 + row
            for k in range(nk):
                kk = u64(k)
                p = flat[b0 + kk]
                ph = flat[b0 + kk + cc]
                q = flat[b1 + kk]
                qh = flat[b1 + kk + cc]
                v = u8(max(p, q) - min(p, q))
                d = u16(u16(u8(max(p, ph) - min(p, ph))) + u16(v))
                d = u16(d + u16(u16(u8(max(p, qh) - min(p, qh))) + u16(u8(max(q, ph) - min(q, ph)))))
                blk[k] = u16(blk[k] + d)
                blkv[k] = u16(blkv[k] + u16(v))
            for k in range(nk, nv):
                p = flat[b0 + u64(k)]
                q = flat[b1 + u64(k)]
                blkv[k] = u16(blkv[k] + u16(u8(max(p, q) - min(p, q))))
            nblk += 1


def _nb_score_map(flat, h, w, c, s, stride, out, winm, winv):  # pragma: no cover - compiled by numba
    """Scores of every patch on the stride grid into out (ny, nx): vertical windows of the owner map slid down the
    rows, then each grid row's horizontal windows from a prefix sum along x. winm (w * c - c) and winv (w * c) are
    zeroed work arrays, uint16 when a window sum fits 16 bits (modular sums are then exact), else int32."""
    u8, u16, u64 = np.uint8, np.uint16, np.uint64
    ny, nx = out.shape
    if s < 2:
        for i in range(ny):
            for j in range(nx):
                out[i, j] = 0
        return
    wc = w * c
    row = u64(wc)
    cc = u64(c)
    nk = wc - c  # interleaved columns whose pixel has a right neighbour
    m = s - 1  # owner rows in a window
    um = u64(m)
    pix = np.empty(w, np.int64)  # per pixel column: window of the owner map plus the last row's horizontal pairs
    vpix = np.empty(w, np.int64)  # per pixel column: window of the vertical pairs
    prefix = np.empty(w, np.int64)
    for r in range(h - 1):
        # add owner row r, drop owner row r - m (recomputed from the image: cheaper than keeping it)
        b0 = u64(r) * row
        b1 = b0 + row
        drop = r >= m
        o0 = u64(r - m) * row if drop else b0
        o1 = o0 + row
        for k in range(nk):
            kk = u64(k)
            p = flat[b0 + kk]
            ph = flat[b0 + kk + cc]
            q = flat[b1 + kk]
            qh = flat[b1 + kk + cc]
            v = u8(max(p, q) - min(p, q))
            d = u16(u16(u8(max(p, ph) - min(p, ph))) + u16(v))
            d = u16(d + u16(u16(u8(max(p, qh) - min(p, qh))) + u16(u8(max(q, ph) - min(q, ph)))))
            p = flat[o0 + kk]
            ph = flat[o0 + kk + cc]
            q = flat[o1 + kk]
            qh = flat[o1 + kk + cc]
            ov = u8(max(p, q) - min(p, q))
            od = u16(u16(u8(max(p, ph) - min(p, ph))) + u16(ov))
            od = u16(od + u16(u16(u8(max(p, qh) - min(p, qh))) + u16(u8(max(q, ph) - min(q, ph)))))
            if not drop:
                od = u16(0)
                ov = u8(0)
            winm[k] = winm[k] + np.int32(d) - np.int32(od)
            winv[k] = winv[k] + np.int32(v) - np.int32(ov)
        for k in range(nk, wc):  # the last pixel column owns only its vertical pair
            kk = u64(k)
            p = flat[b0 + kk]
            q = flat[b1 + kk]
            t = np.int32(u8(max(p, q) - min(p, q)))
            if drop:
                p = flat[o0 + kk]
                q = flat[o1 + kk]
                t -= np.int32(u8(max(p, q) - min(p, q)))
            winv[k] = winv[k] + t
        y = r - m + 1  # the window now covers owner rows [y, y + s - 1): the box of the patches at row y
        if y < 0 or y % stride != 0:
            continue
        # channel sums per pixel column, with the horizontal pairs of the patches' last row y + s - 1 = r + 1
        if c == 3:
            for x in range(w - 1):
                kk = u64(3 * x)
                t = np.int64(winm[kk]) + np.int64(winm[kk + u64(1)]) + np.int64(winm[kk + u64(2)])
                a0 = flat[b1 + kk]
                a1 = flat[b1 + kk + u64(1)]
                a2 = flat[b1 + kk + u64(2)]
                a3 = flat[b1 + kk + u64(3)]
                a4 = flat[b1 + kk + u64(4)]
                a5 = flat[b1 + kk + u64(5)]
                t += u16(u16(u8(max(a0, a3) - min(a0, a3))) + u16(u8(max(a1, a4) - min(a1, a4))))
                pix[x] = t + u8(max(a2, a5) - min(a2, a5))
            for x in range(w):
                kk = u64(3 * x)
                vpix[x] = np.int64(winv[kk]) + np.int64(winv[kk + u64(1)]) + np.int64(winv[kk + u64(2)])
        else:
            for x in range(w - 1):
                t = 0
                for ch in range(c):
                    kk = u64(x * c + ch)
                    p = flat[b1 + kk]
                    q = flat[b1 + kk + cc]
                    t += np.int64(winm[kk]) + u8(max(p, q) - min(p, q))
                pix[x] = t
            for x in range(w):
                t = 0
                for ch in range(c):
                    t += np.int64(winv[u64(x * c + ch)])
                vpix[x] = t
        acc = 0
        for x in range(w - 1):
            prefix[x] = acc
            acc += pix[x]
        prefix[w - 1] = acc
        orow = out[y // stride]
        for j in range(nx):
            x = u64(j * stride)
            orow[j] = prefix[x + um] - prefix[x] + vpix[x + um]


def select_patch(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    size: int = 32,
    n_candidates: int,
    mode: Mode = "official",
    stride: int = 1,
    backend: str | None = None,
) -> tuple[int, int]:
    """Top-left (y, x) of the exposed patch of `img` (H, W, C) uint8.

    Args:
        img: the decoded image; both sides must be >= `size` (see `ensure_min_size` for the official rule).
        rng: the per-sample generator; the only source of randomness.
        size: patch side (official 32).
        n_candidates: random candidates in ``official`` mode (official: 64 in training, 256 at evaluation);
            ignored by the other modes.
        mode: ``official`` | ``exhaustive`` | ``random`` (see the module docstring).
        stride: grid step of ``exhaustive`` mode.
        backend: ``numba`` | ``numpy`` | ``auto`` (same result); default: `resolve_backend`.

    Returns:
        (y, x) as Python ints; the patch is ``img[y:y + size, x:x + size]``.

    Example:
        >>> y, x = select_patch(img, np.random.default_rng(0), size=32, n_candidates=256)
    """
    img = _as_image(img)
    h, w = img.shape[:2]
    if size < 1:
        raise ValueError(f"patch size must be >= 1, got {size}")
    if h < size or w < size:
        raise ValueError(
            f"image {h}x{w} is smaller than the patch size {size}; resize it first "
            f"(the official rule, `ensure_min_size`: to {SMALL_IMAGE_SIZE}x{SMALL_IMAGE_SIZE})"
        )
    if mode == "official":
        if n_candidates < 1:
            raise ValueError("n_candidates must be >= 1")
        ys, xs = candidate_positions(h, w, size, n_candidates, rng)
        i = int(np.argmin(_scores(img, ys, xs, int(size), "auto", backend)))  # positions valid by construction
        return int(ys[i]), int(xs[i])
    if mode == "exhaustive":
        if stride < 1:
            raise ValueError("stride must be >= 1")
        scores = score_map(img, size, stride, backend=backend)
        i, j = np.unravel_index(int(np.argmin(scores)), scores.shape)
        return int(i) * stride, int(j) * stride
    if mode == "random":
        ys, xs = candidate_positions(h, w, size, 1, rng)
        return int(ys[0]), int(xs[0])
    raise ValueError(f"unknown EPS mode {mode!r}; expected 'official', 'exhaustive' or 'random'")


def ensure_min_size(img: np.ndarray, size: int, resize_to: int = SMALL_IMAGE_SIZE) -> np.ndarray:
    """The official small-image rule: if the short side is below `size`, resize to resize_to x resize_to (bilinear,
    PIL, as torchvision ``Resize`` on a PIL image); otherwise return `img` unchanged."""
    if min(img.shape[:2]) >= size:
        return img
    from sep_bench.data.transforms import resize

    return resize(np.ascontiguousarray(img), resize_to, resize_to)
