"""DRCT: "Diffusion Reconstruction Contrastive Training towards Universal Detection of Diffusion Generated Images"
(Chen, Zeng, Yang, Yang, ICML 2024). Detector side.

Independent re-implementation of beibuwandeluori/DRCT (no licence file; no code copied). Files read:
``network/models.py``, ``utils/losses.py``, ``scripts/train_contrastive.py``, ``scripts/test_GenImage.sh``,
``data/transform.py``, ``data/dataset.py``, ``requirements.txt``, README; the loss follows
KevinMusgrave/pytorch-metric-learning (``losses/contrastive_loss.py``, ``losses/generic_pair_loss.py``,
``reducers/avg_non_zero_reducer.py``, ``reducers/multiple_reducers.py``, ``distances/lp_distance.py``) and the
augmentations albumentations 1.3.0 (the version pinned by ``requirements.txt``), read at tag ``1.3.0``.
Provenance: official (model, loss, data pipeline and training recipe are in the repository).

The diffusion-reconstruction stage (SD inpainting with an all-keep mask) is not part of this module; the training
set it produces is labelled with `drct_label`: real -> real (0); fake, real reconstruction and fake
reconstruction -> fake (1) (README "Contrastive Training"; the README commands pass the real images as
``--root_path`` and the real reconstructions, fakes and fake reconstructions as ``--fake_root_path``, which
``load_data`` labels 0 and 1). No reconstruction happens at test time.

Model (``ContrastiveModels``; module names kept so the released plain ``state_dict`` loads strictly):
- ``backbone: convnext`` (``--model_name convnext_base_in22k``; timm 0.6.12 name of ``convnext_base.fb_in22k``):
  ``model`` is the timm ConvNeXt-B with ``head.fc`` replaced by ``Linear(1024, embedding_size=1024)``, fully
  fine-tuned; its output is the embedding;
- ``backbone: clip`` (``--model_name clip-ViT-L-14 --freeze_extractor``): ``model`` is ``CLIPModelV2`` =
  ``model.model``, the whole OpenAI CLIP ViT-L/14 of the ``clip`` package (both towers, frozen; keys as
  open_clip's ``CLIP``, QuickGELU), and ``model.fc = Linear(768, 1024)`` on ``encode_image``; the embedding is
  ``model.fc``'s output;
- ``fc = Linear(1024, 2)`` on the embedding. The fake logit returned here is ``z_fake - z_real`` (official
  labels: real 0, fake 1; the official score is ``1 - softmax[:, 0]`` = ``sigmoid`` of it).

Loss (``train_contrastive.py``): ``(1 - alpha) * CE(y_pred, label) + alpha * contrastive(embeddings, label)`` with
``alpha = 0.3`` and pytorch-metric-learning ``ContrastiveLoss(pos_margin=0, neg_margin=1)`` on the raw
embeddings: L2-normalised embeddings, Euclidean distances of all ordered pairs in the batch (positive: same
label, i != j; negative: different labels), positive loss ``relu(d - pos_margin)``, negative loss
``relu(neg_margin - d)``, each averaged over its non-zero entries (``AvgNonZeroReducer``; 0 when none), summed
(`margin_contrastive_loss`). Two-class CE equals binary CE on the fake logit, which `DRCT.train_loss` uses.

Training recipe (README, ``train_contrastive.py``): AdamW lr 1e-4, weight decay 4e-5, default betas; batch 64
(ConvB) / 256 (CLIP); 17 epochs; ``CosineAnnealingLR(optimizer, T_max=5)`` stepped once per epoch (not warm-up
mode), so the lr follows a cosine with period 10 epochs: 1e-4 at epochs 0, 10; 0 at epochs 5, 15; AMP. The engine
has no periodic cosine, so the params use ``cosine`` over the run (deviation, see params.yaml). Checkpoint: best
validation accuracy (a 10% split of the training data, seed 2021); here the validation slice.

Views (``data/transform.py``, ``--is_crop``, size 224, ImageNet mean/std for *both* backbones, as the official
transforms): training applies, in order (albumentations 1.3.0 defaults, re-implemented with numpy/PIL/torch and
drawn from the view's numpy Generator):
 1. ImageCompression(quality 30..100, p 0.5) - PIL JPEG instead of OpenCV's encoder;
 2. RandomScale(scale U[0.5, 1.5], p 0.2) - size int(h * s) x int(w * s), bilinear without antialias (cv2 INTER_LINEAR);
 3. HorizontalFlip(p 0.5);
 4. GaussNoise(variance U[10, 50], per-channel N(0, sqrt(var)), p 0.1), clipped, truncated to uint8;
 5. GaussianBlur(kernel 3, 5 or 7 with probabilities 1/5, 2/5, 2/5, sigma 0 -> OpenCV's fixed small kernels,
    reflect-101 border, p 0.1);
 6. RandomRotate90(k in 0..3, p 0.5);
 7. PadIfNeeded(224, zeros, centred) then RandomCrop(224) (offset int((n - 224 + 1) * U[0, 1)));
 8. OneOf(p 0.5) of RandomBrightnessContrast (alpha 1 + U[-0.2, 0.2], beta U[-0.2, 0.2] x 255), FancyPCA (alpha ~
    N(0, 0.1), albumentations' formula including its transposed eigenvector matrix) and HueSaturationValue (hue
    U[-20, 20] on OpenCV's 0..179 hue, saturation U[-30, 30], value U[-20, 20], look-up tables on 8-bit HSV);
 9. OneOf(p 0.5) of CoarseDropout (8 holes of 8x8 px set to 0) and GridDropout (ratio 0.5: unit max(2, w // 10),
    holes of half the unit at offset 0);
10. ToGray(p 0.2, ITU-R 601 luma);
11. ShiftScaleRotate(shift U[-0.1, 0.1], scale U[0.8, 1.2], rotation U[-10, 10] degrees, bilinear, zeros, p 0.5);
12. ImageNet normalisation.
Evaluation (``create_val_transforms``, ``--is_crop``): PadIfNeeded(224) + CenterCrop(224) + normalisation.

Documented deviations: JPEG by PIL (OpenCV is not a dependency); the RGB<->HSV conversions are OpenCV's 8-bit
formulas written in numpy (rounding may differ by one level); the blur, scale and affine warps are written with
numpy/torch and round like OpenCV's fixed-point paths only approximately; python ``random`` draws of albumentations
are replaced by draws from the per-sample numpy Generator (same distributions); the lr schedule (above).
albumentations itself is not a dependency.

Small configurations (tests, the CPU mini profile) keep the classes: ``convnext_depths``/``convnext_dims`` shrink
the same timm ConvNeXt (``convnext_ls_init`` sets its blocks' layer-scale start, timm's 1e-6 otherwise); ``clip_arch`` may name a `sep_bench.layers.clip.OPEN_CLIP_LOCAL_ARCHS` entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sep_bench.data.perturb import jpeg
from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor
from sep_bench.recon.config import ReconConfig
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.clip import open_clip_from_weights
from sep_bench.layers.convnext import create_convnext
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["DRCTConfig", "DRCT", "CLIPEmbedder", "drct_label", "margin_contrastive_loss", "drct_augment", "SPEC"]


def drct_label(is_fake: bool, is_reconstruction: bool) -> int:
    """DRCT's training label: a real image is real (0); a generated image, the diffusion reconstruction of a real
    image and the reconstruction of a generated image are all fake (1).

    Example:
        >>> [drct_label(f, r) for f, r in ((False, False), (True, False), (False, True), (True, True))]
        [0, 1, 1, 1]
    """
    return int(bool(is_fake) or bool(is_reconstruction))


def margin_contrastive_loss(emb: torch.Tensor, labels: torch.Tensor, pos_margin: float = 0.0,
                            neg_margin: float = 1.0) -> torch.Tensor:
    """pytorch-metric-learning ``ContrastiveLoss(pos_margin, neg_margin)`` with its defaults (``LpDistance`` on
    L2-normalised embeddings, all ordered pairs of the batch, ``AvgNonZeroReducer`` per pair type, summed)."""
    e = F.normalize(emb.float(), p=2, dim=1)
    dist = torch.cdist(e, e, p=2)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = dist[same & ~eye], dist[~same]
    zero = (emb * 0).sum()
    if pos.numel() <= 1 and neg.numel() <= 1:
        return zero

    def avg_non_zero(losses: torch.Tensor) -> torch.Tensor:
        kept = losses[losses > 0]
        return kept.mean() if kept.numel() else zero

    return avg_non_zero(F.relu(pos - pos_margin)) + avg_non_zero(F.relu(neg_margin - neg))


#: The official reconstruction (``data/diffusion_rec.py``): SD inpainting with an all-keep mask, empty prompt, 50
#: steps, CFG 7.5, seed 2023, on every training image; added to the training set (use: augment).
DRCT_RECONSTRUCT = ReconConfig(method="sd-inpaint", arch="sd-inpaint", weights="runwayml/stable-diffusion-inpainting",
                               use="augment", steps=50, guidance_scale=7.5, seed=2023, max_size=1024, batch_size=8)


class DRCTConfig(BaseModel):
    """``detectors.drct.model`` (defaults: the official ConvNeXt-B model and recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: Literal["convnext", "clip"] = Field("convnext", description="ConvB (official default) or CLIP ViT-L/14")
    convnext: str = Field("convnext_base", description="timm ConvNeXt architecture (official convnext_base_in22k)")
    convnext_depths: tuple[int, int, int, int] | None = Field(None, description="override of the stage depths (small variants)")
    convnext_dims: tuple[int, int, int, int] | None = Field(None, description="override of the stage widths (small variants)")
    convnext_ls_init: float | None = Field(None, gt=0.0, description="override of the blocks' layer-scale initial value "
                                           "(timm 1e-6; small random-init variants)")
    clip_arch: str = Field("ViT-L-14", description="open_clip architecture (or OPEN_CLIP_LOCAL_ARCHS name)")
    clip_image_size: int | None = Field(None, ge=16, description="override of the CLIP input size")
    quick_gelu: bool = Field(True, description="QuickGELU in the CLIP towers (OpenAI CLIP: true)")
    freeze_extractor: bool | None = Field(None, description="null: as the official README (convnext: false, clip: true)")
    embedding_size: int = Field(1024, ge=1)
    alpha: float = Field(0.3, ge=0.0, le=1.0, description="weight of the contrastive loss")
    pos_margin: float = 0.0
    neg_margin: float = 1.0
    crop_size: int = Field(224, ge=8)
    augment: bool = Field(True, description="the official albumentations training pipeline (false: pad + random crop only)")
    reconstruct: ReconConfig | None = Field(
        DRCT_RECONSTRUCT, description="DRCT's diffusion reconstructions of the training images (DVC stage reconstruct; "
        "real -> real, fake and every reconstruction -> fake: drct_label); null: the images alone (a deviation)")

    @property
    def frozen(self) -> bool:
        return self.backbone == "clip" if self.freeze_extractor is None else self.freeze_extractor


class CLIPEmbedder(nn.Module):
    """Official ``CLIPModelV2``: ``model`` (a whole CLIP model) and ``fc`` on ``model.encode_image``."""

    def __init__(self, clip: nn.Module, embedding_size: int) -> None:
        super().__init__()
        self.model = clip
        self.fc = nn.Linear(int(clip.visual.output_dim), embedding_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)


class _ConvNeXtEmbedder(nn.Module):
    """Adapter giving a timm ConvNeXt (``head.fc`` = the embedding layer) the same two steps as `CLIPEmbedder`."""

    @staticmethod
    def features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net.forward_head(net.forward_features(x), pre_logits=True)

    @staticmethod
    def embed(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
        return net.head.fc(f)


class DRCT(Detector):
    """``model`` (backbone + embedding layer) and ``fc`` (embedding -> 2 logits); official module names."""

    def __init__(self, model: nn.Module, embedding_size: int, *, frozen_extractor: bool, alpha: float = 0.3,
                 pos_margin: float = 0.0, neg_margin: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.fc = nn.Linear(embedding_size, 2)
        self.alpha, self.pos_margin, self.neg_margin = alpha, pos_margin, neg_margin
        self.frozen_features = frozen_extractor
        self._clip = isinstance(model, CLIPEmbedder)
        if frozen_extractor:
            self._extractor().requires_grad_(False)

    def _extractor(self) -> nn.Module:
        """The part ``--freeze_extractor`` freezes: the CLIP model, or the ConvNeXt without its embedding layer."""
        if self._clip:
            return self.model.model
        return nn.ModuleList([m for n, m in self.model.named_children() if n != "head"] + [self.model.head.norm])

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = views["image"]
        if self._clip:
            return self.model.features(x)
        return _ConvNeXtEmbedder.features(self.model, x)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.embed(features) if self._clip else _ConvNeXtEmbedder.embed(self.model, features)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.embed(features))
        return logits[:, 1] - logits[:, 0]

    def train_forward(self, views: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = views["features"] if "features" in views else self.forward_features(views)
        emb = self.embed(features)
        logits = self.fc(emb)
        return {"logits": logits[:, 1] - logits[:, 0], "embeddings": emb}

    def train_loss(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        ce = self.loss(outputs["logits"], labels)  # = two-class cross-entropy on (z_real, z_fake)
        con = margin_contrastive_loss(outputs["embeddings"], labels, self.pos_margin, self.neg_margin)
        return (1 - self.alpha) * ce + self.alpha * con


def _convnext_model(cfg: DRCTConfig, weights: WeightsSource) -> nn.Module:
    return create_convnext(cfg.convnext, weights, num_classes=cfg.embedding_size, depths=cfg.convnext_depths,
                           dims=cfg.convnext_dims, ls_init_value=cfg.convnext_ls_init)


def _clip_model(cfg: DRCTConfig, weights: WeightsSource) -> nn.Module:
    clip = open_clip_from_weights(cfg.clip_arch, weights, cfg.clip_image_size, cfg.quick_gelu, owner="DRCT")
    return CLIPEmbedder(clip, cfg.embedding_size)


_BACKBONES = {"convnext": _convnext_model, "clip": _clip_model}


def _build(cfg: DRCTConfig, weights: WeightsSource) -> DRCT:
    model = DRCT(_BACKBONES[cfg.backbone](cfg, weights), cfg.embedding_size, frozen_extractor=cfg.frozen,
                 alpha=cfg.alpha, pos_margin=cfg.pos_margin, neg_margin=cfg.neg_margin)
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load a released DRCT checkpoint (plain ``state_dict``: ``model.*``, ``fc.*``; strict). Its two logits are
    (real, fake); `DRCT.forward_head` returns their difference, so no key needs converting."""
    model.load_state_dict(load_state_dict(path), strict=True)


# ---------------------------------------------------------------------------------------------------------------
# Augmentations: albumentations 1.3.0 defaults, re-implemented (see the module docstring)

#: OpenCV's fixed Gaussian kernels for sigma <= 0 and ksize 3, 5, 7 (``getGaussianKernel`` small_gaussian_tab).
_CV_SMALL_GAUSSIAN = {3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
                      7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]}


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _resize_linear(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """cv2.resize INTER_LINEAR (half-pixel centres, no antialias)."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return _u8(out[0].permute(1, 2, 0).numpy())


def _gaussian_blur(img: np.ndarray, ksize: int) -> np.ndarray:
    k = np.asarray(_CV_SMALL_GAUSSIAN[ksize], dtype=np.float64)
    r = ksize // 2
    p = np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="reflect")  # reflect-101
    h, w = img.shape[:2]
    p = sum(k[i] * p[i:i + h] for i in range(ksize))
    return _u8(sum(k[i] * p[:, i:i + w] for i in range(ksize)))


def _pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """PadIfNeeded(size, size, BORDER_CONSTANT 0): top = (size - h) // 2, the rest at the bottom (same for width)."""
    h, w = img.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if not ph and not pw:
        return img
    return np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def _fancy_pca(img: np.ndarray, alpha: float) -> np.ndarray:
    x = img.reshape(-1, 3) / 255.0
    cov = np.cov(x - x.mean(axis=0), rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1], vecs[:, ::-1]  # descending, as albumentations' sort
    add = vecs.T @ (alpha * vals)  # albumentations: np.column_stack(eig_vecs) is the transpose
    out = img.astype(np.float64) + add[None, None, :] * 255.0
    return np.clip(out, 0.0, 255.0).astype(np.uint8)


def _rgb_to_hsv8(img: np.ndarray) -> np.ndarray:
    """OpenCV COLOR_RGB2HSV for uint8: H in 0..179 (degrees / 2), S and V in 0..255."""
    x = img.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(-1)
    diff = v - x.min(-1)
    s = np.where(v > 0, diff * 255.0 / np.maximum(v, 1e-12), 0.0)
    d = np.maximum(diff, 1e-12)
    h = np.where(v == r, 60.0 * (g - b) / d, np.where(v == g, 120.0 + 60.0 * (b - r) / d, 240.0 + 60.0 * (r - g) / d))
    h = np.where(diff == 0, 0.0, h)
    h = np.where(h < 0, h + 360.0, h)
    return np.stack([np.rint(h / 2) % 180, np.rint(s), v], -1).astype(np.uint8)


def _hsv8_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h = hsv[..., 0].astype(np.float64) * 2.0 / 60.0
    s = hsv[..., 1].astype(np.float64) / 255.0
    v = hsv[..., 2].astype(np.float64)
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(hsv.shape, dtype=np.float64)
    for k, (rr, gg, bb) in enumerate(table):
        m = i == k
        out[m] = np.stack([rr[m], gg[m], bb[m]], -1)
    return _u8(out)


def _hue_saturation_value(img: np.ndarray, dh: float, ds: float, dv: float) -> np.ndarray:
    hsv = _rgb_to_hsv8(img).astype(np.int16)
    lut = np.arange(256, dtype=np.int16)
    hue = np.mod(lut + dh, 180).astype(np.uint8)[hsv[..., 0]]
    sat = np.clip(lut + ds, 0, 255).astype(np.uint8)[hsv[..., 1]]
    val = np.clip(lut + dv, 0, 255).astype(np.uint8)[hsv[..., 2]]
    return _hsv8_to_rgb(np.stack([hue, sat, val], -1))


def _grid_dropout(img: np.ndarray) -> np.ndarray:
    """GridDropout() defaults: ratio 0.5, unit max(2, w // 10) (square, capped by h), offset 0, fill 0."""
    h, w = img.shape[:2]
    unit_w = max(2, w // 10)
    unit_h = max(min(unit_w, h), 2)
    hole_w, hole_h = min(max(int(unit_w * 0.5), 1), unit_w - 1), min(max(int(unit_h * 0.5), 1), unit_h - 1)
    out = img.copy()
    for i in range(w // unit_w + 1):
        for j in range(h // unit_h + 1):
            x1, y1 = min(unit_w * i, w), min(unit_h * j, h)
            out[y1:min(y1 + hole_h, h), x1:min(x1 + hole_w, w)] = 0
    return out


def _shift_scale_rotate(img: np.ndarray, angle: float, scale: float, dx: float, dy: float) -> np.ndarray:
    """cv2.getRotationMatrix2D((w/2, h/2), angle, scale) + shift (dx w, dy h); warpAffine bilinear, zeros outside."""
    h, w = img.shape[:2]
    a, b = scale * np.cos(np.deg2rad(angle)), scale * np.sin(np.deg2rad(angle))
    cx, cy = w / 2, h / 2
    m = np.array([[a, b, (1 - a) * cx - b * cy + dx * w], [-b, a, b * cx + (1 - a) * cy + dy * h], [0, 0, 1]])
    inv = np.linalg.inv(m)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    grid = torch.from_numpy(np.stack([2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1], -1))[None].float()
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    out = F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return _u8(out[0].permute(1, 2, 0).numpy())


def drct_augment(img: np.ndarray, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """The official training pipeline up to normalisation (see the module docstring): uint8 (H, W, 3) ->
    uint8 (size, size, 3). All randomness from `rng`."""
    if rng.random() < 0.5:  # ImageCompression(30, 100)
        img = jpeg(img, int(rng.integers(30, 101)))
    if rng.random() < 0.2:  # RandomScale(scale_limit=(-0.5, 0.5))
        s = rng.uniform(0.5, 1.5)
        h, w = img.shape[:2]
        img = _resize_linear(img, max(int(h * s), 1), max(int(w * s), 1))
    if rng.random() < 0.5:  # HorizontalFlip
        img = img[:, ::-1]
    if rng.random() < 0.1:  # GaussNoise(var_limit=(10, 50))
        sigma = rng.uniform(10.0, 50.0) ** 0.5
        img = np.clip(img.astype(np.float32) + rng.normal(0.0, sigma, img.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.1:  # GaussianBlur(blur_limit=(3, 7)): randrange(3, 8), even sizes rounded up
        k = int(rng.integers(3, 8))
        img = _gaussian_blur(img, k + 1 if k % 2 == 0 else k)
    if rng.random() < 0.5:  # RandomRotate90
        img = np.rot90(img, int(rng.integers(0, 4)))
    img = _pad_to(np.ascontiguousarray(img), size)  # PadIfNeeded, RandomCrop
    h, w = img.shape[:2]
    y0, x0 = int((h - size + 1) * rng.random()), int((w - size + 1) * rng.random())
    img = img[y0:y0 + size, x0:x0 + size]
    if rng.random() < 0.5:  # OneOf([RandomBrightnessContrast, FancyPCA, HueSaturationValue])
        choice = int(rng.integers(0, 3))
        if choice == 0:
            alpha, beta = 1.0 + rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2)
            lut = np.clip(np.arange(256, dtype=np.float32) * alpha + beta * 255, 0, 255).astype(np.uint8)
            img = lut[img]
        elif choice == 1:
            img = _fancy_pca(img, float(rng.normal(0.0, 0.1)))
        else:
            img = _hue_saturation_value(img, rng.uniform(-20, 20), rng.uniform(-30, 30), rng.uniform(-20, 20))
    if rng.random() < 0.5:  # OneOf([CoarseDropout, GridDropout])
        if rng.random() < 0.5:
            img = img.copy()
            for _ in range(8):
                y, x = int(rng.integers(0, size - 8 + 1)), int(rng.integers(0, size - 8 + 1))
                img[y:y + 8, x:x + 8] = 0
        else:
            img = _grid_dropout(img)
    if rng.random() < 0.2:  # ToGray
        gray = _u8(img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
        img = np.repeat(gray[..., None], 3, axis=2)
    if rng.random() < 0.5:  # ShiftScaleRotate(0.1, 0.2, 10)
        angle, scale = rng.uniform(-10, 10), rng.uniform(0.8, 1.2)
        img = _shift_scale_rotate(img, angle, scale, rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1))
    return np.ascontiguousarray(img)


def _views(cfg: DRCTConfig, train: bool, hflip: bool):
    size = cfg.crop_size

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if train and cfg.augment:
            img = drct_augment(img, rng, size)  # includes the official flip; `hflip` adds nothing
        else:
            img = _pad_to(img, size)
            h, w = img.shape[:2]
            if train:  # augment: false (a documented reduction): random crop, optional flip
                y0, x0 = int((h - size + 1) * rng.random()), int((w - size + 1) * rng.random())
                if hflip and rng.random() < 0.5:
                    img = img[:, ::-1]
            else:  # CenterCrop
                y0, x0 = (h - size) // 2, (w - size) // 2
            img = img[y0:y0 + size, x0:x0 + size]
        return {"image": to_tensor(np.ascontiguousarray(img), IMAGENET_MEAN, IMAGENET_STD)}

    return view


def _random_weights(cfg: DRCTConfig) -> DRCTConfig:
    """The config with a random SD-inpainting model of the same architecture (a profile with pretrained: false)."""
    return cfg if cfg.reconstruct is None else cfg.model_copy(update={"reconstruct": cfg.reconstruct.randomised()})


SPEC = DetectorSpec(
    name="drct",
    summary="DRCT: ConvNeXt-B (or frozen CLIP ViT-L/14) with a 1024-d embedding, CE + margin contrastive loss",
    paper="Chen, Zeng, Yang, Yang, DRCT: Diffusion Reconstruction Contrastive Training towards Universal Detection "
          "of Diffusion Generated Images, ICML 2024",
    repo="https://github.com/beibuwandeluori/DRCT",
    config=DRCTConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:convnext_base.fb_in22k",
    provenance="official",
    random_weights=_random_weights,
)
