"""SAFE: "Improving Synthetic Image Detection Towards Generalization: An Image Transformation Perspective"
(Li et al., KDD 2025).

Independent re-implementation of Ouxiang-Li/SAFE (Apache-2.0; no code copied). Files read: ``models/resnet.py``
(the model), ``data/datasets.py`` (``Get_Transforms``, ``RandomMask``), ``main_finetune.py`` (labels, loss,
lr scaling), ``engine_finetune.py`` (per-step schedule, evaluation = softmax[:, 1]), ``utils.py``
(``adjust_learning_rate``, ``save_model``), ``optim_factory.py``, ``scripts/train.sh``, ``scripts/eval.sh``.
Provenance: official (the authors' model and training code ported).

Model (``models/resnet.py``, ``resnet50(num_classes=2)``): the [0, 1] RGB image (ToTensor, no mean/std
normalisation) -> one-level DWT (pytorch_wavelets ``DWTForward(J=1, mode='symmetric', wave='bior1.3')``) ->
the diagonal detail band HH (``Yh[0][:, :, 2]``) resized back to the input size (bilinear) -> conv1 3x3 stride 2
(no bias) -> bn1 -> ReLU -> max-pool -> ResNet-50 ``layer1`` (3 Bottlenecks) and ``layer2`` (4) -> global average
pool -> ``fc1 = Linear(512, 2)``; trained from scratch (Kaiming fan-out init). The module and parameter names are
the official ones, so the released ``checkpoint/checkpoint-best.pth`` (``{'model': state_dict, 'optimizer': ...,
'args': argparse.Namespace, ...}``) loads strictly.

Labels (``data/datasets.py``): ``0_real`` = 0, ``1_fake`` = 1, and the official score is ``softmax(out)[:, 1]``.
The fake logit here is ``out[:, 1] - out[:, 0]`` (``sigmoid`` of it equals that softmax), so `_load_official` needs
no key mapping. Label smoothing 0.1 (timm ``LabelSmoothingCrossEntropy``) on two classes equals binary
cross-entropy on the logit difference with targets ``y * 0.9 + 0.05``; `SAFE.train_loss` computes exactly that.

Views (``Get_Transforms``, ``--transform_mode crop --input_size 256``): never a resize. Train: RandomCrop 256
(pad_if_needed) -> RandomHorizontalFlip -> RandomRotation(180) (nearest, no expand, fill 0) ->
ColorJitter(brightness 0.5, contrast 0.5, saturation 0.5) -> ToTensor -> RandomMask (p 0.5: a ratio drawn from
U[0, 0.75], then ``int(H * W * ratio / 16**2)`` distinct cells of the 16 px grid zeroed). Eval: CenterCrop 256
(zero padding of smaller images, torchvision semantics) -> ToTensor.

Official recipe (``scripts/train.sh``, ``main_finetune.py``): AdamW (default betas, eps 1e-8), blr 1e-2, lr =
blr x effective batch / 256 with 32 per GPU x 4 GPUs = 128 -> lr 5e-3; weight decay 0.01; label smoothing 0.1;
20 epochs; per-step half-cycle cosine after a 1-epoch linear warm-up, floor ``min_lr`` 1e-6; no AMP; the
checkpoint kept is the best validation accuracy on ForenSynths ``val`` (ProGAN, the training generator).

Documented deviations:
- All random choices come from the per-sample numpy Generator (official: Python ``random`` and torch's global
  RNG). ColorJitter applies its three factors in a random order drawn from that Generator (torchvision draws
  ``randperm(4)`` including the unused hue; the distribution over orders of the three used factors is the same).
  RandomMask picks a uniformly random set of ``num_masks`` distinct cells (the official rejection loop draws the
  same distribution).
- Images smaller than the crop are zero-padded centred (`sep_bench.data.transforms.random_crop`); torchvision's
  ``pad_if_needed`` pads by the full deficit on both sides before the random crop. Only images under 256 px differ.
- The engine's AdamW decays every parameter; the official optimizer excludes 1-d parameters (BN, biases) from
  weight decay. The engine's cosine ends at 0, the official one at ``min_lr`` 1e-6. Both differences are
  recorded here; neither is implemented in the engine.
- The resize of the HH band is ``F.interpolate(bilinear, align_corners=False)``; the official
  ``transforms.Resize`` up-samples (130 -> 256 for a 256 crop), where antialiasing has no effect, so the two agree
  to float rounding.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sep_bench.data.transforms import center_crop, maybe_hflip, random_crop, to_tensor
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.dwt import dwt_bands, dwt_forward
from sep_bench.layers.resnet import add_stem_and_stages, init_resnet_, stem_stage_features
from sep_bench.protocol import ProtocolError
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["SAFEConfig", "SAFE", "HHBand", "random_mask", "color_jitter", "official_to_fake", "SPEC"]


class SAFEConfig(BaseModel):
    """``detectors.safe.model`` (defaults: the official recipe, ``scripts/train.sh``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_size: int = Field(256, ge=8, description="random (train) / centre (eval) crop; never a resize")
    layers: tuple[int, int] = Field((3, 4), description="Bottleneck blocks of layer1 and layer2 (ResNet-50: 3, 4)")
    wave: str = Field("bior1.3", description="pytorch_wavelets wavelet of the DWT")
    dwt_mode: str = Field("symmetric", description="pytorch_wavelets padding mode of the DWT")
    rotation: float = Field(180.0, ge=0.0, description="RandomRotation degrees (train); 0: off")
    jitter: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="ColorJitter brightness, contrast, "
                                               "saturation (train); 0: off")
    mask_prob: float = Field(0.5, ge=0.0, le=1.0, description="probability of RandomMask (train)")
    mask_ratio: tuple[float, float] = Field((0.0, 0.75), description="masked-area ratio range, drawn uniformly")
    mask_patch: int = Field(16, ge=1, description="RandomMask cell size in pixels")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="two-class label smoothing of the training loss")


class HHBand(nn.Module):
    """The DWT diagonal detail band (HH) of each channel, bilinearly resized back to the input size."""

    def __init__(self, wave: str = "bior1.3", mode: str = "symmetric") -> None:
        super().__init__()
        self.dwt = dwt_forward(wave, mode)
        # the filters are constants, not weights: keep them out of the state dict (the official model builds its
        # DWTForward inside forward, so the released checkpoint has no such keys)
        for name, buf in list(self.dwt.named_buffers(recurse=False)):
            self.dwt.register_buffer(name, buf, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        with torch.autocast(device_type=x.device.type, enabled=False):
            hh = dwt_bands(self.dwt, x.float())[3]
            return F.interpolate(hh, size=(h, w), mode="bilinear", align_corners=False)


class SAFE(Detector):
    """HH band -> truncated ResNet-50 (conv1 3x3/2, layer1-2) -> ``fc1`` (2 classes); official module names."""

    def __init__(self, layers: tuple[int, int] = (3, 4), wave: str = "bior1.3", mode: str = "symmetric",
                 label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.hh = HHBand(wave, mode)
        width = add_stem_and_stages(self, layers)  # conv1 3x3/2, bn1, relu, maxpool, layer1, layer2, avgpool
        self.fc1 = nn.Linear(width, 2)
        init_resnet_(self)

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return stem_stage_features(self, self.hh(views["image"]))

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The official two logits (index 0 real, 1 fake)."""
        return self.fc1(features)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        out = self.class_logits(features)
        return out[:, 1] - out[:, 0]

    def train_loss(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Two-class label-smoothed cross-entropy, written on the fake logit (see the module docstring)."""
        eps = self.label_smoothing
        target = labels.float() * (1.0 - eps) + 0.5 * eps
        return F.binary_cross_entropy_with_logits(outputs["logits"].float(), target)


def _build(cfg: SAFEConfig, weights: WeightsSource) -> SAFE:
    if weights.pretrained:
        raise ProtocolError(
            "SAFE has no pretrained backbone: it is trained from scratch (pretrained: false); "
            "load the authors' released SAFE checkpoint with --official / load_official instead"
        )
    model = SAFE(layers=cfg.layers, wave=cfg.wave, mode=cfg.dwt_mode, label_smoothing=cfg.label_smoothing)
    model.weights = weights
    return model


def official_to_fake(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official state dict needs no mapping: its two logits stay, the model's head takes their difference."""
    if "fc1.weight" not in sd or sd["fc1.weight"].shape[0] != 2:
        raise KeyError("not a SAFE checkpoint: 'fc1.weight' with 2 output classes missing")
    return dict(sd)


def _load_official(model: Detector, path: Path) -> None:
    """Load the released ``checkpoint-best.pth`` (``ckpt['model']``; strict). The file also pickles the training
    ``args`` (an ``argparse.Namespace``), which the weights-only unpickler is told to accept; nothing else is."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        sd = load_state_dict(path)
    model.load_state_dict(official_to_fake(sd), strict=True)


# ---- training augmentation ----------------------------------------------------------------------------------


def color_jitter(img: np.ndarray, rng: np.random.Generator, strength: tuple[float, float, float]) -> np.ndarray:
    """torchvision ColorJitter(brightness, contrast, saturation) on a uint8 image, draws from `rng`: the factors
    U[max(0, 1 - s), 1 + s] and a random order of the three adjustments (always 4 draws)."""
    import torchvision.transforms.functional as TF

    order = rng.permutation(3)
    factors = [float(rng.uniform(max(0.0, 1.0 - s), 1.0 + s)) for s in strength]
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    pil = Image.fromarray(np.ascontiguousarray(img))
    for i in order:
        if strength[i] > 0:
            pil = fns[i](pil, factors[i])
    return np.asarray(pil)


def rotate(img: np.ndarray, angle: float) -> np.ndarray:
    """torchvision ``rotate`` of a PIL image: nearest, no expand, centre of the image, fill 0."""
    import torchvision.transforms.functional as TF

    return np.asarray(TF.rotate(Image.fromarray(np.ascontiguousarray(img)), angle,
                                interpolation=TF.InterpolationMode.NEAREST, fill=0))


def random_mask(img: np.ndarray, rng: np.random.Generator, *, p: float, ratio: tuple[float, float],
                patch: int) -> np.ndarray:
    """SAFE's RandomMask: with probability p, zero ``int(H * W * r / patch**2)`` distinct grid cells, r ~ U[ratio]."""
    apply = rng.random() < p
    r = float(rng.uniform(ratio[0], ratio[1]))
    if not apply:
        return img
    h, w = img.shape[:2]
    rows, cols = h // patch, w // patch
    n = min(int(h * w * r / patch**2), rows * cols)
    if n <= 0:
        return img
    cells = rng.choice(rows * cols, size=n, replace=False)
    out = np.array(img, copy=True)
    for c in cells:
        top, left = (int(c) // cols) * patch, (int(c) % cols) * patch
        out[top : top + patch, left : left + patch] = 0
    return out


def _views(cfg: SAFEConfig, train: bool, hflip: bool):
    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if not train:
            return {"image": to_tensor(center_crop(img, cfg.crop_size))}
        img = random_crop(img, cfg.crop_size, rng)
        if hflip:
            img = maybe_hflip(img, rng)
        angle = float(rng.uniform(-cfg.rotation, cfg.rotation))
        if cfg.rotation > 0:
            img = rotate(img, angle)
        if any(s > 0 for s in cfg.jitter):
            img = color_jitter(img, rng, cfg.jitter)
        img = random_mask(img, rng, p=cfg.mask_prob, ratio=cfg.mask_ratio, patch=cfg.mask_patch)
        return {"image": to_tensor(img)}

    return view


SPEC = DetectorSpec(
    name="safe",
    summary="SAFE: crop-only views, DWT HH band, ResNet-50 layer1-2 from scratch, strong augmentation",
    paper="Li et al., Improving Synthetic Image Detection Towards Generalization: An Image Transformation "
          "Perspective, KDD 2025",
    repo="https://github.com/Ouxiang-Li/SAFE",
    config=SAFEConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    provenance="official",
)
