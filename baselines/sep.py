"""SEP: a single exposed patch for AI-generated image detection, assembled as the official model.

Independent re-implementation of 1112348/SEP-for-AIGCDetection (``models/model.py``, ``data/dataset.py``,
``inference.py``; no licence in that repository, no code copied). Paper: "All Patches Are Not Equal: Focusing on a
Single Exposed Patch for AI-Generated Image Detection".

Inputs (`_views`), per image:
- ``patch``: the exposed patch (`sep_bench.layers.eps`), 32x32 from the full decoded image (not from the crop below),
  ImageNet-normalised; 64 candidates in training, 256 at evaluation; images whose short side is below the patch
  size are first resized to 256x256 (the official rule).
- ``img_dwt``: a 256x256 crop of the image in [0, 1], not normalised (RandomCrop with zero padding in training,
  CenterCrop at evaluation).
- With ``hflip`` in training the image is flipped once, before both.

Forward (official module names, i.e. the state-dict prefixes):
``srm`` (fixed SRM residual of the patch) -> ``spalAtten`` (GBCSA on the patch, guided by the residual) ->
bilinear up-sampling to ``classifier_size`` (official 512) -> ``dwt_piex`` re-weights it from ``dwt`` (the encoder of
the tiled DWT map of ``img_dwt``) -> plus the bilinearly up-sampled raw patch -> ``disc`` (torchvision-style
ResNet-50, ImageNet initialised, ``fc`` = Linear(2048, 2)).

Output: the official network has two logits for its classes sorted by name, ``ai`` = 0 and ``nature`` = 1.
This detector returns ONE fake logit ``logit[ai] - logit[nature]``: ``sigmoid`` of it is exactly the official
softmax probability of ``ai``, so the decisions agree, and binary cross-entropy on it equals the official
two-class cross-entropy. (The official ``inference.py`` scores AP with column 1, which is ``nature``.)

Weights: ``pretrained: true`` -> ImageNet weights for ``disc`` only (timm ``resnet50.tv_in1k``, the torchvision
``resnet50-19c8e357`` weights the official code loads); ``pretrained: <file>`` -> a ResNet state dict for ``disc``
(torchvision/timm key names; an ImageNet ``fc`` is dropped), or, if its keys are SEP's (``disc.*``, ...), a full
SEP checkpoint to start from; ``false`` -> random initialisation. The authors' released weights load with
`_load_official` (the registry's ``load_official``): strict, with the official key names (``srm.*``,
``spalAtten.*``, ``dwt.*``, ``dwt_piex.*``, ``disc.*``; no renaming is needed).

Knobs beyond the official model (defaults = official): ``classifier_size``, ``backbone`` (resnet18/34 for CPU
profiles), ``patch_size``, candidate counts, ``dwt_size``, ``eps_mode``/``eps_stride`` and the ablation switches:
- ``eps: false``: a uniformly random patch instead of the least-textured one;
- ``gbcsa: false``: no ``spalAtten`` (and no ``srm``): the raw patch takes the attention output's place;
- ``srm_guide: false``: GBCSA without SRM guidance (no ``srm``, no ``q_conv_*_srm``);
- ``fpm: false``: no ``dwt``/``dwt_piex`` (and no ``img_dwt`` view): the up-sampled branch is not re-weighted.
Ablated models have fewer state-dict keys and cannot load a full official checkpoint.

Documented deviations from the official code:
- Candidate patches and crops come from the per-sample numpy Generator (the official code uses torchvision's
  random transforms on the global torch RNG and never seeds evaluation).
- Padding of small images for ``img_dwt`` follows `sep_bench.data.transforms` (zero padding split between both
  sides, as torchvision CenterCrop; torchvision's RandomCrop(pad_if_needed) pads both sides by the full deficit).
- See `sep_bench.layers.fpm` (grouped-conv enhancer, DWT resize antialias, and ``dwt_bands``: the official
  repository changed the DWT input from the HH band alone to the tiled sub-bands five days after publishing the
  checkpoint link; ``dwt_bands: hh`` evaluates the checkpoint with the earlier input) and `sep_bench.layers.eps`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop, maybe_hflip, random_crop, to_tensor
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.eps import ensure_min_size, select_patch
from sep_bench.layers.fpm import DWTMap, GroupedDilatedFrequencyEnhancer, dwt_encoder
from sep_bench.layers.sapm import GBCSA, SRMConv2d
from sep_bench.weights import WeightsFileError, WeightsSource, load_state_dict, timm_state_dict

__all__ = ["SEPConfig", "SEP", "AI", "NATURE", "choose_patch", "SPEC"]

#: Official class indices (folders sorted by name).
AI, NATURE = 0, 1

Backbone = Literal["resnet18", "resnet34", "resnet50"]


class SEPConfig(BaseModel):
    """``detectors.sep.model`` (defaults: the official model and data pipeline)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    classifier_size: int = Field(512, ge=32, description="side of the classifier input (patch up-sampled to it)")
    backbone: Backbone = Field("resnet50", description="disc architecture; fc is always Linear(features, 2)")
    patch_size: int = Field(32, ge=4)
    train_candidates: int = Field(64, ge=1, description="EPS candidates per training image")
    eval_candidates: int = Field(256, ge=1, description="EPS candidates per evaluation image")
    dwt_size: int = Field(256, ge=16, description="side of the img_dwt crop")
    eps_mode: Literal["official", "exhaustive"] = Field("official", description="random candidates, or every position")
    eps_stride: int = Field(1, ge=1, description="grid step of eps_mode: exhaustive")
    eps: bool = Field(True, description="false: a random patch instead of the exposed one (ablation)")
    gbcsa: bool = Field(True, description="false: no GBCSA attention (ablation)")
    fpm: bool = Field(True, description="false: no DWT frequency branch (ablation)")
    srm_guide: bool = Field(True, description="false: GBCSA without SRM guidance (ablation)")
    dwt_antialias: bool = Field(True, description="antialias of the 260 -> 256 resize of the tiled DWT map")
    dwt_bands: Literal["tiled", "hh"] = Field(
        "tiled", description="DWT map: tiled [[LL, LH], [HL, HH]] (official code) or HH only (its earlier revision)"
    )

    @property
    def official_architecture(self) -> bool:
        return self.backbone == "resnet50" and self.gbcsa and self.fpm and self.srm_guide


def _resnet(arch: str) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    net.fc = nn.Linear(net.fc.in_features, 2)
    return net


class SEP(Detector):
    """The SEP network; ``forward(views)`` returns the fake logit (B,), `logits2` the official two logits.

    Args:
        classifier_size: side the patch branch is up-sampled to (official 512).
        backbone: ``resnet50`` (official), ``resnet34`` or ``resnet18``.
        gbcsa, fpm, srm_guide: ablation switches (see the module docstring); all True is the official model.
        dwt_antialias, dwt_bands: see `sep_bench.layers.fpm` (`DWTMap`).
    """

    def __init__(
        self,
        *,
        classifier_size: int = 512,
        backbone: Backbone = "resnet50",
        gbcsa: bool = True,
        fpm: bool = True,
        srm_guide: bool = True,
        dwt_antialias: bool = True,
        dwt_bands: Literal["tiled", "hh"] = "tiled",
    ) -> None:
        super().__init__()
        self.classifier_size = classifier_size
        self.srm = SRMConv2d(3) if gbcsa and srm_guide else None
        self.spalAtten = GBCSA(channels=3, num_heads=3, guide=srm_guide) if gbcsa else None
        if fpm:
            self.dwt_map = DWTMap(wave="bior1.3", mode="symmetric", antialias=dwt_antialias, bands=dwt_bands)
            self.dwt = dwt_encoder(3, (32, 64, 64, 64))
            self.dwt_piex = GroupedDilatedFrequencyEnhancer(in_channels=64, patch_channels=3, groups=16, lambda_val=0.2)
        else:
            self.dwt_map = self.dwt = self.dwt_piex = None
        self.disc = _resnet(backbone)

    def classifier_input(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The (B, 3, S, S) image the ResNet classifies (``patch_fusion`` in the official code)."""
        patch = views["patch"]
        size = (self.classifier_size, self.classifier_size)
        branch = patch
        if self.spalAtten is not None:
            branch = self.spalAtten(patch, self.srm(patch) if self.srm is not None else None)
        branch = F.interpolate(branch, size=size, mode="bilinear", align_corners=False)
        if self.dwt_piex is not None:
            branch = self.dwt_piex(branch, self.dwt(self.dwt_map(views["img_dwt"])))
        return branch + F.interpolate(patch, size=size, mode="bilinear", align_corners=False)

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        net = self.disc
        x = net.maxpool(net.relu(net.bn1(net.conv1(self.classifier_input(views)))))
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return torch.flatten(net.avgpool(x), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.disc.fc(features)
        return logits[:, AI] - logits[:, NATURE]

    def logits2(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The official output: (B, 2) logits for (ai, nature)."""
        return self.disc.fc(self.forward_features(views))


def _build(cfg: SEPConfig, weights: WeightsSource) -> SEP:
    model = SEP(
        classifier_size=cfg.classifier_size,
        backbone=cfg.backbone,
        gbcsa=cfg.gbcsa,
        fpm=cfg.fpm,
        srm_guide=cfg.srm_guide,
        dwt_antialias=cfg.dwt_antialias,
        dwt_bands=cfg.dwt_bands,
    )
    if weights.kind == "file":
        sd = load_state_dict(weights.ref)
        if any(k.startswith("disc.") for k in sd):  # a whole SEP model (e.g. the released weights): all of it
            _load_official(model, Path(weights.ref))
        else:
            _load_backbone(model.disc, sd, Path(weights.ref).name, cfg.backbone)
    elif weights.kind == "hub":
        _load_imagenet_backbone(model.disc, weights.ref, cfg.backbone)
    model.weights = weights
    return model


def _load_backbone(disc: nn.Module, sd: dict[str, torch.Tensor], source: str, arch: str) -> None:
    """A ResNet state dict into ``disc``: strict except ``fc``, which stays new unless it is already (2, F)."""
    own = disc.state_dict()
    sd = {k: v for k, v in sd.items() if not (k.startswith("fc.") and (k not in own or own[k].shape != v.shape))}
    result = disc.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise WeightsFileError(
            f"{source}: not a {arch} state dict (nor a SEP checkpoint); missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def _load_imagenet_backbone(disc: nn.Module, ref: str, arch: str) -> None:
    """ImageNet weights for ``disc`` (see weights.timm_state_dict); ``fc`` stays new."""
    sd = timm_state_dict(ref, arch)
    _load_backbone(disc, {k: v for k, v in sd.items() if not k.startswith("fc.")}, ref, arch)


def _load_official(model: Detector, path: Path) -> None:
    """Load an official SEP checkpoint (``torch.save(model.state_dict())``) strictly, official key names unchanged.

    The two-logit head is kept as is; `SEP.forward_head` turns it into the fake logit ``logit[ai] - logit[nature]``.
    """
    sd = load_state_dict(path)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        own = set(model.state_dict())
        missing = sorted(own - set(sd))
        unexpected = sorted(set(sd) - own)
        raise WeightsFileError(
            f"{Path(path).name} is not an official SEP checkpoint for this model "
            f"(missing {len(missing)} keys, e.g. {missing[:4]}; unexpected {len(unexpected)}, e.g. {unexpected[:4]}). "
            "Official checkpoints need the full model: backbone resnet50 and gbcsa, fpm, srm_guide true."
        ) from err


def choose_patch(
    cfg: SEPConfig, img: np.ndarray, rng: np.random.Generator, train: bool = False
) -> tuple[np.ndarray, int, int]:
    """The exposed patch as the views pick it: (source image, y, x); the source is the image, or its 256x256 resize
    when its short side is below the patch size. Draws from `rng` exactly as the view does after any flip."""
    src = ensure_min_size(img, cfg.patch_size)
    mode = cfg.eps_mode if cfg.eps else "random"
    n = cfg.train_candidates if train else cfg.eval_candidates
    y, x = select_patch(src, rng, size=cfg.patch_size, n_candidates=n, mode=mode, stride=cfg.eps_stride)
    return src, y, x


def _views(cfg: SEPConfig, train: bool, hflip: bool):
    ps = cfg.patch_size

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if train and hflip:
            img = maybe_hflip(img, rng)
        src, y, x = choose_patch(cfg, img, rng, train)
        out = {"patch": to_tensor(src[y : y + ps, x : x + ps], IMAGENET_MEAN, IMAGENET_STD)}
        if cfg.fpm:
            crop = random_crop(img, cfg.dwt_size, rng) if train else center_crop(img, cfg.dwt_size)
            out["img_dwt"] = to_tensor(crop)
        return out

    return view


SPEC = DetectorSpec(
    name="sep",
    summary="SEP: least-textured 32x32 patch, SRM-guided spatial attention, DWT frequency re-weighting, ResNet-50",
    paper="All Patches Are Not Equal: Focusing on a Single Exposed Patch for AI-Generated Image Detection (SEP)",
    repo="https://github.com/1112348/SEP-for-AIGCDetection",
    config=SEPConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:resnet50.tv_in1k",
)
