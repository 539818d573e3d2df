"""AIDE: "A Sanity Check for AI-generated Image Detection" (Yan et al., ICLR 2025).

Independent re-implementation of shilinyan99/AIDE (MIT licence; no code copied). Files read: ``models/AIDE.py``,
``models/srm_filter_kernel.py``, ``data/dct.py``, ``data/datasets.py``, ``main_finetune.py``,
``engine_finetune.py``, ``optim_factory.py``, ``utils.py``, ``scripts/train.sh``, ``scripts/eval.sh``,
``requirements.txt``, README. Provenance: official (model, data pipeline and training recipe all in the repo).

Model (``AIDE_Model``; module names kept so the released ``ckpt['model']`` loads strictly; the file is what
``utils.save_model`` writes: ``{'model', 'optimizer', 'epoch', 'scaler', 'args': argparse.Namespace}``):
- ``hpf.hpf``: a fixed 5x5 conv with the 30 SRM high-pass filters of ``all_normalized_hpf_list``, each repeated
  over RGB (`sep_bench.layers.srm` bank ``srm30``), no bias, no clipping;
- ``model_min`` / ``model_max``: two ResNet-50s whose ``conv1`` takes the 30 SRM channels (7x7, stride 2,
  Kaiming fan-out init, ``zero_init_residual=True``); ``forward`` returns the pooled 2048-d feature (their
  1000-way ``fc`` exists in the state dict but is never used). ``model_min`` sees the two lowest-scoring DCT
  patches, ``model_max`` the two highest, one call per patch (so BatchNorm sees each patch batch on its own);
  the four features are averaged;
- ``openclip_convnext_xxl``: the frozen image trunk of OpenCLIP ``convnext_xxlarge``
  (``laion2b_s34b_b82k_augreg_soup``, confirmed by the authors in AIDE issue #8) with ``head.global_pool`` and
  ``head.flatten`` replaced by Identity: its (B, 3072, 8, 8) map after the head's LayerNorm2d is average-pooled;
  the input is the ImageNet-normalised 256x256 image, re-normalised to CLIP statistics inside the model;
- ``convnext_proj``: ``Linear(3072, 256)``; ``fc``: ``Mlp(2048 + 256, 1024, 2)`` (fc1, GELU, fc2) on
  ``cat([semantic, texture])``.

Two official facts that differ from the paper, kept as defaults and switchable:
- ``resnet_imagenet: false``: the official constructor copies the ImageNet ResNet-50 weights (``--resnet_path``)
  into ``self.model_min.state_dict()`` dicts and never loads them back, so both ResNets start from random init.
  ``resnet_imagenet: true`` loads ``resnet_weights`` (default ``timm:resnet50.tv_in1k`` = torchvision
  ``resnet50-19c8e357``) into both, skipping shape mismatches as the official loop does (``conv1``: 3 vs 30
  input channels), which is what the paper describes.
- ``train_convnext_proj: false``: ``convnext_proj`` is applied inside the official ``torch.no_grad()`` block, so
  it never receives a gradient and stays at its random init (AdamW skips parameters without a gradient). Here it
  is frozen explicitly (same numbers); ``true`` trains it.
- the frozen ConvNeXt trunk follows ``model.train()`` in the official loop, so its stochastic depth
  (open_clip's ``timm_drop_path: 0.1``) is active during training: ``convnext_drop_path: 0.1``.

Views (``data/dct.py`` ``DCT_base_Rec_Module``, ``data/datasets.py``): the decoded image as float in [0, 1];
training: Gaussian blur (3x3 kernel, sigma U[0.1, 3.0], p 0.1) then JPEG (quality U{30..100}, p 0.1) (kornia
``RandomGaussianBlur`` / ``RandomJPEG`` in the official code); then every 32x32 window at stride 16 of the
full-resolution image is scored: orthonormal 2-D DCT per channel, ``log(|c| + 1)``, averaged over each of 6
anti-diagonal bands ``start <= i + j <= end`` (``start, end = 64 g / 6, 64 (g + 1) / 6``), weighted 2^g and summed
over bands and channels (`dct_band_scores`). The two lowest (min, min1) and two highest (max, max1) windows are
bilinearly resized to 256x256 and ImageNet-normalised; the whole image is resized to 256x256 (bilinear, no
antialias: torchvision 0.12 ``Resize`` on a tensor) and ImageNet-normalised. No flip, no crop. Evaluation: the
same without blur/JPEG.

Training recipe (``scripts/train.sh``, ``main_finetune.py``): AdamW, lr = blr 1e-4 x effective batch 256 / 256 =
1e-4 (32 per GPU x 8 GPUs), weight decay 0 (the ``--weight_decay`` default; not set by the script), betas
(0.9, 0.999), per-step half-cycle cosine from the lr to ``min_lr`` 1e-6 without warm-up, 20 epochs, cross-entropy
with label smoothing 0.1 (timm ``LabelSmoothingCrossEntropy``), no AMP. The evaluation script of the released
checkpoints uses ``--blr 5e-4 --epochs 5`` (unused at test time). The official checkpoint kept is the best
accuracy on ``--eval_data_path`` (the test data); here model selection uses the validation slice.

Label convention: the official data sets ``0_real = 0``, ``1_fake = 1``; the head gives two logits and the
fake logit returned here is ``z_fake - z_real`` (``sigmoid`` of it is the official softmax fake probability).
Label smoothing on two classes with smoothing s equals binary cross-entropy on that logit with targets
``y (1 - s) + s / 2`` (`AIDE.loss`).

Documented deviations:
- blur/JPEG: the blur is scipy's 3x3 Gaussian (``radius=1``, reflect-101 border, as kornia's ``reflect``);
  the JPEG round trip is PIL at an integer quality instead of kornia's differentiable JPEG approximation;
- the official picks the four windows out of the DCT -> all-pass band filter -> inverse DCT round trip of
  every window; that round trip is the identity up to float rounding, so the windows are taken directly;
- ties between window scores (flat regions) are broken by a stable sort (window order), the official
  ``torch.sort`` is not stable;
- images whose short side is below the 32 px window are resized to 256x256 first (the official loader skips
  them and draws another image);
- the cosine schedule ends at 0 instead of ``min_lr`` 1e-6 (the engine's ``cosine``), a difference of 1% of the
  base lr at the very end.

Small configurations (tests, the CPU mini profile) keep every class and code path: ``resnet``/``resnet_layers``
choose a smaller torchvision ResNet (e.g. BasicBlock [1, 1, 1, 1]), ``convnext_depths``/``convnext_dims`` shrink
the same timm ConvNeXt, ``patch_size``/``image_size`` the input sizes; the ConvNeXt is random and frozen there.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from sep_bench.layers.augment import jpeg_roundtrip
from sep_bench.layers.backbones import ResNetName, resnet_pooled_features
from sep_bench.data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, maybe_hflip
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.convnext import convnext_feature_map, create_convnext
from sep_bench.layers.dct import dct_matrix
from sep_bench.layers.srm import srm_kernel
from sep_bench.weights import WeightsSource, load_state_dict, timm_state_dict

__all__ = ["AIDEConfig", "AIDE", "HPF", "band_masks", "dct_band_scores", "select_windows", "SPEC"]

#: torchvision block type and stage depths of each ResNet name.
_RESNETS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


class AIDEConfig(BaseModel):
    """``detectors.aide.model`` (defaults: the official model and data pipeline)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_size: int = Field(32, ge=2, description="DCT scoring window")
    stride: int = Field(16, ge=1, description="stride of the scoring windows")
    grade_n: int = Field(6, ge=1, description="number of DCT frequency bands in the score")
    patch_size: int = Field(256, ge=8, description="each selected window is resized to patch_size x patch_size")
    image_size: int = Field(256, ge=16, description="the whole image is resized to this square for the ConvNeXt")
    small_resize: int = Field(256, ge=8, description="images with a side below window_size are resized to this square")
    resnet: ResNetName = Field("resnet50", description="torchvision ResNet of model_min / model_max")
    resnet_layers: tuple[int, int, int, int] | None = Field(None, description="blocks per stage; null: the arch's")
    resnet_imagenet: bool = Field(False, description="load ImageNet weights into both ResNets (the paper; the official code does not)")
    resnet_weights: str = Field("timm:resnet50.tv_in1k", description="ImageNet ResNet weights used when resnet_imagenet")
    convnext: str = Field("convnext_xxlarge", description="timm / open_clip ConvNeXt architecture of the semantic branch")
    convnext_depths: tuple[int, int, int, int] | None = Field(None, description="override of the stage depths (small variants)")
    convnext_dims: tuple[int, int, int, int] | None = Field(None, description="override of the stage widths (small variants)")
    convnext_drop_path: float = Field(0.1, ge=0.0, lt=1.0, description="stochastic depth of the frozen trunk in training mode")
    proj_dim: int = Field(256, ge=1, description="output of convnext_proj")
    hidden_dim: int = Field(1024, ge=1, description="hidden width of the fc Mlp")
    train_convnext_proj: bool = Field(False, description="official: false (convnext_proj runs under no_grad)")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    blur_prob: float = Field(0.1, ge=0.0, le=1.0)
    blur_sigma: tuple[float, float] = (0.1, 3.0)
    jpeg_prob: float = Field(0.1, ge=0.0, le=1.0)
    jpeg_quality: tuple[int, int] = (30, 100)

    @model_validator(mode="after")
    def _check(self) -> "AIDEConfig":
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must satisfy 1 <= low <= high <= 100, got {self.jpeg_quality}")
        if self.small_resize < self.window_size:
            raise ValueError("small_resize must be at least window_size")
        return self


# ---------------------------------------------------------------------------------------------------------------
# DCT window scoring (data/dct.py)


def band_masks(size: int, grade_n: int) -> torch.Tensor:
    """(grade_n, size, size) float64: band g is 1 where ``64 g / 6 <= i + j <= 64 (g + 1) / 6`` (for size 32,
    grade_n 6), divided by its number of ones (the official ``Filter(..., norm=True)``)."""
    i = torch.arange(size, dtype=torch.float64)
    s = i[:, None] + i[None, :]
    step = size * 2.0 / grade_n
    masks = torch.stack([((s >= step * g) & (s <= step * (g + 1))).double() for g in range(grade_n)])
    return masks / masks.sum(dim=(1, 2), keepdim=True)


def dct_band_scores(x: torch.Tensor, window: int = 32, stride: int = 16, grade_n: int = 6) -> torch.Tensor:
    """AIDE's frequency score of every window of a (C, H, W) float image, in row-major window order.

    score = sum_g 2^g * sum_c mean_{band g} log(|DCT(window_c)| + 1), with the orthonormal 2-D DCT-II of each
    channel of each window. Returns (L,) with L = ((H - window) // stride + 1) * ((W - window) // stride + 1).
    """
    c = x.shape[0]
    win = x.unfold(1, window, stride).unfold(2, window, stride)  # (C, nY, nX, w, w)
    win = win.permute(1, 2, 0, 3, 4).reshape(-1, c, window, window)
    d = dct_matrix(window, x.dtype)
    logmag = torch.log(torch.abs(d @ win @ d.T) + 1)
    return logmag.sum(1).reshape(len(win), -1) @ _band_weights(window, grade_n).to(x.dtype)


@functools.lru_cache(maxsize=8)
def _band_weights(window: int, grade_n: int) -> torch.Tensor:
    """Flat (window^2,) weights sum_g 2^g band_g of the score."""
    weights = band_masks(window, grade_n) * (2.0 ** torch.arange(grade_n, dtype=torch.float64))[:, None, None]
    return weights.sum(0).reshape(-1)


def select_windows(scores: torch.Tensor) -> list[int]:
    """Indices of the windows (min, max, min1, max1): lowest, highest, second lowest, second highest score
    (stable order for ties; a single window is used four times)."""
    order = torch.argsort(scores, stable=True)
    second = 1 if len(order) > 1 else 0
    return [int(order[0]), int(order[-1]), int(order[second]), int(order[-1 - second])]


# ---------------------------------------------------------------------------------------------------------------
# Model


class HPF(nn.Module):
    """The 30 fixed SRM filters as ``hpf`` = ``Conv2d(3, 30, 5, padding=2, bias=False)`` (official name)."""

    def __init__(self) -> None:
        super().__init__()
        self.hpf = nn.Conv2d(3, 30, kernel_size=5, padding=2, bias=False)
        self.hpf.weight = nn.Parameter(srm_kernel(3, "srm30"), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hpf(x)


class _Mlp(nn.Module):
    """``fc1 -> GELU -> fc2`` (timm/ViT ``Mlp`` naming, as the official ``Mlp``)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def build_srm_resnet(arch: ResNetName, layers: tuple[int, int, int, int] | None = None) -> nn.Module:
    """A torchvision ResNet (``zero_init_residual=True``, 1000-way ``fc``) whose ``conv1`` takes 30 channels."""
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    kind, default_layers = _RESNETS[arch]
    net = ResNet(Bottleneck if kind == "bottleneck" else BasicBlock, list(layers or default_layers), zero_init_residual=True)
    net.conv1 = nn.Conv2d(30, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.fc.requires_grad_(False)  # in the state dict, never used by the forward pass
    return net


class AIDE(Detector):
    """DCT-selected patches -> SRM -> two ResNets, plus a frozen ConvNeXt semantic feature -> Mlp -> 2 logits."""

    def __init__(self, model_min: nn.Module, model_max: nn.Module, convnext: nn.Module, *, proj_dim: int = 256,
                 hidden_dim: int = 1024, train_convnext_proj: bool = False, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.hpf = HPF()
        self.model_min = model_min
        self.model_max = model_max
        texture_dim = model_min.fc.in_features
        self.fc = _Mlp(texture_dim + proj_dim, hidden_dim, 2)
        convnext.head.global_pool = nn.Identity()
        convnext.head.flatten = nn.Identity()
        self.openclip_convnext_xxl = convnext.requires_grad_(False)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.convnext_proj = nn.Sequential(nn.Linear(convnext.num_features, proj_dim))
        self.train_convnext_proj = train_convnext_proj
        self.convnext_proj.requires_grad_(train_convnext_proj)
        self.label_smoothing = label_smoothing
        shift = torch.tensor(IMAGENET_STD) / torch.tensor(CLIP_STD)
        offset = (torch.tensor(IMAGENET_MEAN) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
        self.register_buffer("_clip_scale", shift.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_clip_shift", offset.view(1, 3, 1, 1), persistent=False)

    def semantic(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) ImageNet-normalised -> (B, C) pooled ConvNeXt feature (no gradient: the trunk is frozen)."""
        with torch.no_grad():
            tokens = image * self._clip_scale.to(image) + self._clip_shift.to(image)
            feats = convnext_feature_map(self.openclip_convnext_xxl, tokens)
            return self.avgpool(feats).flatten(1)

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        patches = views["patches"]  # (B, 4, 3, P, P): min, max, min1, max1
        sem = self.semantic(views["image"])
        if self.train_convnext_proj:
            x0 = self.convnext_proj(sem)
        else:
            with torch.no_grad():
                x0 = self.convnext_proj(sem)
        nets = (self.model_min, self.model_max, self.model_min, self.model_max)
        x1 = sum(resnet_pooled_features(net, self.hpf(patches[:, i])) for i, net in enumerate(nets)) / 4
        return torch.cat([x0, x1], dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.fc(features)
        return logits[:, 1] - logits[:, 0]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Label-smoothed two-class cross-entropy (timm ``LabelSmoothingCrossEntropy``) on the fake logit."""
        target = labels.float() * (1.0 - self.label_smoothing) + self.label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits.float(), target)


def _build(cfg: AIDEConfig, weights: WeightsSource) -> AIDE:
    model_min = build_srm_resnet(cfg.resnet, cfg.resnet_layers)
    model_max = build_srm_resnet(cfg.resnet, cfg.resnet_layers)
    if cfg.resnet_imagenet:
        if cfg.resnet_layers is not None:
            raise ValueError("resnet_imagenet needs the architecture's own resnet_layers (set resnet_layers: null)")
        sd = timm_state_dict(cfg.resnet_weights, cfg.resnet)
        own = model_min.state_dict()
        sd = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}  # conv1 (3 vs 30 channels) skipped
        model_min.load_state_dict(sd, strict=False)
        model_max.load_state_dict(sd, strict=False)
    convnext = create_convnext(cfg.convnext, weights, num_classes=0, drop_path_rate=cfg.convnext_drop_path,
                               depths=cfg.convnext_depths, dims=cfg.convnext_dims)
    model = AIDE(model_min, model_max, convnext, proj_dim=cfg.proj_dim, hidden_dim=cfg.hidden_dim,
                 train_convnext_proj=cfg.train_convnext_proj, label_smoothing=cfg.label_smoothing)
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load an official AIDE checkpoint (``ckpt['model']``, official key names, strict); its two logits are
    (real, fake), which `AIDE.forward_head` turns into the fake logit, so no key needs converting.

    ``utils.save_model`` also pickles the optimizer and scaler states, the epoch and the training ``args`` (an
    ``argparse.Namespace``); the weights-only unpickler is told to accept that one class, nothing else."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        sd = load_state_dict(path)
    model.load_state_dict(sd, strict=True)


# ---------------------------------------------------------------------------------------------------------------
# Views


def _blur3x3(x: np.ndarray, sigma: float) -> np.ndarray:
    """3x3 Gaussian blur of a float (H, W, 3) image per channel, reflect-101 border (kornia ``reflect``)."""
    k = np.exp(-np.array([1.0, 0.0, 1.0]) / (2.0 * sigma * sigma))
    k = (k / k.sum()).astype(np.float32)
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    p = k[0] * p[:-2] + k[1] * p[1:-1] + k[2] * p[2:]
    return k[0] * p[:, :-2] + k[1] * p[:, 1:-1] + k[2] * p[:, 2:]


def _perturb(x: np.ndarray, rng: np.random.Generator, cfg: AIDEConfig) -> np.ndarray:
    """Training perturbation: blur (p blur_prob) then JPEG (p jpeg_prob); always four draws."""
    do_blur = rng.random() < cfg.blur_prob
    sigma = float(rng.uniform(*cfg.blur_sigma))
    do_jpeg = rng.random() < cfg.jpeg_prob
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    if do_blur:
        x = _blur3x3(x, sigma)
    if do_jpeg:
        x = jpeg_roundtrip(np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8), quality).astype(np.float32) / 255.0
    return x


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision 0.12 ``Resize([size, size])`` of a float tensor: bilinear, no antialias."""
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]


def _views(cfg: AIDEConfig, train: bool, hflip: bool):
    from sep_bench.layers.eps import ensure_min_size

    w, s = cfg.window_size, cfg.stride

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        img = ensure_min_size(img, w, cfg.small_resize)
        if train and hflip:  # not in the official recipe (params: hflip false)
            img = maybe_hflip(img, rng)
        x = np.ascontiguousarray(img, dtype=np.float32) / 255.0
        if train:
            x = _perturb(x, rng, cfg)
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).contiguous()
        n_x = (t.shape[2] - w) // s + 1
        picks = select_windows(dct_band_scores(t, w, s, cfg.grade_n))
        patches = [t[:, (i // n_x) * s : (i // n_x) * s + w, (i % n_x) * s : (i % n_x) * s + w] for i in picks]
        return {
            "patches": torch.stack([_normalise(_resize(p, cfg.patch_size)) for p in patches]),
            "image": _normalise(_resize(t, cfg.image_size)),
        }

    return view


SPEC = DetectorSpec(
    name="aide",
    summary="AIDE: DCT-selected patches through SRM + two ResNet-50s, frozen OpenCLIP ConvNeXt-XXL semantics",
    paper="Yan et al., A Sanity Check for AI-generated Image Detection, ICLR 2025",
    repo="https://github.com/shilinyan99/AIDE",
    config=AIDEConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="open_clip:convnext_xxlarge/laion2b_s34b_b82k_augreg_soup",
    provenance="official",
    # a profile with pretrained: false: no ImageNet weights for the two ResNets either
    random_weights=lambda cfg: cfg.model_copy(update={"resnet_imagenet": False}),
)
