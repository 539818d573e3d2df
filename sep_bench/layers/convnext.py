"""ConvNeXt towers from timm and open_clip, built by one function for every detector that needs one.

Two detectors use a ConvNeXt: AIDE (the frozen image trunk of the OpenCLIP ``convnext_xxlarge`` model,
``open_clip.create_model("convnext_xxlarge", pretrained=...).visual.trunk``) and DRCT (timm
``convnext_base_in22k``, fine-tuned, whose classifier becomes a 1024-d embedding). Both are a timm
``ConvNeXt``; open_clip's ``TimmModel`` builds its trunk as ``timm.create_model(name, drop_path_rate=...)``
followed by ``reset_classifier(0)`` (``open_clip/timm_model.py``: ``timm_pool: ""`` keeps the default pool,
``timm_proj: "linear"`` puts the projection outside the trunk), so a random trunk is built here with timm alone
and has the same state-dict keys as the open_clip one.

Small variants for tests and the CPU mini profile keep the builder and the class: ``depths``/``dims`` override the
named architecture's stage depths and widths (timm merges keyword arguments over the entry point's defaults), so
e.g. ``convnext_xxlarge`` with ``depths=(1, 1, 1, 1), dims=(16, 32, 48, 64)`` is the same code path at a few
thousand parameters.

Weight sources (`sep_bench.weights.WeightsSource`): ``none`` (random init), ``hub`` as ``timm:<arch>.<tag>``
(timm / Hugging Face cache) or ``open_clip:<arch>/<tag>`` (the image trunk of an open_clip model), or ``file`` (a
state dict of the trunk itself). Hub failures raise `PretrainedUnavailableError`, never a random fallback.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from sep_bench.weights import PretrainedUnavailableError, WeightsSource, hub_failure, load_state_dict

__all__ = ["create_convnext", "convnext_feature_map"]


def create_convnext(
    arch: str,
    weights: WeightsSource = WeightsSource.none(),
    *,
    num_classes: int = 0,
    drop_path_rate: float = 0.0,
    depths: Sequence[int] | None = None,
    dims: Sequence[int] | None = None,
    ls_init_value: float | None = None,
) -> nn.Module:
    """A timm ``ConvNeXt``.

    Args:
        arch: timm architecture name (``convnext_base``, ``convnext_xxlarge``, ...), without a weights tag.
        weights: ``none``; ``hub`` ``timm:<arch>.<tag>`` (ImageNet classifier dropped when `num_classes` differs)
            or ``open_clip:<arch>/<tag>`` (the open_clip image trunk; its head has no classifier); ``file``: a trunk
            state dict, loaded strictly except for a classifier of another shape.
        num_classes: classifier outputs (``head.fc``); 0: no classifier (``head.fc`` is Identity).
        drop_path_rate: stochastic depth of the blocks (active in training mode only).
        depths, dims: override the architecture's stage depths / widths (small variants; random init only).
        ls_init_value: override the blocks' layer-scale initial value (timm: 1e-6, which starts every block as
            nearly the identity; random init only).

    Returns:
        The timm model; ``num_features`` is the width of the last stage.

    Example:
        >>> net = create_convnext("convnext_xxlarge", depths=(1, 1, 1, 1), dims=(16, 32, 48, 64))
    """
    import timm

    kwargs: dict = {"drop_path_rate": drop_path_rate}
    if depths is not None:
        kwargs["depths"] = list(depths)
    if dims is not None:
        kwargs["dims"] = list(dims)
    if ls_init_value is not None:
        kwargs["ls_init_value"] = ls_init_value
    if (depths is not None or dims is not None or ls_init_value is not None) and weights.kind != "none":
        raise ValueError("depths/dims/ls_init_value override the architecture or its initialisation; pretrained "
                         "weights cannot apply (use pretrained: false)")
    if weights.kind == "hub" and weights.ref.startswith("open_clip:"):
        net = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
        net.load_state_dict(_open_clip_trunk_state(arch, weights.ref), strict=True)
        if num_classes:
            net.reset_classifier(num_classes)
        return net
    if weights.kind == "hub":
        if not weights.ref.startswith("timm:") or weights.ref[len("timm:"):].split(".", 1)[0] != arch:
            raise ValueError(f"pretrained {weights.ref!r} does not name a {arch} (use 'timm:{arch}.<tag>')")
        from sep_bench.hub import timm_file_overlay

        overlay = timm_file_overlay(weights.ref)  # fails at once when offline and not cached
        try:
            net = timm.create_model(weights.ref[len("timm:"):], pretrained=True, pretrained_cfg_overlay=overlay,
                                    **kwargs)
        except Exception as err:  # huggingface_hub / urllib raise many types; all mean "not available"
            raise hub_failure(weights.ref, err) from err
        if net.num_classes != num_classes:
            net.reset_classifier(num_classes)
        return net
    net = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    if weights.kind == "file":
        sd = load_state_dict(weights.ref)
        own = net.state_dict()
        sd = {k: v for k, v in sd.items() if not (k.startswith("head.fc.") and (k not in own or own[k].shape != v.shape))}
        result = net.load_state_dict(sd, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("head.fc.")]
        if missing or result.unexpected_keys:
            raise PretrainedUnavailableError(
                f"{weights.ref}: not a state dict of {arch}; missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
    return net


def _open_clip_trunk_state(arch: str, ref: str) -> dict[str, torch.Tensor]:
    """State dict of the timm trunk of an open_clip ConvNeXt CLIP model (``open_clip:<arch>/<tag>``)."""
    import open_clip

    name, _, tag = ref[len("open_clip:"):].partition("/")
    if name != arch or not tag:
        raise ValueError(f"pretrained {ref!r} does not match arch {arch!r}; use 'open_clip:{arch}/<tag>'")
    from sep_bench.hub import open_clip_file

    path = open_clip_file(name, tag)  # fails at once when offline and not cached
    try:
        model = open_clip.create_model(name, pretrained=str(path))
    except Exception as err:  # open_clip wraps hub failures in RuntimeError
        raise hub_failure(ref, err) from err
    return model.visual.trunk.state_dict()


def convnext_feature_map(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stages, then the head's LayerNorm2d, without pooling: (B, 3, H, W) -> (B, C, H/32, W/32).

    This is what AIDE gets from ``trunk(x)`` after replacing ``head.global_pool`` and ``head.flatten`` by
    ``nn.Identity`` (the head's ``fc`` is Identity in an open_clip trunk).
    """
    return net.head.norm(net.forward_features(x))
