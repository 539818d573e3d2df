"""FPM, the frequency branch of SEP: DWT map -> encoder ``dwt`` -> grouped dilated enhancer ``dwt_piex``.

Independent re-implementation of 1112348/SEP-for-AIGCDetection ``models/model.py`` (no licence in that
repository; no code copied). Module and parameter names are the official ones, so official state-dict keys load
unchanged: ``dwt.{0,4,8,12}`` (Conv2d 3x3, bias), ``dwt.{1,5,9,13}`` (BatchNorm2d),
``dwt_piex.group_encoders.<g>.{0,2,4}`` (Conv2d, bias).

- `DWTMap`: one-level 2-D DWT (pytorch_wavelets ``DWTForward(J=1, mode='symmetric', wave='bior1.3')``) of the
  [0, 1] image crop; the four sub-bands are tiled ``[[LL, LH], [HL, HH]]`` (LH, HL, HH = pytorch_wavelets' detail
  bands 0, 1, 2) into one (B, C, ~H, ~W) map and resized back to the input size with bilinear interpolation
  (for a 256 crop the bands are 130x130, the tiled map 260x260). It has no state: the wavelet filters are
  non-persistent buffers, so the state dict matches the official one, which builds the transform in ``forward``.
  ``bands="hh"`` is the official repository's earlier revision (commit 832b3d9, 2026-02-16): the HH band alone,
  resized to the input size. That revision was the model code when the README published the checkpoint link
  (2026-02-22); the tiled map replaced it on 2026-02-27 (ed4febe). The checkpoint's keys fit both, and which input
  it was trained with is not stated, so both are offered (SEP config ``dwt_bands``).
- `dwt_encoder`: 4 x [Conv3x3(pad 1) + BN + ReLU + AvgPool(3, stride 2, pad 1)], channels 3 -> 32 -> 64 -> 64 -> 64
  (256 -> 16 spatially).
- `GroupedDilatedFrequencyEnhancer`: the 64 encoder channels in 16 groups of 4; per group Conv3x3(dilation 2) ReLU
  Conv3x3(dilation 4) ReLU Conv1x1(32 -> 3) global-average-pool sigmoid; the 16 (B, 3, 1, 1) weights are averaged
  to ``w`` and the patch becomes ``patch * (1 + 0.2 * w)``.

Documented deviations (numerically equivalent or within float rounding):
- The enhancer runs its 16 group encoders as three grouped convolutions built from the official per-group
  weights (same arithmetic as the official loop over groups, fewer kernel launches).
- The official resize is ``torchvision.transforms.Resize([H, W])`` on a tensor, whose ``antialias`` default
  depends on the torchvision version (False with a warning before 0.17, True since; the official file silences
  torchvision's warnings, which suggests < 0.17). `DWTMap` uses ``antialias=True`` (the current default) unless
  told otherwise; the difference is a 260 -> 256 resize.
- The DWT runs in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sep_bench.layers.dwt import dwt_forward

__all__ = ["DWTMap", "dwt_encoder", "GroupedDilatedFrequencyEnhancer", "tile_subbands"]


def tile_subbands(ll: torch.Tensor, lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor) -> torch.Tensor:
    """[[LL, LH], [HL, HH]] as one map (B, C, 2h, 2w)."""
    return torch.cat([torch.cat([ll, lh], dim=-1), torch.cat([hl, hh], dim=-1)], dim=-2)


class DWTMap(nn.Module):
    """Tiled one-level DWT sub-bands (or the HH band alone), resized to the input size (see the module docstring).

    Args:
        wave, mode: the wavelet and the padding mode of pytorch_wavelets' ``DWTForward`` (official bior1.3,
            symmetric).
        antialias: antialiasing of the final resize (it matters when it down-samples: 260 -> 256).
        bands: ``tiled`` ([[LL, LH], [HL, HH]], the current official code) or ``hh`` (the earlier revision).
    """

    def __init__(
        self, wave: str = "bior1.3", mode: str = "symmetric", antialias: bool = True, bands: str = "tiled"
    ) -> None:
        super().__init__()
        if bands not in ("tiled", "hh"):
            raise ValueError(f"bands must be 'tiled' or 'hh', got {bands!r}")
        self.transform = dwt_forward(wave, mode)
        for name, buf in list(self.transform.named_buffers(recurse=False)):
            self.transform.register_buffer(name, buf, persistent=False)
        self.antialias = antialias
        self.bands = bands

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        with torch.autocast(device_type=x.device.type, enabled=False):
            yl, yh = self.transform(x.float())
            detail = yh[0]  # (B, C, 3, h', w'): LH, HL, HH
            if self.bands == "hh":
                fmap = detail[:, :, 2]
            else:
                fmap = tile_subbands(yl, detail[:, :, 0], detail[:, :, 1], detail[:, :, 2])
            if fmap.shape[-2:] != (h, w):
                fmap = F.interpolate(fmap, size=(h, w), mode="bilinear", align_corners=False, antialias=self.antialias)
        return fmap


def dwt_encoder(in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 64, 64)) -> nn.Sequential:
    """The official ``dwt`` encoder: per stage Conv3x3 + BN + ReLU + AvgPool(3, 2, 1) (indices 4k .. 4k + 3)."""
    layers: list[nn.Module] = []
    c = in_channels
    for width in widths:
        layers += [
            nn.Conv2d(c, width, kernel_size=3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
        ]
        c = width
    return nn.Sequential(*layers)


class GroupedDilatedFrequencyEnhancer(nn.Module):
    """Channel re-weighting of the (up-sampled) patch from the encoded frequency map.

    Args:
        in_channels: channels of the frequency map (official 64).
        patch_channels: channels of the patch (3).
        groups: groups of frequency channels, one encoder each (official 16).
        lambda_val: strength of the re-weighting (official 0.2).
        hidden: width of each group encoder (official 32).
    """

    def __init__(
        self,
        in_channels: int = 64,
        patch_channels: int = 3,
        groups: int = 16,
        lambda_val: float = 0.2,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
        self.groups = groups
        self.lambda_val = lambda_val
        self.patch_channels = patch_channels
        gin = in_channels // groups
        self.group_encoders = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(gin, hidden, kernel_size=3, padding=2, dilation=2),
                nn.ReLU(),
                nn.Conv2d(hidden, hidden, kernel_size=3, padding=4, dilation=4),
                nn.ReLU(),
                nn.Conv2d(hidden, patch_channels, kernel_size=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Sigmoid(),
            )
            for _ in range(groups)
        )

    def _grouped(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        convs = [enc[index] for enc in self.group_encoders]
        return torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs])

    def channel_weights(self, freq: torch.Tensor) -> torch.Tensor:
        """w (B, patch_channels, 1, 1): the group encoders' sigmoid outputs averaged over groups."""
        g = self.groups
        first = self.group_encoders[0]
        x = freq
        for index in (0, 2):
            weight, bias = self._grouped(index)
            conv = first[index]
            x = F.relu(F.conv2d(x, weight, bias, padding=conv.padding, dilation=conv.dilation, groups=g))
        weight, bias = self._grouped(4)
        x = F.conv2d(x, weight, bias, groups=g)  # (B, g * patch_channels, h, w)
        x = torch.sigmoid(x.mean(dim=(2, 3)))
        return x.view(x.shape[0], g, self.patch_channels).mean(dim=1)[:, :, None, None]

    def forward(self, patch: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
        return patch * (1 + self.lambda_val * self.channel_weights(freq))
