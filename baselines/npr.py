"""NPR: neighbouring pixel relationships (Tan et al., CVPR 2024).

Port of chuangchuangtan/NPR-DeepfakeDetection ``networks/resnet.py`` (no licence file in the repository; this is
an independent re-implementation of the published architecture). The module and parameter names equal the
official ones, so an official state dict loads strictly: conv1, bn1, layer1.*, layer2.*, fc1.

Architecture: NPR(x) = x - up2(down2(x)) with nearest interpolation; conv1 (3x3, stride 2, no bias) on
NPR * 2/3, bn1, ReLU, max-pool, ResNet-50 layer1 and layer2 (Bottleneck), global average pool, fc1 -> 1 logit.
Trained from scratch.

Documented deviation: odd heights/widths are trimmed by one row/column before NPR (the official GenImage code
only sees 224 crops; its AIGCBenchmark evaluation trims the same way), because nearest down/up-sampling of an
odd size does not return to the input size.

Evaluation sees a centre crop of `eval_crop_size` (GenImage), or with ``eval_crop_size: null`` the full image, as
the official AIGCBenchmark evaluation does (no resize, no crop; it runs at batch size 1, the engine batches images
of one size instead: ``eval.bucket_by_size``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, crop_view, pad_to, resize_short, to_tensor
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.resnet import add_stem_and_stages, init_resnet_, stem_stage_features
from sep_bench.protocol import ProtocolError
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["NPRConfig", "NPR", "npr_residual", "SPEC"]


class NPRConfig(BaseModel):
    """``detectors.npr.model`` (defaults: the official GenImage recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_size: int = Field(224, ge=8)
    train_resize: int | None = Field(256, ge=8, description="short side resized before the random crop; null: none")
    eval_resize: int | None = Field(None, ge=8, description="short side resized before the centre crop; null: none")
    eval_crop_size: int | None = Field(None, ge=8, description="centre crop at evaluation (default: crop_size); "
                                       "null: the full image")
    layers: tuple[int, int] = (3, 4)

    @model_validator(mode="before")
    @classmethod
    def _eval_crop_defaults_to_crop(cls, data):
        if isinstance(data, dict) and "eval_crop_size" not in data:
            data = {**data, "eval_crop_size": data.get("crop_size", cls.model_fields["crop_size"].default)}
        return data


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x - up2(down2(x)) with nearest interpolation (odd sizes trimmed to even first)."""
    h, w = x.shape[-2:]
    x = x[..., : h - h % 2, : w - w % 2]
    down = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
    return x - F.interpolate(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)


class NPR(Detector):
    def __init__(self, layers: tuple[int, int] = (3, 4)) -> None:
        super().__init__()
        width = add_stem_and_stages(self, layers)  # conv1, bn1, relu, maxpool, layer1, layer2, avgpool
        self.fc1 = nn.Linear(width, 1)
        init_resnet_(self)

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return stem_stage_features(self, npr_residual(views["image"]) * (2.0 / 3.0))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc1(features)


def _build(cfg: NPRConfig, weights: WeightsSource) -> NPR:
    if weights.pretrained:
        raise ProtocolError(
            "NPR has no pretrained backbone: it is trained from scratch (pretrained: false); "
            "load the authors' released NPR weights with --official / load_official instead"
        )
    model = NPR(layers=cfg.layers)
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load an official NPR state dict (same key names, strict); its single logit is already the fake logit."""
    model.load_state_dict(load_state_dict(path), strict=True)


def _full_image_view(eval_resize: int | None):
    """The whole image (short side resized first if asked); sides under 2 px are zero-padded to 2, the smallest
    size the residual's 2x2 grid needs (centre crops pad small images the same way)."""

    def view(img, rng):
        if eval_resize:
            img = resize_short(img, eval_resize)
        # decoded arrays are read-only (PIL) and torch warns on those; a crop is copied anyway, the full image not
        img = np.require(pad_to(img, 2), requirements=["C", "W"])
        return {"image": to_tensor(img, IMAGENET_MEAN, IMAGENET_STD)}

    return view


def _views(cfg: NPRConfig, train: bool, hflip: bool):
    if not train and cfg.eval_crop_size is None:
        return _full_image_view(cfg.eval_resize)
    return crop_view(cfg.crop_size if train else cfg.eval_crop_size, cfg.train_resize, cfg.eval_resize,
                     IMAGENET_MEAN, IMAGENET_STD, train=train, hflip=hflip)


SPEC = DetectorSpec(
    name="npr",
    summary="NPR: up-sampling traces from neighbouring-pixel residuals, ResNet-50 layer1-2 from scratch",
    paper="Tan et al., Rethinking the Up-Sampling Operations in CNN-based Generative Network for Generalizable Deepfake Detection, CVPR 2024",
    repo="https://github.com/chuangchuangtan/NPR-DeepfakeDetection",
    config=NPRConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
)
