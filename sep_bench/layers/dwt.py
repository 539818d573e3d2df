"""Discrete wavelet transforms (pytorch_wavelets), shared by SEP's FPM, SAFE and FatFormer's adapters."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["dwt_forward", "dwt_bands"]


def dwt_forward(wave: str = "haar", mode: str = "symmetric", levels: int = 1) -> nn.Module:
    """pytorch_wavelets ``DWTForward(J=levels, wave, mode)``, with a clear message when it cannot be imported."""
    try:
        from pytorch_wavelets import DWTForward
    except ImportError as err:  # also raised when setuptools >= 81 removed pkg_resources
        raise ImportError(
            "the DWT needs pytorch_wavelets (pip install 'pytorch-wavelets>=1.3' PyWavelets 'setuptools<81'; "
            f"pytorch_wavelets 1.3 imports pkg_resources, which setuptools 81 removed). Original error: {err}"
        ) from err
    return DWTForward(J=levels, mode=mode, wave=wave)


def dwt_bands(dwt: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-level DWT of x (B, C, H, W) as (LL, LH, HL, HH): pytorch_wavelets' low band and detail bands 0, 1, 2."""
    ll, highs = dwt(x)
    h = highs[0]
    return ll, h[:, :, 0], h[:, :, 1], h[:, :, 2]
