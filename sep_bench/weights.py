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
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from sep_bench.hub import PretrainedUnavailableError, hub_failure

__all__ = ["WeightsSource", "parse_pretrained", "load_state_dict", "sha256_file", "UnsafeCheckpointError",
           "WeightsFileError", "PretrainedUnavailableError", "hub_failure", "timm_state_dict"]


class WeightsFileError(RuntimeError):
    """A weights file that cannot be used (unreadable, corrupt, not a state dict); the message names the file."""


class UnsafeCheckpointError(WeightsFileError):
    """A pickle checkpoint that needs arbitrary code execution (or non-tensor objects) to load: refused."""


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
            return "random-init" + (f" ({self.ref})" if self.ref else "")
        if self.kind == "file":
            return f"file:{Path(self.ref).name}" + (f"@{self.sha256[:12]}" if self.sha256 else "")
        return f"hub:{self.ref}"


def parse_pretrained(value: bool | str, default_hub: str | None) -> WeightsSource:
    """Turn a recipe's ``pretrained`` value into an explicit source; ambiguous values raise."""
    if value is False:
        return WeightsSource.none()
    if value is True:
        if default_hub is None:
            from sep_bench.protocol import ProtocolError  # a ValueError; the CLI prints it as a one-line error

            raise ProtocolError(
                "pretrained: true, but this detector has no default hub weights; set pretrained: false or give a "
                "weights file path"
            )
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


def _refusal(path: Path, err: Exception) -> WeightsFileError:
    """The error for a .pth/.pt/.bin that torch's weights-only unpickler rejected, naming what it rejected."""
    text = str(err)
    glob = re.search(r"GLOBAL ([\w.]+)", text)
    if glob:
        return UnsafeCheckpointError(
            f"{path.name}: refused: the pickle calls {glob.group(1)}, which a weights-only load does not allow "
            "(loading it unsafely could run arbitrary code); convert it to safetensors or re-save its state_dict alone"
        )
    if "weights_only" in text or "Weights only" in text or "WeightsUnpickler" in text:
        what = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        return UnsafeCheckpointError(
            f"{path.name}: refused: not a weights-only PyTorch checkpoint ({what.group(1).strip() if what else 'unsupported pickle content'}); "
            "loading it unsafely could run arbitrary code; convert it to safetensors or re-save its state_dict alone"
        )
    return WeightsFileError(f"{path.name}: not a readable PyTorch checkpoint ({type(err).__name__}: {text[:200]})")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or from a .pth/.pt/.bin with ``weights_only=True`` (no code runs).

    Common wrappers are unwrapped: ``{"model": sd}``, ``{"state_dict": sd}``, and a ``module.`` prefix (DDP).
    A pickle that would run code is refused with `UnsafeCheckpointError`; any other unreadable file raises
    `WeightsFileError` (never a traceback from inside torch).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except Exception as err:  # SafetensorError, OSError, ...
            raise WeightsFileError(f"{path.name}: not a readable safetensors file ({err})") from None
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4": noise before refusing
                sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError (a pickle.UnpicklingError) with a long hint
            raise _refusal(path, err) from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsFileError(f"{path.name}: expected a state dict, got {type(sd).__name__}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def timm_state_dict(ref: str, arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of a ResNet-style backbone through timm (Hugging Face cache; honours HF_HUB_OFFLINE).

    `ref` is ``timm:<arch>.<tag>`` (its architecture must be `arch`) or ``hf-hub:<repo>``; a failure to get the
    weights raises `PretrainedUnavailableError`, never a silent random initialisation.
    """
    from sep_bench.protocol import ProtocolError

    if ref.startswith("timm:"):
        name = ref[len("timm:"):]
        if name.split(".", 1)[0] != arch:
            raise ProtocolError(
                f"pretrained {ref!r} is for {name.split('.', 1)[0]}, but the backbone is {arch}; "
                f"name matching weights, e.g. 'timm:{arch}.tv_in1k'"
            )
    elif ref.startswith("hf-hub:"):
        name = ref
    else:
        raise ProtocolError(f"pretrained {ref!r}: a ResNet backbone takes 'timm:<arch>.<tag>' or 'hf-hub:<repo>'")
    import timm

    from sep_bench.hub import timm_file_overlay

    overlay = timm_file_overlay(ref)  # the cached/downloaded file; fails at once when offline and not cached
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay).state_dict()
    except Exception as err:  # huggingface_hub / urllib raise many types; all mean "not available"
        raise hub_failure(ref, err) from err
