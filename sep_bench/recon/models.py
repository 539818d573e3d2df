"""The diffusion models of the reconstruction stage, built with diffusers classes only.

- ``adm-256-uncond``: guided-diffusion's ImageNet 256x256 unconditional ADM (``--attention_resolutions 32,16,8
  --diffusion_steps 1000 --image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256
  --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_scale_shift_norm True``,
  ZhendongWang6/DIRE ``guided-diffusion/compute_dire.sh``) expressed as a diffusers ``UNet2DModel``
  (`ADM_256_UNCOND`): channel_mult (1, 1, 2, 2, 4, 4), attention at 32/16/8 px, head dim 64, scale-shift norm,
  ResBlock up/down-sampling, 6 output channels (eps and the learned variance; only eps is used). Weights:
  a diffusers-format ``UNet2DModel`` folder. The original ``.pt`` (guided-diffusion key names) is NOT loaded:
  `load_adm_unet` says what a port needs (a key map plus a per-head reorder of the legacy fused ``qkv``).
- ``sd-v1`` / ``sd-inpaint``: ``StableDiffusionPipeline`` / ``StableDiffusionInpaintPipeline`` components from a
  local folder or hub id (``from_pretrained``; offline a hub id raises).
- ``tiny-*``: the same classes with tiny widths and random weights drawn from ``torch.manual_seed(seed)``.

Noise schedule of every DDIM reconstruction: ``DDIMScheduler`` (linear betas 1e-4..0.02 over 1000 steps for
ADM; SD's scaled-linear 0.00085..0.012 for SD), ``timestep_spacing="leading"`` (= guided-diffusion's
``ddimN`` respacing: timesteps 0, 1000/N, ...), ``set_alpha_to_one=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sep_bench.recon.config import ReconConfig

__all__ = ["ADM_256_UNCOND", "TINY_UNET", "DiffusionModel", "build_model", "describe", "load_adm_unet",
           "empty_prompt_ids"]

#: guided-diffusion 256x256_diffusion_uncond as UNet2DModel keyword arguments (architecture only).
ADM_256_UNCOND: dict[str, Any] = {
    "sample_size": 256, "in_channels": 3, "out_channels": 6,
    "block_out_channels": (256, 256, 512, 512, 1024, 1024), "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                         "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    "attention_head_dim": 64, "norm_num_groups": 32, "resnet_time_scale_shift": "scale_shift",
    "downsample_type": "resnet", "upsample_type": "resnet", "dropout": 0.1, "flip_sin_to_cos": True, "freq_shift": 0,
}
#: The same UNet2DModel code path at toy size (tests, CPU mini profile).
TINY_UNET: dict[str, Any] = {
    **ADM_256_UNCOND, "sample_size": 32, "block_out_channels": (8, 16), "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"), "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 8, "norm_num_groups": 4, "dropout": 0.0,
}
ADM_SCHEDULE = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
SD_SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
CLIP_BOS, CLIP_EOS, CLIP_LEN = 49406, 49407, 77


@dataclass
class DiffusionModel:
    """What the stage runs: a pixel UNet, a latent (VAE + text-conditioned UNet) model, or an inpainting pipeline."""

    family: str                      # pixel | latent | inpaint
    unet: nn.Module | None = None
    vae: nn.Module | None = None
    cond: torch.Tensor | None = None  # empty-prompt text embedding (1, 77, D) for latent models
    pipe: Any = None                 # StableDiffusionInpaintPipeline
    schedule: dict[str, Any] | None = None
    description: str = ""

    def to(self, device: torch.device, dtype: torch.dtype) -> "DiffusionModel":
        if self.pipe is not None:
            self.pipe.to(device, dtype)
        for m in (self.unet, self.vae):
            if m is not None:
                m.to(device, dtype)
        if self.cond is not None:
            self.cond = self.cond.to(device, dtype)
        return self


def empty_prompt_ids(tokenizer: Any, prompt: str = "") -> torch.Tensor:
    """CLIP token ids of `prompt` padded to 77; without a tokenizer only the empty prompt can be encoded."""
    if tokenizer is not None:
        return tokenizer(prompt, padding="max_length", max_length=CLIP_LEN, truncation=True,
                         return_tensors="pt").input_ids
    if prompt:
        raise ValueError("a non-empty prompt needs the pipeline's tokenizer")
    return torch.tensor([[CLIP_BOS] + [CLIP_EOS] * (CLIP_LEN - 1)])  # SD v1 pads with <|endoftext|>


@torch.no_grad()
def _encode_prompt(text_encoder: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return text_encoder(ids)[0]


def load_adm_unet(ref: str) -> nn.Module:
    """ADM 256x256 unconditional as ``UNet2DModel`` from a diffusers-format folder (config.json + weights).

    The original guided-diffusion ``256x256_diffusion_uncond.pt`` is refused with what a port needs: its keys
    (``input_blocks.N.0.in_layers.0.weight`` ...) must be mapped to UNet2DModel's (``down_blocks.i.resnets.j``,
    ``downsamplers``, ``mid_block``, ``up_blocks``, ``conv_norm_out``), as diffusers'
    ``scripts/convert_consistency_to_diffusers.py`` does for the same UNet family, and each attention block's
    fused ``qkv`` (conv1d, legacy head order: per head [q, k, v]) must be reshaped to (heads, 3, 64, C), split into
    ``to_q/to_k/to_v`` (Linear) and ``proj_out`` mapped to ``to_out.0``.
    """
    from diffusers import UNet2DModel

    path = Path(ref)
    if path.is_file():
        raise NotImplementedError(
            f"{ref}: the original guided-diffusion checkpoint format is not ported; convert it to a diffusers "
            "UNet2DModel folder first (see sep_bench.recon.models.load_adm_unet for the exact key mapping needed)")
    unet = UNet2DModel.from_pretrained(ref)
    got = {k: unet.config[k] for k in ("block_out_channels", "out_channels", "resnet_time_scale_shift")}
    want = {k: ADM_256_UNCOND[k] for k in got}
    if tuple(got["block_out_channels"]) != want["block_out_channels"] or got["out_channels"] != 6 \
            or got["resnet_time_scale_shift"] != "scale_shift":
        raise ValueError(f"{ref}: not the ADM 256x256 unconditional UNet ({got} != {want})")
    return unet


def _tiny_latent(cfg: ReconConfig, in_channels: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(cfg.seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=CLIP_LEN))
    return unet.eval(), vae.eval(), text.eval()


_DESCRIPTIONS = {
    "tiny-unet": "tiny UNet2DModel (the ADM code path), random weights (seed {seed})",
    "adm-256-uncond": "guided-diffusion ADM 256x256 unconditional as diffusers UNet2DModel, from {weights}",
    "tiny-sd": "tiny Stable-Diffusion-like UNet2DConditionModel + AutoencoderKL + CLIPTextModel, random (seed {seed})",
    "sd-v1": "Stable Diffusion v1 (UNet2DConditionModel + AutoencoderKL, empty prompt), from {weights}",
    "tiny-sd-inpaint": "tiny StableDiffusionInpaintPipeline (9-channel UNet), random weights (seed {seed})",
    "sd-inpaint": "StableDiffusionInpaintPipeline, from {weights}",
}


def describe(cfg: ReconConfig) -> str:
    """One line naming the pipeline, its weights and its sampler (recorded in the manifest and MLflow)."""
    sampler = (f"DDIM inversion + DDIM reconstruction, {cfg.steps} steps (respaced from {cfg.num_train_timesteps}), "
               f"clip_denoised={cfg.clip_denoised}, {cfg.image_size} px" if cfg.method == "ddim-inversion" else
               f"all-keep mask, prompt {cfg.prompt!r}, {cfg.steps} steps, CFG {cfg.guidance_scale}, seed {cfg.seed}")
    return _DESCRIPTIONS[cfg.arch].format(seed=cfg.seed, weights=cfg.weights) + "; " + sampler


def build_model(cfg: ReconConfig) -> DiffusionModel:
    """The model `cfg` names, on CPU in float32 (`DiffusionModel.to` moves it)."""
    from diffusers import UNet2DModel

    if cfg.arch == "tiny-unet":
        torch.manual_seed(cfg.seed)
        return DiffusionModel("pixel", unet=UNet2DModel(**TINY_UNET).eval(), schedule=ADM_SCHEDULE,
                              description="tiny UNet2DModel (ADM code path), random weights")
    if cfg.arch == "adm-256-uncond":
        return DiffusionModel("pixel", unet=load_adm_unet(cfg.weights).eval(), schedule=ADM_SCHEDULE,
                              description=f"ADM 256x256 uncond (UNet2DModel) from {cfg.weights}")
    if cfg.arch == "tiny-sd":
        unet, vae, text = _tiny_latent(cfg, 4)
        return DiffusionModel("latent", unet=unet, vae=vae, cond=_encode_prompt(text, empty_prompt_ids(None)),
                              schedule=SD_SCHEDULE, description="tiny SD (UNet2DConditionModel + AutoencoderKL), random")
    if cfg.arch == "sd-v1":
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(cfg.weights, safety_checker=None, requires_safety_checker=False)
        cond = _encode_prompt(pipe.text_encoder, empty_prompt_ids(pipe.tokenizer, cfg.prompt))
        return DiffusionModel("latent", unet=pipe.unet.eval(), vae=pipe.vae.eval(), cond=cond, schedule=SD_SCHEDULE,
                              description=f"Stable Diffusion v1 from {cfg.weights}")
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline

    if cfg.arch == "tiny-sd-inpaint":
        unet, vae, text = _tiny_latent(cfg, 9)
        pipe = StableDiffusionInpaintPipeline(
            vae=vae, text_encoder=text, tokenizer=None, unet=unet,
            scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1, **SD_SCHEDULE),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        desc = "tiny SD inpainting (9-channel UNet2DConditionModel + AutoencoderKL), random weights"
    else:
        pipe = StableDiffusionInpaintPipeline.from_pretrained(cfg.weights, safety_checker=None,
                                                              requires_safety_checker=False)
        desc = f"Stable Diffusion inpainting from {cfg.weights}"
    pipe.set_progress_bar_config(disable=True)
    return DiffusionModel("inpaint", pipe=pipe, description=desc)
