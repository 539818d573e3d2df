"""LOTA: "Bit-Planes Guided AI-Generated Image Detection" (Wang, Cheng, Zhang, Han, Gui, ICCV 2025).

Independent re-implementation of hongsong-wang/LOTA (MIT licence; no code copied). Files read: ``bit_patch.py``
(noise image, patch scores, selection, resize), ``model.py`` (``model``: ``disc`` = torchvision ResNet-50 with
``fc = Linear(2048, 1)``), ``loader.py`` (labels, preprocessing), ``config.py`` (defaults), ``train.py``,
``test.py``, ``util.py`` (``poly_lr``, ``bceLoss``, seed), ``README.md`` (the train/test commands).
Provenance: official.

Pipeline (``bit_mode scaling``, ``patch_size 32``, ``img_height 256``):
1. Noise image: per channel ``(x & 7) * (255 // 7)``, the three least significant bit-planes times 36
   (the paper describes a min-max scaling; the code uses the fixed factor, followed here).
2. If its short side is under the patch size, the noise image is resized to 256 x 256 (torchvision ``Resize``
   on a PIL image: PIL bilinear).
3. ``(256 // 32) ** 2 = 64`` random 32 x 32 crops (torchvision ``RandomCrop``); each scored by the sum of absolute
   differences of neighbouring values horizontally, vertically and along both diagonals, over the three channels
   (``compute``). Training (README: ``--patch_mode random``) takes a random one of the 64; testing
   (``--patch_mode max``) the highest score, the first one on ties (a stable sort).
4. The patch is resized to 256 x 256 with ``cv2.resize`` (bilinear; `sep_bench.data.transforms.resize_cv2`, in
   the view), ToTensor, ImageNet normalisation (in the model).
5. ``disc``: torchvision ResNet-50, ImageNet weights ``resnet50-19c8e357`` (timm ``resnet50.tv_in1k``), fc
   ``Linear(2048, 1)`` (PyTorch default init), fully fine-tuned.

Labels (``loader.py``): ``nature`` = 1, ``ai`` = 0, so the official logit is a *real* logit; the fake logit here
is its negation and `_load_official` negates ``disc.fc.weight`` and ``disc.fc.bias``. All other keys
(``disc.conv1.weight``, ``disc.layer1.*``, ..., the raw ``state_dict()`` of ``Network_best.pth``) load strictly.

Official recipe (``config.py``, ``train.py``, ``util.py``): BCE-with-logits, Adam lr 1e-4 (default betas, no
weight decay), batch 64, 30 epochs, no augmentation (no flip), seed 42; ``poly_lr`` sets
``lr = 1e-4 * (1 - e / 30) ** 0.9`` at the start of each epoch e = 1..30, so the last epoch runs at lr 0. The
checkpoint kept is the best accuracy on GenImage ``val`` of the chosen subsets, i.e. the test data.

Documented deviations:
- Every random choice (crop positions, the random pick) comes from the per-sample numpy Generator; the official
  code uses the global RNGs and never seeds evaluation. The crops are scored with integral images (same sums).
- None in the preprocessing: the 32 -> 256 up-sampling is OpenCV's ``cv2.resize`` (``INTER_LINEAR``) in the
  view, as the official ``bit_patch`` (opencv-python-headless is a dependency), and the model input equals the
  official one exactly (``results/benchmarks/official_parity.json``; the ``F.interpolate`` + rounding used before
  was one grey level off on about 10-11% of the up-sampled values, logits up to 4.3e-4 apart). Consequence for
  ``eval.preprocess``: the detector's input side S read from its view is the up-sampled patch (256; 80 in mini),
  no longer the 32 px patch.
- The engine's ``poly`` schedule steps per epoch with epochs counted from 0 (first epoch at the full lr, last one
  above 0); the official counts from 1 (first epoch at 0.9968 x lr, last at 0). See
  `sep_bench.protocol.ScheduleSpec`.
- Model selection uses the harness's validation slice of the training generators, never the test generators.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sep_bench.layers.backbones import ResNetName, build_resnet, negate_logits, resnet_pooled_features
from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, maybe_hflip, resize_cv2, to_tensor
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.eps import ensure_min_size
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["LOTAConfig", "LOTA", "noise_image", "patch_score", "candidate_scores", "official_to_fake", "SPEC"]

Select = Literal["random", "max", "min"]


class LOTAConfig(BaseModel):
    """``detectors.lota.model`` (defaults: the official recipe, README commands and ``config.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: ResNetName = Field("resnet50", description="torchvision ResNet; resnet18 for the CPU mini profile")
    bits: int = Field(3, ge=1, le=8, description="least significant bit-planes kept (scaled by 255 // (2**bits - 1))")
    patch_size: int = Field(32, ge=2)
    n_candidates: int = Field(64, ge=1, description="random crops scored per image ((img_height // patch) ** 2)")
    select_train: Select = Field("random", description="patch chosen in training (README: random)")
    select_eval: Select = Field("max", description="patch chosen at evaluation (README: max)")
    small_resize: int = Field(256, ge=2, description="noise images with a side under patch_size are resized to this "
                              "square (img_height)")
    input_size: int = Field(256, ge=8, description="the patch is bilinearly up-sampled to input_size x input_size")


def noise_image(img: np.ndarray, bits: int = 3) -> np.ndarray:
    """The low bit-planes of a uint8 image, scaled to 0..255: ``(x & (2**bits - 1)) * (255 // (2**bits - 1))``."""
    mask = (1 << bits) - 1
    return ((img & mask).astype(np.uint16) * (255 // mask)).astype(np.uint8)


def patch_score(patch: np.ndarray) -> int:
    """The official score of one patch (H, W, C): summed |differences| horizontally, vertically, both diagonals."""
    p = patch.astype(np.int64)
    return int(np.abs(p[:, :-1] - p[:, 1:]).sum() + np.abs(p[:-1] - p[1:]).sum()
               + np.abs(p[:-1, :-1] - p[1:, 1:]).sum() + np.abs(p[1:, :-1] - p[:-1, 1:]).sum())


def _integral(a: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + 1, a.shape[1] + 1), np.int64)
    out[1:, 1:] = a.cumsum(0).cumsum(1)
    return out


def _box(ii: np.ndarray, y0: np.ndarray, x0: np.ndarray, h: int, w: int) -> np.ndarray:
    return ii[y0 + h, x0 + w] - ii[y0, x0 + w] - ii[y0 + h, x0] + ii[y0, x0]


def candidate_scores(noise: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
    """`patch_score` of every size x size crop at (ys, xs), with one integral image per difference direction."""
    n = noise.astype(np.int16)
    dh = np.abs(n[:, :-1] - n[:, 1:]).sum(-1)          # (H, W-1): pairs (i, j)-(i, j+1)
    dv = np.abs(n[:-1] - n[1:]).sum(-1)                 # (H-1, W)
    dd = np.abs(n[:-1, :-1] - n[1:, 1:]).sum(-1)        # (H-1, W-1)
    da = np.abs(n[1:, :-1] - n[:-1, 1:]).sum(-1)        # (H-1, W-1)
    s = size
    return (_box(_integral(dh), ys, xs, s, s - 1) + _box(_integral(dv), ys, xs, s - 1, s)
            + _box(_integral(dd), ys, xs, s - 1, s - 1) + _box(_integral(da), ys, xs, s - 1, s - 1))


def select_noise_patch(img: np.ndarray, rng: np.random.Generator, *, bits: int, size: int, n_candidates: int,
                       mode: Select, small_resize: int) -> np.ndarray:
    """Noise image -> [resize if small] -> n random crops -> the random / highest / lowest-scoring one."""
    noise = ensure_min_size(noise_image(img, bits), size, small_resize)
    h, w = noise.shape[:2]
    ys = rng.integers(0, h - size + 1, n_candidates)
    xs = rng.integers(0, w - size + 1, n_candidates)
    if mode == "random":
        k = int(rng.integers(0, n_candidates))
    else:
        scores = candidate_scores(noise, ys, xs, size)
        k = int(np.argmax(scores) if mode == "max" else np.argmin(scores))  # first of equals, as the stable sort
    return noise[ys[k] : ys[k] + size, xs[k] : xs[k] + size]


class LOTA(Detector):
    """Up-sampled noise patch -> ImageNet-normalised -> ResNet (``disc``: the official module name)."""

    def __init__(self, disc: nn.Module, input_size: int = 256) -> None:
        super().__init__()
        self.input_size = input_size
        self.disc = disc
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``views["patch"]``: (B, 3, input_size, input_size), the up-sampled patch in [0, 1] (ToTensor)."""
        patch = views["patch"]
        if tuple(patch.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"LOTA expects the patch up-sampled to {self.input_size} px by its view, got "
                             f"{tuple(patch.shape[-2:])}")
        return resnet_pooled_features(self.disc, (patch - self.mean) / self.std)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.disc.fc(features)


def _build(cfg: LOTAConfig, weights: WeightsSource) -> LOTA:
    model = LOTA(build_resnet(cfg.backbone, weights), input_size=cfg.input_size)
    model.weights = weights
    return model


def official_to_fake(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official LOTA state dict (one *real* logit) to this model (one *fake* logit)."""
    return negate_logits(sd, ("disc.fc.weight", "disc.fc.bias"), "a LOTA checkpoint")


def _load_official(model: Detector, path: Path) -> None:
    """Load ``Network_best.pth`` (a raw state dict, keys ``disc.*``; strict), negating the real logit."""
    model.load_state_dict(official_to_fake(load_state_dict(path)), strict=True)


def _views(cfg: LOTAConfig, train: bool, hflip: bool):
    mode = cfg.select_train if train else cfg.select_eval

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        patch = select_noise_patch(img, rng, bits=cfg.bits, size=cfg.patch_size, n_candidates=cfg.n_candidates,
                                   mode=mode, small_resize=cfg.small_resize)
        if train and hflip:
            patch = maybe_hflip(patch, rng)
        patch = resize_cv2(patch, cfg.input_size, cfg.input_size, "linear")  # official cv2.resize (INTER_LINEAR)
        return {"patch": to_tensor(patch)}

    return view


SPEC = DetectorSpec(
    name="lota",
    summary="LOTA: 3 least significant bit-planes, highest-gradient 32x32 patch, ImageNet ResNet-50",
    paper="Wang et al., LOTA: Bit-Planes Guided AI-Generated Image Detection, ICCV 2025",
    repo="https://github.com/hongsong-wang/LOTA",
    config=LOTAConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:resnet50.tv_in1k",
    provenance="official",
)
