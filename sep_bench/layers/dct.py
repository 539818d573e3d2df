"""Orthonormal DCT-II as matrices: 2-D DCT of images and of non-overlapping or sliding blocks.

Shared by F3Net (FAD band filters, LFS windows), FreDect (per-channel 2-D DCT of the image) and AIDE (DCT
scoring of patches). ``dct_matrix(n) @ x`` is ``scipy.fft.dct(x, type=2, norm="ortho", axis=0)``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dct_matrix", "dct2", "idct2"]


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
