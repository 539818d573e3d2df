"""The diffusion models of the reconstruction stage, built with diffusers classes only.

- ``adm-256-uncond``: guided-diffusion's ImageNet 256x256 unconditional ADM (``--attention_resolutions 32,16,8
  --diffusion_steps 1000 --image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256
  --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_scale_shift_norm True``,
  ZhendongWang6/DIRE ``guided-diffusion/compute_dire.sh``) expressed as a diffusers ``UNet2DModel``
  (`ADM_256_UNCOND`): channel_mult (1, 1, 2, 2, 4, 4), attention at 32/16/8 px (also in the middle block, with its
  GroupNorm), head dim 64, scale-shift norm, ResBlock up/down-sampling (``ResnetDownsampleBlock2D`` /
  ``ResnetUpsampleBlock2D``, ``downsample_type``/``upsample_type="resnet"``), [cos, sin] timestep embedding,
  6 output channels (eps and the learned variance; only eps is used); 552,814,086 parameters, as the official
  model. Weights: the original ``256x256_diffusion_uncond.pt`` (guided-diffusion key names, loaded with
  ``weights_only=True`` and converted by `sep_bench.recon.adm_port`, legacy fused ``qkv`` split per head) or a
  diffusers-format ``UNet2DModel`` folder of the same architecture (`load_adm_unet`).
- ``sd-v1`` / ``sd-inpaint``: ``StableDiffusionPipeline`` / ``StableDiffusionInpaintPipeline`` components from a
  local folder or hub id (``from_pretrained``; offline a hub id raises).
- ``tiny-*``: the same classes with tiny widths and random weights drawn from ``torch.manual_seed(seed)``.

Noise schedule of every DDIM reconstruction: ``DDIMScheduler`` (linear betas 1e-4..0.02 over 1000 steps for
ADM; SD's scaled-linear 0.00085..0.012 for SD), ``timestep_spacing="leading"`` (= guided-diffusion's
``ddimN`` respacing: timesteps 0, 1000/N, ...), ``set_alpha_to_one=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sep_bench.recon.adm_port import AdmArch, AdmCheckpointError, convert_adm_state_dict
from sep_bench.recon.config import ReconConfig
from sep_bench.weights import PretrainedUnavailableError

__all__ = ["ADM_256_UNCOND", "TINY_UNET", "SD_V1_UNET", "SD_V1_VAE", "SD_V1_TEXT", "DiffusionModel", "build_model",
           "describe", "load_adm_unet", "empty_prompt_ids", "weights_unavailable"]

#: guided-diffusion 256x256_diffusion_uncond as UNet2DModel keyword arguments (architecture only; equal to
#: ``AdmArch.from_flags(image_size=256, ...).unet_config(256)`` of DIRE's flags, see `sep_bench.recon.adm_port`).
ADM_256_UNCOND: dict[str, Any] = {
    "sample_size": 256, "in_channels": 3, "out_channels": 6,
    "block_out_channels": (256, 256, 512, 512, 1024, 1024), "layers_per_block": 2,
    "down_block_types": ("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D",
                         "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D",
                       "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
    "attention_head_dim": 64, "norm_num_groups": 32, "attn_norm_num_groups": 32,
    "resnet_time_scale_shift": "scale_shift", "downsample_type": "resnet", "upsample_type": "resnet",
    "dropout": 0.1, "flip_sin_to_cos": True, "freq_shift": 0,
}
#: The same UNet2DModel code path at toy size (tests, CPU mini profile).
TINY_UNET: dict[str, Any] = {
    **ADM_256_UNCOND, "sample_size": 32, "block_out_channels": (8, 16), "layers_per_block": 1,
    "down_block_types": ("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "ResnetUpsampleBlock2D"),
    "attention_head_dim": 8, "norm_num_groups": 4, "attn_norm_num_groups": 4, "dropout": 0.0,
}
#: Stable Diffusion v1's architecture (the ``config.json`` files of CompVis/stable-diffusion-v1-4 and
#: runwayml/stable-diffusion-inpainting): what a ``random_init`` reconstructor builds, at full size, without the hub.
SD_V1_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32,
}
SD_V1_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
    "block_out_channels": (128, 256, 512, 512), "norm_num_groups": 32,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}
#: CLIP ViT-L/14's text tower (SD v1's text encoder)
SD_V1_TEXT: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
#: what each real arch needs and where it comes from, for the one-line error when it cannot be loaded
_WEIGHTS_HELP = {
    "adm-256-uncond": "guided-diffusion's 256x256_diffusion_uncond.pt (openai/guided-diffusion README)",
    "sd-v1": "the Stable Diffusion v1 pipeline (diffusers format)",
    "sd-inpaint": "the Stable Diffusion inpainting pipeline (diffusers format)",
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


def load_adm_unet(ref: str | Path, arch: Mapping[str, Any] | None = None) -> nn.Module:
    """ADM as ``UNet2DModel`` (`arch`: its keyword arguments, default `ADM_256_UNCOND`) from the original
    guided-diffusion checkpoint or a diffusers-format folder (config.json + weights), in float32 on CPU.

    A file (``.pt``/``.pth``, e.g. ``256x256_diffusion_uncond.pt``) is read by `sep_bench.weights.load_state_dict`,
    its guided-diffusion keys (``input_blocks.N.0.in_layers.0.weight`` ...) converted by
    `sep_bench.recon.adm_port.convert_adm_state_dict` (missing, unexpected or misshapen keys are named in the error)
    and loaded strictly. A folder must hold the same architecture.
    """
    from diffusers import UNet2DModel

    cfg = dict(ADM_256_UNCOND if arch is None else arch)
    adm = AdmArch.from_unet_config(cfg)
    path = Path(ref)
    if path.is_file():
        from sep_bench.weights import load_state_dict

        if path.suffix not in (".pt", ".pth", ".safetensors"):
            raise ValueError(f"{ref}: expected a guided-diffusion checkpoint (.pt/.pth) or a diffusers folder")
        state = load_state_dict(path)  # weights_only (a pickle that would run code is refused), wrappers unwrapped
        if not all(torch.is_tensor(v) for v in state.values()):
            raise AdmCheckpointError(f"{ref}: not a guided-diffusion UNetModel state dict (a flat name -> tensor map)")
        converted = {k: v.float() for k, v in convert_adm_state_dict(state, adm).items()}
        with torch.device("meta"):  # no random init of the 553M parameters: the checkpoint's tensors are assigned
            unet = UNet2DModel(**cfg)
        unet.load_state_dict(converted, strict=True, assign=True)
        left = [n for n, t in [*unet.named_parameters(), *unet.named_buffers()] if t.is_meta]
        if left:
            raise AdmCheckpointError(f"{ref}: tensors not set by the checkpoint: {left}")
        return unet
    from sep_bench.hub import from_pretrained_source

    unet = UNet2DModel.from_pretrained(ref, **from_pretrained_source(str(ref)))
    got = AdmArch.from_unet_config(unet.config)
    if got != adm:
        raise ValueError(f"{ref}: not the expected ADM UNet ({got} != {adm})")
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
    if cfg.random_init and not cfg.tiny:
        head = f"{cfg.arch} architecture at full size, RANDOM weights (seed {cfg.seed}; random_init, no download)"
    else:
        head = _DESCRIPTIONS[cfg.arch].format(seed=cfg.seed, weights=cfg.weights)
    return head + "; " + sampler


def weights_unavailable(cfg: ReconConfig, err: BaseException) -> PretrainedUnavailableError:
    """The one-line error for diffusion weights that cannot be loaded: what they are and how to provide them."""
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return PretrainedUnavailableError(
        f"the {cfg.arch} reconstructor needs {_WEIGHTS_HELP.get(cfg.arch, 'its weights')} from {cfg.weights!r}, "
        f"which cannot be loaded ({type(err).__name__}: {first}); get it with `sep-bench weights prefetch "
        "--profile <profile>` where there is network (HF cache), or set model.reconstruct.weights to a local copy, "
        "or set the profile's `pretrained: false` for a random model of the same architecture (recorded as such)")


def _random_full(cfg: ReconConfig) -> DiffusionModel:
    """The arch of `cfg` at full size with random weights drawn from ``torch.manual_seed(cfg.seed)``."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel, \
        UNet2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(cfg.seed)
    note = f"random weights (seed {cfg.seed}), full-size architecture"
    if cfg.arch == "adm-256-uncond":
        return DiffusionModel("pixel", unet=UNet2DModel(**ADM_256_UNCOND).eval(), schedule=ADM_SCHEDULE,
                              description=f"ADM 256x256 uncond (UNet2DModel), {note}")
    in_channels = 9 if cfg.arch == "sd-inpaint" else 4
    unet = UNet2DConditionModel(**{**SD_V1_UNET, "in_channels": in_channels}).eval()
    vae, text = AutoencoderKL(**SD_V1_VAE).eval(), CLIPTextModel(CLIPTextConfig(**SD_V1_TEXT)).eval()
    if cfg.arch == "sd-v1":
        return DiffusionModel("latent", unet=unet, vae=vae, cond=_encode_prompt(text, empty_prompt_ids(None)),
                              schedule=SD_SCHEDULE, description=f"Stable Diffusion v1 architecture, {note}")
    pipe = StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text, tokenizer=None, unet=unet,
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1, **SD_SCHEDULE),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return DiffusionModel("inpaint", pipe=pipe, description=f"Stable Diffusion inpainting architecture, {note}")


def build_model(cfg: ReconConfig) -> DiffusionModel:
    """The model `cfg` names, on CPU in float32 (`DiffusionModel.to` moves it); weights that cannot be loaded
    raise `PretrainedUnavailableError` (one line: what they are and how to provide them)."""
    if cfg.random_init and not cfg.tiny:
        return _random_full(cfg)
    try:
        return _build_named(cfg)
    except (OSError, ValueError) as err:  # diffusers: OSError "Cannot load model ..."
        if cfg.tiny or isinstance(err, AdmCheckpointError):
            raise
        raise weights_unavailable(cfg, err) from None


def _build_named(cfg: ReconConfig) -> DiffusionModel:
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

        from sep_bench.hub import from_pretrained_source

        pipe = StableDiffusionPipeline.from_pretrained(cfg.weights, safety_checker=None, requires_safety_checker=False,
                                                       **from_pretrained_source(cfg.weights))
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
        from sep_bench.hub import from_pretrained_source

        pipe = StableDiffusionInpaintPipeline.from_pretrained(cfg.weights, safety_checker=None,
                                                              requires_safety_checker=False,
                                                              **from_pretrained_source(cfg.weights))
        desc = f"Stable Diffusion inpainting from {cfg.weights}"
    pipe.set_progress_bar_config(disable=True)
    return DiffusionModel("inpaint", pipe=pipe, description=desc)
