"""Helpers shared by the baseline detectors: seeded blur/JPEG augmentation and a ResNet builder.

Written for sep-bench (Apache-2.0). The augmentation re-implements the "Blur+JPEG" training augmentation of
PeterWang512/CNNDetection ``data/datasets.py`` (``data_augment``), which UniversalFakeDetect and
SSP-AI-Generated-Image-Detection reuse: with probability ``blur_prob`` a Gaussian blur per channel with sigma
drawn uniformly from ``blur_sigma``, then with probability ``jpeg_prob`` a JPEG round trip at an integer quality
drawn uniformly from ``jpeg_quality`` (both ends included). All draws come from the per-sample numpy Generator.

Documented deviation: the official code picks the JPEG encoder at random between OpenCV and PIL
(``--jpg_method cv2,pil``); here it is always PIL (OpenCV is not a dependency). Both wrap libjpeg with the same
quality tables and 4:2:0 chroma subsampling, so the difference is at the level of rounding.

The ResNet builder returns a torchvision ``ResNet`` whose ``fc`` is replaced by ``Linear(F, 1)``; its
state-dict keys are torchvision's (conv1, bn1, layer1..4, fc), which is also how the official CNNSpot and SSP
checkpoints name them. Pretrained weights come from a `WeightsSource`: ``none`` (random init), ``hub``
(``timm:<arch>.<tag>`` or ``hf-hub:<repo>`` through timm and the Hugging Face cache, honouring
``HF_HUB_OFFLINE``), or ``file`` (a torchvision/timm-format ResNet state dict). A hub or file source that cannot
be loaded raises `PretrainedUnavailableError`; nothing ever falls back to random weights.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from sep_bench.data import transforms
from sep_bench.weights import PretrainedUnavailableError, WeightsSource, hub_failure, load_state_dict, timm_state_dict

__all__ = [
    "BlurJpegConfig",
    "CropViewConfig",
    "crop_view",
    "PretrainedUnavailableError",
    "ResNetName",
    "blur_jpeg",
    "gaussian_blur",
    "jpeg_roundtrip",
    "build_resnet",
    "resnet_pooled_features",
    "negate_logits",
    "hub_failure",
]

ResNetName = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


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
    """Encode to JPEG with PIL at `quality` and decode again (uint8 RGB in and out)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.array(decoded.convert("RGB"))


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


def negate_logits(sd: dict[str, torch.Tensor], keys: Sequence[str], what: str) -> dict[str, torch.Tensor]:
    """A copy of an official state dict whose single logit has the opposite sign convention (a *real* logit, as
    in SSP and LOTA) with the head's `keys` negated, so the model's logit is the fake one."""
    sd = dict(sd)
    for key in keys:
        if key not in sd:
            raise KeyError(f"not {what}: {key!r} missing")
        sd[key] = -sd[key]
    return sd


def resnet_pooled_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet up to the global average pool: (B, 3, H, W) -> (B, F)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return torch.flatten(net.avgpool(x), 1)


def _load_backbone(net: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load a ResNet state dict; an ImageNet classifier (fc of another shape) is dropped, everything else strict."""
    own = net.state_dict()
    head = {k for k in sd if k.startswith("fc.")}
    if head and any(k not in own or own[k].shape != sd[k].shape for k in head):
        sd = {k: v for k, v in sd.items() if k not in head}
    result = net.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise PretrainedUnavailableError(
            f"{source}: not a state dict of this ResNet; missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def build_resnet(arch: ResNetName, weights: WeightsSource, *, fc_init_std: float | None = None) -> nn.Module:
    """A torchvision ResNet with a one-logit ``fc``, initialised from `weights` (see the module docstring).

    Args:
        arch: torchvision ResNet name (``resnet18`` ... ``resnet152``).
        weights: ``none`` (random init), ``hub`` (``timm:resnet50.tv_in1k``) or ``file`` (a ResNet state dict;
            an ImageNet 1000-way ``fc`` is dropped, a one-logit ``fc`` is kept).
        fc_init_std: initialise ``fc.weight`` from N(0, std) (CNNSpot, UnivFD: 0.02); None keeps PyTorch's default.
            The bias always keeps PyTorch's default init, as in the official code.

    Returns:
        The ResNet; ``fc`` is ``Linear(F, 1)``.

    Example:
        >>> net = build_resnet("resnet18", WeightsSource.none(), fc_init_std=0.02)
    """
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    net.fc = nn.Linear(net.fc.in_features, 1)
    if fc_init_std is not None:
        nn.init.normal_(net.fc.weight, 0.0, fc_init_std)
    if weights.kind == "hub":
        _load_backbone(net, timm_state_dict(weights.ref, arch), weights.ref)
    elif weights.kind == "file":
        _load_backbone(net, load_state_dict(weights.ref), weights.ref)
    return net


def check_input_size(model: nn.Module, cfg, hint: str = "; set crop_size (or image_size) so they agree") -> None:
    """A backbone with a fixed input size (a ViT's position embeddings) must get crops of exactly that size."""
    if model.image_size != (cfg.crop_size, cfg.crop_size):
        raise ValueError(f"crop_size {cfg.crop_size} does not match the {cfg.arch} input size {model.image_size}{hint}")


def load_strict(model: nn.Module, sd: dict[str, torch.Tensor], path: str | Path, what: str,
                hint: Callable[[list[str], list[str]], str] = lambda missing, unexpected: "") -> None:
    """Load a released state dict strictly; other keys are refused with `PretrainedUnavailableError` naming the
    first missing and unexpected ones (and `hint(missing, unexpected)`), never torch's long RuntimeError."""
    own = set(model.state_dict())
    missing, unexpected = sorted(own - set(sd)), sorted(set(sd) - own)
    if missing or unexpected:
        raise PretrainedUnavailableError(f"{Path(path).name}: not {what} state dict of this architecture; "
                                         f"missing {missing[:4]}, unexpected {unexpected[:4]}"
                                         f"{hint(missing, unexpected)}")
    model.load_state_dict(sd, strict=True)
