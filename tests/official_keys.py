"""Official state-dict key lists written out by hand, independently of the code under test: the torchvision-style
ResNet parts that several detectors' strict-load tests need (NPR, SAFE, FreqNet, LOTA, AIDE)."""

from __future__ import annotations

RESNET50_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


def add_batchnorm(shapes: dict[str, tuple], prefix: str, c: int) -> None:
    """A BatchNorm2d's weight, bias, running statistics and counter."""
    for key in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{key}"] = (c,)
    shapes[f"{prefix}.num_batches_tracked"] = ()


def add_bottleneck_layers(shapes: dict[str, tuple], stages=RESNET50_STAGES, prefix: str = "",
                          inplanes: int = 64) -> None:
    """torchvision Bottleneck layers (expansion 4) named ``{prefix}layer{i}.{block}``; `stages` = (planes, blocks)
    per layer, the first block of each with a 1x1 downsample."""
    for li, (planes, blocks) in enumerate(stages, start=1):
        for b in range(blocks):
            p = f"{prefix}layer{li}.{b}"
            cin = inplanes if b == 0 else planes * 4
            shapes[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            for name, c in (("bn1", planes), ("bn2", planes), ("bn3", planes * 4)):
                add_batchnorm(shapes, f"{p}.{name}", c)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, cin, 1, 1)
                add_batchnorm(shapes, f"{p}.downsample.1", planes * 4)
        inplanes = planes * 4
