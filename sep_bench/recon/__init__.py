"""Diffusion reconstructions for detectors that need them (DIRE's DDIM inversion maps, DRCT's SD-inpainting
reconstructions): settings (`config`), models (`models`), samplers (`ddim`), the cached stage (`stage`) and the
engine hook that swaps or adds the results in a detector's sample lists (`samples`)."""

from sep_bench.recon.config import ReconConfig

__all__ = ["ReconConfig"]
