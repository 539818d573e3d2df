"""LGrad: "Learning on Gradients: Generalized Artifacts Representation for GAN-Generated Images Detection"
(Tan et al., CVPR 2023).

Independent re-implementation of chuangchuangtan/LGrad (no licence file in the repository; no code copied).
Files read: ``img2gad_pytorch/gen_imggrad.py`` (image -> gradient image), ``img2gad_pytorch/models/
stylegan_discriminator.py`` (the discriminator, genforce's port of NVlabs StyleGAN), ``img2gad_pytorch/models/
__init__.py``, ``img2gad_pytorch/README.md`` and ``img2gad_pytorch/transform_img2grad.sh`` (the converted weights
file, batch size 1), ``train-detector.sh``, ``CNNDetection/{train.py, networks/trainer.py, data/datasets.py,
options/*.py, eval_test8gan.py}`` (the classifier). Provenance: official.

Pipeline:
1. Gradient extractor (``gen_imggrad.py``): the image resized to 256 x 256 (torchvision ``Resize((256, 256))`` on
   a PIL image: PIL bilinear; both sides, the aspect ratio is not kept), ToTensor, normalised to [-1, 1]; the
   StyleGAN discriminator trained on LSUN bedroom 256 (``karras2019stylegan-bedrooms-256x256_discriminator.pth``,
   the author's conversion of NVIDIA's TF pickle, loaded strictly) scores it; the gradient of the score's sum with
   respect to the input image is min-max normalised per image (over all pixels and channels) to [0, 255] and
   written as a PNG (``cv2.imwrite``: rounded to uint8). The script runs with batch size 1.
2. Classifier (CNNDetection's trainer, ``train-detector.sh``): the gradient PNG -> Resize((256, 256)) (a no-op)
   -> RandomCrop 224 + horizontal flip (train) / the full 256 image (test: ``no_resize``, ``no_crop``) ->
   ImageNet normalisation -> ImageNet ResNet-50 (torchvision ``resnet50-19c8e357``, timm ``resnet50.tv_in1k``)
   with ``fc = Linear(2048, 1)``, ``fc.weight`` ~ N(0, 0.02); BCE-with-logits, the logit is the fake logit
   (``0_real`` / ``1_fake``).

Here both steps run in the model: `LGrad.forward_features` computes the input gradient of the frozen
discriminator (under ``torch.enable_grad`` also at evaluation; the gradient is detached, as the official PNG
is), normalises and rounds it to uint8 levels, crops it at the position the view drew, and feeds the classifier.
The discriminator is `StyleGANDiscriminator`, a port with the official module and buffer names (``lod``,
``input<i>``, ``layer<i>``, ``layer<i>.blur.kernel``), so the converted file loads strictly into
``model.discriminator``; the classifier's keys are torchvision's under ``classifier.``, and `_load_official` loads
the released LGrad classifier (``{'model': sd}`` or a bare ResNet state dict) strictly into it.

Weights: ``pretrained`` is the classifier's ImageNet backbone. ``model.discriminator`` is the path of the
converted discriminator file; ``null`` builds a randomly initialised discriminator (the mini profile, which uses
a small configuration of the same class). A run whose discriminator is random must not be recorded as
pretrained, so `_build` refuses ``pretrained`` backbone weights without a discriminator file: such runs are
recorded ``pretrained: false`` and marked like other runs without their intended weights. A file that is given
but missing raises; nothing falls back to random weights.

Official recipe (``train-detector.sh``, CNNDetection options): Adam lr 5e-4, betas (0.9, 0.999), no weight
decay, batch 16, 100 epochs (``--niter 100``), lr x 0.8 after every 10th epoch (``--delr_freq 10``; the catalog's
"/10" is wrong: ``adjust_learning_rate`` multiplies by 0.8), no blur/JPEG, flip on; the model kept is the last
one. Training data: ProGAN (CNNDetection) 1-, 2- or 4-class.

Documented deviations:
- The minibatch-standard-deviation layer sees one image at a time by default (``grad_group_size: 1``), as the
  official extraction at batch size 1, so the gradients do not depend on batch composition; vectorised over the
  batch (for one image its extra channel is the constant sqrt(1e-8)).
- The random crop position and the flip are drawn by the view from the per-sample Generator and applied in the
  model; the official gradient PNGs are computed once and cropped by torchvision on the global RNG.
- The rounding to uint8 is ``torch.round`` (half to even), as OpenCV's ``cvRound`` in ``imwrite``'s conversion;
  PNG storage is lossless, so nothing else is lost.
- ``Blur`` has a custom autograd Function in the official code (backward = convolution with the flipped kernel);
  here it is a plain ``conv2d``, whose autograd computes the same first-order gradient (the kernel is symmetric).
- The engine's ``step`` schedule changes the lr after epochs 10, 20, ... (counted from 1); the official after
  epochs 11, 21, ... (epoch index 10, 20, ... counted from 0, "if epoch % 10 == 0 and epoch != 0"); during
  training the official code validates on a 224 centre crop, this harness on the evaluation view (full image).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sep_bench.layers.backbones import ResNetName, build_resnet, resnet_pooled_features
from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, resize, to_tensor
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.protocol import ProtocolError
from sep_bench.weights import PretrainedUnavailableError, WeightsSource, load_state_dict

__all__ = ["LGradConfig", "LGrad", "StyleGANDiscriminator", "input_gradient", "normalize_gradient", "SPEC"]

_RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)
_INIT_RES = 4
_AUTO_FUSED_SCALE_MIN_RES = 128
_WSCALE_GAIN = float(np.sqrt(2.0))


# ---- the StyleGAN discriminator (genforce port; official module names) -------------------------------------


class MiniBatchSTDLayer(nn.Module):
    """Appends the mean over features of the per-group standard deviation as ``new_channels`` extra channels."""

    def __init__(self, group_size: int = 4, new_channels: int = 1, epsilon: float = 1e-8) -> None:
        super().__init__()
        self.group_size = group_size
        self.new_channels = new_channels
        self.epsilon = epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ng = min(max(self.group_size, 1), x.shape[0])
        nc = self.new_channels
        y = x.view(ng, -1, nc, x.shape[1] // nc, x.shape[2], x.shape[3])
        y = torch.sqrt((y - y.mean(dim=0, keepdim=True)).pow(2).mean(dim=0) + self.epsilon)
        y = y.mean(dim=[2, 3, 4], keepdim=True).mean(dim=2)
        return torch.cat([x, y.repeat(ng, 1, x.shape[2], x.shape[3])], dim=1)


class DownsamplingLayer(nn.Module):
    def __init__(self, scale_factor: int = 2) -> None:
        super().__init__()
        self.scale_factor = scale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_factor <= 1:
            return x
        return F.avg_pool2d(x, kernel_size=self.scale_factor, stride=self.scale_factor, padding=0)


class BlurLayer(nn.Module):
    """Depthwise [1, 2, 1] x [1, 2, 1] / 16 blur (buffer ``kernel``, shape (C, 1, 3, 3))."""

    def __init__(self, channels: int, kernel: tuple[float, ...] = (1, 2, 1), normalize: bool = True) -> None:
        super().__init__()
        k = np.array(kernel, dtype=np.float32).reshape(1, -1)
        k = k.T.dot(k)
        if normalize:
            k = k / np.sum(k)
        self.register_buffer("kernel", torch.from_numpy(np.tile(k[None, None], [channels, 1, 1, 1])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, bias=None, stride=1, padding=1, groups=x.shape[1])


def _equalised_lr(module: nn.Module, shape: tuple[int, ...], wscale: float, lr_mul: float, use_wscale: bool,
                  add_bias: bool) -> None:
    """StyleGAN's equalised learning rate: ``weight`` ~ N(0, 1) / lr_mul, multiplied by ``wscale`` in the forward
    pass (or the scale baked into the weight without `use_wscale`); ``bias`` zeros, multiplied by ``bscale``."""
    if use_wscale:
        module.weight = nn.Parameter(torch.randn(*shape) / lr_mul)
        module.wscale = float(wscale * lr_mul)
    else:
        module.weight = nn.Parameter(torch.randn(*shape) * wscale / lr_mul)
        module.wscale = lr_mul
    module.bias = nn.Parameter(torch.zeros(shape[0])) if add_bias else None
    module.bscale = lr_mul


def _activation(kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Identity()
    if kind == "lrelu":
        return nn.LeakyReLU(negative_slope=0.2, inplace=True)
    raise NotImplementedError(f"activation {kind!r}")


class ConvBlock(nn.Module):
    """[minibatch std] -> [blur] -> equalised-lr conv (fused stride-2 when asked) -> [avg-pool] -> activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 add_bias: bool = True, downsample: bool = False, fused_scale: bool = False, use_wscale: bool = True,
                 wscale_gain: float = _WSCALE_GAIN, lr_mul: float = 1.0, activation_type: str = "lrelu",
                 minibatch_std_group_size: int = 0, minibatch_std_channels: int = 1) -> None:
        super().__init__()
        if minibatch_std_group_size > 1:
            in_channels = in_channels + minibatch_std_channels
            self.mbstd: nn.Module = MiniBatchSTDLayer(minibatch_std_group_size, minibatch_std_channels)
        else:
            self.mbstd = nn.Identity()
        self.blur: nn.Module = BlurLayer(in_channels) if downsample else nn.Identity()
        self.downsample: nn.Module = DownsamplingLayer() if downsample and not fused_scale else nn.Identity()
        self.use_stride = downsample and fused_scale
        self.stride, self.padding = (2, 1) if self.use_stride else (stride, padding)
        fan_in = kernel_size * kernel_size * in_channels
        wscale = wscale_gain / np.sqrt(fan_in)
        _equalised_lr(self, (out_channels, in_channels, kernel_size, kernel_size), wscale, lr_mul, use_wscale,
                      add_bias)
        self.activate = _activation(activation_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blur(self.mbstd(x))
        weight = self.weight * self.wscale
        bias = self.bias * self.bscale if self.bias is not None else None
        if self.use_stride:
            weight = F.pad(weight, (1, 1, 1, 1, 0, 0, 0, 0), "constant", 0.0)
            weight = (weight[:, :, 1:, 1:] + weight[:, :, :-1, 1:] + weight[:, :, 1:, :-1]
                      + weight[:, :, :-1, :-1]) * 0.25
        x = F.conv2d(x, weight=weight, bias=bias, stride=self.stride, padding=self.padding)
        return self.activate(self.downsample(x))


class DenseBlock(nn.Module):
    """Equalised-lr fully connected layer + activation (the input is flattened)."""

    def __init__(self, in_channels: int, out_channels: int, add_bias: bool = True, use_wscale: bool = True,
                 wscale_gain: float = _WSCALE_GAIN, lr_mul: float = 1.0, activation_type: str = "lrelu") -> None:
        super().__init__()
        _equalised_lr(self, (out_channels, in_channels), wscale_gain / np.sqrt(in_channels), lr_mul, use_wscale,
                      add_bias)
        self.activate = _activation(activation_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        bias = self.bias * self.bscale if self.bias is not None else None
        return self.activate(F.linear(x, weight=self.weight * self.wscale, bias=bias))


class StyleGANDiscriminator(nn.Module):
    """The StyleGAN discriminator (RGB input in [-1, 1], one score per image), genforce's module layout.

    Args:
        resolution: input size (8 ... 1024); blocks run from it down to 4 x 4.
        image_channels, label_size: input channels; conditional label size (0: unconditional).
        fused_scale: stride-2 convolutions instead of conv + average pool (``auto``: at 128 px and above).
        use_wscale: equalised learning rate.
        minibatch_std_group_size, minibatch_std_channels: the minibatch standard deviation layer of the last block.
        fmaps_base, fmaps_max: channels per resolution ``min(fmaps_base // res, fmaps_max)``.

    Example:
        >>> d = StyleGANDiscriminator(64, fmaps_base=256, fmaps_max=32)   # the mini configuration
    """

    def __init__(self, resolution: int, image_channels: int = 3, label_size: int = 0,
                 fused_scale: bool | Literal["auto"] = "auto", use_wscale: bool = True,
                 minibatch_std_group_size: int = 4, minibatch_std_channels: int = 1, fmaps_base: int = 16 << 10,
                 fmaps_max: int = 512) -> None:
        super().__init__()
        if resolution not in _RESOLUTIONS:
            raise ValueError(f"resolution {resolution} is not one of {_RESOLUTIONS}")
        self.init_res_log2 = int(np.log2(_INIT_RES))
        self.resolution = resolution
        self.final_res_log2 = int(np.log2(resolution))
        self.image_channels = image_channels
        self.label_size = label_size
        self.fmaps_base, self.fmaps_max = fmaps_base, fmaps_max
        self.register_buffer("lod", torch.zeros(()))
        for res_log2 in range(self.final_res_log2, self.init_res_log2 - 1, -1):
            res = 2**res_log2
            idx = self.final_res_log2 - res_log2
            self.add_module(f"input{idx}", ConvBlock(image_channels, self.get_nf(res), kernel_size=1, padding=0,
                                                     use_wscale=use_wscale))
            if res != _INIT_RES:
                fused = (res >= _AUTO_FUSED_SCALE_MIN_RES) if fused_scale == "auto" else bool(fused_scale)
                self.add_module(f"layer{2 * idx}", ConvBlock(self.get_nf(res), self.get_nf(res),
                                                             use_wscale=use_wscale))
                self.add_module(f"layer{2 * idx + 1}", ConvBlock(self.get_nf(res), self.get_nf(res // 2),
                                                                 downsample=True, fused_scale=fused,
                                                                 use_wscale=use_wscale))
            else:
                self.add_module(f"layer{2 * idx}", ConvBlock(
                    self.get_nf(res), self.get_nf(res), use_wscale=use_wscale,
                    minibatch_std_group_size=minibatch_std_group_size,
                    minibatch_std_channels=minibatch_std_channels))
                self.add_module(f"layer{2 * idx + 1}", DenseBlock(self.get_nf(res) * res * res,
                                                                  self.get_nf(res // 2), use_wscale=use_wscale))
        self.add_module(f"layer{2 * idx + 2}", DenseBlock(self.get_nf(res // 2), max(label_size, 1),
                                                          use_wscale=use_wscale, wscale_gain=1.0,
                                                          activation_type="linear"))
        self.downsample = DownsamplingLayer()

    def get_nf(self, res: int) -> int:
        return min(self.fmaps_base // res, self.fmaps_max)

    def minibatch_std_layers(self) -> list[MiniBatchSTDLayer]:
        return [m for m in self.modules() if isinstance(m, MiniBatchSTDLayer)]

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        expected = (self.image_channels, self.resolution, self.resolution)
        if image.ndim != 4 or tuple(image.shape[1:]) != expected:
            raise ValueError(f"the discriminator takes (B, {expected[0]}, {expected[1]}, {expected[2]}) images, "
                             f"got {tuple(image.shape)}")
        lod = float(self.lod)
        if lod + self.init_res_log2 > self.final_res_log2:
            raise ValueError(f"lod {lod} exceeds {self.final_res_log2 - self.init_res_log2}")
        x = image
        for res_log2 in range(self.final_res_log2, self.init_res_log2 - 1, -1):
            idx = self.final_res_log2 - res_log2  # also the block's level of detail
            if idx <= lod < idx + 1:
                x = getattr(self, f"input{idx}")(image)
            elif idx - 1 < lod < idx:
                alpha = lod - np.floor(lod)
                x = getattr(self, f"input{idx}")(image) * alpha + x * (1 - alpha)
            if lod < idx + 1:
                x = getattr(self, f"layer{2 * idx + 1}")(getattr(self, f"layer{2 * idx}")(x))
            if lod > idx:
                image = self.downsample(image)
        x = getattr(self, f"layer{2 * idx + 2}")(x)
        if self.label_size:
            if label is None:
                raise ValueError(f"this discriminator needs a label of size {self.label_size}")
            x = torch.sum(x * label, dim=1, keepdim=True)
        return x


def input_gradient(disc: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """d(sum of the discriminator's scores)/d(image), detached; works under ``torch.no_grad`` too."""
    with torch.enable_grad(), torch.autocast(device_type=image.device.type, enabled=False):
        # differentiate with respect to a non-leaf copy: FlopCounterMode's module hooks reject leaf inputs
        x = image.detach().requires_grad_(True).clone()
        (grad,) = torch.autograd.grad(disc(x).sum(), x)
    return grad.detach()


def normalize_gradient(grad: torch.Tensor) -> torch.Tensor:
    """Per image: minus its minimum, divided by its maximum (if not 0), x 255, rounded to uint8 levels (0..255)."""
    flat = grad.flatten(1)
    g = grad - flat.min(1).values.view(-1, 1, 1, 1)
    top = g.flatten(1).max(1).values.view(-1, 1, 1, 1)
    g = torch.where(top != 0, g / torch.where(top != 0, top, torch.ones_like(top)), g)
    return torch.round(g * 255.0).clamp_(0, 255)


# ---- the detector ---------------------------------------------------------------------------------------------


class LGradConfig(BaseModel):
    """``detectors.lgrad.model`` (defaults: the official recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    discriminator: str | None = Field(None, description="path of the converted StyleGAN discriminator state dict "
                                      "(karras2019stylegan-bedrooms-256x256_discriminator.pth); null: random")
    resolution: int = Field(256, description="the discriminator's resolution; images are resized to it")
    fmaps_base: int = Field(16 << 10, ge=1)
    fmaps_max: int = Field(512, ge=1)
    fused_scale: bool | Literal["auto"] = "auto"
    minibatch_std_group_size: int = Field(4, ge=0, description="construction (StyleGAN: 4; sets the weight shapes)")
    grad_group_size: int = Field(1, ge=1, description="minibatch-std group size while taking gradients "
                                 "(1: one image at a time, as the official extraction at batch size 1)")
    backbone: ResNetName = Field("resnet50", description="classifier; resnet18 for the CPU mini profile")
    crop_size: int = Field(224, ge=8, description="random crop of the gradient image in training")
    eval_crop_size: int | None = Field(None, ge=8, description="centre crop at evaluation; null: the full image "
                                       "(official testing)")
    fc_init_std: float = Field(0.02, gt=0.0)


class LGrad(Detector):
    """Frozen ``discriminator`` -> input gradient image -> ``classifier`` (torchvision ResNet keys)."""

    def __init__(self, discriminator: StyleGANDiscriminator, classifier: nn.Module, grad_group_size: int = 1) -> None:
        super().__init__()
        self.discriminator = discriminator.eval().requires_grad_(False)
        for layer in self.discriminator.minibatch_std_layers():
            layer.group_size = grad_group_size
        self.classifier = classifier
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        #: whether the discriminator holds pretrained weights (set by the builder)
        self.discriminator_pretrained = False

    def train(self, mode: bool = True) -> "LGrad":
        super().train(mode)
        self.discriminator.eval()  # official: model.eval() for the gradient extraction
        return self

    def gradient_image(self, image: torch.Tensor) -> torch.Tensor:
        """The official gradient PNG as values 0..255 (float), (B, 3, R, R)."""
        return normalize_gradient(input_gradient(self.discriminator, image))

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        g = self.gradient_image(views["image"])
        box = views["box"]  # (B, 4): y, x, size, flip
        size = int(box[0, 2])
        if size != g.shape[-1] or bool(box[:, :2].any()):
            g = torch.stack([g[b, :, int(y) : int(y) + size, int(x) : int(x) + size]
                             for b, (y, x) in enumerate(box[:, :2].tolist())])
        flip = box[:, 3].bool().view(-1, 1, 1, 1)
        g = torch.where(flip, g.flip(-1), g)
        x = (g / 255.0 - self.mean) / self.std
        return resnet_pooled_features(self.classifier, x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier.fc(features)


def _discriminator(cfg: LGradConfig) -> StyleGANDiscriminator:
    return StyleGANDiscriminator(cfg.resolution, fused_scale=cfg.fused_scale,
                                 minibatch_std_group_size=cfg.minibatch_std_group_size,
                                 fmaps_base=cfg.fmaps_base, fmaps_max=cfg.fmaps_max)


def _build(cfg: LGradConfig, weights: WeightsSource) -> LGrad:
    if weights.pretrained and cfg.discriminator is None:
        raise ProtocolError(
            "LGrad: pretrained classifier weights but no discriminator file (model.discriminator: null), so the "
            "gradients would come from a random discriminator while the run is recorded as pretrained; give the "
            "converted StyleGAN discriminator file or set pretrained: false"
        )
    disc = _discriminator(cfg)
    if cfg.discriminator is not None:
        path = Path(cfg.discriminator).expanduser()
        if not path.is_file():
            raise PretrainedUnavailableError(
                f"LGrad discriminator weights {str(path)!r} not found: download "
                "karras2019stylegan-bedrooms-256x256_discriminator.pth (img2gad_pytorch/README.md of "
                "chuangchuangtan/LGrad) or set model.discriminator: null (random, recorded as pretrained: false)"
            )
        disc.load_state_dict(load_state_dict(path), strict=True)
    model = LGrad(disc, build_resnet(cfg.backbone, weights, fc_init_std=cfg.fc_init_std),
                  grad_group_size=cfg.grad_group_size)
    model.discriminator_pretrained = cfg.discriminator is not None
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load a released LGrad classifier (CNNDetection ResNet-50 state dict, torchvision keys; strict) into
    ``classifier``; its logit is already the fake logit. The discriminator must be the pretrained one."""
    assert isinstance(model, LGrad)
    if not model.discriminator_pretrained:
        raise PretrainedUnavailableError(
            "LGrad's released classifiers were trained on gradients of the pretrained StyleGAN-bedroom "
            "discriminator; set model.discriminator to that file before loading them"
        )
    model.classifier.load_state_dict(load_state_dict(path), strict=True)


def _views(cfg: LGradConfig, train: bool, hflip: bool):
    r = cfg.resolution
    crop = cfg.crop_size if train else (cfg.eval_crop_size or r)
    if crop > r:
        raise ProtocolError(f"LGrad crop {crop} is larger than the gradient image ({r})")

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        image = to_tensor(resize(np.ascontiguousarray(img), r, r), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        if train:
            y, x = int(rng.integers(0, r - crop + 1)), int(rng.integers(0, r - crop + 1))
            flip = int(hflip and rng.random() < 0.5)
        else:
            y = x = int(round((r - crop) / 2.0))
            flip = 0
        return {"image": image, "box": torch.tensor([y, x, crop, flip], dtype=torch.int64)}

    return view


SPEC = DetectorSpec(
    name="lgrad",
    summary="LGrad: input gradients of a StyleGAN-bedroom discriminator, classified by an ImageNet ResNet-50",
    paper="Tan et al., Learning on Gradients: Generalized Artifacts Representation for GAN-Generated Images "
          "Detection, CVPR 2023",
    repo="https://github.com/chuangchuangtan/LGrad",
    config=LGradConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:resnet50.tv_in1k",
    provenance="official",
    # a profile with pretrained: false: a random discriminator of the same architecture (no file needed)
    random_weights=lambda cfg: cfg.model_copy(update={"discriminator": None}),
)
