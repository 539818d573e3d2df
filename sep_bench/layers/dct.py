"""Orthonormal DCT-II as matrices: 2-D DCT of images and of non-overlapping or sliding blocks.

Shared by F3Net (FAD band filters, LFS windows), FreDect (per-channel 2-D DCT of the image) and AIDE (DCT
scoring of patches). ``dct_matrix(n) @ x`` is ``scipy.fft.dct(x, type=2, norm="ortho", axis=0)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["dct_matrix", "dct2", "idct2", "diagonal_band_mask", "sliding_block_dct"]


def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(n, n) orthonormal DCT-II matrix D, rows = frequencies: D[k, i] = a_k cos(pi (2i + 1) k / 2n)."""
    i = torch.arange(n, dtype=torch.float64)
    k = i[:, None]
    d = torch.cos(math.pi * (2 * i[None] + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """2-D orthonormal DCT-II over the last two dimensions (any leading shape)."""
    h, w = x.shape[-2:]
    dh = dct_matrix(h, x.dtype, x.device)
    dw = dct_matrix(w, x.dtype, x.device)
    return dh @ x @ dw.T


def idct2(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `dct2`."""
    h, w = x.shape[-2:]
    dh = dct_matrix(h, x.dtype, x.device)
    dw = dct_matrix(w, x.dtype, x.device)
    return dh.T @ x @ dw


def diagonal_band_mask(size: int, start: float, end: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(size, size) 0/1 mask of the DCT coefficients (i, j) with ``start < i + j <= end`` (F3Net's band filters).

    The band is half-open at its low end, so a band starting at 0 excludes the DC coefficient (as in the F3Net
    implementations this follows).
    """
    s = torch.arange(size, dtype=torch.float64)
    d = s[:, None] + s[None, :]
    return ((d > start) & (d <= end)).to(dtype)


def sliding_block_dct(x: torch.Tensor, window: int, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """2-D orthonormal DCT of every ``window`` x ``window`` block of a sliding window (zero padding).

    Args:
        x: (N, C, H, W).
        window, stride, padding: of the sliding window (``torch.nn.Unfold`` semantics).

    Returns:
        (N, L, C, window, window): ``L = H' * W'`` blocks in raster order, each block's `dct2`.
    """
    n, c = x.shape[:2]
    cols = F.unfold(x, kernel_size=window, stride=stride, padding=padding)  # (N, C * S * S, L)
    blocks = cols.transpose(1, 2).reshape(n, -1, c, window, window)
    d = dct_matrix(window, x.dtype, x.device)
    return d @ blocks @ d.T
