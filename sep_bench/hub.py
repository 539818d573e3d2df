"""Hub weights: which files a hub reference needs, whether they are in the local cache, and fetching them fast.

Every pretrained backbone the recipes name lives on the Hugging Face hub (through timm, open_clip,
``transformers`` or ``diffusers``). The libraries' own download paths retry an unreachable hub for about a minute
per weight (huggingface_hub's backoff: 50 s measured for one timm model here) before they fail or fall back to
the cache. This module decides once per process whether the hub can be reached (`hub_offline`: ``HF_HUB_OFFLINE``
set, or a TCP connection to ``HF_ENDPOINT`` (or the HTTPS proxy) failing within `PROBE_TIMEOUT_S`); when it
cannot, files come from the local cache only (``local_files_only``), so a missing weight fails in well under a
second with one line that says how to provide it.

`hub_items(ref)` lists what a reference needs, as (repo, alternative file names) pairs, for
``sep-bench weights list`` (`cached_path`: present or not) and ``sep-bench weights prefetch`` (`fetch_ref`).
References: ``timm:<name>`` (the model's pretrained config names its hub repo), ``open_clip:<arch>/<tag>``,
``hf-hub:<repo>`` (a ``transformers`` model) and ``diffusers:<repo>`` (a diffusers pipeline folder on the hub).
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["PretrainedUnavailableError", "hub_failure", "HubItem", "hub_offline", "hub_items", "cached_path",
           "hub_file", "fetch_ref", "PROBE_TIMEOUT_S", "offline_error", "timm_file_overlay", "open_clip_file",
           "from_pretrained_source"]

PROBE_TIMEOUT_S = 1.5
_TRUE = {"1", "true", "yes", "on"}
#: transformers CLIP repos: the files ``from_pretrained`` reads (weights: safetensors preferred)
_TRANSFORMERS_FILES = (("config.json",), ("model.safetensors", "pytorch_model.bin"))
#: diffusers Stable Diffusion pipelines: the files that tell whether a pipeline is in the cache (the index, each
#: component's weights); prefetch downloads the whole pipeline with ``DiffusionPipeline.download``
_DIFFUSERS_FILES = (("model_index.json",),
                    ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin"),
                    ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin"),
                    ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin"))


class PretrainedUnavailableError(RuntimeError):
    """Requested pretrained weights could not be obtained (offline, not cached, or wrong file)."""


def hub_failure(ref: str, err: BaseException) -> PretrainedUnavailableError:
    """A clear error for hub weights that could not be fetched (never fall back to random weights)."""
    offline = _env_offline()
    hint = (
        "HF_HUB_OFFLINE is set and the weights are not in the local Hugging Face cache"
        if offline
        else "downloading them failed"
    )
    return PretrainedUnavailableError(
        f"pretrained weights {ref!r} are unavailable: {hint} ({type(err).__name__}: {str(err)[:300]}). "
        "Fetch them once with network access (they are cached under HF_HOME), give a local file path as "
        "`pretrained`, or set `pretrained: false` for an explicit random initialisation."
    )


@dataclass(frozen=True)
class HubItem:
    """One file of a hub repository, given as alternative names (the first one present is used); or, with `url`,
    a plain download into torch.hub's checkpoint folder (timm weights that are not on the hub, e.g. Cadene's
    Xception)."""

    repo_id: str
    names: tuple[str, ...]
    url: str = ""

    def label(self) -> str:
        return self.url or f"{self.repo_id}/{self.names[0]}"


def _url_cache(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _env_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=None)
def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:  # no DNS, refused, unreachable, timed out
        return False


def _probe_target() -> tuple[str, int]:
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(k)), None)
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme in ("https", "") else 80)


def hub_offline() -> bool:
    """True when downloads are off (``HF_HUB_OFFLINE``) or the hub (or the HTTPS proxy) cannot be reached: files
    then come from the local cache only. The probe runs once per process and endpoint."""
    return _env_offline() or not _reachable(*_probe_target())


def offline_error(ref: str, missing: str) -> PretrainedUnavailableError:
    host, port = _probe_target()
    why = "HF_HUB_OFFLINE is set" if _env_offline() else f"the hub ({host}:{port}) is unreachable"
    where = "the torch.hub cache (TORCH_HOME)" if "://" in missing else "the local Hugging Face cache (HF_HOME)"
    return PretrainedUnavailableError(
        f"pretrained weights {ref!r} are unavailable: {why} and {missing} is not in {where}. "
        "Fetch them once with network access (`sep-bench weights prefetch --profile <profile>`), give a "
        "local file path as `pretrained`, or set `pretrained: false` (or the profile's `pretrained: false`) for an "
        "explicit random initialisation."
    )


def hub_items(ref: str) -> list[HubItem]:
    """The hub files `ref` needs (see the module docstring for the reference forms)."""
    if ref.startswith("timm:"):
        from timm.models import get_pretrained_cfg

        name = ref[len("timm:"):]
        cfg = get_pretrained_cfg(name)
        if cfg is not None and not cfg.hf_hub_id and cfg.url:
            return [HubItem("", (), url=cfg.url)]
        if cfg is None or not cfg.hf_hub_id:
            raise ValueError(f"{ref}: timm has no hub weights under that name")
        names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
        return [HubItem(cfg.hf_hub_id, names)]
    if ref.startswith("open_clip:"):
        import open_clip

        arch, _, tag = ref[len("open_clip:"):].partition("/")
        hub = (open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub", "")
        if not hub:
            raise ValueError(f"{ref}: open_clip has no hub weights for arch {arch!r} and tag {tag!r}")
        repo_id, filename = os.path.split(hub)  # open_clip's own form: 'org/repo/file' or 'org/repo/'
        names = ((filename[:-4] + ".safetensors", filename) if filename.endswith((".bin", ".pth")) else (filename,)) \
            if filename else ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        return [HubItem(repo_id, names)]
    if ref.startswith("hf-hub:"):
        return [HubItem(ref[len("hf-hub:"):], names) for names in _TRANSFORMERS_FILES]
    if ref.startswith("diffusers:"):
        return [HubItem(ref[len("diffusers:"):], names) for names in _DIFFUSERS_FILES]
    raise ValueError(f"{ref!r} is not a hub reference (timm:, open_clip:, hf-hub:, diffusers:)")


def cached_path(item: HubItem) -> Path | None:
    """The local cache's copy of `item` (the first of its names that is cached), or None; no network."""
    from huggingface_hub import try_to_load_from_cache

    if item.url:
        path = _url_cache(item.url)
        return path if path.is_file() else None
    for name in item.names:
        hit = try_to_load_from_cache(item.repo_id, name)
        if isinstance(hit, str):
            return Path(hit)
    return None


def hub_file(ref: str, item: HubItem) -> Path:
    """The local file of `item`: from the cache, else downloaded (the first of its names the repo has); offline
    or unreachable hub and not cached: `offline_error` at once."""
    hit = cached_path(item)
    if hit is not None:
        return hit
    if hub_offline():
        raise offline_error(ref, item.label())
    if item.url:
        return _download_url(ref, item.url)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    last: Exception | None = None
    for name in item.names:
        try:
            return Path(hf_hub_download(repo_id=item.repo_id, filename=name))
        except EntryNotFoundError as err:  # this alternative is not in the repo: try the next
            last = err
        except Exception as err:  # network, authentication, unknown repo
            raise hub_failure(ref, err) from None
    raise hub_failure(ref, last or FileNotFoundError(item.repo_id))


def _download_url(ref: str, url: str) -> Path:
    """`url` into torch.hub's checkpoint folder (where timm's own URL download puts it)."""
    import torch

    dst = _url_cache(url)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(dst), progress=False)
    except Exception as err:
        raise hub_failure(ref, err) from None
    return dst


def timm_file_overlay(ref: str) -> dict | None:
    """``pretrained_cfg_overlay`` for ``timm.create_model(..., pretrained=True)`` that loads the local file of a
    ``timm:<name>`` reference (`hub_file`); None for other references (timm resolves them itself)."""
    if not ref.startswith("timm:"):
        return None
    return {"file": str(hub_file(ref, hub_items(ref)[0]))}


def open_clip_file(arch: str, tag: str) -> Path:
    """The local checkpoint of open_clip's (`arch`, `tag`) weights (`hub_file`), for
    ``open_clip.create_model(pretrained=path)``."""
    ref = f"open_clip:{arch}/{tag}"
    return hub_file(ref, hub_items(ref)[0])


def from_pretrained_source(name: str) -> dict:
    """Keyword arguments for a ``transformers``/``diffusers`` ``from_pretrained(name)``: cache only when the hub is
    offline or unreachable (a local folder needs none)."""
    return {} if Path(name).expanduser().is_dir() or not hub_offline() else {"local_files_only": True}


def fetch_ref(ref: str) -> list[Path]:
    """Download everything `ref` needs into the cache (public APIs: ``hf_hub_download``, ``snapshot_download``,
    ``DiffusionPipeline.download``); returns the local paths. Offline: `offline_error` for the first missing file."""
    items = hub_items(ref)
    missing = [i for i in items if cached_path(i) is None]
    if missing and hub_offline():
        raise offline_error(ref, missing[0].label())
    if ref.startswith("diffusers:") and missing:
        from diffusers import DiffusionPipeline

        try:
            DiffusionPipeline.download(ref[len("diffusers:"):])
        except Exception as err:
            raise hub_failure(ref, err) from None
    return [hub_file(ref, i) for i in items]
