"""blurdiff: a deliberately tiny example detector for sep-bench plugins (not from a paper).

It looks at what a generator's up-sampling leaves in the highest frequencies: the image minus a 3x3 binomial
blur of itself, fed to two strided conv blocks, global average pooling and a linear head (one fake logit).
Trained from scratch. Use it as a template: a pydantic config whose defaults are your official values, a
`Detector` subclass with `forward_features` / `forward_head`, the preprocessing ("views") that travels with the
detector, and a `DetectorSpec` that the package's pyproject.toml registers under the entry-point group
``sep_bench.detectors``.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop, maybe_hflip, random_crop, resize_short, to_tensor
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.weights import WeightsSource

__all__ = ["BlurDiffConfig", "BlurDiff", "blur_residual", "SPEC"]


class BlurDiffConfig(BaseModel):
    """``detectors.blurdiff.model`` in params.yaml (these defaults are the detector's own recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_size: int = Field(224, ge=8, description="square crop fed to the network (random in training, centre in evaluation)")
    eval_resize: int | None = Field(None, ge=8, description="short side resized before the centre crop; null: none")
    width: int = Field(16, ge=1, description="channels of the first conv block (the second has twice as many)")


def blur_residual(x: torch.Tensor) -> torch.Tensor:
    """x - blur(x) with a 3x3 binomial kernel per channel (reflect padding keeps the size)."""
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    kernel = (k[:, None] * k[None, :] / 16.0).expand(x.shape[1], 1, 3, 3)
    return x - F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=x.shape[1])


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BlurDiff(Detector):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.block1 = _block(3, width)
        self.block2 = _block(width, 2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, 1)

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = self.block2(self.block1(blur_residual(views["image"]) * 4.0))
        return torch.flatten(self.pool(x), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def _build(cfg: BlurDiffConfig, weights: WeightsSource) -> BlurDiff:
    if weights.kind != "none":
        raise ValueError("blurdiff has no pretrained weights: set `pretrained: false` in detectors.blurdiff")
    model = BlurDiff(width=cfg.width)
    model.weights = weights
    return model


def _views(cfg: BlurDiffConfig, train: bool, hflip: bool):
    def view(img, rng):
        if train:
            img = random_crop(img, cfg.crop_size, rng)
            if hflip:
                img = maybe_hflip(img, rng)
        else:
            if cfg.eval_resize:
                img = resize_short(img, cfg.eval_resize)
            img = center_crop(img, cfg.crop_size)
        return {"image": to_tensor(img, IMAGENET_MEAN, IMAGENET_STD)}

    return view


SPEC = DetectorSpec(
    name="blurdiff",
    summary="example plugin: tiny CNN on the image minus its 3x3 blur, from scratch",
    paper="(example detector, no paper)",
    repo="examples/sep-bench-example-detector",
    config=BlurDiffConfig,
    build=_build,
    views=_views,
)
