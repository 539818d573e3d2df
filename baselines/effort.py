"""Effort: "Orthogonal Subspace Decomposition for Generalizable AI-Generated Image Detection" (Yan et al., ICML 2025).

Independent re-implementation of YZY-stack/Effort-AIGI-Detection (licence CC BY-NC 4.0, README badge: the
official code and weights are non-commercial; no code copied). Files read: ``DeepfakeBench/training/detectors/
effort_detector.py`` (model, losses), ``DeepfakeBench/training/config/detector/effort.yaml`` (recipe),
``DeepfakeBench/training/demo.py`` (how the released checkpoints are loaded), ``UniversalFakeDetect_Benchmark/
models/clip_models.py`` and ``script/train_svd.sh`` (the UnivFD-codebase variant, ProGAN recipe). Provenance:
official (model and training code).

Model (``EffortDetector``): ``backbone`` = the vision tower of HF CLIP ViT-L/14 (``CLIPModel.vision_model``;
keys ``embeddings.*``, ``pre_layrnorm``, ``encoder.layers.N.*``, ``post_layernorm``); every ``nn.Linear`` inside
``self_attn`` (q, k, v, out projections) is split by SVD (`sep_bench.layers.adapters.SVDResidualLinear`): the top
``r = 1024 - 1`` singular triplets form the frozen ``weight_main``, the rank-1 residual ``U_residual``,
``S_residual``, ``V_residual`` is trainable; everything else of CLIP is frozen. ``head = Linear(1024, 2)`` on the
``pooler_output`` (post-layernorm CLS token, 1024-d, *not* the 768-d projection). Official loss: cross-entropy on
the 2 logits; the fake logit here is ``logit[1] - logit[0]`` (softmax over 2 classes = sigmoid of the
difference, so binary cross-entropy on it is exactly that cross-entropy, gradients included). The orthogonality
and singular-value-energy regularisers exist in the official file but are commented out of ``get_losses``:
here they are switches (``orthogonal_loss_weight``, ``keep_sv_loss_weight``), default 0 (off), as the official
code runs. The DeepfakeBench module also keeps the frozen factors ``U_r``, ``S_r``, ``V_r`` as parameters
(``keep_main_factors: true``, so its checkpoints load strictly; the UnivFD-codebase variant does not keep them).

Released weights (Google Drive; GenImage SD v1.4, Chameleon, FaceForensics++): DeepfakeBench ``EffortDetector``
state dicts (``backbone.*``, ``head.*``; a ``module.`` / ``state_dict`` wrapper is removed). `_load_official`
loads them strictly: every key of this model and no other (the official demo loads with ``strict=False``, marked
"FIXME" there; a file without the ``*_r`` factors needs ``keep_main_factors: false``). The file format was
checked against the official module's key list (generated from the official code, tests/test_effort.py), not
against the downloaded file (Google Drive is not reachable here).

Recipe (params.yaml ``detectors.effort``): DeepfakeBench ``effort.yaml``: Adam lr 2e-4, betas (0.9, 0.999), eps
1e-8, weight decay 5e-4, batch 32, 10 epochs, no schedule, 224 px, CLIP normalisation. Its albumentations
augmentation (flip; rotate +-10 deg p 0.5; blur kernel 3-7 p 0.5; brightness/contrast +-0.1 p 0.5; JPEG 40-100)
is approximated by the shared blur/JPEG augmentation (blur sigma 0-3 p 0.5, PIL JPEG 40-100 p 0.5, flip):
*deviation*, no rotation and no brightness/contrast jitter. The ProGAN (aigcbench) recipe is the UnivFD-codebase
script: batch 48, 256 px resize then 224 crop, lr 2e-4 (AdamW, weight decay 0), blur/JPEG as UnivFD.

Views (``geometry``): ``cv2_cubic_squash`` (default; DeepfakeBench ``training/dataset/abstract_dataset.py``
``load_rgb``): the whole image squashed to 224 x 224 (aspect ratio not kept) by ``cv2.resize(...,
interpolation=cv2.INTER_CUBIC)`` on the uint8 RGB image (`sep_bench.data.transforms.squash_view`), then ToTensor and
CLIP normalisation; training augments after the squash, as DeepfakeBench does. The view used before (short side
to 224 with PIL bilinear, centre crop) differed even on square images (another interpolation): see
``results/benchmarks/official_parity.json`` for the before/after input and logit differences against the authors'
``load_rgb``. ``short_side_crop``: the UnivFD-codebase view (``train_resize``/``eval_resize`` short side, PIL
bilinear, then a crop; its evaluation is CenterCrop 224 without resize), used by the aigcbench override. The
``eval.preprocess`` rules ``center_crop`` and ``resize`` hand the view an image of 224 x 224 already, which the
squash leaves as it is. The decoder differs (the official reads with ``cv2.imread``; here PIL): the same pixels for
PNG, and for the two test photographs saved as JPEG quality 95 the model inputs were identical too (pillow 13.0.0,
opencv-python-headless 5.0.0.93); other libjpeg builds may round differently.

Deviations: the SVD runs in float64 (official: float32) so the split reconstructs the weight to float rounding;
the singular vectors can differ in sign from a float32 SVD (their products do not).

Mini profile: ``arch: tiny-vit-b16`` (HF CLIP vision tower, 2 layers, 64 wide, 112 px; `sep_bench.layers.clip`),
random init (``pretrained: false``) and ``main_rank`` null (width - 1 = 63, a rank-1 residual as the official).
A frozen random tower with rank-1 residuals barely learns: the detector is exempt from the mini 85% vae8 target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import torch
from pydantic import Field
from torch import nn

from sep_bench.layers.augment import CropViewConfig, blur_jpeg, crop_view
from sep_bench.layers.backbones import check_input_size, load_strict
from sep_bench.data.transforms import squash_view
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.adapters import SVDResidualLinear, apply_svd_residual
from sep_bench.layers.clip import CLIP_MEAN, CLIP_STD, hf_clip_from_weights
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["EffortConfig", "Effort", "SPEC"]


class EffortConfig(CropViewConfig):
    """``detectors.effort.model`` (defaults: the official DeepfakeBench recipe, CLIP ViT-L/14)."""

    arch: str = Field("openai/clip-vit-large-patch14", description="HF CLIP model (sep_bench.layers.clip name, "
                      "hub id or local directory)")
    image_size: int | None = Field(None, ge=16, description="encoder input size override (random init only)")
    main_rank: int | None = Field(None, ge=0, description="r: top singular components frozen per attention "
                                  "projection; null: hidden size - 1 (official 1024 - 1)")
    keep_main_factors: bool = Field(True, description="keep U_r, S_r, V_r as frozen parameters (DeepfakeBench "
                                    "module; needed by the orthogonal loss)")
    orthogonal_loss_weight: float = Field(0.0, ge=0.0, description="weight of the mean orthogonality loss "
                                          "(official: commented out, 0)")
    keep_sv_loss_weight: float = Field(0.0, ge=0.0, description="weight of the mean singular-value energy loss "
                                       "(official: commented out, 0)")
    geometry: Literal["cv2_cubic_squash", "short_side_crop"] = Field(
        "cv2_cubic_squash", description="cv2_cubic_squash: DeepfakeBench load_rgb, the whole image to crop_size x "
        "crop_size with OpenCV INTER_CUBIC (train and eval; train_resize/eval_resize unused); short_side_crop: the "
        "UnivFD-codebase view, short side to train_resize/eval_resize (PIL bilinear) then a crop")
    crop_size: int = Field(224, ge=8)
    train_resize: int | None = Field(224, ge=8, description="short_side_crop: short side resized before augmentation "
                                     "and crop")
    eval_resize: int | None = Field(224, ge=8, description="short_side_crop: short side resized before the centre crop")
    blur_prob: float = Field(0.5, ge=0.0, le=1.0)
    jpeg_prob: float = Field(0.5, ge=0.0, le=1.0)
    jpeg_quality: tuple[int, int] = (40, 100)


class Effort(Detector):
    """HF CLIP vision tower with SVD-residual attention projections (``backbone``) + ``head = Linear(D, 2)``."""

    def __init__(self, backbone: nn.Module, main_rank: int | None = None, keep_main_factors: bool = True,
                 orthogonal_loss_weight: float = 0.0, keep_sv_loss_weight: float = 0.0) -> None:
        super().__init__()
        hidden = int(backbone.config.hidden_size)
        r = hidden - 1 if main_rank is None else int(main_rank)
        self.backbone = apply_svd_residual(backbone, r, "self_attn", keep_main_factors)
        self.head = nn.Linear(hidden, 2)
        self.orthogonal_loss_weight = float(orthogonal_loss_weight)
        self.keep_sv_loss_weight = float(keep_sv_loss_weight)

    @property
    def image_size(self) -> tuple[int, int]:
        s = int(self.backbone.config.image_size)
        return (s, s)

    def svd_layers(self) -> list[SVDResidualLinear]:
        return [m for m in self.backbone.modules() if isinstance(m, SVDResidualLinear)]

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.backbone(pixel_values=views["image"]).pooler_output

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.head(features)
        return logits[:, 1] - logits[:, 0]

    def train_loss(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        loss = self.loss(outputs["logits"], labels)
        if self.orthogonal_loss_weight or self.keep_sv_loss_weight:
            layers = self.svd_layers()
            reg = sum(self.orthogonal_loss_weight * m.orthogonal_loss() + self.keep_sv_loss_weight * m.keep_sv_loss()
                      for m in layers)
            loss = loss + reg / max(len(layers), 1)
        return loss


def _build(cfg: EffortConfig, weights: WeightsSource) -> Effort:
    backbone = hf_clip_from_weights(cfg.arch, "vision", weights, cfg.image_size)
    model = Effort(backbone, cfg.main_rank, cfg.keep_main_factors, cfg.orthogonal_loss_weight,
                   cfg.keep_sv_loss_weight)
    check_input_size(model, cfg)
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load a DeepfakeBench ``EffortDetector`` state dict (``backbone.*``, ``head.*``; 2 logits, real = 0) strictly."""
    def hint(missing: list[str], unexpected: list[str]) -> str:
        if all(k.rsplit(".", 1)[-1] in ("U_r", "S_r", "V_r") for k in missing + unexpected):
            return (f" (only the frozen SVD factors differ: set model.keep_main_factors: "
                    f"{str(bool(unexpected)).lower()})")
        return ""

    load_strict(model, load_state_dict(path), path, "an Effort (DeepfakeBench)", hint)


def _views(cfg: EffortConfig, train: bool, hflip: bool):
    if cfg.geometry == "short_side_crop":
        return crop_view(cfg, train, hflip, CLIP_MEAN, CLIP_STD)

    def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return blur_jpeg(img, rng, blur_prob=cfg.blur_prob, blur_sigma=cfg.blur_sigma, jpeg_prob=cfg.jpeg_prob,
                         jpeg_quality=cfg.jpeg_quality)

    return squash_view(cfg.crop_size, CLIP_MEAN, CLIP_STD, train=train, hflip=hflip, augment=augment,
                       interpolation="cubic")


SPEC = DetectorSpec(
    name="effort",
    summary="Effort: CLIP ViT-L/14 with rank-1 SVD residuals of the attention projections trained, linear head",
    paper="Yan et al., Orthogonal Subspace Decomposition for Generalizable AI-Generated Image Detection, ICML 2025",
    repo="https://github.com/YZY-stack/Effort-AIGI-Detection",
    config=EffortConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="hf-hub:openai/clip-vit-large-patch14",
    provenance="official",
)
