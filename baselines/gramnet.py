"""GramNet: "Global Texture Enhancement for Fake Face Detection in the Wild" (Liu, Qi, Torr, CVPR 2020).

Independent re-implementation (no code copied) of the official repository
liuzhengzhe/Global_Texture_Enhancement_for_Fake_Face_Detection_in_the-Wild (no licence file), files read:
``stylegan-ffhq/resnet18_gram.py`` (the model; identical in ``stylegan-celeba/`` and ``pggan-celeba/``),
``stylegan-ffhq/main.py`` (training), ``stylegan-ffhq/test*.py`` and ``README.md`` (labels). Also read: the
AIGCDetectBenchmark port (Ekko-zn/AIGCDetectBenchmark, no licence: ``networks/resnet_gram.py``, ``util.py``
``get_model``, ``data/process.py`` ``processing``, ``options.py``, ``networks/trainer.py``, README), which is
the ``aigcbench`` profile's recipe. Provenance: official (model and training code).

Architecture (module and parameter names are the official ones, so official state dicts load strictly):
a ResNet-18 (conv1, bn1, relu, maxpool, layer1..layer4, avgpool; the official class has no ``fc``) gives a
512-d pooled feature. Six Gram texture branches read the input ``x``, the stem activation after ReLU, the
max-pool output and the outputs of layer1, layer2 and layer3: each is conv3x3 (-> 32 ch, no bias) + BN + ReLU
(``conv_interi_0``, ``conv_inter0_0`` .. ``conv_inter4_0``), then the Gram matrix G = F F^T / (C H W) of the
(C=32, HW) features as a 1-channel 32x32 image (`gram_matrix`), then two stride-2 conv3x3 + BN + ReLU blocks
(1 -> 16 -> 32 ch: ``gi_fc1/gi_fc2``, ``g0_fc1/g0_fc2``, ``g_fc1r/g_fc2r``, ``g2_fc1/g2_fc2``, ``g3_fc1/g3_fc2``,
``g4_fc1/g4_fc2``), global average pooling, and one shared learnable scalar (``scale.scale``, init 1)
multiplying every branch. The 512 + 6 x 32 = 704 features go to ``fcnewr`` = Linear(704, 512), ReLU,
Dropout(0.5), Linear(512, K). layer4's output feeds only the pooled ResNet feature.

Heads and labels: the official face models end in Linear(512, 2) + LogSoftmax, class 0 = fake, 1 = real
(README: "0 for fake and 1 for real"; ``test*.py`` count fakes as argmax 0). `_load_official` converts such a
head to one fake logit: w = W[0] - W[1], b = b[0] - b[1] (the log-softmax difference). The AIGCDetectBenchmark
port ends in Linear(512, 1) trained with BCE, fake = 1 (``0_real``/``1_fake``): loaded as is. The official face
checkpoints (Google Drive) are whole pickled modules (``torch.save(model)``); sep-bench never unpickles code:
convert one once in a trusted environment (``torch.save(torch.load(f, weights_only=False).state_dict(), g)``).

Official face recipe (``stylegan-ffhq/main.py``): ImageNet ResNet-18 (torchvision ``resnet18-5c106cde``, timm
``resnet18.tv_in1k``) loaded non-strictly (the Gram branches and head random, PyTorch/kaiming init), NLL loss on
the log-softmax, Adam (lr 3e-4, weight decay 1e-4) batch 14, 5 epochs, model kept by the best score on test
generators after every step. Input: cv2 BGR pixel values 0..255, no normalisation (``input_format: bgr255``);
training images are resized to a random square size U{64..256} and back up to 512x512 (cv2 bilinear;
``train_view: official``); testing feeds the full image at its native size. The port (``aigcbench``): random
init, ImageNet-normalised RGB (``input_format: imagenet``), Adam lr 1e-4 batch 64, resize 256 -> blur/JPEG
(p 0.1 each, sigma U[0,3], quality U{30..100}) -> RandomCrop 224 -> flip (``train_view: crop``).

Documented deviations and guesses:
- ``main.py`` creates Adam with lr 3e-4 and then sets every group's lr to 1e-5 before the loop; the catalog
  recipe (3e-4) is what params.yaml records for the face setting, the 1e-5 override is noted there.
- ``main.py`` starts from the authors' own ``stylegan-ffhq.pth`` (a trained GramNet) on top of ImageNet; that
  file is not public beyond the face checkpoints, so training starts from ImageNet ResNet-18 only.
- Official model selection on test generators is replaced by the harness's validation slice.
- The down/up-sampling uses PIL bilinear instead of cv2 bilinear; JPEG is always PIL (``sep_bench.layers.augment``).
- The Gram matrix is computed in float32 even under bf16 autocast (the official code runs fp32 only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from sep_bench.layers.augment import CropViewConfig, blur_jpeg
from sep_bench.layers.backbones import build_resnet
from sep_bench.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, center_crop, maybe_hflip, random_crop, resize,
                                      resize_short, to_tensor)
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.weights import WeightsFileError, WeightsSource, load_state_dict

__all__ = ["GramNetConfig", "GramNet", "GramMatrix", "ScaleLayer", "gram_matrix", "SPEC"]

# the stages the texture branches read, in the official order: name of the 3x3 conv block, its input channels,
# and the names of its two Gram-image conv blocks
_BRANCHES: tuple[tuple[str, int, str, str], ...] = (
    ("conv_interi_0", 3, "gi_fc1", "gi_fc2"),     # the input image
    ("conv_inter0_0", 64, "g0_fc1", "g0_fc2"),    # stem after ReLU
    ("conv_inter1_0", 64, "g_fc1r", "g_fc2r"),    # after max-pool
    ("conv_inter2_0", 64, "g2_fc1", "g2_fc2"),    # layer1
    ("conv_inter3_0", 128, "g3_fc1", "g3_fc2"),   # layer2
    ("conv_inter4_0", 256, "g4_fc1", "g4_fc2"),   # layer3
)


class GramNetConfig(CropViewConfig):
    """``detectors.gramnet.model`` (defaults: the official face recipe, ``stylegan-ffhq/main.py``)."""

    input_format: Literal["bgr255", "imagenet"] = Field(
        "bgr255", description="bgr255: BGR pixel values 0..255, no normalisation (official); imagenet: "
        "ImageNet-normalised RGB (AIGCDetectBenchmark port)")
    train_view: Literal["official", "crop"] = Field(
        "official", description="official: random square down-scale to U{down_range} then up to input_size; "
        "crop: resize -> blur/JPEG -> random crop -> flip (port)")
    input_size: int = Field(512, ge=8, description="official view: training size after the down/up-sampling")
    down_range: tuple[int, int] = Field((64, 256), description="official view: random square size, both ends")
    eval_crop_size: int | None = Field(None, ge=8, description="centre crop at evaluation; null: the full image "
                                       "(official)")
    blur_prob: float = Field(0.0, ge=0.0, le=1.0, description="crop view only (port: 0.1)")
    jpeg_prob: float = Field(0.0, ge=0.0, le=1.0, description="crop view only (port: 0.1)")
    num_classes: Literal[1] = 1
    dropout: float = Field(0.5, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _down_range(self) -> "GramNetConfig":
        lo, hi = self.down_range
        if not 1 <= lo <= hi:
            raise ValueError(f"down_range must satisfy 1 <= low <= high, got {self.down_range}")
        return self


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, C, C): F F^T / (C H W) with F the (C, HW) features (official ``GramMatrix``)."""
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w).float()
    return torch.bmm(f, f.transpose(1, 2)).unsqueeze(1).div(c * h * w)


class GramMatrix(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return gram_matrix(x)


class ScaleLayer(nn.Module):
    """One learnable scalar multiplying its input (official ``ScaleLayer``, init 1)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _conv_bn_relu(cin: int, cout: int, stride: int, inplace: bool) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=inplace))


class GramNet(Detector):
    """ResNet-18 + six Gram-matrix texture branches; children carry the official names (see module docstring)."""

    def __init__(self, resnet: nn.Module, num_classes: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"):
            self.add_module(name, getattr(resnet, name))
        self.gram = GramMatrix()
        self.scale = ScaleLayer()
        self.fcnewr = nn.Sequential(nn.Linear(704, 512), nn.ReLU(), nn.Dropout(dropout), nn.Linear(512, num_classes))
        new: list[nn.Module] = []
        for inter, cin, fc1, fc2 in _BRANCHES:
            for name, mod in ((inter, _conv_bn_relu(cin, 32, 1, True)), (fc1, _conv_bn_relu(1, 16, 2, False)),
                              (fc2, _conv_bn_relu(16, 32, 2, False))):
                self.add_module(name, mod)
                new.append(mod)
        for mod in new:  # the official ResNet.__init__ init (kaiming fan_out, BN 1/0), before the ImageNet load
            for m in mod.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def _branch(self, x: torch.Tensor, inter: str, fc1: str, fc2: str) -> torch.Tensor:
        g = self.gram(getattr(self, inter)(x)).to(x.dtype)
        g = getattr(self, fc2)(getattr(self, fc1)(g))
        return self.scale(torch.flatten(self.avgpool(g), 1))

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = views["image"]
        stem = self.relu(self.bn1(self.conv1(x)))
        pooled = self.maxpool(stem)
        l1 = self.layer1(pooled)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        feats = [torch.flatten(self.avgpool(self.layer4(l3)), 1)]
        for src, (inter, _, fc1, fc2) in zip((x, stem, pooled, l1, l2, l3), _BRANCHES):
            feats.append(self._branch(src, inter, fc1, fc2))
        return torch.cat(feats, 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fcnewr(features)


def _build(cfg: GramNetConfig, weights: WeightsSource) -> GramNet:
    """ResNet-18 from `weights` (ImageNet through timm when pretrained; the Gram branches and head always random)."""
    model = GramNet(build_resnet("resnet18", weights), num_classes=cfg.num_classes, dropout=cfg.dropout)
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load an official GramNet state dict (strict). A 2-way face head (class 0 = fake) becomes one fake logit."""
    sd = load_state_dict(path)
    w = sd.get("fcnewr.3.weight")
    if w is not None and w.shape[0] == 2:
        b = sd["fcnewr.3.bias"]
        sd = {**sd, "fcnewr.3.weight": (w[0] - w[1])[None], "fcnewr.3.bias": (b[0] - b[1])[None]}
    elif w is not None and w.shape[0] != 1:
        raise WeightsFileError(f"{Path(path).name}: fcnewr.3 has {w.shape[0]} outputs, expected 1 or 2")
    model.load_state_dict(sd, strict=True)


def _to_input(img: np.ndarray, fmt: str) -> torch.Tensor:
    if fmt == "imagenet":  # decoded arrays are read-only (PIL) and torch warns on those
        return to_tensor(np.require(img, requirements=["C", "W"]), IMAGENET_MEAN, IMAGENET_STD)
    return torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).permute(2, 0, 1).float()  # BGR 0..255 (cv2)


def _views(cfg: GramNetConfig, train: bool, hflip: bool):
    """train: the official down/up-sampling view or the port's crop view; eval: [resize] -> [centre crop]."""

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if train and cfg.train_view == "official":  # random square down-scale, back up to input_size
            s = int(rng.integers(cfg.down_range[0], cfg.down_range[1] + 1))
            img = resize(resize(img, s, s), cfg.input_size, cfg.input_size)
            if hflip:
                img = maybe_hflip(img, rng)
        elif train:  # the CNNDetection view of the port: resize -> blur/JPEG -> random crop -> flip
            if cfg.train_resize:
                img = resize_short(img, cfg.train_resize)
            img = blur_jpeg(img, rng, blur_prob=cfg.blur_prob, blur_sigma=cfg.blur_sigma, jpeg_prob=cfg.jpeg_prob,
                            jpeg_quality=cfg.jpeg_quality)
            img = random_crop(img, cfg.crop_size, rng)
            if hflip:
                img = maybe_hflip(img, rng)
        else:
            if cfg.eval_resize:
                img = resize_short(img, cfg.eval_resize)
            if cfg.eval_crop_size:
                img = center_crop(img, cfg.eval_crop_size)
        return {"image": _to_input(img, cfg.input_format)}

    return view


SPEC = DetectorSpec(
    name="gramnet",
    summary="GramNet: ResNet-18 with Gram-matrix global-texture branches on the input and each stage",
    paper="Liu, Qi, Torr, Global Texture Enhancement for Fake Face Detection in the Wild, CVPR 2020",
    repo="https://github.com/liuzhengzhe/Global_Texture_Enhancement_for_Fake_Face_Detection_in_the-Wild",
    config=GramNetConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:resnet18.tv_in1k",
    provenance="official",
)
