"""ResNet pieces shared by the detectors that build their own truncated ResNet-50 (NPR, SAFE, FreqNet, BSF-style):
a torchvision `Bottleneck` stage and the official initialisation, so each detector keeps its official module names
(``conv1``, ``bn1``, ``layer1``, ``layer2``, ...) while the construction lives in one place."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, conv1x1

__all__ = ["bottleneck_stage", "add_stem_and_stages", "stem_stage_features", "init_resnet_"]


def bottleneck_stage(inplanes: int, planes: int, blocks: int, stride: int = 1) -> tuple[nn.Sequential, int]:
    """torchvision's ``ResNet._make_layer`` for `Bottleneck`: the stage and the channels it outputs."""
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out


def add_stem_and_stages(module: nn.Module, layers: tuple[int, int], in_channels: int = 3) -> int:
    """Give `module` NPR's truncated ResNet-50: ``conv1`` (3x3, stride 2, 64), ``bn1``, ``relu``, ``maxpool``,
    ``layer1`` (64) and ``layer2`` (128, stride 2), ``avgpool``; returns the feature width (512)."""
    module.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=2, padding=1, bias=False)
    module.bn1 = nn.BatchNorm2d(64)
    module.relu = nn.ReLU(inplace=True)
    module.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    module.layer1, width = bottleneck_stage(64, 64, layers[0])
    module.layer2, width = bottleneck_stage(width, 128, layers[1], stride=2)
    module.avgpool = nn.AdaptiveAvgPool2d(1)
    return width


def stem_stage_features(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled features of a module built by `add_stem_and_stages`: (B, C, H, W) -> (B, 512)."""
    x = module.maxpool(module.relu(module.bn1(module.conv1(x))))
    x = module.layer2(module.layer1(x))
    return torch.flatten(module.avgpool(x), 1)


def init_resnet_(module: nn.Module) -> None:
    """torchvision ResNet's initialisation: Kaiming-normal (fan_out) convolutions, BatchNorm weight 1 bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
