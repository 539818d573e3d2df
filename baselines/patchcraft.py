"""PatchCraft / RPTC: rich and poor texture contrast (Zhong et al., arXiv 2311.12397).

Provenance ``official-inference``. The authors never published training code. Their test code and ProGAN-trained
weights ship with Ekko-zn/AIGCDetectBenchmark, and the public copy read here is kylin0421/AIGIDetectionZOO (MIT):
``aigidetection_zoo/PatchCraft/networks/RPTC.py`` (model ``Net``, ``initWeights``),
``networks/srm_filter_kernel.py`` (the 30 filters) and ``patchcraft_api.py`` (``ED``, ``processing_RPTC``).
Its ``weights/RPTC.pth`` is ``{"netC": DDP state dict}``. This file re-implements that model (no code copied) and
keeps its module names, so that checkpoint loads strictly. With it, this model and the official ``Net`` give
identical logits (max |diff| 0) on the same input.

Smash & Reconstruction (the view, `smash_reconstruct`): the image in [0, 1] (no normalisation). If its short
side is under ``patch_size``, the whole image is first resized to ``patch_size`` x ``patch_size`` (bilinear, as
the official ``Resize((32, 32))``). Then ``n_candidates = 3 * grid**2`` (192) random ``patch_size`` crops (32)
are scored by texture diversity: the sum of absolute differences between neighbouring pixels in four directions
(vertical, horizontal, diagonal, anti-diagonal) over all three channels (`texture_diversity`, the official
``ED``). After a stable ascending sort, the ``grid**2`` (64) poorest crops are tiled row by row into the "poor"
image (poorest at the top left). The richest crops, richest first, are tiled into the "rich" image. Both images
are 256 x 256 (``grid * patch_size``). The view returns ``{"patches": (2, 3, S, S)}``, poor first, as the
official input ``[B, 2, 3, S, S]``.

Model (official names): ``group1.hpf`` is a fixed 5x5 conv with the 30 SRM high-pass filters
(`sep_bench.layers.srm` bank ``srm30``; it equals the checkpoint's ``group1.hpf.weight`` exactly). It is
applied to each colour channel on its own, which gives 90 maps ordered channel-major. ``group1_b`` is conv3x3(90,
32) + BN + Hardtanh(-5, 5) and is shared by both images (the "learnable" part of the feature extraction). Their
difference, poor minus rich, goes to ``group2`` (4 x [conv3x3 + BN + ReLU] + AvgPool 3/2/1), ``group3`` and
``group4`` (2 x [...] + AvgPool each) and ``group5`` (2 x [...]). Global average pooling (``advpool``) and
``fc2 = Linear(32, 1)`` follow. Init (official ``initWeights``): Kaiming-normal fan_in for the trainable convs,
N(0, 0.01) for ``fc2.weight``, zero for its bias; BN keeps PyTorch's default init. The unused ``TLU`` of the
official HPF and its unused ``relu`` hold no parameters and are left out.

Label convention: the official single logit is the fake logit (AIGCDetectBenchmark labels real 0 and fake 1;
``sigmoid`` is the fake probability). `_load_official` unwraps ``netC`` and the ``module.`` prefix, loads
strictly and changes no value.

Guessed (the training code is not public; the paper trains on ProGAN and gives no recipe we could verify):
optimizer Adam lr 2e-4 with betas (0.9, 0.999) and no weight decay, batch 32, epochs, no schedule, and the
training augmentation. Here the only augmentation is an optional horizontal flip of the whole image before
smashing (``train.hflip``). The crops are drawn from the per-sample numpy Generator. The official test code
uses torchvision's RandomCrop on the global RNG and reseeds it with 42 for every image; the ZOO API uses it
unseeded.

Documented deviations: texture diversity is summed exactly on the uint8 integers (the official sum is in float32
on values/255). Candidates whose scores differ by less than float32 rounding can swap places: on uniform noise,
where the 192 scores lie within about 0.1% of each other, 99% of the sorted positions agree. The ``mini`` profile narrows the network
(``width``) and the patch grid via config; the classes and code path are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sep_bench.data.transforms import maybe_hflip
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.srm import srm_kernel
from sep_bench.protocol import ProtocolError
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["PatchCraftConfig", "PatchCraft", "texture_diversity", "smash_reconstruct", "official_state_dict", "SPEC"]


class PatchCraftConfig(BaseModel):
    """``detectors.patchcraft.model`` (defaults: the official test code, ``patchcraft_api.py`` / ``RPTC.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patch_size: int = Field(32, ge=2, description="side of the smashed patches (official 256 / 2**3)")
    grid: int = Field(8, ge=1, description="patches per side of each reconstructed image (official 2**3)")
    n_candidates: int | None = Field(None, ge=1, description="random crops scored per image; null: 3 * grid**2 "
                                     "(official 192); at least grid**2")
    width: int = Field(32, ge=1, description="channels of every learnable conv (official 32)")
    hardtanh: float = Field(5.0, gt=0.0, description="clip of the shared feature extractor (official 5)")

    def candidates(self) -> int:
        n = 3 * self.grid**2 if self.n_candidates is None else self.n_candidates
        if n < self.grid**2:
            raise ProtocolError(f"detectors.patchcraft.model.n_candidates: {n} < grid**2 = {self.grid**2}")
        return n


def texture_diversity(patches: np.ndarray) -> np.ndarray:
    """Texture diversity of each patch: the sum of |differences| between neighbouring pixels in four directions.

    Args:
        patches: (N, P, P, C) or (P, P, C) array (uint8 or integer; floats are summed in float64).

    Returns:
        (N,) int64 (float64 for float input) scores; a scalar array for a single patch.
    """
    x = patches.astype(np.float64 if np.issubdtype(patches.dtype, np.floating) else np.int64)
    single = x.ndim == 3
    if single:
        x = x[None]
    axes = (1, 2, 3)
    s = np.abs(x[:, :-1, :] - x[:, 1:, :]).sum(axis=axes)  # vertical neighbours
    s = s + np.abs(x[:, :, :-1] - x[:, :, 1:]).sum(axis=axes)  # horizontal
    s = s + np.abs(x[:, :-1, :-1] - x[:, 1:, 1:]).sum(axis=axes)  # diagonal
    s = s + np.abs(x[:, :-1, 1:] - x[:, 1:, :-1]).sum(axis=axes)  # anti-diagonal
    return s[0] if single else s


def _tile(patches: np.ndarray, grid: int) -> np.ndarray:
    """(grid*grid, P, P, C) -> (grid*P, grid*P, C), row by row from the top left."""
    _, p, _, c = patches.shape
    return patches.reshape(grid, grid, p, p, c).transpose(0, 2, 1, 3, 4).reshape(grid * p, grid * p, c)


def smash_reconstruct(img: np.ndarray, rng: np.random.Generator, *, patch_size: int = 32, grid: int = 8,
                      n_candidates: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """Smash & Reconstruction: the (poor, rich) texture images, each (grid*patch_size, grid*patch_size, C).

    Crops of `n_candidates` random positions (top-left corners uniform in ``[0, H - P]`` x ``[0, W - P]``) are
    sorted by `texture_diversity` (stable). The ``grid**2`` poorest crops make the poor image (poorest at the top
    left). The ``grid**2`` richest crops make the rich image (richest at the top left). An image whose short side
    is under `patch_size` is first resized to ``patch_size`` x ``patch_size``.
    """
    if min(img.shape[:2]) < patch_size:
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((patch_size, patch_size), Image.BILINEAR))
    h, w = img.shape[:2]
    ys = rng.integers(0, h - patch_size + 1, n_candidates)
    xs = rng.integers(0, w - patch_size + 1, n_candidates)
    offs = np.arange(patch_size)
    crops = img[(ys[:, None] + offs)[:, :, None], (xs[:, None] + offs)[:, None, :]]  # (N, P, P, C)
    order = np.argsort(texture_diversity(crops), kind="stable")
    k = grid * grid
    return _tile(crops[order[:k]], grid), _tile(crops[order[::-1][:k]], grid)


def _conv_bn(c_in: int, c_out: int, act: nn.Module) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.BatchNorm2d(c_out), act]


def _group(width: int, n_convs: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(n_convs):
        layers += _conv_bn(width, width, nn.ReLU())
    if pool:
        layers.append(nn.AvgPool2d(kernel_size=3, padding=1, stride=2))
    return nn.Sequential(*layers)


class HPF(nn.Module):
    """The 30 fixed SRM high-pass filters as a 1-channel conv (official ``HPF``; key ``hpf.weight``, frozen)."""

    def __init__(self) -> None:
        super().__init__()
        self.hpf = nn.Conv2d(1, 30, kernel_size=5, padding=2, bias=False)
        self.hpf.weight = nn.Parameter(srm_kernel(1, "srm30"), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hpf(x)


class PatchCraft(Detector):
    """Rich/poor texture contrast on the SRM residuals, light CNN from scratch (official ``Net``)."""

    def __init__(self, width: int = 32, hardtanh: float = 5.0) -> None:
        super().__init__()
        self.group1 = HPF()
        self.group1_b = nn.Sequential(*_conv_bn(90, width, nn.Hardtanh(min_val=-hardtanh, max_val=hardtanh)))
        self.group2 = _group(width, 4, pool=True)
        self.group3 = _group(width, 2, pool=True)
        self.group4 = _group(width, 2, pool=True)
        self.group5 = _group(width, 2, pool=False)
        self.fc2 = nn.Linear(width, 1)
        self.advpool = nn.AdaptiveAvgPool2d((1, 1))
        self.apply(_init_weights)

    def texture_features(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, width, H, W): the 30 filters on each channel (90 maps), then ``group1_b``."""
        b, c, h, w = img.shape
        return self.group1_b(self.group1(img.reshape(b * c, 1, h, w)).reshape(b, c * 30, h, w))

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = views["patches"]
        res = self.texture_features(x[:, 0]) - self.texture_features(x[:, 1])  # poor - rich
        x = self.group5(self.group4(self.group3(self.group2(res))))
        return torch.flatten(self.advpool(x), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(features)


def _init_weights(module: nn.Module) -> None:
    """The official ``initWeights``: Kaiming-normal (fan_in) trainable convs, N(0, 0.01) linear, zero bias."""
    if type(module) is nn.Conv2d and module.weight.requires_grad:
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    if type(module) is nn.Linear:
        nn.init.normal_(module.weight, mean=0.0, std=0.01)
        nn.init.constant_(module.bias, 0.0)


def _build(cfg: PatchCraftConfig, weights: WeightsSource) -> PatchCraft:
    if weights.pretrained:
        raise ProtocolError(
            "PatchCraft has no pretrained backbone: it is trained from scratch (pretrained: false); "
            "load the authors' released RPTC weights with --official / load_official instead"
        )
    cfg.candidates()  # validates n_candidates against the grid
    model = PatchCraft(width=cfg.width, hardtanh=cfg.hardtanh)
    model.weights = weights
    return model


def official_state_dict(sd: Mapping) -> dict[str, torch.Tensor]:
    """Unwrap an official RPTC checkpoint: ``{"netC": {"module.group1.hpf.weight": ...}}`` -> model keys."""
    if "netC" in sd and isinstance(sd["netC"], Mapping):
        sd = sd["netC"]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_official(model: Detector, path: Path) -> None:
    """Load the authors' RPTC.pth (strict); its single logit is already the fake logit."""
    model.load_state_dict(official_state_dict(load_state_dict(path)), strict=True)


def _views(cfg: PatchCraftConfig, train: bool, hflip: bool):
    n_candidates = cfg.candidates()

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if train and hflip:
            img = maybe_hflip(img, rng)
        poor, rich = smash_reconstruct(img, rng, patch_size=cfg.patch_size, grid=cfg.grid, n_candidates=n_candidates)
        pair = np.stack([poor, rich]).transpose(0, 3, 1, 2)  # (2, 3, S, S)
        return {"patches": torch.from_numpy(np.ascontiguousarray(pair)).float().div_(255.0)}

    return view


SPEC = DetectorSpec(
    name="patchcraft",
    summary="PatchCraft/RPTC: smash & reconstruct rich/poor texture patches, SRM-30 contrast, light CNN from scratch",
    paper="Zhong et al., PatchCraft: Exploring Texture Patch for Efficient AI-generated Image Detection, arXiv 2311.12397 (2023)",
    repo="https://github.com/Ekko-zn/AIGCDetectBenchmark",
    config=PatchCraftConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    provenance="official-inference",
)
