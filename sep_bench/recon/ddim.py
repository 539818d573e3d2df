"""DDIM inversion and reconstruction (DIRE) and the SD-inpainting reconstruction (DRCT) of image batches.

Schedulers are diffusers' ``DDIMScheduler``. Reconstruction is ``DDIMScheduler.step`` (eta 0,
``clip_sample`` = guided-diffusion's ``clip_denoised``, ``use_clipped_model_output=True`` because
guided-diffusion re-derives eps from the clamped x0). Inversion follows guided-diffusion's
``ddim_reverse_sample_loop`` level for level: the model is evaluated at the respaced timesteps 0, 1000/N, ...
and each step moves from alpha_bar(t_i) to alpha_bar(t_{i+1}), the last one to alpha_bar = 0 (so x_T is the
predicted eps). diffusers' ``DDIMInverseScheduler`` walks a different level sequence (from alpha_bar = 1 up to
t_N-1, evaluating the model at the target level), which would change DIRE maps, so the inverse DDIM update
(Song et al. eq. 12 reversed, 3 lines) is written here on the same scheduler's ``alphas_cumprod``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image

from sep_bench.recon.config import ReconConfig
from sep_bench.recon.models import DiffusionModel

__all__ = ["EpsFn", "make_scheduler", "ddim_invert", "ddim_reconstruct", "center_crop_arr", "dire_batch",
           "inpaint_batch", "eps_fn_of", "prepare_inpaint"]

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]
"""(x_t, t) -> predicted noise eps, same shape as x_t."""


def make_scheduler(schedule: dict, num_train_timesteps: int, steps: int, clip: bool):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=num_train_timesteps, clip_sample=clip, set_alpha_to_one=True,
                          steps_offset=0, timestep_spacing="leading", prediction_type="epsilon", **schedule)
    sched.set_timesteps(steps)
    return sched


def _x0_eps(x: torch.Tensor, eps: torch.Tensor, ab: float, clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x0 = (x - (1 - ab) ** 0.5 * eps) / ab ** 0.5
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = (x - ab ** 0.5 * x0) / (1 - ab) ** 0.5
    return x0, eps


@torch.no_grad()
def ddim_invert(eps_fn: EpsFn, x0: torch.Tensor, sched, clip: bool) -> torch.Tensor:
    """Deterministic DDIM inversion x_0 -> x_T (guided-diffusion ``ddim_reverse_sample_loop``, eta 0)."""
    ts = sorted(int(t) for t in sched.timesteps)
    ac = sched.alphas_cumprod.double()
    x = x0
    for i, t in enumerate(ts):
        ab = float(ac[t])
        ab_next = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 0.0
        x0_hat, eps = _x0_eps(x, eps_fn(x, t).to(x.dtype), ab, clip)
        x = ab_next ** 0.5 * x0_hat + (1 - ab_next) ** 0.5 * eps
    return x


@torch.no_grad()
def ddim_reconstruct(eps_fn: EpsFn, xT: torch.Tensor, sched, clip: bool) -> torch.Tensor:
    """Deterministic DDIM sampling x_T -> x_0 with ``DDIMScheduler.step``."""
    x = xT
    for t in sched.timesteps:
        eps = eps_fn(x, int(t)).to(x.dtype)
        x = sched.step(eps, t, x, eta=0.0, use_clipped_model_output=clip).prev_sample
    return x


def center_crop_arr(img: np.ndarray, size: int) -> np.ndarray:
    """guided-diffusion ``center_crop_arr``: BOX-halve while >= 2x, bicubic-resize the short side, centre crop."""
    pil = Image.fromarray(img)
    while min(*pil.size) >= 2 * size:
        pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
    scale = size / min(*pil.size)
    pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
    arr = np.array(pil)
    cy, cx = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[cy:cy + size, cx:cx + size]


def eps_fn_of(model: DiffusionModel) -> EpsFn:
    """The UNet as an eps-predictor: runs in the model's dtype (bf16 on GPU), returns float32, so the DDIM
    arithmetic (inversion, scheduler steps) always runs in float32."""
    unet = model.unet
    dtype = next(unet.parameters()).dtype

    if model.family == "pixel":
        def eps(x: torch.Tensor, t: int) -> torch.Tensor:
            out = unet(x.to(dtype), torch.full((x.shape[0],), t, device=x.device)).sample
            return out[:, :3].float()  # learned-sigma models: the first 3 channels are eps
    else:
        def eps(x: torch.Tensor, t: int) -> torch.Tensor:
            cond = model.cond.expand(x.shape[0], -1, -1).to(dtype)
            t_ = torch.full((x.shape[0],), t, device=x.device)
            return unet(x.to(dtype), t_, encoder_hidden_states=cond).sample.float()
    return eps


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] (B, 3, H, W) -> uint8 (B, H, W, 3), guided-diffusion's ``((x + 1) * 127.5).clamp(0, 255)``."""
    return ((x.float() + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def dire_batch(model: DiffusionModel, cfg: ReconConfig, images: list[np.ndarray], device: torch.device,
               dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(reconstructions, DIRE maps), both uint8 (B, S, S, 3), of uint8 RGB images (any size)."""
    arr = np.stack([center_crop_arr(im, cfg.image_size) for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).to(device=device, dtype=torch.float32) / 127.5 - 1
    sched = make_scheduler(model.schedule, cfg.num_train_timesteps, cfg.steps, cfg.clip_denoised)
    eps = eps_fn_of(model)
    if model.family == "latent":
        vae = model.vae
        z = vae.encode(x.to(dtype)).latent_dist.mean.float() * vae.config.scaling_factor
        z = ddim_reconstruct(eps, ddim_invert(eps, z, sched, False), sched, False)
        rec = vae.decode((z / vae.config.scaling_factor).to(dtype)).sample.float().clamp(-1, 1)
    else:
        rec = ddim_reconstruct(eps, ddim_invert(eps, x, sched, cfg.clip_denoised), sched, cfg.clip_denoised)
    dire = ((x - rec).abs() * 255.0 / 2.0).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return _to_uint8(rec), dire


def prepare_inpaint(img: np.ndarray, max_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """DRCT ``read_image``: centre crop to at most max_size per side (zero-pad if smaller: no-op), then zero-pad
    bottom/right to multiples of 8. Returns (padded image, (h, w) to crop the output back to)."""
    h, w = img.shape[:2]
    ch, cw = min(h, max_size), min(w, max_size)
    y0, x0 = (h - ch) // 2, (w - cw) // 2  # albumentations CenterCrop
    crop = img[y0:y0 + ch, x0:x0 + cw]
    ph, pw = -(-ch // 8) * 8, -(-cw // 8) * 8
    out = np.zeros((ph, pw, 3), dtype=np.uint8)
    out[:ch, :cw] = crop
    return out, (ch, cw)


@torch.no_grad()
def inpaint_batch(model: DiffusionModel, cfg: ReconConfig, images: list[np.ndarray], device: torch.device) -> list[np.ndarray]:
    """DRCT reconstructions: SD inpainting with an all-keep mask (all images of one batch have one padded size)."""
    from sep_bench.recon.models import empty_prompt_ids

    pipe = model.pipe
    prepared = [prepare_inpaint(im, cfg.max_size) for im in images]
    h, w = prepared[0][0].shape[:2]
    pil = [Image.fromarray(p) for p, _ in prepared]
    masks = [Image.fromarray(np.zeros((h, w), dtype=np.uint8)) for _ in prepared]  # black = keep everything
    ids = empty_prompt_ids(pipe.tokenizer, cfg.prompt).to(device)
    dtype = next(pipe.unet.parameters()).dtype
    emb = pipe.text_encoder(ids)[0].to(dtype)
    neg = pipe.text_encoder(empty_prompt_ids(pipe.tokenizer, "").to(device))[0].to(dtype)
    n = len(pil)
    gens = [torch.Generator(device=device).manual_seed(cfg.seed) for _ in range(n)]
    out = pipe(prompt_embeds=emb.expand(n, -1, -1), negative_prompt_embeds=neg.expand(n, -1, -1), image=pil,
               mask_image=masks, height=h, width=w, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
               generator=gens, output_type="np").images
    res = []
    for arr, (_, (ch, cw)) in zip(out, prepared):
        res.append((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)[:ch, :cw])
    return res
