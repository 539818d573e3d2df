"""Where pretrained weights come from, in one place, and safe loading of weight files.

A recipe's ``pretrained`` value is one of:
- ``false``: explicit random initialisation (recorded; tables and MLflow say so);
- ``true``: the detector's default hub weights (timm / open_clip through the Hugging Face cache; honours
  ``HF_HUB_OFFLINE``); failing to get them is an error, never a silent fallback to random weights;
- ``"hf-hub:<repo>"`` / ``"timm:<name>"`` / ``"open_clip:<arch>/<tag>"``: a named hub source;
- a path (``"file:<path>"`` or a plain path): a local safetensors / .pth / .bin file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

__all__ = ["WeightsSource", "parse_pretrained", "load_state_dict", "sha256_file", "UnsafeCheckpointError"]


class UnsafeCheckpointError(RuntimeError):
    """A pickle checkpoint that needs arbitrary code execution to load."""


@dataclass(frozen=True)
class WeightsSource:
    kind: Literal["none", "hub", "file"]
    ref: str = ""
    sha256: str | None = None

    @classmethod
    def none(cls) -> "WeightsSource":
        return cls("none")

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"

    def describe(self) -> str:
        if self.kind == "none":
            return "random-init"
        if self.kind == "file":
            return f"file:{Path(self.ref).name}" + (f"@{self.sha256[:12]}" if self.sha256 else "")
        return f"hub:{self.ref}"


def parse_pretrained(value: bool | str, default_hub: str | None) -> WeightsSource:
    """Turn a recipe's ``pretrained`` value into an explicit source; ambiguous values raise."""
    if value is False:
        return WeightsSource.none()
    if value is True:
        if default_hub is None:
            raise ValueError("pretrained: true, but this detector has no default hub weights; give a file path")
        return WeightsSource("hub", default_hub)
    text = str(value).strip()
    for prefix in ("hf-hub:", "timm:", "open_clip:"):
        if text.startswith(prefix):
            return WeightsSource("hub", text)
    path = Path(text.removeprefix("file:")).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {str(path)!r} not found")
    return WeightsSource("file", str(path.resolve()), sha256_file(path))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or from a .pth/.pt/.bin with ``weights_only=True`` (no code runs).

    Common wrappers are unwrapped: ``{"model": sd}``, ``{"state_dict": sd}``, and a ``module.`` prefix (DDP).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError (a pickle.UnpicklingError) with a long hint
            if "weights_only" in str(err) or "Unsupported global" in str(err):
                raise UnsafeCheckpointError(
                    f"{path.name}: refused, the file is a pickle that would run code or needs non-tensor objects "
                    "to load; convert it to safetensors or re-save its state_dict alone"
                ) from None
            raise
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path.name}: expected a state dict, got {type(sd).__name__}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)
