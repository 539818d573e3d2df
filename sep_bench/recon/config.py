"""Settings of one reconstruction stage (`ReconConfig`) and the diffusion models it can run.

A detector that needs diffusion reconstructions carries a ``reconstruct`` field of this type in its model config
(``detectors.<name>.model.reconstruct`` in params.yaml), so the reconstructor is part of the detector's recorded
recipe, its DVC params and its MLflow run. Two methods:

- ``ddim-inversion`` (DIRE, Wang et al. ICCV 2023, ZhendongWang6/DIRE ``guided-diffusion/compute_dire.py``): the
  image is centre-cropped to a square and bicubic-resized to ``image_size``, inverted with deterministic DDIM over
  ``steps`` respaced steps, reconstructed with DDIM from that latent, and ``|x - x_rec|`` (in [-1, 1] units)
  is saved as an 8-bit image ``(|x - x_rec| * 255 / 2)`` (``use: replace``: the detector reads the DIRE map instead
  of the image, for training, validation and test).
- ``sd-inpaint`` (DRCT, Chen et al. ICML 2024, beibuwandeluori/DRCT ``data/diffusion_rec.py``): the Stable Diffusion
  inpainting pipeline with an all-keep (zero) mask, an empty prompt, ``steps`` = 50, CFG ``guidance_scale`` = 7.5,
  seed 2023 per image; the image is centre-cropped to at most ``max_size`` per side and zero-padded to a multiple
  of 8, the output cropped back (``use: augment``: the reconstructions are added to the training set only).

Models (``arch``): ``adm-256-uncond`` (guided-diffusion ``256x256_diffusion_uncond.pt`` as a diffusers
``UNet2DModel``: ``weights`` is the original ``.pt``, converted on load, or a diffusers-format folder; see
`sep_bench.recon.models`), ``sd-v1`` (a Stable Diffusion v1
pipeline folder or hub id: DIRE in SD's latent space, what DRCT's authors used for their GenImage DIRE row),
``sd-inpaint`` (``runwayml/stable-diffusion-inpainting`` or a local copy), and the ``tiny-*`` variants: the same
diffusers classes with tiny widths and random weights seeded by ``seed`` (tests and the CPU ``mini`` profile;
marked as such everywhere they are recorded).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ReconConfig", "Arch", "Method", "TINY_ARCHS", "ARCH_FAMILY", "ALGORITHM_VERSION"]

#: Part of every result key: bump it when a code change alters the reconstructions (cached results then recompute).
#: 2: UNet2DModel's ADM configuration got ResNet up/down-sampling blocks and the middle attention's GroupNorm
#: (the official architecture; TINY_UNET follows), so the tiny reconstructions changed.
ALGORITHM_VERSION = 2

Method = Literal["ddim-inversion", "sd-inpaint"]
Arch = Literal["adm-256-uncond", "sd-v1", "sd-inpaint", "tiny-unet", "tiny-sd", "tiny-sd-inpaint"]

#: arch -> the family that decides which code path runs (tiny archs share the real archs' classes and paths)
ARCH_FAMILY: dict[str, str] = {
    "adm-256-uncond": "pixel", "tiny-unet": "pixel",
    "sd-v1": "latent", "tiny-sd": "latent",
    "sd-inpaint": "inpaint", "tiny-sd-inpaint": "inpaint",
}
TINY_ARCHS = frozenset({"tiny-unet", "tiny-sd", "tiny-sd-inpaint"})
_METHOD_FAMILIES = {"ddim-inversion": {"pixel", "latent"}, "sd-inpaint": {"inpaint"}}


class ReconConfig(BaseModel):
    """One reconstruction recipe (defaults: DIRE's official ADM setting)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = Field("ddim-inversion", description="ddim-inversion (DIRE) or sd-inpaint (DRCT)")
    arch: Arch = Field("adm-256-uncond", description="the diffusion model (see the module docstring)")
    weights: str | None = Field(
        None, description="local folder/file or hub id of the diffusion weights; null only for tiny-* archs")
    use: Literal["replace", "augment"] = Field(
        "replace", description="replace: the detector reads the DIRE map of every image (train/val/test); "
        "augment: reconstructions of the training images are added to the training set")
    steps: int = Field(20, ge=1, le=1000, description="DDIM steps (DIRE: ddim20) / inpainting steps (DRCT: 50)")
    num_train_timesteps: int = Field(1000, ge=2, description="diffusion length the DDIM steps are respaced from")
    image_size: int = Field(256, ge=8, description="ddim-inversion: square side after centre crop + bicubic resize")
    max_size: int = Field(1024, ge=8, description="sd-inpaint: centre crop to at most this many pixels per side")
    clip_denoised: bool = Field(True, description="clamp predicted x0 to [-1, 1] (guided-diffusion clip_denoised)")
    guidance_scale: float = Field(7.5, ge=0.0, description="sd-inpaint CFG scale (DRCT: 7.5)")
    prompt: str = Field("", description="sd-inpaint / sd-v1 text prompt (DRCT, DIRE-SD: empty)")
    seed: int = Field(2023, description="sd-inpaint noise seed per image (DRCT: 2023); tiny archs' init seed")
    batch_size: int = Field(16, ge=1, description="images per diffusion batch")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on GPU, float32 on CPU")
    random_init: bool = Field(
        False, description="true: the arch at full size with random weights drawn from `seed` (`weights` unused; "
        "offline runs under a profile with pretrained: false; recorded, never mistaken for the real model)")

    @model_validator(mode="after")
    def _consistent(self) -> "ReconConfig":
        fam = ARCH_FAMILY[self.arch]
        if fam not in _METHOD_FAMILIES[self.method]:
            raise ValueError(f"arch {self.arch!r} cannot run method {self.method!r}")
        if self.weights is None and self.arch not in TINY_ARCHS and not self.random_init:
            raise ValueError(f"arch {self.arch!r} needs weights: a local folder/file or a hub id "
                             "(or random_init: true)")
        if self.method == "sd-inpaint" and self.use != "augment":
            raise ValueError("sd-inpaint reconstructions are training data (use: augment)")
        return self

    @property
    def tiny(self) -> bool:
        return self.arch in TINY_ARCHS

    @property
    def random_weights(self) -> bool:
        """Whether the diffusion model has random weights (a tiny arch, or a full one with `random_init`)."""
        return self.tiny or self.random_init

    def randomised(self) -> "ReconConfig":
        """This recipe with a random model of the same architecture (`random_init`; tiny archs are random already)."""
        return self if self.tiny else ReconConfig(**{**self.model_dump(), "random_init": True})

    @property
    def family(self) -> str:
        return ARCH_FAMILY[self.arch]

    def record(self) -> dict:
        """The settings as recorded (manifest, MLflow): `random_init` only when set, so records made before it
        existed stay byte-identical."""
        return self.model_dump(exclude=set() if self.random_init else {"random_init"})

    def key(self) -> str:
        """Short hash of every setting that changes the outputs (not the batch size) and of `ALGORITHM_VERSION`."""
        # random_init is left out while false: the keys of results computed before it existed stay the same
        d = {**self.record(), "algorithm_version": ALGORITHM_VERSION}
        d.pop("batch_size")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
