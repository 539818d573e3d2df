"""FreDect: "Leveraging Frequency Analysis for Deep Fake Image Recognition" (Frank et al., ICML 2020).

Independent re-implementation (no code copied). Official code: RUB-SysSec/GANDCTAnalysis (MIT, TensorFlow 2),
files read: ``src/image_np.py`` (``dct2``: scipy.fftpack DCT-II, norm="ortho", along axis 0 then 1),
``src/math.py`` (``log_scale``: log(|x| + 1e-12); ``welford``: per-coefficient mean and population variance),
``prepare_dataset.py`` (statistics over the *training* images, then (x - mean) / sqrt(var)),
``compute_mean_var.py``. The model and views follow the PyTorch port in Ekko-zn/AIGCDetectBenchmark (no
licence), files read: ``data/process.py`` (``dct2_wrapper``, ``processing_DCT``, ``get_processing_model``),
``data/datasets.py`` (``process_img``), ``util.py`` (``get_model``: torchvision ``resnet50()`` random init,
``fc = Linear(2048, 1)``), ``networks/trainer.py`` (BCE-with-logits, Adam betas (0.9, 0.999)), ``options.py``
(lr 1e-4, batch 64, loadSize 256, CropSize 224), README (training command). Provenance: official (the port).

Pipeline (port): PIL image -> Resize(256) (short side, bilinear) -> CenterCrop(224) -> uint8 RGB -> per-channel
2-D DCT-II (ortho) of the pixel values 0..255 -> log(|c| + 1e-12) -> (log - mean) / sqrt(var), mean and var per
(channel, row, column) -> ResNet-50 (torchvision names: conv1, bn1, layer1..4, fc; ``fc = Linear(2048, 1)``,
fake = 1). The port applies the same resize + centre crop at training and test time: no random crop, no flip
and no blur/JPEG (``processing_DCT`` never calls ``data_augment``, so the README's ``--blur_prob 0.1 --jpg_prob
0.1`` have no effect for FreDect). The DCT (`sep_bench.layers.dct.dct2`) and normalisation run in float64 (the
port: numpy float64), then the network input is float32.

Statistics are model state: buffers ``dct_mean`` and ``dct_var`` (3, S, S) float64, ``stats_count`` (images
accumulated) and ``stats_frozen``. They are never bundled constants. Two ways to set them:
1. From the training data, before training (default, ``stats_file: null``): the first ``stats_images`` training
   images the model sees (default 0 = the whole first epoch: the pass ends at the first ``train()``/``eval()``
   call after it started, i.e. the end-of-epoch validation or the next epoch's start, or when the count is
   reached) are a statistics pass: the training forward only
   accumulates the exact per-coefficient mean and population variance (Chan's parallel form of the official
   Welford recurrence) of the log-DCT and returns a constant zero logit that carries no gradient to the
   network, so no weight or BatchNorm statistic changes (Adam's step on a zero gradient is zero with the
   recipe's weight decay 0; the lr schedule still counts the steps). A run resumed from a checkpoint written
   inside the statistics epoch freezes the statistics accumulated so far (``checkpoint_every_steps`` only). After it the buffers are frozen and every later forward normalises with
   them; they are saved in every checkpoint. With DDP each rank accumulates its own shard and DDP broadcasts
   rank 0's buffers (statistics from rank 0's shard). `fit_dct_statistics` does the same pass over any image
   iterable (tests, or an engine hook: see the report). A ``eval()`` forward on a model with no statistics
   yet normalises with mean 0, var 1.
2. From a file (``stats_file``): a mean and variance computed elsewhere, e.g. the port's bundled
   ``weights/auxiliary/dct_mean`` / ``dct_var`` (torch-saved float64 (3, 224, 224) tensors, computed on
   ProGAN training data), given as ``stats_file: [mean_path, var_path]``, or one safetensors/.pth with keys
   ``dct_mean``, ``dct_var``. Loaded at build time and frozen; the statistics pass is skipped.

Documented deviations and guesses:
- The statistics pass happens inside the first training epoch (the engine has no pre-training hook), so with
  ``stats_images: 0`` the first epoch trains nothing; budget one epoch more than the port (the number of
  weight-updating epochs is then the port's). The training images of that pass go through the training view
  (identical to the evaluation view in the port's recipe).
- Where the port's statistics came from (which images, how many) is not documented; here: the training split.
- Resizing is PIL bilinear on uint8 (as torchvision on PIL images); JPEG is always PIL (``sep_bench.layers.augment``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal, Mapping

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from sep_bench.layers.augment import CropViewConfig, blur_jpeg
from sep_bench.layers.backbones import build_resnet, resnet_pooled_features
from sep_bench.data.transforms import center_crop, maybe_hflip, random_crop, resize_short
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.dct import dct2
from sep_bench.weights import WeightsFileError, WeightsSource, load_state_dict

__all__ = ["FreDectConfig", "FreDect", "log_dct", "fit_dct_statistics", "load_dct_statistics", "SPEC"]

_STATS = ("dct_mean", "dct_var", "stats_count", "stats_frozen")


class FreDectConfig(CropViewConfig):
    """``detectors.fredect.model`` (defaults: the AIGCDetectBenchmark port)."""

    backbone: Literal["resnet50", "resnet18", "resnet34", "resnet101", "resnet152"] = Field(
        "resnet50", description="torchvision ResNet; resnet18 for the CPU mini profile")
    crop_size: int = Field(224, ge=8, description="DCT size (statistics are (3, crop, crop))")
    train_resize: int | None = Field(256, ge=8, description="short side resized before the crop (train)")
    eval_resize: int | None = Field(256, ge=8, description="short side resized before the crop (eval)")
    train_crop: Literal["center", "random"] = Field("center", description="port: centre crop also in training")
    blur_prob: float = Field(0.0, ge=0.0, le=1.0, description="port: no augmentation for FreDect")
    jpeg_prob: float = Field(0.0, ge=0.0, le=1.0, description="port: no augmentation for FreDect")
    epsilon: float = Field(1e-12, gt=0.0, description="log(|c| + epsilon)")
    stats_images: int = Field(0, ge=0, description="training images in the statistics pass; 0: the first epoch")
    stats_file: str | tuple[str, str] | None = Field(
        None, description="load the statistics instead: one file with dct_mean/dct_var, or [mean, var] files")

    @model_validator(mode="after")
    def _sizes(self) -> "FreDectConfig":
        for r in (self.train_resize, self.eval_resize):
            if r is not None and r < self.crop_size:
                raise ValueError(f"resize {r} is below crop_size {self.crop_size}: the DCT needs a full crop")
        return self


def log_dct(x: torch.Tensor, epsilon: float = 1e-12) -> torch.Tensor:
    """Per-channel orthonormal 2-D DCT-II in float64, log(|c| + epsilon): (B, C, H, W) -> same shape, float64."""
    with torch.autocast(x.device.type, enabled=False):
        return torch.log(dct2(x.double()).abs() + epsilon)


class FreDect(Detector):
    """A torchvision ResNet (its children, torchvision keys) on the normalised log-DCT; statistics as buffers."""

    def __init__(self, resnet: nn.Module, size: int, epsilon: float = 1e-12, stats_images: int = 0) -> None:
        super().__init__()
        for name, child in resnet.named_children():  # conv1, bn1, relu, maxpool, layer1..4, avgpool, fc
            self.add_module(name, child)
        self.epsilon = epsilon
        self.stats_images = stats_images
        self.register_buffer("dct_mean", torch.zeros(3, size, size, dtype=torch.float64))
        self.register_buffer("dct_var", torch.ones(3, size, size, dtype=torch.float64))
        self.register_buffer("stats_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("stats_frozen", torch.zeros((), dtype=torch.bool))

    # ---- statistics ------------------------------------------------------------------------------------------
    @property
    def fitting(self) -> bool:
        """True while the statistics pass is running (training mode, statistics not frozen yet)."""
        return self.training and not bool(self.stats_frozen)

    def set_statistics(self, mean: torch.Tensor, var: torch.Tensor, count: float = 0.0) -> None:
        if mean.shape != self.dct_mean.shape or var.shape != self.dct_var.shape:
            raise ValueError(f"DCT statistics of shape {tuple(mean.shape)}/{tuple(var.shape)}, expected "
                             f"{tuple(self.dct_mean.shape)}")
        self.dct_mean.copy_(mean)
        self.dct_var.copy_(var)
        self.stats_count.fill_(count)
        self.stats_frozen.fill_(True)

    @torch.no_grad()
    def accumulate(self, x: torch.Tensor) -> None:
        """Merge the log-DCT of a batch into the running mean / population variance (Chan et al.)."""
        d = log_dct(x, self.epsilon)
        n_b = d.shape[0]
        mean_b = d.mean(0)
        m2_b = ((d - mean_b) ** 2).sum(0)
        n_a = float(self.stats_count)
        n = n_a + n_b
        delta = mean_b - self.dct_mean
        m2 = self.dct_var * n_a + m2_b + delta**2 * (n_a * n_b / n)
        self.dct_mean.add_(delta * (n_b / n))
        self.dct_var.copy_(m2 / n)
        self.stats_count.fill_(n)
        if self.stats_images and n >= self.stats_images:
            self.stats_frozen.fill_(True)

    def train(self, mode: bool = True) -> "FreDect":
        # any mode switch after statistics were accumulated ends the pass: the end-of-epoch validation (eval()) or,
        # without a validation slice, the next epoch's model.train()
        if float(self.stats_count) > 0:
            self.stats_frozen.fill_(True)
        return super().train(mode)

    # ---- forward ---------------------------------------------------------------------------------------------
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) pixel values 0..255 -> normalised log-DCT (float32)."""
        d = log_dct(x, self.epsilon)
        return ((d - self.dct_mean) / self.dct_var.sqrt()).float()

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return resnet_pooled_features(self, self.normalise(views["image"]))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def train_forward(self, views: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.fitting:
            x = views["image"]
            self.accumulate(x)
            # constant zero logits tied to the graph with a zero factor: loss.backward() works, every gradient is 0
            anchor = sum(p.reshape(-1)[0] for p in self.trainable_parameters())
            return {"logits": x.new_zeros(x.shape[0]) + 0.0 * anchor}
        return super().train_forward(views)


def fit_dct_statistics(model: FreDect, images: Iterable[torch.Tensor]) -> FreDect:
    """Compute the statistics from `images` (batches (B, 3, S, S) of pixel values 0..255) and freeze them.

    Example:
        >>> fit_dct_statistics(model, (batch["image"] for batch in train_batches))
    """
    model.dct_mean.zero_()
    model.dct_var.fill_(1.0)
    model.stats_count.zero_()
    model.stats_frozen.fill_(False)
    for x in images:
        model.accumulate(x.to(model.dct_mean.device))
    if float(model.stats_count) < 2:
        raise ValueError("DCT statistics need at least 2 images")
    model.stats_frozen.fill_(True)
    return model


def _read_tensor(path: str, key: str | None) -> torch.Tensor:
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))[key]
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsFileError(f"{p.name}: not a readable tensor file ({err})") from None
    if isinstance(obj, dict):
        obj = obj[key]
    return torch.as_tensor(np.asarray(obj) if not isinstance(obj, torch.Tensor) else obj)


def load_dct_statistics(ref: str | tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var) as float64 (3, S, S) from one file with ``dct_mean``/``dct_var`` or a (mean, var) file pair."""
    if isinstance(ref, str):
        mean, var = _read_tensor(ref, "dct_mean"), _read_tensor(ref, "dct_var")
    else:
        mean, var = _read_tensor(ref[0], "dct_mean"), _read_tensor(ref[1], "dct_var")
    return mean.double(), var.double()


def _build(cfg: FreDectConfig, weights: WeightsSource) -> FreDect:
    model = FreDect(build_resnet(cfg.backbone, weights), cfg.crop_size, cfg.epsilon, cfg.stats_images)
    if cfg.stats_file is not None:
        model.set_statistics(*load_dct_statistics(cfg.stats_file))
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load a FreDect checkpoint strictly: the port's ResNet-50 state dict (torchvision keys, one fake logit; its
    statistics must then come from ``stats_file``), or a state dict that also holds the statistics buffers."""
    sd = load_state_dict(path)
    if not any(k in sd for k in _STATS):
        if not bool(model.stats_frozen):
            raise WeightsFileError(f"{Path(path).name} holds no DCT statistics: set model.stats_file to the "
                                   "statistics the checkpoint was trained with (the port: dct_mean, dct_var)")
        sd = {**sd, **{k: getattr(model, k) for k in _STATS}}
    model.load_state_dict(sd, strict=True)


def _views(cfg: FreDectConfig, train: bool, hflip: bool):
    """[resize short side] -> [blur/JPEG] -> centre (or random) crop -> [flip]; pixel values 0..255 (float32)."""

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        size = cfg.train_resize if train else cfg.eval_resize
        if size:
            img = resize_short(img, size)
        if train:
            if cfg.blur_prob or cfg.jpeg_prob:
                img = blur_jpeg(img, rng, blur_prob=cfg.blur_prob, blur_sigma=cfg.blur_sigma,
                                jpeg_prob=cfg.jpeg_prob, jpeg_quality=cfg.jpeg_quality)
            img = random_crop(img, cfg.crop_size, rng) if cfg.train_crop == "random" else center_crop(img, cfg.crop_size)
            if hflip:
                img = maybe_hflip(img, rng)
        else:
            img = center_crop(img, cfg.crop_size)
        return {"image": torch.from_numpy(np.require(img, requirements=["C", "W"])).permute(2, 0, 1).float()}

    return view


SPEC = DetectorSpec(
    name="fredect",
    summary="FreDect: log-scaled per-channel 2-D DCT, normalised by training-set statistics, ResNet-50",
    paper="Frank et al., Leveraging Frequency Analysis for Deep Fake Image Recognition, ICML 2020",
    repo="https://github.com/RUB-SysSec/GANDCTAnalysis",
    config=FreDectConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:resnet50.tv_in1k",
    provenance="official",
)
