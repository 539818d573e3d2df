"""UnivFD: "Towards Universal Fake Image Detectors that Generalize Across Generative Models" (Ojha et al., CVPR 2023).

Independent re-implementation of WisconsinAIVision/UniversalFakeDetect (MIT licence; no code copied). A frozen
CLIP image encoder (official: OpenAI ViT-L/14, taken here from open_clip ``ViT-L-14`` / ``openai``) gives the
768-d ``encode_image`` embedding (projected, not normalised); a linear head ``fc = Linear(768, 1)`` gives the
fake logit. Only ``fc`` trains. ``forward_features`` is the frozen part and ``forward_head`` the trainable one
(``frozen_features = True``), so an engine may cache the features of deterministic views. The OpenAI weights
need QuickGELU activations; open_clip 3.x builds ``ViT-L-14`` with GELU and only warns, so the config's
``quick_gelu`` defaults to true: QuickGELU whatever the backbone source (the ``openai`` tag, or an OpenAI checkpoint
given as a local file, which carries no tag); null follows the tag.

Official recipe (``models/clip_models.py``, ``networks/trainer.py``, ``options/*.py``, ``data/datasets.py``,
``train.py``, README): ``--fix_backbone``; ``fc.weight`` ~ N(0, 0.02) (``init_gain``), ``fc.bias`` keeps
PyTorch's default init; BCE-with-logits; AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0; batch 256; up to 100
epochs with early stopping on validation accuracy (patience 5, then lr / 10, stop below 1e-6; ``train.py`` imports
``earlystop.py``, which the repository lacks: CNNDetection's has that behaviour). Training view:
resize short side to 256 (bilinear) -> blur (p 0.5, sigma U[0, 3]) / JPEG (p 0.5, quality U{30..100}) ->
RandomCrop 224 -> horizontal flip -> CLIP normalisation. Evaluation (``validate.py``): no resize, CenterCrop 224,
CLIP normalisation. Released weights: ``pretrained_weights/fc_weights.pth``, the head only, an OrderedDict
``{'weight': [1, 768], 'bias': [1]}`` saved on cuda:0; `_load_official` maps it to CPU and into ``fc``.

Small architectures for tests and the CPU mini profile: ``arch`` is any open_clip built-in name, or one of
`LOCAL_CLIP_ARCHS` (``sep_bench.layers.clip.OPEN_CLIP_LOCAL_ARCHS``; ``tiny-vit-768``: a 2-layer, 64-wide ViT
with 16 px patches, 112 px input and a 768-d embedding so the official head shape still applies), built with
``open_clip.CLIP`` from that config. The CLIP tower comes from `sep_bench.layers.clip` (`create_clip` is its
``create_open_clip``), shared with the other CLIP-based detectors.

Documented deviations: the JPEG encoder is always PIL (see `sep_bench.layers.augment`); the official validation during
training also applies the augmentation at the mid values (sigma 1.5, quality 65, each with p 0.5); this harness
validates on the plain evaluation view. Only the image tower is kept (the text tower is discarded after loading).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from pydantic import Field
from torch import nn

from sep_bench.layers.augment import CropViewConfig, crop_view
from sep_bench.layers.backbones import check_input_size
from sep_bench.weights import PretrainedUnavailableError
from sep_bench.data.transforms import CLIP_MEAN, CLIP_STD
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.clip import OPEN_CLIP_LOCAL_ARCHS as LOCAL_CLIP_ARCHS
from sep_bench.layers.clip import create_open_clip as create_clip
from sep_bench.layers.clip import open_clip_from_weights
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["UnivFDConfig", "UnivFD", "LOCAL_CLIP_ARCHS", "create_clip", "SPEC"]

OFFICIAL_FEATURE_DIM = 768

class UnivFDConfig(CropViewConfig):
    """``detectors.univfd.model`` (defaults: the official recipe)."""

    arch: str = Field("ViT-L-14", description="open_clip architecture, or a name in LOCAL_CLIP_ARCHS")
    image_size: int | None = Field(None, ge=16, description="override of the encoder input size; null: the architecture's")
    quick_gelu: bool | None = Field(
        True, description="QuickGELU activation, as the OpenAI CLIP the official head was trained on (whatever "
        "pretrained tag or file is given); null: as the pretrained tag needs (openai: true)")
    fc_init_std: float = Field(0.02, gt=0.0, description="std of the N(0, std) init of fc.weight")


class UnivFD(Detector):
    """Frozen CLIP image tower (``visual``) + linear head (``fc``)."""

    frozen_features = True

    def __init__(self, visual: nn.Module, fc_init_std: float = 0.02) -> None:
        super().__init__()
        self.visual = visual
        self.visual.requires_grad_(False)
        self.visual.eval()
        self.fc = nn.Linear(self.feature_dim, 1)
        nn.init.normal_(self.fc.weight, 0.0, fc_init_std)

    @property
    def feature_dim(self) -> int:
        return int(self.visual.output_dim)

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def train(self, mode: bool = True) -> "UnivFD":
        super().train(mode)
        self.visual.eval()  # the encoder is frozen: always in inference mode
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.fc.parameters())

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.visual(views["image"])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def _build(cfg: UnivFDConfig, weights: WeightsSource) -> UnivFD:
    visual = open_clip_from_weights(cfg.arch, weights, cfg.image_size, cfg.quick_gelu, owner="UnivFD").visual
    # (the text tower is dropped here)
    model = UnivFD(visual, fc_init_std=cfg.fc_init_std)
    check_input_size(model, cfg)
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load the official head ``fc_weights.pth`` (``{'weight': [1, 768], 'bias': [1]}``) into ``fc``."""
    sd = load_state_dict(path)
    if set(sd) != {"weight", "bias"}:
        raise ValueError(f"{Path(path).name}: expected the UnivFD head {{'weight', 'bias'}}, got keys {sorted(sd)[:6]}")
    if tuple(sd["weight"].shape) != tuple(model.fc.weight.shape):
        raise PretrainedUnavailableError(
            f"{Path(path).name}: head weight {tuple(sd['weight'].shape)} does not fit this model's fc "
            f"{tuple(model.fc.weight.shape)} (the official head needs a {OFFICIAL_FEATURE_DIM}-d CLIP embedding)"
        )
    model.fc.load_state_dict(sd, strict=True)


def _views(cfg: UnivFDConfig, train: bool, hflip: bool):
    return crop_view(cfg, train, hflip, CLIP_MEAN, CLIP_STD)


SPEC = DetectorSpec(
    name="univfd",
    summary="UnivFD: frozen CLIP ViT-L/14 image features + a trained linear head",
    paper="Ojha et al., Towards Universal Fake Image Detectors that Generalize Across Generative Models, CVPR 2023",
    repo="https://github.com/WisconsinAIVision/UniversalFakeDetect",
    config=UnivFDConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="open_clip:ViT-L-14/openai",
    official_needs_backbone=True,  # the released file is the linear head only
)
