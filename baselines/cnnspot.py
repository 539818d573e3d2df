"""CNNSpot: "CNN-generated images are surprisingly easy to spot... for now" (Wang et al., CVPR 2020).

Independent re-implementation of PeterWang512/CNNDetection (licence CC BY-NC-SA 4.0; no code copied). The model
is a torchvision ResNet-50 with ``fc = Linear(2048, 1)``; its module names are torchvision's, so the official
released checkpoints (``blur_jpg_prob0.5.pth``, ``blur_jpg_prob0.1.pth``: ``{'model': state_dict, ...}``) load
strictly with no key mapping. Their single logit is already the fake logit (folders ``0_real`` / ``1_fake``).

Official recipe (``options/base_options.py``, ``options/train_options.py``, ``networks/trainer.py``, README):
ImageNet-pretrained ResNet-50 (torchvision ``resnet50-19c8e357``, the weights timm hosts as
``resnet50.tv_in1k``), ``fc.weight`` ~ N(0, 0.02) (bias: PyTorch default), BCE-with-logits, Adam lr 1e-4
betas (0.9, 0.999) no weight decay, batch 64, early stopping on validation accuracy (patience 5 epochs, then
lr / 10, stop below 1e-6). Training view (``data/datasets.py``): resize short side to 256 (``loadSize``, bilinear)
-> blur / JPEG augmentation -> RandomCrop 224 -> horizontal flip -> ImageNet normalisation. Two released
variants: Blur+JPEG(0.5) (blur p 0.5, sigma U[0, 3]; JPEG p 0.5, quality U{30..100}; the default here) and
Blur+JPEG(0.1) (both probabilities 0.1, same ranges). Evaluation (``eval.py``): no resize, CenterCrop 224 (the
paper; the README also reports an uncropped variant at batch size 1), ImageNet normalisation.

Documented deviations: the JPEG encoder is always PIL (see `sep_bench.layers.augment`); the official validation during
training also applies the augmentation at the mid values (sigma 1.5, quality 65, each with p 0.5); this
harness validates on the plain evaluation view.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from torch import nn

from sep_bench.layers.augment import CropViewConfig, crop_view
from sep_bench.layers.backbones import ResNetChildren, ResNetName, build_resnet
from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["CNNSpotConfig", "CNNSpot", "SPEC"]


class CNNSpotConfig(CropViewConfig):
    """``detectors.cnnspot.model`` (defaults: the official Blur+JPEG(0.5) recipe)."""

    backbone: ResNetName = Field("resnet50", description="torchvision ResNet; resnet18 for the CPU mini profile")
    fc_init_std: float = Field(0.02, gt=0.0, description="std of the N(0, std) init of fc.weight")


class CNNSpot(ResNetChildren, Detector):
    """A torchvision ResNet whose children are this module's children, so the state-dict keys are torchvision's."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.adopt(resnet)


def _build(cfg: CNNSpotConfig, weights: WeightsSource) -> CNNSpot:
    model = CNNSpot(build_resnet(cfg.backbone, weights, fc_init_std=cfg.fc_init_std))
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load an official CNNDetection checkpoint (``{'model': sd}`` or a bare sd; torchvision keys, strict)."""
    model.load_state_dict(load_state_dict(path), strict=True)


def _views(cfg: CNNSpotConfig, train: bool, hflip: bool):
    return crop_view(cfg, train, hflip, IMAGENET_MEAN, IMAGENET_STD)


SPEC = DetectorSpec(
    name="cnnspot",
    summary="CNNSpot: ImageNet ResNet-50 fine-tuned with blur+JPEG augmentation, one fake logit",
    paper="Wang et al., CNN-generated images are surprisingly easy to spot... for now, CVPR 2020",
    repo="https://github.com/PeterWang512/CNNDetection",
    config=CNNSpotConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:resnet50.tv_in1k",
)
