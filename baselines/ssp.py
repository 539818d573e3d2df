"""SSP: "A Single Simple Patch is All You Need for AI-generated Image Detection" (Chen, Yao, Niu, 2024).

Independent re-implementation of bcmi/SSP-AI-Generated-Image-Detection (MIT licence; no code copied).
The view picks one 32x32 patch: among ``n_candidates`` random crops, the one with the lowest texture score (the
exposed-patch selector shared with SEP, `sep_bench.layers.eps.select_patch`); images whose short side is below the
patch size are first resized to 256x256. The model bilinearly up-samples the ImageNet-normalised patch to 256x256,
applies three fixed SRM filters (KB/4, KV/12, horizontal second order/2), each summed over RGB (5x5, padding 2),
clips with Hardtanh(-3, 3), and classifies with an ImageNet ResNet-50 whose ``fc`` is ``Linear(2048, 1)``.

Official facts (``networks/ssp.py``, ``networks/srm_conv.py``, ``utils/patch.py``, ``utils/tdataloader.py``,
``options.py``, ``train_val.py``, ``train_val.sh``, ``utils/util.py``): module names ``srm`` (a non-trainable
``Parameter`` ``kernel`` of shape 3x3x5x5) and ``disc`` (torchvision-style ResNet-50, weights
``resnet50-19c8e357``, i.e. timm ``resnet50.tv_in1k``; ``fc`` keeps PyTorch's default init); the number of
candidates is ``(trainsize // patch_size) ** 2 = (256 // 32) ** 2 = 64`` in training and in validation/testing
alike; no flip, no resize of the whole image. Training: BCE-with-logits, Adam lr 1e-4 (default betas, no weight
decay), batch 64, 30 epochs, poly LR ``lr = 1e-4 * (1 - epoch / 30) ** 0.9`` set at the start of each epoch
(epochs counted from 1), seed 42; ``train_val.sh`` disables the blur/JPEG augmentation (``--blur_prob=0
--jpg_prob=0``; when enabled: blur sigma U[0, 1], JPEG quality U{90..100}). The checkpoint kept is the best mean
accuracy over the GenImage *val* folders of all eight generators (i.e. the test sets).

Label convention: the official data sets ``nature = 1``, ``ai = 0``, so its single logit is a *real* logit. Here
the model's logit is the fake logit; `_load_official` negates ``disc.fc.weight`` and ``disc.fc.bias`` (the only
key mapping; all other names are the official ones, loaded strictly).

Documented deviation: the candidate crops are drawn from the per-sample numpy Generator (the official code uses
torchvision's RandomCrop on the global RNG and never seeds evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sep_bench.layers.augment import BlurJpegConfig, blur_jpeg
from sep_bench.layers.backbones import ResNetName, build_resnet, negate_logits, resnet_pooled_features
from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, maybe_hflip, to_tensor
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.srm import SRMConv2d
from sep_bench.layers.eps import SMALL_IMAGE_SIZE, Mode, ensure_min_size, select_patch
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["SSPConfig", "SSP", "SPEC"]

class SSPConfig(BlurJpegConfig):
    """``detectors.ssp.model`` (defaults: the official recipe, ``train_val.sh``)."""

    backbone: ResNetName = Field("resnet50", description="torchvision ResNet; resnet18 for the CPU mini profile")
    patch_size: int = Field(32, ge=4)
    n_candidates_train: int = Field(64, ge=1, description="random candidate patches per training image")
    n_candidates_eval: int = Field(64, ge=1, description="random candidate patches per evaluation image")
    select_mode: Mode = Field("official", description="mode of `sep_bench.layers.eps.select_patch`")
    small_resize: int = Field(SMALL_IMAGE_SIZE, ge=8, description="images with a side below patch_size are resized to this square")
    input_size: int = Field(256, ge=8, description="the patch is bilinearly up-sampled to input_size x input_size")
    fc_init_std: float | None = Field(None, gt=0.0, description="N(0, std) init of fc.weight; null: PyTorch default")
    # official train_val.sh: --blur_prob=0 --jpg_prob=0; the ranges are options.py defaults
    blur_prob: float = Field(0.0, ge=0.0, le=1.0)
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    jpeg_prob: float = Field(0.0, ge=0.0, le=1.0)
    jpeg_quality: tuple[int, int] = (90, 100)


class SSP(Detector):
    """SRM residual of the up-sampled patch -> ResNet (``srm``, ``disc``: the official module names)."""

    def __init__(self, disc: nn.Module, input_size: int = 256) -> None:
        super().__init__()
        self.input_size = input_size
        self.srm = SRMConv2d(3, bank="srm3", limit=3.0)
        self.disc = disc

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = F.interpolate(views["patch"], size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return resnet_pooled_features(self.disc, self.srm(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.disc.fc(features)


def _build(cfg: SSPConfig, weights: WeightsSource) -> SSP:
    model = SSP(build_resnet(cfg.backbone, weights, fc_init_std=cfg.fc_init_std), input_size=cfg.input_size)
    model.weights = weights
    return model


def official_to_fake(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official SSP state dict (single *nature* logit) to this model (single *fake* logit)."""
    return negate_logits(sd, ("disc.fc.weight", "disc.fc.bias"), "an SSP checkpoint")


def _load_official(model: Detector, path: Path) -> None:
    """Load an official SSP checkpoint (keys ``srm.kernel``, ``disc.*``; strict), negating the nature logit."""
    model.load_state_dict(official_to_fake(load_state_dict(path)), strict=True)


def _views(cfg: SSPConfig, train: bool, hflip: bool):
    n_candidates = cfg.n_candidates_train if train else cfg.n_candidates_eval

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if train:
            img = blur_jpeg(
                img, rng, blur_prob=cfg.blur_prob, blur_sigma=cfg.blur_sigma, jpeg_prob=cfg.jpeg_prob, jpeg_quality=cfg.jpeg_quality
            )
        img = ensure_min_size(img, cfg.patch_size, cfg.small_resize)
        y, x = select_patch(img, rng, size=cfg.patch_size, n_candidates=n_candidates, mode=cfg.select_mode)
        patch = img[y : y + cfg.patch_size, x : x + cfg.patch_size]
        if train and hflip:
            patch = maybe_hflip(patch, rng)
        return {"patch": to_tensor(patch, IMAGENET_MEAN, IMAGENET_STD)}

    return view


SPEC = DetectorSpec(
    name="ssp",
    summary="SSP: the single simplest 32x32 patch, SRM residuals, ImageNet ResNet-50",
    paper="Chen, Yao, Niu, A Single Simple Patch is All You Need for AI-generated Image Detection, arXiv 2402.01123 (2024)",
    repo="https://github.com/bcmi/SSP-AI-Generated-Image-Detection",
    config=SSPConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:resnet50.tv_in1k",
)
