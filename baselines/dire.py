"""DIRE: "DIRE for Diffusion-Generated Image Detection" (Wang et al., ICCV 2023).

Independent re-implementation of ZhendongWang6/DIRE (no top-level licence; ``guided-diffusion/`` is MIT; no code
copied). Files read: ``guided-diffusion/compute_dire.py`` and ``compute_dire.sh`` (the reconstruction),
``guided-diffusion/guided_diffusion/{gaussian_diffusion,image_datasets}.py`` (DDIM inversion, preprocessing),
``utils/utils.py`` ``get_network``, ``networks/resnet.py``, ``utils/config.py`` (the recipe), ``demo.py`` (test view,
checkpoint format).

Two parts:

1. The DIRE map (`sep_bench.recon`, the ``reconstruct`` DVC stage, run once per image and cached): the image is
   centre-cropped/bicubic-resized to 256 (``center_crop_arr``), inverted by deterministic DDIM over 20 respaced
   steps (``--timestep_respacing ddim20``, ``clip_denoised``), reconstructed by DDIM from that latent, and
   ``|x - x_rec| * 255 / 2`` is saved as an 8-bit PNG. The reconstructor is a protocol choice that changes the
   numbers; it is ``model.reconstruct`` (a `ReconConfig`), recorded in the run and the stage manifest:
   ``arch: adm-256-uncond`` (official: guided-diffusion ``256x256_diffusion_uncond.pt``) or ``arch: sd-v1``
   (Stable Diffusion v1 in its latent space, empty prompt: what DRCT's authors used for their GenImage DIRE row,
   beibuwandeluori/DRCT issue #13). Default here: ``sd-v1`` with ``CompVis/stable-diffusion-v1-4``. For
   ``adm-256-uncond``, ``weights`` is the original ``256x256_diffusion_uncond.pt`` (its guided-diffusion keys are
   converted on load, `sep_bench.recon.adm_port`; checked against the official UNetModel) or a diffusers-format
   ``UNet2DModel`` folder (see `sep_bench.recon.models.load_adm_unet`).
2. The classifier (this module): the engine reads the DIRE map instead of the image (hook
   `sep_bench.recon.samples.apply`, ``use: replace``); an ImageNet ResNet-50 (torchvision keys, ``fc = Linear(2048,
   1)``, ``fc.weight`` ~ N(0, 0.02)) gives the fake logit. The released checkpoints (``{'model': state_dict}``,
   folder ``1_fake`` = label 1, so the logit is already the fake logit) load strictly.

Official recipe (``utils/config.py``, ``train.py``): Adam lr 1e-4 (betas 0.9, 0.999), batch 64, ImageNet
pretrained, resize 256 (bilinear) -> RandomCrop 224 -> flip, no blur/JPEG; early stopping on validation accuracy
(patience 5 epochs, CNNDetection style: lr / 10, stop below 1e-6). Test (``demo.py``): Resize 256 -> CenterCrop 224,
ImageNet normalisation.

Deviations / guesses: (a) the DIRE-with-SD-v1 settings (256 px input, VAE posterior mean as latent, empty-prompt
conditioning, guidance 1, DDIM 20 steps, same level sequence as guided-diffusion) are guesses: DRCT's authors did
not publish them; (b) the robustness perturbations of the evaluation are applied to the DIRE map, not to the image
before reconstruction (perturbed images would need their own reconstructions); (c) the reconstruction runs in
bfloat16 on GPU (official: fp16); (d) the mini profile uses a tiny random UNet2DModel (the ADM code path) with 4
DDIM steps at 32 px, marked as tiny everywhere it is recorded; (e) the official DIRE images are saved with
OpenCV (PNG, lossless): same pixels.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from torch import nn

from sep_bench.layers.augment import CropViewConfig, crop_view
from sep_bench.layers.backbones import ResNetChildren, ResNetName, build_resnet
from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.recon.config import ReconConfig
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["DIREConfig", "DIRE", "DEFAULT_RECONSTRUCT", "SPEC"]

DEFAULT_RECONSTRUCT = ReconConfig(method="ddim-inversion", arch="sd-v1", weights="CompVis/stable-diffusion-v1-4",
                                  use="replace", steps=20, image_size=256, clip_denoised=True)


class DIREConfig(CropViewConfig):
    """``detectors.dire.model`` (defaults: the official recipe; reconstructor: SD v1, see the module docstring)."""

    blur_prob: float = Field(0.0, ge=0.0, le=1.0, description="official: no blur")
    jpeg_prob: float = Field(0.0, ge=0.0, le=1.0, description="official: no JPEG")
    eval_resize: int | None = Field(256, ge=8, description="demo.py: Resize(256) before CenterCrop(224)")
    backbone: ResNetName = Field("resnet50", description="torchvision ResNet; resnet18 for the CPU mini profile")
    fc_init_std: float = Field(0.02, gt=0.0, description="std of the N(0, std) init of fc.weight (init_gain)")
    reconstruct: ReconConfig = Field(DEFAULT_RECONSTRUCT, description="the DIRE reconstructor (DVC stage reconstruct)")


class DIRE(ResNetChildren, Detector):
    """The CNNDetection ResNet (DIRE trains with CNNSpot's code) on DIRE maps; torchvision state-dict keys."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.adopt(resnet)


def _build(cfg: DIREConfig, weights: WeightsSource) -> DIRE:
    model = DIRE(build_resnet(cfg.backbone, weights, fc_init_std=cfg.fc_init_std))
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """A released DIRE checkpoint (``{'model': sd}``, torchvision ResNet keys, ``fc`` [1, 2048]), strict."""
    model.load_state_dict(load_state_dict(path), strict=True)


def _views(cfg: DIREConfig, train: bool, hflip: bool):
    return crop_view(cfg, train, hflip, IMAGENET_MEAN, IMAGENET_STD)


SPEC = DetectorSpec(
    name="dire",
    summary="DIRE: ImageNet ResNet-50 on |x - DDIM reconstruction| maps (reconstructor: model.reconstruct)",
    paper="Wang et al., DIRE for Diffusion-Generated Image Detection, ICCV 2023",
    repo="https://github.com/ZhendongWang6/DIRE",
    config=DIREConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:resnet50.tv_in1k",
    provenance="official",
    extra={"reconstruct": True},
    random_weights=lambda cfg: cfg.model_copy(update={"reconstruct": cfg.reconstruct.randomised()}),
)
