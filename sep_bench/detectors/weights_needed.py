"""What weights a detector's recipe needs under a profile, and whether each is here: ``sep-bench weights list`` and
``sep-bench weights prefetch``.

Per detector: its backbone (``pretrained``: the detector's default hub weights, a named hub source or a file),
AIDE's ImageNet ResNets (``model.resnet_imagenet``), LGrad's StyleGAN discriminator file (``model.discriminator``) and the diffusion model of a reconstructor
(``model.reconstruct``: a local folder/file or a diffusers hub id). Under a profile with ``pretrained: false``
everything is random (`DetectorSpec.config_for`), so nothing is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sep_bench.detectors import get_detector

__all__ = ["Need", "weights_needed", "status"]


@dataclass(frozen=True)
class Need:
    detector: str
    role: str   # backbone | resnets | discriminator | reconstructor
    ref: str    # hub reference (timm:, open_clip:, hf-hub:, diffusers:) or a local path; "" when random
    kind: str   # hub | file | random

    def describe(self) -> str:
        return "random init (no weights needed)" if self.kind == "random" else self.ref


def _backbone(spec, det) -> Need:
    value = spec.recipe.pretrained
    if value is False:
        return Need(spec.detector, "backbone", "", "random")
    if value is True:
        if det.default_weights is None:
            return Need(spec.detector, "backbone", "(pretrained: true, but the detector has no default weights)",
                        "file")
        return Need(spec.detector, "backbone", det.default_weights, "hub")
    text = str(value).strip()
    if text.startswith(("hf-hub:", "timm:", "open_clip:")):
        return Need(spec.detector, "backbone", text, "hub")
    return Need(spec.detector, "backbone", text.removeprefix("file:"), "file")


def _reconstructor(detector: str, recon) -> Need:
    if recon.random_weights:
        return Need(detector, "reconstructor", "", "random")
    local = Path(recon.weights).expanduser()
    if local.exists() or recon.arch == "adm-256-uncond" or local.suffix in (".pt", ".pth", ".safetensors"):
        return Need(detector, "reconstructor", recon.weights, "file")
    return Need(detector, "reconstructor", f"diffusers:{recon.weights}", "hub")


def weights_needed(spec) -> list[Need]:
    """The weights `spec` (a RunSpec) needs, in the order the detector loads them."""
    det = get_detector(spec.detector)
    cfg = det.config_for(spec)
    needs = [_backbone(spec, det)]
    if getattr(cfg, "resnet_imagenet", False):  # AIDE's ResNets, when the paper's ImageNet weights are asked for
        needs.append(Need(spec.detector, "resnets", cfg.resnet_weights, "hub"))
    if hasattr(cfg, "discriminator"):
        disc = cfg.discriminator
        needs.append(Need(spec.detector, "discriminator", disc or "", "file" if disc else "random"))
    recon = getattr(cfg, "reconstruct", None)
    if recon is not None:
        needs.append(_reconstructor(spec.detector, recon))
    return needs


def status(need: Need) -> tuple[str, str]:
    """(present | missing | random | error, detail: the local path, or what is missing); no network."""
    if need.kind == "random":
        return "random", ""
    if need.kind == "file":
        path = Path(need.ref).expanduser()
        return ("present", str(path)) if path.exists() else ("missing", f"no file {path}")
    from sep_bench.hub import cached_path, hub_items

    try:
        items = hub_items(need.ref)
    except ValueError as err:
        return "error", str(err)
    paths = [cached_path(i) for i in items]
    missing = [i.label() for i, p in zip(items, paths) if p is None]
    if missing:
        return "missing", ", ".join(missing)
    return "present", str(paths[-1])
