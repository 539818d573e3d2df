"""Training augmentation and crop view shared by the baseline detectors (CNNDetection's "Blur+JPEG").

Written for sep-bench (Apache-2.0). Re-implements the "Blur+JPEG" training augmentation of
PeterWang512/CNNDetection ``data/datasets.py`` (``data_augment``), which UniversalFakeDetect and
SSP-AI-Generated-Image-Detection reuse: with probability ``blur_prob`` a Gaussian blur per channel with sigma
drawn uniformly from ``blur_sigma``, then with probability ``jpeg_prob`` a JPEG round trip at an integer quality
drawn uniformly from ``jpeg_quality`` (both ends included). All draws come from the per-sample numpy Generator.

Documented deviation: the official code picks the JPEG encoder at random between OpenCV and PIL
(``--jpg_method cv2,pil``); here it is always PIL. Both wrap libjpeg with the same quality tables and 4:2:0 chroma
subsampling, so the difference is at the level of rounding.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sep_bench.data import transforms
from sep_bench.data.perturb import jpeg

__all__ = ["BlurJpegConfig", "CropViewConfig", "crop_view", "blur_jpeg", "gaussian_blur", "jpeg_roundtrip"]


class BlurJpegConfig(BaseModel):
    """Training augmentation fields shared by the detector configs (defaults: CNNSpot Blur+JPEG(0.5))."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blur_prob: float = Field(0.5, ge=0.0, le=1.0, description="probability of a Gaussian blur (training only)")
    blur_sigma: tuple[float, float] = Field((0.0, 3.0), description="blur sigma range, drawn uniformly")
    jpeg_prob: float = Field(0.5, ge=0.0, le=1.0, description="probability of a JPEG round trip (training only)")
    jpeg_quality: tuple[int, int] = Field((30, 100), description="JPEG quality range, integers, both ends included")

    @model_validator(mode="after")
    def _ranges(self) -> "BlurJpegConfig":
        lo, hi = self.blur_sigma
        if not 0.0 <= lo <= hi:
            raise ValueError(f"blur_sigma must satisfy 0 <= low <= high, got {self.blur_sigma}")
        qlo, qhi = self.jpeg_quality
        if not 1 <= qlo <= qhi <= 100:
            raise ValueError(f"jpeg_quality must satisfy 1 <= low <= high <= 100, got {self.jpeg_quality}")
        return self


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Per-channel Gaussian blur of a uint8 (H, W, 3) array (scipy.ndimage, as the official code)."""
    from scipy.ndimage import gaussian_filter

    out = np.empty_like(img)
    for c in range(img.shape[2]):
        gaussian_filter(img[:, :, c], sigma=sigma, output=out[:, :, c])
    return out


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode to JPEG with PIL at `quality` and decode again (uint8 RGB in and out): `sep_bench.data.perturb.jpeg`."""
    return jpeg(img, quality)


def blur_jpeg(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    blur_prob: float,
    blur_sigma: tuple[float, float],
    jpeg_prob: float,
    jpeg_quality: tuple[int, int],
) -> np.ndarray:
    """Blur, then JPEG, each with its probability. Always makes the same four draws so the stream stays aligned."""
    do_blur = rng.random() < blur_prob
    sigma = float(rng.uniform(blur_sigma[0], blur_sigma[1]))
    do_jpeg = rng.random() < jpeg_prob
    quality = int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1))
    if do_blur and sigma > 0.0:
        img = gaussian_blur(img, sigma)
    if do_jpeg:
        img = jpeg_roundtrip(img, quality)
    return img


class CropViewConfig(BlurJpegConfig):
    """Fields of the CNNDetection-style view: resize, blur/JPEG, random (train) or centre (eval) crop."""

    crop_size: int = Field(224, ge=8)
    train_resize: int | None = Field(256, ge=8, description="short side resized before augmentation and crop; null: none")
    eval_resize: int | None = Field(None, ge=8, description="short side resized before the centre crop; null: none")


def crop_view(cfg: CropViewConfig, train: bool, hflip: bool, mean: Sequence[float], std: Sequence[float]):
    """The CNNDetection view: train: resize short side -> blur/JPEG -> RandomCrop -> flip; eval: [resize] ->
    CenterCrop. Returns ``view(img, rng) -> {"image": normalised (3, crop, crop) tensor}``."""

    def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return blur_jpeg(img, rng, blur_prob=cfg.blur_prob, blur_sigma=cfg.blur_sigma, jpeg_prob=cfg.jpeg_prob,
                         jpeg_quality=cfg.jpeg_quality)

    return transforms.crop_view(cfg.crop_size, cfg.train_resize, cfg.eval_resize, mean, std, train=train,
                                hflip=hflip, augment=augment)
