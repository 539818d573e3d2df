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

No per-patch Python loop. ``official`` mode (`candidate_scores`) has two exact methods and takes the cheaper:

- ``rows`` (candidates cover more area than the image, e.g. 256 candidates in a 256x256 image): every pixel
  pair's absolute difference is computed once for the whole image; the differences of the four pairs owned by each
  pixel (owner = the pair's top-left pixel) go into one map, whose prefix sums along rows (a one-dimensional
  summed-area table) score a candidate as the sum, over its first ``size - 1`` rows, of one row-prefix difference,
  plus the horizontal pairs of its last row and the vertical pairs of its last column, gathered directly: O(H * W)
  array work, then O(size) vectorised gathers per candidate. A second (column) pass would make each candidate
  O(1) but costs more than it saves for a few hundred candidates, because numpy's prefix sum across rows is slow.
- ``windows`` (candidates cover no more area than the image: 64 candidates in a 512x512 image, 256 in a
  1024x1024 one): the candidate windows are gathered into one array and scored in one vectorised pass.

The cost is thus O(min(H * W, N * size**2)). The score is invariant under flips, so a flipped view is scored as
the unflipped array at mirrored positions (no copy). ``exhaustive`` mode uses `texture_integral`, the
two-dimensional summed-area tables of the horizontal, vertical and diagonal maps: every position is scored in O(1)
and the whole score map in O(H * W). All paths are exact integer arithmetic and pick the same patch as the
per-patch loop given the same positions (``tests/test_eps.py``). Speed against the official loop:
``benchmarks/eps.py``.

Maps are kept in "interleaved" column space, the image viewed as ``(H, W * C)``: pixel columns ``[x, x + w)`` are
columns ``[C * x, C * (x + w))``, so summing a column range also sums the channels.

Determinism: all randomness comes from the numpy Generator passed in; the same seed gives the same patch.
Deviation from the official code: it draws candidates with torchvision's ``RandomCrop`` from torch's global RNG
(and never seeds evaluation), so the official candidate positions cannot be reproduced; the distribution is the
same.

Images smaller than the patch: `select_patch` raises ``ValueError``. The official rule, applied by
`ensure_min_size` (and by SEP's views), is to resize the whole image to 256x256 (bilinear) when its short side is
below the patch size, then select as usual; the returned position refers to the resized image.
"""

from __future__ import annotations

import threading
from typing import Literal

import numpy as np

__all__ = [
    "Mode",
    "SMALL_IMAGE_SIZE",
    "texture_score",
    "texture_integral",
    "patch_scores",
    "score_map",
    "candidate_positions",
    "candidate_scores",
    "select_patch",
    "ensure_min_size",
]

Mode = Literal["official", "exhaustive", "random"]

#: The official rule: an image whose short side is below the patch size is resized to this square first.
SMALL_IMAGE_SIZE = 256


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


def score_map(img: np.ndarray, size: int = 32, stride: int = 1, *, integral: np.ndarray | None = None) -> np.ndarray:
    """Texture score of every patch position on the stride grid, from one `texture_integral`, in O(H * W).

    Returns:
        int64 array (ny, nx); entry (i, j) scores the patch at ``(i * stride, j * stride)``.
    """
    img = _as_image(img)
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image {h}x{w} is smaller than the patch size {size}")
    sat = texture_integral(img) if integral is None else integral
    ny = (h - size) // stride + 1
    nx = (w - size) // stride + 1

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
    return ys.astype(np.int64), xs.astype(np.int64)


def candidate_scores(
    img: np.ndarray, ys, xs, size: int, *, method: Literal["auto", "rows", "windows"] = "auto"
) -> np.ndarray:
    """Texture scores (int64) of the patches at (ys[i], xs[i]); the fast path of the ``official`` mode.

    Two exact, loop-free methods, whose cost is proportional to the image area and to the candidates' total area:

    - ``rows``: one pass builds the owner map (each pixel holds the pairs it starts: right, down, down-right, and
      its right neighbour with the pixel below) and its row prefix sums; a candidate's score is the sum over its
      first ``size - 1`` rows of the row-prefix difference over its first ``size - 1`` columns, plus the horizontal
      pairs of its last row and the vertical pairs of its last column.
    - ``windows``: the candidate windows are gathered into one (N, size, size * C) array and their pair
      differences computed at once (each window's owner map, summed).

    ``auto`` picks ``windows`` when the candidates cover no more area than the image (``N * size**2 <= H * W``: 64
    candidates in a 512x512 image), else ``rows``.
    """
    img = _as_image(img)
    h, w, c = img.shape
    ys = np.asarray(ys, dtype=np.int64)
    xs = np.asarray(xs, dtype=np.int64)
    s = int(size)
    if h < s or w < s:
        raise ValueError(f"image {h}x{w} is smaller than the patch size {s}")
    if ys.size and (ys.min() < 0 or xs.min() < 0 or ys.max() > h - s or xs.max() > w - s):
        raise ValueError("candidate position outside the image")
    # The score is invariant under flips (horizontal and vertical pairs map to themselves, the two diagonals to each
    # other), so a flipped view (the training flip) is scored as the unflipped array at mirrored positions.
    if img.strides[1] < 0:
        img, xs = img[:, ::-1], w - s - xs
    if img.strides[0] < 0:
        img, ys = img[::-1], h - s - ys
    if method == "auto":
        method = "windows" if len(ys) * s * s <= h * w else "rows"
    if method == "windows":
        return _window_scores(img, ys, xs, s)
    if method != "rows":
        raise ValueError(f"unknown method {method!r}")
    return _row_prefix_scores(img, ys, xs, s)


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


def select_patch(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    size: int = 32,
    n_candidates: int,
    mode: Mode = "official",
    stride: int = 1,
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

    Returns:
        (y, x) as Python ints; the patch is ``img[y:y + size, x:x + size]``.

    Example:
        >>> y, x = select_patch(img, np.random.default_rng(0), size=32, n_candidates=256)
    """
    img = _as_image(img)
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(
            f"image {h}x{w} is smaller than the patch size {size}; resize it first "
            f"(the official rule, `ensure_min_size`: to {SMALL_IMAGE_SIZE}x{SMALL_IMAGE_SIZE})"
        )
    if mode == "official":
        if n_candidates < 1:
            raise ValueError("n_candidates must be >= 1")
        ys, xs = candidate_positions(h, w, size, n_candidates, rng)
        i = int(np.argmin(candidate_scores(img, ys, xs, size)))
        return int(ys[i]), int(xs[i])
    if mode == "exhaustive":
        if stride < 1:
            raise ValueError("stride must be >= 1")
        scores = score_map(img, size, stride)
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
