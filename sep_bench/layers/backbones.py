"""The ResNet builder and checkpoint helpers shared by the baseline detectors.

Written for sep-bench (Apache-2.0). `build_resnet` returns a torchvision ``ResNet`` whose ``fc`` is replaced by
``Linear(F, 1)``; its state-dict keys are torchvision's (conv1, bn1, layer1..4, fc), which is also how the official
CNNSpot and SSP checkpoints name them. Pretrained weights come from a `WeightsSource`: ``none`` (random init),
``hub`` (``timm:<arch>.<tag>`` or ``hf-hub:<repo>`` through timm and the Hugging Face cache, honouring
``HF_HUB_OFFLINE``), or ``file`` (a torchvision/timm-format ResNet state dict). A hub or file source that cannot
be loaded raises `PretrainedUnavailableError`; nothing ever falls back to random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from torch import nn

from sep_bench.weights import PretrainedUnavailableError, WeightsSource, load_state_dict, timm_state_dict

__all__ = ["ResNetName", "build_resnet", "resnet_pooled_features", "ResNetChildren", "negate_logits", "check_input_size", "load_strict"]

ResNetName = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def negate_logits(sd: dict[str, torch.Tensor], keys: Sequence[str], what: str) -> dict[str, torch.Tensor]:
    """A copy of an official state dict whose single logit has the opposite sign convention (a *real* logit, as
    in SSP and LOTA) with the head's `keys` negated, so the model's logit is the fake one."""
    sd = dict(sd)
    for key in keys:
        if key not in sd:
            raise KeyError(f"not {what}: {key!r} missing")
        sd[key] = -sd[key]
    return sd


def resnet_pooled_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet up to the global average pool: (B, 3, H, W) -> (B, F)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return torch.flatten(net.avgpool(x), 1)


def _load_backbone(net: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load a ResNet state dict; an ImageNet classifier (fc of another shape) is dropped, everything else strict."""
    own = net.state_dict()
    head = {k for k in sd if k.startswith("fc.")}
    if head and any(k not in own or own[k].shape != sd[k].shape for k in head):
        sd = {k: v for k, v in sd.items() if k not in head}
    result = net.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise PretrainedUnavailableError(
            f"{source}: not a state dict of this ResNet; missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def build_resnet(arch: ResNetName, weights: WeightsSource, *, fc_init_std: float | None = None) -> nn.Module:
    """A torchvision ResNet with a one-logit ``fc``, initialised from `weights` (see the module docstring).

    Args:
        arch: torchvision ResNet name (``resnet18`` ... ``resnet152``).
        weights: ``none`` (random init), ``hub`` (``timm:resnet50.tv_in1k``) or ``file`` (a ResNet state dict;
            an ImageNet 1000-way ``fc`` is dropped, a one-logit ``fc`` is kept).
        fc_init_std: initialise ``fc.weight`` from N(0, std) (CNNSpot, UnivFD: 0.02); None keeps PyTorch's default.
            The bias always keeps PyTorch's default init, as in the official code.

    Returns:
        The ResNet; ``fc`` is ``Linear(F, 1)``.

    Example:
        >>> net = build_resnet("resnet18", WeightsSource.none(), fc_init_std=0.02)
    """
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    net.fc = nn.Linear(net.fc.in_features, 1)
    if fc_init_std is not None:
        nn.init.normal_(net.fc.weight, 0.0, fc_init_std)
    if weights.kind == "hub":
        _load_backbone(net, timm_state_dict(weights.ref, arch), weights.ref)
    elif weights.kind == "file":
        _load_backbone(net, load_state_dict(weights.ref), weights.ref)
    return net


def check_input_size(model: nn.Module, cfg, hint: str = "; set crop_size (or image_size) so they agree") -> None:
    """A backbone with a fixed input size (a ViT's position embeddings) must get crops of exactly that size."""
    if model.image_size != (cfg.crop_size, cfg.crop_size):
        raise ValueError(f"crop_size {cfg.crop_size} does not match the {cfg.arch} input size {model.image_size}{hint}")


def load_strict(model: nn.Module, sd: dict[str, torch.Tensor], path: str | Path, what: str,
                hint: Callable[[list[str], list[str]], str] = lambda missing, unexpected: "") -> None:
    """Load a released state dict strictly; other keys are refused with `PretrainedUnavailableError` naming the
    first missing and unexpected ones (and `hint(missing, unexpected)`), never torch's long RuntimeError."""
    own = set(model.state_dict())
    missing, unexpected = sorted(own - set(sd)), sorted(set(sd) - own)
    if missing or unexpected:
        raise PretrainedUnavailableError(f"{Path(path).name}: not {what} state dict of this architecture; "
                                         f"missing {missing[:4]}, unexpected {unexpected[:4]}"
                                         f"{hint(missing, unexpected)}")
    model.load_state_dict(sd, strict=True)


class ResNetChildren:
    """Mixin for a detector that IS a torchvision ResNet (CNNSpot, DIRE): `adopt` makes the ResNet's children the
    module's own (state-dict keys conv1, bn1, layer1..4, fc, as the official checkpoints name them); the forward is
    the pooled features, then ``fc``. Use it before the `Detector` base: ``class X(ResNetChildren, Detector)``."""

    def adopt(self, resnet: nn.Module) -> None:
        for name, child in resnet.named_children():  # conv1, bn1, relu, maxpool, layer1..4, avgpool, fc
            self.add_module(name, child)

    def forward_features(self, views) -> torch.Tensor:
        return resnet_pooled_features(self, views["image"])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)
