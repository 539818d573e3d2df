"""CLIP towers for the CLIP-based detectors: Hugging Face ``transformers`` CLIP models and open_clip models.

Two families, because the official detectors use both and their released state dicts carry the family's key
names:

- **Hugging Face** (``transformers``: `CLIPModel`, `CLIPVisionModel`, `CLIPVisionModelWithProjection`,
  `CLIPTextModelWithProjection`): C2P-CLIP, Effort, DRCT's CLIP variant. `create_hf_clip(name, kind)` builds
  one from a model id (``openai/clip-vit-large-patch14``), a local ``from_pretrained`` directory, or a name in
  `HF_CLIP_CONFIGS`. The configurations of the OpenAI checkpoints are written out in `HF_CLIP_CONFIGS`
  (the values of their ``config.json``), so a model of the exact official architecture is built offline with
  random weights (tests generate official key lists this way; nothing is downloaded). ``tiny-*`` entries are
  small configurations of the same classes for tests and the CPU mini profile.
- **open_clip** (`open_clip.CLIP`, whose parameter names are those of OpenAI's original ``clip`` package, so
  OpenAI ``ViT-L-14.pt`` state dicts and code written against ``clip.model`` carry over): UnivFD, FatFormer.
  `create_open_clip(arch, pretrained)` takes an open_clip built-in architecture or an `OPEN_CLIP_LOCAL_ARCHS`
  name (small configurations of the same class).

Weights: `hf_clip_from_weights` / `open_clip_from_weights` take a `sep_bench.weights.WeightsSource`:

- ``none``: random initialisation (recorded by the caller as ``pretrained: false``);
- ``hub``: ``hf-hub:<repo>`` (HF family; ``from_pretrained`` through the Hugging Face cache, honouring
  ``HF_HUB_OFFLINE``) or ``open_clip:<arch>/<tag>`` (open_clip family); a failure raises
  `PretrainedUnavailableError`, never a silent random initialisation;
- ``file``: a state dict (safetensors / .pth / .bin) of the class being built; a full ``CLIPModel`` state dict
  also loads into a vision-only class (its ``vision_model.*`` / ``visual_projection.*`` part), strictly.

Example (what DRCT's CLIP variant needs: a frozen ViT-L/14 image tower giving the 1024-d pooled output):

    >>> from sep_bench.layers.clip import create_hf_clip
    >>> tower = create_hf_clip("tiny-vit-b16", kind="vision")          # CLIPVisionModel, random init
    >>> out = tower(pixel_values=torch.zeros(1, 3, 112, 112))
    >>> out.pooler_output.shape                                          # (1, hidden_size)

    and on a GPU server: ``hf_clip_from_weights("openai/clip-vit-large-patch14", "vision",
    parse_pretrained("hf-hub:openai/clip-vit-large-patch14", None))``.

Text: `clip_tokenize(texts)` gives OpenAI-CLIP token ids (open_clip's bundled BPE, the vocabulary of both
families; start 49406, end 49407, zero padding to 77), usable with either family's text tower (HF pools at the
first end token; the causal mask makes the padding irrelevant).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from sep_bench.data.transforms import CLIP_MEAN, CLIP_STD  # CLIP pixel normalisation (OpenAI), re-exported
from sep_bench.weights import PretrainedUnavailableError, WeightsSource, hub_failure, load_state_dict

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "HF_CLIP_CONFIGS",
    "HFKind",
    "OPEN_CLIP_LOCAL_ARCHS",
    "hf_clip_config",
    "create_hf_clip",
    "hf_clip_from_weights",
    "load_hf_clip_state_dict",
    "create_open_clip",
    "open_clip_from_weights",
    "clip_tokenize",
]


_OPENAI_TEXT = {  # the text tower of every OpenAI CLIP release (config.json "text_config")
    "hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8, "num_hidden_layers": 12,
    "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}

#: ``transformers.CLIPConfig`` arguments by name: the OpenAI releases (values of their ``config.json``) and small
#: configurations of the same classes (``tiny-*``; random init only) for tests and the CPU mini profile.
HF_CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14": {
        "projection_dim": 768,
        "text_config": {**_OPENAI_TEXT, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                        "projection_dim": 768},
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                          "num_hidden_layers": 24, "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu",
                          "layer_norm_eps": 1e-5, "projection_dim": 768},
    },
    "openai/clip-vit-base-patch16": {
        "projection_dim": 512,
        "text_config": {**_OPENAI_TEXT, "projection_dim": 512},
        "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                          "num_hidden_layers": 12, "image_size": 224, "patch_size": 16, "hidden_act": "quick_gelu",
                          "layer_norm_eps": 1e-5, "projection_dim": 512},
    },
    "openai/clip-vit-base-patch32": {
        "projection_dim": 512,
        "text_config": {**_OPENAI_TEXT, "projection_dim": 512},
        "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                          "num_hidden_layers": 12, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu",
                          "layer_norm_eps": 1e-5, "projection_dim": 512},
    },
    # 2-layer, 64-wide ViT, 16 px patches, 112 px input, 768-d projection (the ViT-L/14 projection width, so heads
    # on the projection keep their official shape); 1-layer 64-wide text tower with the full CLIP vocabulary.
    "tiny-vit-b16": {
        "projection_dim": 768,
        "text_config": {**_OPENAI_TEXT, "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 2,
                        "num_hidden_layers": 1, "projection_dim": 768},
        "vision_config": {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 2,
                          "num_hidden_layers": 2, "image_size": 112, "patch_size": 16, "hidden_act": "quick_gelu",
                          "layer_norm_eps": 1e-5, "projection_dim": 768},
    },
}

HFKind = Literal["clip", "vision", "vision_with_projection", "text_with_projection"]

#: Which ``transformers`` class each kind builds, and which part of a full CLIPModel state dict it keeps.
_HF_KINDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # kind: (class name, key prefixes kept from a CLIPModel state dict, config part)
    "clip": ("CLIPModel", ("",), "full"),
    "vision": ("CLIPVisionModel", ("vision_model.",), "vision_config"),
    "vision_with_projection": ("CLIPVisionModelWithProjection", ("vision_model.", "visual_projection."), "vision_config"),
    "text_with_projection": ("CLIPTextModelWithProjection", ("text_model.", "text_projection."), "text_config"),
}


def hf_clip_config(name: str, image_size: int | None = None):
    """The ``transformers.CLIPConfig`` of `name` (a `HF_CLIP_CONFIGS` key), with an optional input-size override.

    Example:
        >>> hf_clip_config("openai/clip-vit-large-patch14").vision_config.hidden_size
        1024
    """
    from transformers import CLIPConfig

    if name not in HF_CLIP_CONFIGS:
        raise ValueError(f"unknown HF CLIP configuration {name!r}; known: {', '.join(HF_CLIP_CONFIGS)} "
                         "(or give a local from_pretrained directory)")
    args = copy.deepcopy(HF_CLIP_CONFIGS[name])
    if image_size is not None:
        args["vision_config"]["image_size"] = int(image_size)
    return CLIPConfig(**args)


def _hf_class(kind: str):
    import transformers

    if kind not in _HF_KINDS:
        raise ValueError(f"unknown HF CLIP kind {kind!r}; one of {', '.join(_HF_KINDS)}")
    return getattr(transformers, _HF_KINDS[kind][0])


def create_hf_clip(name: str, kind: HFKind = "clip", *, image_size: int | None = None,
                   pretrained: bool = False) -> nn.Module:
    """A Hugging Face CLIP model (or one tower of it).

    Args:
        name: a `HF_CLIP_CONFIGS` key (``openai/clip-vit-large-patch14``, ``tiny-vit-b16``, ...), a hub model id,
            or a local ``from_pretrained`` directory.
        kind: ``clip`` (`CLIPModel`), ``vision`` (`CLIPVisionModel`), ``vision_with_projection``
            (`CLIPVisionModelWithProjection`) or ``text_with_projection``.
        image_size: input-size override (random init only; pretrained position embeddings are not resized).
        pretrained: False: random weights from the written-out configuration (no network, no files); True:
            ``from_pretrained(name)`` (hub id through the HF cache, or a local directory).

    Returns:
        The ``transformers`` model (in train mode, as ``from_pretrained`` leaves it in eval mode: callers decide).

    Example:
        >>> vis = create_hf_clip("tiny-vit-b16", kind="vision_with_projection")
        >>> vis(pixel_values=torch.zeros(2, 3, 112, 112)).image_embeds.shape
        torch.Size([2, 768])
    """
    cls = _hf_class(kind)
    local_dir = Path(name).expanduser()
    if pretrained or (local_dir.is_dir() and name not in HF_CLIP_CONFIGS):
        if image_size is not None:
            raise ValueError("image_size cannot be changed for pretrained HF CLIP weights (position embeddings)")
        source = str(local_dir) if local_dir.is_dir() else name
        from sep_bench.hub import from_pretrained_source, hub_offline, offline_error

        try:
            return cls.from_pretrained(source, **from_pretrained_source(source))
        except OSError as err:  # hub unreachable / not cached / not a model directory
            if not local_dir.is_dir() and hub_offline():
                raise offline_error(f"hf-hub:{name}", name) from None
            raise hub_failure(f"hf-hub:{name}", err) from err
    cfg = hf_clip_config(name, image_size)
    part = _HF_KINDS[kind][2]
    return cls(cfg if part == "full" else getattr(cfg, part))


def load_hf_clip_state_dict(model: nn.Module, kind: HFKind, sd: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Load a state dict strictly into an HF CLIP model of `kind`.

    A full ``CLIPModel`` state dict is reduced to the part `kind` holds, and the key layouts of transformers 4
    (``CLIPVisionModel`` keys under ``vision_model.``) and 5 (no prefix) are both accepted. Legacy ``position_ids``
    buffers (non-persistent since transformers 4.31) are dropped. Anything else must match exactly.
    """
    sd = {k: v for k, v in sd.items() if not k.endswith("embeddings.position_ids")}
    own = set(model.state_dict())
    if set(sd) != own and kind != "clip":
        prefixes = _HF_KINDS[kind][1]
        reduced = {k: v for k, v in sd.items() if k.startswith(prefixes)}
        tower = prefixes[0]
        candidates = [reduced, {k.removeprefix(tower): v for k, v in reduced.items()},
                      {tower + k: v for k, v in sd.items()}]
        sd = next((c for c in candidates if set(c) == own), sd)
    missing, unexpected = sorted(own - set(sd)), sorted(set(sd) - own)
    if missing or unexpected:
        raise PretrainedUnavailableError(
            f"{source}: not a state dict of a {type(model).__name__} of this configuration; "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict(sd, strict=True)


def hf_clip_from_weights(name: str, kind: HFKind, weights: WeightsSource, image_size: int | None = None) -> nn.Module:
    """`create_hf_clip` with weights from a `WeightsSource` (``none`` / ``hf-hub:<repo>`` / a state-dict file).

    A hub reference must name the same model as `name` (``hf-hub:openai/clip-vit-large-patch14`` for
    ``openai/clip-vit-large-patch14``); a file is loaded strictly into the model built from `name`'s
    configuration (see `load_hf_clip_state_dict`).
    """
    if weights.kind == "none":
        return create_hf_clip(name, kind, image_size=image_size)
    if weights.kind == "hub":
        if not weights.ref.startswith("hf-hub:"):
            raise ValueError(f"an HF CLIP tower takes hub weights as 'hf-hub:<repo>', got {weights.ref!r}")
        repo = weights.ref[len("hf-hub:"):]
        if repo != name:
            raise ValueError(f"pretrained {weights.ref!r} does not match the architecture {name!r}; name weights for "
                             f"it as 'hf-hub:{name}' or use pretrained: false")
        try:
            return create_hf_clip(name, kind, image_size=image_size, pretrained=True)
        except PretrainedUnavailableError:
            raise
        except Exception as err:  # huggingface_hub raises many types; all mean "not available"
            raise hub_failure(weights.ref, err) from err
    model = create_hf_clip(name, kind, image_size=image_size)
    load_hf_clip_state_dict(model, kind, load_state_dict(weights.ref), Path(weights.ref).name)
    return model


# ----------------------------------------------------------------------------------------------------------------
# open_clip

#: Extra open_clip architectures (``open_clip.CLIP`` keyword arguments), for tests and the CPU mini profile.
OPEN_CLIP_LOCAL_ARCHS: dict[str, dict[str, Any]] = {
    # UnivFD's: a 768-d embedding, so the official 768 -> 1 head still applies.
    "tiny-vit-768": {
        "embed_dim": 768,
        "vision_cfg": {"image_size": 112, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    },
    # FatFormer's: ViT-L/14's structure at width 64 (an 8x8 patch grid at 128 px, as 16x16 at 224/14), 3 vision
    # layers (one adapter after each with num_vit_adapter 3), the embedding width equal to the text width (as
    # ViT-L/14's 768 / 768, which FatFormer's language-guided alignment needs).
    "tiny-vit-64": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 128, "layers": 3, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    },
}


def create_open_clip(
    arch: str, pretrained: str | None = None, image_size: int | None = None, quick_gelu: bool | None = None
) -> nn.Module:
    """An open_clip CLIP model.

    Args:
        arch: an open_clip built-in architecture (built with ``open_clip.create_model``) or an
            `OPEN_CLIP_LOCAL_ARCHS` name (built with ``open_clip.CLIP``).
        pretrained: an open_clip tag (``openai``; built-in archs only) or a local checkpoint file; None: random.
        image_size: override of the encoder input size.
        quick_gelu: activation; None follows the pretrained tag (``openai``: QuickGELU, as the original CLIP),
            else (no tag, a local file) the architecture's default, GELU for the built-in ViTs. open_clip 3.x only
            *warns* about a QuickGELU mismatch, so this matters: a detector whose released weights sit on OpenAI
            CLIP passes True itself (FatFormer, UnivFD, DRCT), since its official-weights path has no tag.

    Returns:
        The CLIP model (both towers).

    Example:
        >>> clip = create_open_clip("tiny-vit-768", image_size=64)
    """
    import open_clip

    if arch in OPEN_CLIP_LOCAL_ARCHS:
        cfg = copy.deepcopy(OPEN_CLIP_LOCAL_ARCHS[arch])
        if image_size is not None:
            cfg["vision_cfg"]["image_size"] = image_size
        if quick_gelu is not None:
            cfg["quick_gelu"] = quick_gelu
        model = open_clip.CLIP(**cfg)
        if pretrained is not None:
            open_clip.load_checkpoint(model, pretrained, strict=True, weights_only=True)
        return model
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown CLIP arch {arch!r}; use an open_clip built-in name or one of "
                         f"{sorted(OPEN_CLIP_LOCAL_ARCHS)}")
    if quick_gelu is None and pretrained is not None:
        quick_gelu = bool((open_clip.get_pretrained_cfg(arch, pretrained) or {}).get("quick_gelu", False))
    if pretrained is not None and not Path(pretrained).is_file():  # a tag: its checkpoint from the HF cache/hub
        from sep_bench.hub import open_clip_file

        pretrained = str(open_clip_file(arch, pretrained))
    return open_clip.create_model(arch, pretrained=pretrained, force_image_size=image_size,
                                  force_quick_gelu=bool(quick_gelu))


def open_clip_from_weights(arch: str, weights: WeightsSource, image_size: int | None = None,
                           quick_gelu: bool | None = None, owner: str = "this detector") -> nn.Module:
    """`create_open_clip` with weights from a `WeightsSource`: ``none``, ``open_clip:<arch>/<tag>`` (its arch must
    be `arch`), or a checkpoint file (open_clip / OpenAI format, loaded strictly). Hub failures raise
    `PretrainedUnavailableError`."""
    if weights.kind == "none":
        return create_open_clip(arch, None, image_size, quick_gelu)
    if weights.kind == "file":
        return create_open_clip(arch, weights.ref, image_size, quick_gelu)
    if not weights.ref.startswith("open_clip:"):
        raise ValueError(f"{owner} takes hub weights as 'open_clip:<arch>/<tag>', got {weights.ref!r}")
    hub_arch, _, tag = weights.ref[len("open_clip:"):].partition("/")
    if hub_arch != arch or not tag:
        raise ValueError(
            f"pretrained {weights.ref!r} does not match arch {arch!r}; name weights for this arch as "
            f"'open_clip:{arch}/<tag>' or use pretrained: false"
        )
    try:
        return create_open_clip(arch, tag, image_size, quick_gelu)
    except PretrainedUnavailableError:  # already says what is missing and how to provide it
        raise
    except Exception as err:  # open_clip wraps hub failures in RuntimeError
        raise hub_failure(weights.ref, err) from err


def clip_tokenize(texts: str | list[str], context_length: int = 77) -> torch.Tensor:
    """OpenAI-CLIP token ids (LongTensor (N, context_length)) of `texts`, with open_clip's bundled BPE vocabulary
    (identical to OpenAI ``clip.tokenize``: start 49406, end 49407, zero padding)."""
    tokenizer = _tokenizer(int(context_length))
    return tokenizer([texts] if isinstance(texts, str) else list(texts)).long()


@functools.lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer  # reading the BPE merges takes a while: once per process

    return SimpleTokenizer(context_length=context_length)
