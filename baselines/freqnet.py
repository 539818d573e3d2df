"""FreqNet: "Frequency-Aware Deepfake Detection: Improving Generalizability through Frequency Space Learning"
(Tan et al., AAAI 2024).

Independent re-implementation (no code copied) of chuangchuangtan/FreqNet-DeepfakeDetection (no licence file
seen). Only that repository's README is stored here; the code was read from the fork ysobella/FreqNet-
DeepfakeDetection at the upstream author's commit ``350adb4`` ("first commit", chuangchuangtan; the fork's later
commits do not touch ``networks/``): ``networks/freqnet.py`` (model), ``networks/trainer.py`` (loss, optimiser,
lr decay), ``train.py``, ``options/*.py``, ``data/datasets.py`` (views), ``test.py`` (evaluation), ``README.md``
(training command). Provenance: official.

Architecture (parameter names are the official ones, so the released ``4-classes-freqnet-v2.pth``, a bare state
dict loaded with ``strict=True`` by the official ``test.py``, loads strictly here):
- `hfreq_wh`: 2-D FFT (ortho) over H, W, fftshift, zero the centred low-frequency block
  ``[h//2 - h//4 : h//2 + h//4, w//2 - w//4 : w//2 + w//4]``, inverse FFT, real part, ReLU;
  `hfreq_c`: the same along the channel axis (1-D FFT over C, zero ``[c//2 - c//4 : c//2 + c//4]``);
- frequency conv layer (FCL): 2-D FFT, fftshift, ``realconv_k`` (1x1) on the real and ``imagconv_k`` (1x1) on
  the imaginary part, inverse shift, inverse FFT, real part, ReLU;
- stem: hfreq_wh -> 1x1 conv (``weight1``/``bias1``, 3 -> 64) -> ReLU -> hfreq_c -> FCL1 -> hfreq_wh -> 1x1 conv
  stride 2 (``weight2``/``bias2``) -> ReLU -> hfreq_c -> FCL2 -> max-pool -> ResNet-50 ``layer1`` (3 Bottlenecks)
  -> hfreq_wh -> 1x1 conv (``weight3``) -> ReLU -> FCL3 -> hfreq_wh -> 1x1 conv stride 2 (``weight4``) -> ReLU
  -> FCL4 -> ``layer2`` (4 Bottlenecks) -> global average pool -> ``fc1`` = Linear(512, 1), the fake logit
  (BCE-with-logits, ``0_real``/``1_fake``).
- Init (official): every ``nn.Conv2d`` kaiming-normal fan_out, BN 1/0; ``weight1..4`` and ``bias1..4`` are
  ``torch.randn`` (standard normal) and keep it; ``fc1`` PyTorch default. Trained from scratch.

Official recipe (README command, ``options``, ``trainer.py``, ``train.py``): Adam lr 1e-3 betas (0.9, 0.999), no
weight decay, batch 32, 85 epochs (``--niter 85``), lr x 0.8 at the end of every 10th epoch (``--delr_freq 10``;
``adjust_learning_rate`` multiplies by 0.8, not 1/10), no early stopping, the last model kept. Training view:
``Resize((256, 256))`` (square, bilinear) -> RandomCrop 224 -> horizontal flip -> ImageNet normalisation; no blur
or JPEG (``data_augment`` is commented out). Evaluation (``test.py``): ForenSynths ``Resize((256, 256))`` and no
crop; GANGen-Detection: no resize, no crop (the full image).

Documented deviations and guesses:
- The FFT blocks run in float32 even under bf16 autocast (torch.fft has no bf16 kernels; the official code is
  fp32 throughout). On CPU there is no difference.
- Model selection uses the harness's validation slice (official: the last epoch).
- No fftshift/ifftshift around the FFT blocks (`official_shifts: false`, the default): the same forward pass to the
  bit, training equal up to float rounding (the 1x1 convolutions' weight gradients sum over positions in another
  order), about 20% faster on CPU; `official_shifts: true` runs the official order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchvision.models.resnet import conv1x1

from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop, maybe_hflip, random_crop, resize, to_tensor
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.resnet import bottleneck_stage, init_resnet_
from sep_bench.protocol import ProtocolError
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["FreqNetConfig", "FreqNet", "hfreq_wh", "hfreq_c", "highpass_mask_wh", "SPEC"]


class FreqNetConfig(BaseModel):
    """``detectors.freqnet.model`` (defaults: the official ProGAN 4-class recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resize: int | None = Field(256, ge=8, description="square resize (both sides) before cropping, train and "
                               "eval (official Resize((256, 256))); null: none")
    crop_size: int = Field(224, ge=8, description="random crop at training")
    eval_crop_size: int | None = Field(None, ge=8, description="centre crop at evaluation; null: none (official)")
    layers: tuple[int, int] = (3, 4)
    scale: int = Field(4, gt=2, description="high-pass: the centred block of half-width size // scale is zeroed")
    official_shifts: bool = Field(False, description="fftshift/ifftshift around every FFT block as the official "
                                  "code (same forward pass; training differs at rounding level; slower on CPU)")


def highpass_mask_wh(h: int, w: int, scale: int = 4, device=None) -> torch.Tensor:
    """(h, w) mask in fftshift order: 0 on the centred low-frequency block FreqNet removes, 1 elsewhere."""
    mask = torch.ones(h, w, device=device)
    mask[h // 2 - h // scale : h // 2 + h // scale, w // 2 - w // scale : w // 2 + w // scale] = 0.0
    return mask


def _fft_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


# The official code fftshifts every spectrum, masks (or 1x1-convolves) it and ifftshifts it back. A shift is a
# permutation, so masking the unshifted spectrum with the ifftshifted mask, and convolving the unshifted spectrum
# with a 1x1 convolution (the same operation at every position), give the same forward pass to the bit without
# the two rolls, which were a third of FreqNet's CPU training time. Training differs at float-rounding level only:
# the 1x1 convolutions' weight gradients sum over positions in another order (mini: vae8 ACC 88.5 instead of
# 89.5, results/benchmarks/mini_recipes.json). `shifted=True` (config ``official_shifts``) runs the official order.


def _shift(f: torch.Tensor, dims: tuple[int, ...], on: bool, inverse: bool = False) -> torch.Tensor:
    if not on:
        return f
    return torch.fft.ifftshift(f, dim=dims) if inverse else torch.fft.fftshift(f, dim=dims)


def hfreq_wh(x: torch.Tensor, scale: int = 4, shifted: bool = False) -> torch.Tensor:
    """Spatial high-pass: zero the centred low band of the (ortho, shifted) 2-D FFT, back to space, real, ReLU."""
    with torch.autocast(x.device.type, enabled=False):
        f = _shift(torch.fft.fft2(_fft_fp32(x), norm="ortho"), (-2, -1), shifted)
        mask = highpass_mask_wh(*f.shape[-2:], scale=scale, device=f.device)
        f = f * (mask if shifted else torch.fft.ifftshift(mask))
        return F.relu(torch.fft.ifft2(_shift(f, (-2, -1), shifted, inverse=True), norm="ortho").real)


def hfreq_c(x: torch.Tensor, scale: int = 4, shifted: bool = False) -> torch.Tensor:
    """Channel high-pass: the same along the channel axis (1-D FFT over C)."""
    with torch.autocast(x.device.type, enabled=False):
        f = _shift(torch.fft.fft(_fft_fp32(x), dim=1, norm="ortho"), (1,), shifted)
        c = f.shape[1]
        mask = torch.ones(c, device=f.device)
        mask[c // 2 - c // scale : c // 2 + c // scale] = 0.0
        f = f * (mask if shifted else torch.fft.ifftshift(mask)).view(1, c, 1, 1)
        return F.relu(torch.fft.ifft(_shift(f, (1,), shifted, inverse=True), dim=1, norm="ortho").real)


def _fcl(x: torch.Tensor, real_conv: nn.Module, imag_conv: nn.Module, shifted: bool = False) -> torch.Tensor:
    """Frequency conv layer: 1x1 convs on the real and imaginary parts of the (shifted) 2-D FFT."""
    with torch.autocast(x.device.type, enabled=False):
        f = _shift(torch.fft.fft2(_fft_fp32(x), norm="ortho"), (-2, -1), shifted)
        f = torch.complex(real_conv(f.real), imag_conv(f.imag))
        return F.relu(torch.fft.ifft2(_shift(f, (-2, -1), shifted, inverse=True), norm="ortho").real)


class FreqNet(Detector):
    def __init__(self, layers: tuple[int, int] = (3, 4), scale: int = 4, shifted: bool = False) -> None:
        super().__init__()
        self.hf_scale, self.shifted = scale, shifted
        for k, (cout, cin) in enumerate(((64, 3), (64, 64), (256, 256), (256, 256)), start=1):
            self.register_parameter(f"weight{k}", nn.Parameter(torch.randn(cout, cin, 1, 1)))
            self.register_parameter(f"bias{k}", nn.Parameter(torch.randn(cout)))
            self.add_module(f"realconv{k}", conv1x1(cout, cout))
            self.add_module(f"imagconv{k}", conv1x1(cout, cout))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1, width = bottleneck_stage(64, 64, layers[0])
        self.layer2, width = bottleneck_stage(width, 128, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(width, 1)
        init_resnet_(self)

    def _pointwise(self, x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
        return F.relu(F.conv2d(x, getattr(self, f"weight{k}"), getattr(self, f"bias{k}"), stride=stride))

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        s, sh = self.hf_scale, self.shifted
        x = self._pointwise(hfreq_wh(views["image"], s, sh), 1, 1)                         # HFRI
        x = _fcl(hfreq_c(x, s, sh), self.realconv1, self.imagconv1, sh)                    # HFRFC, FCL
        x = self._pointwise(hfreq_wh(x, s, sh), 2, 2)                                      # HFRFS
        x = _fcl(hfreq_c(x, s, sh), self.realconv2, self.imagconv2, sh)                    # HFRFC, FCL
        x = self.layer1(self.maxpool(x))
        x = _fcl(self._pointwise(hfreq_wh(x, s, sh), 3, 1), self.realconv3, self.imagconv3, sh)  # HFRFS, FCL
        x = _fcl(self._pointwise(hfreq_wh(x, s, sh), 4, 2), self.realconv4, self.imagconv4, sh)  # HFRFS, FCL
        x = self.layer2(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc1(features)


def _build(cfg: FreqNetConfig, weights: WeightsSource) -> FreqNet:
    if weights.pretrained:
        raise ProtocolError(
            "FreqNet has no pretrained backbone: it is trained from scratch (pretrained: false); "
            "load the authors' released 4-classes-freqnet-v2.pth with --official / load_official instead"
        )
    model = FreqNet(layers=cfg.layers, scale=cfg.scale, shifted=cfg.official_shifts)
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load an official FreqNet state dict (same names, strict); its single logit is already the fake logit."""
    model.load_state_dict(load_state_dict(path), strict=True)


def _views(cfg: FreqNetConfig, train: bool, hflip: bool):
    """train: [square resize] -> random crop -> [flip]; eval: [square resize] -> [centre crop]; ImageNet norm."""

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if cfg.resize:
            img = resize(img, cfg.resize, cfg.resize)
        if train:
            img = random_crop(img, cfg.crop_size, rng)
            if hflip:
                img = maybe_hflip(img, rng)
        elif cfg.eval_crop_size:
            img = center_crop(img, cfg.eval_crop_size)
        return {"image": to_tensor(np.require(img, requirements=["C", "W"]), IMAGENET_MEAN, IMAGENET_STD)}

    return view


SPEC = DetectorSpec(
    name="freqnet",
    summary="FreqNet: FFT high-pass and frequency-space conv layers around ResNet-50 layer1-2, from scratch",
    paper="Tan et al., Frequency-Aware Deepfake Detection: Improving Generalizability through Frequency Space "
          "Learning, AAAI 2024",
    repo="https://github.com/chuangchuangtan/FreqNet-DeepfakeDetection",
    config=FreqNetConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    provenance="official",
)
