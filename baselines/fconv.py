"""F-ConV (NeurIPS 2025, arXiv 2511.01293) and its training-free base ConV: consistency of self-supervised
(DINOv2) features under an on-manifold transformation; F-ConV adds a RealNVP/GLOW flow on those features.

Independent re-implementation of junz-debug/ConV (README: MIT; no code copied; tmlr-group/ConV is a fork). Files
read: ``model.py`` (``flow_model``, ``nf_head``), ``freia_funcs.py`` (``permute_layer``, ``glow_coupling_layer``,
``F_fully_connected``, ``ReversibleGraphNet``), ``config.py`` (flow sizes), ``utils.py``
(``get_loss_outlier_progan``), ``srcs/F_ConV.py`` (training loop, ``validate_react`` score), ``srcs/ConV.py`` (ConV
score), ``srcs/extract_features.py``, ``augmentations_fconv.py``, ``augmentation.py``, ``transforms.py``,
``my_transforms.py`` (views). Provenance ``official``: the authors' model, loss and views ported; no trained flow
weights are published.

Model: frozen DINOv2 ViT-L/14 (``torch.hub facebookresearch/dinov2 dinov2_vitl14``; here timm's
``vit_large_patch14_dinov2`` built at 224 px, the same weights under timm's names) -> 1024-d CLS token after the
final norm (not L2-normalised). Position embedding: DINOv2 (``dinov2/models/vision_transformer.py``
``interpolate_pos_encoding``) resamples the released 37 x 37 grid on every forward pass, bicubic with
``antialias=False`` and ``scale_factor = (16 + 0.1) / 37``; timm's loader would resample it once to size 16 with
antialiasing, another function (CLS features 2.2e-2 apart, max |feature| 3.3, for the official ViT-L/14 with
random weights; ``results/benchmarks/official_parity.json``). So pretrained weights are read at the native size
and the embedding replaced by DINOv2's interpolation for the fixed input size (`dinov2_pos_embed`, the tensor the
official forward computes each time): the CLS features then agree exactly (0.0) in that comparison.

Flow ``nf``: 2 blocks of [fixed permutation (``np.random.seed(k)``, not saved) ->
GLOW affine coupling (split 512/512; subnets ``s1``/``s2`` = MLP in -> 4096 -> 4096 -> 4096 -> 2 x out with ReLU,
dropout 0, plus an unused ``bn`` BatchNorm1d whose tensors are in the checkpoint); soft clamp
``3 * 0.636 * atan(s / 3)``]; output clamped to +-1e6; log-det = sum of the clamped scales. State-dict keys are the
official ``nf.module_list.{2,4}.s{1,2}.{fc1,fc2,fc2b,fc3,bn}.*`` (``flow.`` in this module), so a flow saved by
``srcs/F_ConV.py`` (``torch.save(flow.state_dict())``) loads strictly.

Two views per image (F-ConV): ``image`` = x and ``trans`` = T(x) = hflip -> ColorJitter(b 0.12, c 0.12, s 0.06,
h 0.03; random order) -> GaussianBlur(k 9, sigma U[0.7, 1]) (``GaussianBlur(p=0)`` keeps with 1 - p = 1: always) ->
ImageNet normalisation. Training x: images smaller than 224 centre-cropped (padded) first, then blur (p 0.3, sigma
U[0, 3]) and JPEG (p 0.3, quality 30 or 100) (``data_augment``), then CenterCrop 224; test x: CenterCrop 224.
Loss (``get_loss_outlier_progan``, margin 2000 = ``--margin`` default of ``srcs/F_ConV.py``): shape
= mean over the two views of mean_batch(real: (|z|^2/2 - logdet); fake: (-|z|^2/2 - logdet) * [|z|^2/2 < margin])
/ D; consistency = sum(real: 1 - cos(z1, z2); fake: 0.1 * cos * [cos > 0.1]) / B; total = shape + 5 x consistency.
Score (``validate_react``): sigmoid((mean z1^2 + mean z2^2) / T) - 0.5 * cos(z1, z2), T = 1 (``--temperature``
None). ConV (``method: conv``): 5 views, each a RandomCrop 224 and its T (ColorJitter b 0.18, c 0.24, s 0.12,
h 0.03), of the image (non-square images centre-cropped and bicubic-resized to 256, square ones untouched);
score = 1 - mean cosine of the L2-normalised features.

Recipe (``scripts/run_fconv.py``, ``srcs/F_ConV.py``): features extracted once per training image (one random
augmentation each), AdamW lr 1e-5, betas (0.9, 0.999), wd 1e-2, cosine over 1 epoch, batch 512 (``run_fconv.py``;
argparse default 256), fp16 autocast without a grad scaler.

Gaps and deviations (the shipped loss is unresolved): the training script calls ``get_loss_outlier_progan2``,
which is NOT in the published ``utils.py`` (nor ``get_loss_outlier_genimage``); this module implements the published
``get_loss_outlier_progan`` (its margin default 500 is overridden by the script's 2000, as the call passes
``margin=opt.margin``). The official evaluation thresholds the score with an oracle on the test labels
(``find_best_threshold``) and keeps the checkpoint that is best on the test set; here the score becomes one fake
logit ``(score - threshold) * exp(log_scale)`` whose two scalars are fitted by BCE on the *detached* score of the
training batches (they never change the flow's gradient), and model selection follows the harness (validation
split of the training generators). No GenImage recipe is published (the flow was trained on ProGAN); the genimage
override uses the ProGAN recipe. The official code blurs/JPEG-compresses with OpenCV or PIL at random; here PIL.
ColorJitter/blur run on PIL images as torchvision does, with parameters drawn from the sample's numpy RNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sep_bench.data.perturb import jpeg
from sep_bench.layers.augment import gaussian_blur
from sep_bench.weights import PretrainedUnavailableError, hub_failure
from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop, random_crop, to_tensor
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["FConVConfig", "FConV", "dinov2_pos_embed", "FlowModel", "GlowCoupling", "FullyConnected", "Permute",
           "fconv_loss",
           "fconv_score", "conv_score", "SPEC"]


# ---- flow blocks (FrEIA / DifferNet style, official names) ------------------------------------------------


class FullyConnected(nn.Module):
    """``F_fully_connected``: in -> internal -> internal -> internal -> out (ReLU); ``bn`` exists but is unused."""

    def __init__(self, size_in: int, size: int, internal_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.d1, self.d2, self.d2b = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        self.fc1 = nn.Linear(size_in, internal_size)
        self.fc2 = nn.Linear(internal_size, internal_size)
        self.fc2b = nn.Linear(internal_size, internal_size)
        self.fc3 = nn.Linear(internal_size, size)
        self.nl1, self.nl2, self.nl2b = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.bn = nn.BatchNorm1d(size_in)  # official: defined, never called (its tensors are in the checkpoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.nl1(self.d1(self.fc1(x)))
        out = self.nl2(self.d2(self.fc2(out)))
        out = self.nl2b(self.d2b(self.fc2b(out)))
        return self.fc3(out)


class Permute(nn.Module):
    """A fixed permutation from ``np.random.seed(seed); np.random.permutation(dim)`` (a buffer, not saved)."""

    def __init__(self, dim: int, seed: int) -> None:
        super().__init__()
        perm = np.random.RandomState(seed).permutation(dim)  # = the legacy global RNG after np.random.seed(seed)
        self.register_buffer("perm", torch.as_tensor(perm, dtype=torch.long), persistent=False)
        self.register_buffer("perm_inv", torch.as_tensor(np.argsort(perm), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, self.perm_inv if rev else self.perm], x.new_zeros(x.shape[0])


class GlowCoupling(nn.Module):
    """``glow_coupling_layer``: two affine couplings with the soft clamp ``c * 0.636 * atan(s / c)``."""

    def __init__(self, dim: int, internal_size: int, clamp: float = 3.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.split_len1, self.split_len2 = dim // 2, dim - dim // 2
        self.clamp = clamp
        self.s1 = FullyConnected(self.split_len1, self.split_len2 * 2, internal_size, dropout)
        self.s2 = FullyConnected(self.split_len2, self.split_len1 * 2, internal_size, dropout)

    def log_e(self, s: torch.Tensor) -> torch.Tensor:
        return self.clamp * 0.636 * torch.atan(s / self.clamp)

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = x[:, :self.split_len1], x[:, self.split_len1:]
        if not rev:
            r2 = self.s2(x2)
            s2, t2 = r2[:, :self.split_len1], r2[:, self.split_len1:]
            y1 = torch.exp(self.log_e(s2)) * x1 + t2
            r1 = self.s1(y1)
            s1, t1 = r1[:, :self.split_len2], r1[:, self.split_len2:]
            y2 = torch.exp(self.log_e(s1)) * x2 + t1
        else:
            r1 = self.s1(x1)
            s1, t1 = r1[:, :self.split_len2], r1[:, self.split_len2:]
            y2 = (x2 - t1) / torch.exp(self.log_e(s1))
            r2 = self.s2(y2)
            s2, t2 = r2[:, :self.split_len1], r2[:, self.split_len1:]
            y1 = (x1 - t2) / torch.exp(self.log_e(s2))
        jac = self.log_e(s1).sum(1) + self.log_e(s2).sum(1)
        return torch.clamp(torch.cat((y1, y2), 1), -1e6, 1e6), jac


class _ReversibleSequence(nn.Module):
    """The official graph ``input, permute_0, fc_0, permute_1, fc_1, output`` as one ``module_list`` (indices kept)."""

    def __init__(self, dim: int, n_blocks: int, internal_size: int, clamp: float, dropout: float) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Identity()]  # the input node (no parameters)
        for k in range(n_blocks):
            mods += [Permute(dim, k), GlowCoupling(dim, internal_size, clamp, dropout)]
        mods.append(nn.Identity())  # the output node
        self.module_list = nn.ModuleList(mods)

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        jac = x.new_zeros(x.shape[0])
        inner = list(self.module_list)[1:-1]
        for m in (reversed(inner) if rev else inner):
            x, j = m(x, rev=rev)
            jac = jac + j
        return x, jac


class FlowModel(nn.Module):
    """``flow_model``: ``nf`` maps a feature to z (same size); returns (z, log-det)."""

    def __init__(self, dim: int = 1024, n_blocks: int = 2, internal_size: int = 4096, clamp: float = 3.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.nf = _ReversibleSequence(dim, n_blocks, internal_size, clamp, dropout)

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self.nf(x, rev=rev)


# ---- loss and scores --------------------------------------------------------------------------------------


def fconv_loss(z1: torch.Tensor, z2: torch.Tensor, jac1: torch.Tensor, jac2: torch.Tensor, labels: torch.Tensor,
               margin: float = 2000.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The published ``get_loss_outlier_progan``: (shape, consistency, shape + 5 * consistency); label 1 = fake."""
    pos, neg = (labels == 0).float(), (labels == 1).float()

    def shape(z: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
        half = 0.5 * torch.sum(z ** 2, dim=1)
        return torch.mean((half - jac) * pos + (-half - jac) * neg * (half < margin).float()) / z.shape[1]

    shape_loss = (shape(z1, jac1) + shape(z2, jac2)) / 2
    cos = nn.functional.cosine_similarity(z1, z2)
    consistent = (((1 - cos) * pos).sum() + (cos * 0.1 * (cos > 0.1).float() * neg).sum()) / len(labels)
    return shape_loss, consistent, shape_loss + consistent * 5


def fconv_score(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``validate_react``: sigmoid((mean z1^2 + mean z2^2) / T) - 0.5 cos(z1, z2); higher = more likely fake."""
    dist = torch.mean(z1 ** 2, dim=1) + torch.mean(z2 ** 2, dim=1)
    return torch.sigmoid(dist / temperature) - 0.5 * nn.functional.cosine_similarity(z1, z2, dim=-1)


def conv_score(f_src: torch.Tensor, f_trans: torch.Tensor) -> torch.Tensor:
    """ConV: 1 - mean over views of cos(normalised features); inputs (B, V, D)."""
    a = f_src / f_src.norm(dim=-1, keepdim=True)
    b = f_trans / f_trans.norm(dim=-1, keepdim=True)
    return 1 - nn.functional.cosine_similarity(a, b, dim=-1).mean(dim=1)


# ---- detector ---------------------------------------------------------------------------------------------


class FConVConfig(BaseModel):
    """``detectors.fconv.model`` (defaults: the official F-ConV settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["fconv", "conv"] = Field("fconv", description="fconv: flow on the features; conv: training-free")
    arch: str = Field("vit_large_patch14_dinov2", description="timm DINOv2 ViT (official: ViT-L/14)")
    arch_kwargs: dict[str, Any] = Field({}, description="timm overrides (the mini profile shrinks width/depth)")
    crop_size: int = Field(224, ge=14, description="view size (a multiple of the patch size)")
    n_coupling_blocks: int = Field(2, ge=1)
    fc_internal: int = Field(4096, ge=1)
    clamp_alpha: float = Field(3.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    margin: float = Field(2000.0, gt=0, description="fake shape-loss margin on |z|^2 / 2 (srcs/F_ConV.py --margin)")
    temperature: float = Field(1.0, gt=0, description="score temperature (official --temperature None = 1)")
    jitter: tuple[float, float, float, float] = Field((0.12, 0.12, 0.06, 0.03), description="F-ConV ColorJitter")
    blur_sigma: tuple[float, float] = Field((0.7, 1.0), description="T's GaussianBlur(k 9) sigma range (always applied)")
    train_blur_prob: float = Field(0.3, ge=0.0, le=1.0)
    train_blur_sigma: tuple[float, float] = Field((0.0, 3.0))
    train_jpeg_prob: float = Field(0.3, ge=0.0, le=1.0)
    train_jpeg_qualities: tuple[int, ...] = Field((30, 100), description="JPEG quality drawn from this set")
    conv_crops: int = Field(5, ge=1, description="ConV: random crops per image")
    conv_jitter: tuple[float, float, float, float] = Field((0.18, 0.24, 0.12, 0.03))
    conv_resize: int = Field(256, ge=14, description="ConV: non-square images centre-cropped and resized to this")


#: DINOv2's ``interpolate_offset`` (``dinov2/models/vision_transformer.py``): the scale factor of the position
#: embedding's resampling is (grid + 0.1) / native grid, not grid / native grid.
DINOV2_INTERPOLATE_OFFSET = 0.1


def dinov2_pos_embed(pos_embed: torch.Tensor, grid: int, offset: float = DINOV2_INTERPOLATE_OFFSET) -> torch.Tensor:
    """DINOv2's ``interpolate_pos_encoding`` for a square `grid` x `grid` patch input: the (1, 1 + M*M, D) embedding
    of the native M x M grid (DINOv2 ViT/14: M = 37), patch part resampled bicubically with ``antialias=False`` and
    ``scale_factor = (grid + offset) / M``, computed in float32; the class token's entry is kept. The official
    model does this on every forward pass; for a fixed input size it is the same tensor every time."""
    import torch.nn.functional as F

    n = pos_embed.shape[1] - 1
    m = int(round(n ** 0.5))
    if m * m != n:
        raise ValueError(f"position embedding of {n} patch tokens is not a square grid")
    if m == grid:
        return pos_embed
    dim = pos_embed.shape[-1]
    pe = pos_embed.float()
    scale = float(grid + offset) / m
    patch = F.interpolate(pe[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2), mode="bicubic", antialias=False,
                          scale_factor=(scale, scale))
    if patch.shape[-2:] != (grid, grid):
        raise ValueError(f"DINOv2 interpolation of a {m}x{m} grid gave {tuple(patch.shape[-2:])}, not {grid}x{grid}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([pe[:, :1], patch], dim=1).to(pos_embed.dtype)


def _pretrained_dinov2(cfg: FConVConfig, weights: WeightsSource) -> nn.Module:
    """The timm DINOv2 at its native input size (518 px for /14: the 37 x 37 grid of the released weights)."""
    import timm

    kwargs = {"num_classes": 0, **cfg.arch_kwargs}
    if weights.kind == "file":
        return timm.create_model(cfg.arch, pretrained=True, pretrained_cfg_overlay={"file": weights.ref}, **kwargs)
    ref = weights.ref
    name = ref[len("timm:"):] if ref.startswith("timm:") else ref
    if name.split(".")[0] != cfg.arch:
        raise ValueError(f"pretrained {ref!r} does not match arch {cfg.arch!r}")
    from sep_bench.hub import timm_file_overlay

    overlay = timm_file_overlay(f"timm:{name}")  # fails at once when offline and not cached
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as err:
        raise hub_failure(ref, err) from err


def _create_dinov2(cfg: FConVConfig, weights: WeightsSource) -> nn.Module:
    """timm DINOv2 built at ``crop_size``. Pretrained weights are read at the native size and their position
    embedding resampled as DINOv2 does (`dinov2_pos_embed`), not as timm's loader does (antialiased, to the size)."""
    import timm

    model = timm.create_model(cfg.arch, pretrained=False, img_size=cfg.crop_size, num_classes=0, **cfg.arch_kwargs)
    if weights.kind == "none":
        return model
    sd = _pretrained_dinov2(cfg, weights).state_dict()
    grid = model.patch_embed.grid_size
    if grid[0] != grid[1]:
        raise ValueError(f"crop_size {cfg.crop_size} gives a non-square patch grid {grid}")
    sd["pos_embed"] = dinov2_pos_embed(sd["pos_embed"], int(grid[0]))
    model.load_state_dict(sd, strict=True)
    return model


class FConV(Detector):
    """Frozen DINOv2 (``backbone``) + the flow (``flow``) + a fitted threshold turning the score into a logit."""

    frozen_features = True

    def __init__(self, backbone: nn.Module, cfg: FConVConfig) -> None:
        super().__init__()
        self.method, self.margin, self.temperature = cfg.method, cfg.margin, cfg.temperature
        self.backbone = backbone.requires_grad_(False).eval()
        dim = int(backbone.num_features)
        self.flow = FlowModel(dim, cfg.n_coupling_blocks, cfg.fc_internal, cfg.clamp_alpha, cfg.dropout) \
            if cfg.method == "fconv" else None
        self.threshold = nn.Parameter(torch.zeros(()))
        self.log_scale = nn.Parameter(torch.zeros(()))

    def train(self, mode: bool = True) -> "FConV":
        super().train(mode)
        self.backbone.eval()
        return self

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, 2, D) for F-ConV, (B, 2V, D) for ConV: source features, then transformed."""
        src, trans = views["image"], views["trans"]
        if src.dim() == 4:
            src, trans = src.unsqueeze(1), trans.unsqueeze(1)
        b, v = src.shape[:2]
        with torch.no_grad():
            f = self.backbone(torch.cat([src.flatten(0, 1), trans.flatten(0, 1)]))
        f = f.float()
        return torch.cat([f[: b * v].view(b, v, -1), f[b * v:].view(b, v, -1)], dim=1)

    def _flow(self, features: torch.Tensor):
        n = features.shape[1] // 2
        z1, j1 = self.flow(features[:, 0].float())
        z2, j2 = self.flow(features[:, n].float())
        return z1, z2, j1, j2

    def score(self, features: torch.Tensor) -> torch.Tensor:
        if self.method == "conv":
            n = features.shape[1] // 2
            return conv_score(features[:, :n], features[:, n:])
        z1, z2, _, _ = self._flow(features)
        return fconv_score(z1, z2, self.temperature)

    def _logit(self, score: torch.Tensor) -> torch.Tensor:
        return (score - self.threshold) * self.log_scale.exp()

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self._logit(self.score(features))

    def train_forward(self, views: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = views["features"] if "features" in views else self.forward_features(views)
        if self.method == "conv":
            return {"logits": self.forward_head(feats)}
        z1, z2, j1, j2 = self._flow(feats)
        score = fconv_score(z1, z2, self.temperature)
        return {"logits": self._logit(score.detach()), "z1": z1, "z2": z2, "jac1": j1, "jac2": j2}

    def train_loss(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        calib = self.loss(outputs["logits"], labels)  # fits threshold/log_scale only (the score is detached)
        if self.method == "conv":
            return calib
        _, _, total = fconv_loss(outputs["z1"], outputs["z2"], outputs["jac1"], outputs["jac2"], labels, self.margin)
        return total + calib

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]


def _build(cfg: FConVConfig, weights: WeightsSource) -> FConV:
    model = FConV(_create_dinov2(cfg, weights), cfg)
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """A flow saved by ``srcs/F_ConV.py`` (``flow_model.state_dict()``: ``nf.module_list.{2,4}...``), strict."""
    if model.flow is None:
        raise ValueError("ConV (method: conv) has no trained weights to load")
    sd = load_state_dict(path)
    try:
        model.flow.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise PretrainedUnavailableError(f"{Path(path).name}: not an F-ConV flow of this size ({err})") from None


# ---- views ------------------------------------------------------------------------------------------------


def _jitter(img: Image.Image, params: tuple[float, float, float, float], rng: np.random.Generator) -> Image.Image:
    """torchvision ColorJitter on a PIL image: factors U[1-x, 1+x] (hue U[-h, h]) applied in a random order."""
    import torchvision.transforms.functional as TF

    b, c, s, h = params
    fb, fc, fs = (float(rng.uniform(max(0.0, 1 - x), 1 + x)) for x in (b, c, s))
    fh = float(rng.uniform(-h, h))
    ops = [lambda im: TF.adjust_brightness(im, fb), lambda im: TF.adjust_contrast(im, fc),
           lambda im: TF.adjust_saturation(im, fs), lambda im: TF.adjust_hue(im, fh)]
    for i in rng.permutation(4):
        img = ops[int(i)](img)
    return img


def _transform(img: np.ndarray, jitter, blur_sigma, rng: np.random.Generator) -> np.ndarray:
    """T(x): hflip -> ColorJitter -> GaussianBlur(k 9, sigma U[blur_sigma]) (always)."""
    import torchvision.transforms.functional as TF

    pil = _jitter(Image.fromarray(np.ascontiguousarray(img[:, ::-1])), jitter, rng)
    sigma = float(rng.uniform(*blur_sigma))
    return np.array(TF.gaussian_blur(pil, kernel_size=[9, 9], sigma=[sigma, sigma]))


def _train_augment(img: np.ndarray, cfg: FConVConfig, rng: np.random.Generator) -> np.ndarray:
    """``data_augment``: blur (p, sigma U) then JPEG (p, quality from a set), four draws always."""
    do_blur, sigma = rng.random() < cfg.train_blur_prob, float(rng.uniform(*cfg.train_blur_sigma))
    do_jpeg, q = rng.random() < cfg.train_jpeg_prob, int(rng.choice(cfg.train_jpeg_qualities))
    if do_blur:
        img = gaussian_blur(img, sigma)
    if do_jpeg:
        img = jpeg(img, q)
    return img


def _views(cfg: FConVConfig, train: bool, hflip: bool):
    size = cfg.crop_size

    def norm(a: np.ndarray) -> torch.Tensor:
        return to_tensor(a, IMAGENET_MEAN, IMAGENET_STD)

    def fconv_view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if train:
            if img.shape[0] < size or img.shape[1] < size:
                img = center_crop(img, size)
            img = _train_augment(img, cfg, rng)
        x = center_crop(img, size)
        return {"image": norm(x), "trans": norm(_transform(x, cfg.jitter, cfg.blur_sigma, rng))}

    def conv_view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        h, w = img.shape[:2]
        if h != w:
            s = min(h, w)
            sq = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
            img = np.array(Image.fromarray(sq).resize((cfg.conv_resize, cfg.conv_resize), Image.BICUBIC))
        if img.shape[0] < size or img.shape[1] < size:
            img = center_crop(img, size)
        crops = [random_crop(img, size, rng) for _ in range(cfg.conv_crops)]
        return {"image": torch.stack([norm(c) for c in crops]),
                "trans": torch.stack([norm(_transform(c, cfg.conv_jitter, cfg.blur_sigma, rng)) for c in crops])}

    return fconv_view if cfg.method == "fconv" else conv_view


SPEC = DetectorSpec(
    name="fconv",
    summary="F-ConV: RealNVP flow on frozen DINOv2 features, consistency under a transformation (ConV: training-free)",
    paper="F-ConV (NeurIPS 2025, arXiv 2511.01293); ConV, same authors",
    repo="https://github.com/junz-debug/ConV",
    config=FConVConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:vit_large_patch14_dinov2.lvd142m",
    official_needs_backbone=True,  # a saved flow covers the flow only
    provenance="official",
    extra={"reported_name": "F-ConV"},
)
