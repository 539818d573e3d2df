"""Deterministic post-processing applied to decoded images before a detector's own preprocessing.

Used for (1) format-aligned evaluation: re-encode every test image, real and fake alike, as JPEG at one quality,
to measure how much a detector relies on GenImage's JPEG-real / PNG-fake bias (a PNG re-encode would not change
any pixel, so only JPEG alignment is meaningful); (2) the robustness suite: JPEG re-compression, Gaussian blur,
downscaling and their combinations.

A perturbation is written as a name: ``jpeg75`` (quality 75), ``blur2`` (sigma 2), ``down0.5`` (scale 0.5),
combined left to right with ``+`` (``blur1+jpeg75``), or ``none``. Every step is a pure function of the pixels:
no randomness, so a perturbed evaluation is as reproducible as a clean one.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image
from scipy.ndimage import correlate1d

from sep_bench.protocol.syntax import perturbation_steps

__all__ = ["parse_perturbation", "gaussian_kernel", "encode_jpeg", "jpeg", "blur", "downscale", "Perturbation"]

Perturbation = Callable[[np.ndarray], np.ndarray]


def gaussian_kernel(sigma: float) -> np.ndarray:
    """1-D Gaussian of radius ceil(3 sigma), normalised to sum 1."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG (4:2:0, PIL/libjpeg) bytes at `quality`."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip at `quality` (PIL/libjpeg, uint8 RGB in and out; the one JPEG round trip of the project:
    perturbations, alignment and the detectors' training augmentations)."""
    with Image.open(io.BytesIO(encode_jpeg(img, quality))) as decoded:
        return np.array(decoded.convert("RGB"))


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with reflected borders, rounded back to uint8."""
    k = gaussian_kernel(sigma)
    out = correlate1d(img.astype(np.float64), k, axis=0, mode="reflect")
    out = correlate1d(out, k, axis=1, mode="reflect")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def downscale(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize by `scale` (bicubic, antialiased, at least 1 px); the detector then sees the smaller image."""
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC, reducing_gap=None))


def parse_perturbation(name: str) -> Perturbation | None:
    """The function a perturbation name stands for (None for ``none``); unknown names raise with the syntax
    (`sep_bench.protocol.syntax.perturbation_steps`)."""
    make = {"jpeg": lambda q: (lambda x: jpeg(x, int(q))), "blur": lambda s: (lambda x: blur(x, s)),
            "down": lambda s: (lambda x: downscale(x, s))}
    steps: list[Perturbation] = [make[kind](value) for kind, value in perturbation_steps(name)]
    if not steps:
        return None

    def apply(img: np.ndarray) -> np.ndarray:
        for step in steps:
            img = step(img)
        return img

    return apply
