"""F3Net: "Thinking in Frequency: Face Forgery Detection by Mining Frequency-aware Clues" (Qian et al., ECCV 2020).

Provenance ``paper``. The authors released no code. This file follows one public variant where the paper is
silent: GenImage's copy of Leminhbinh0209/F3Net, GenImage-Dataset/GenImage
``detector_codes/F3Net-main/f3net.py`` (no licence file in that folder). It was also read against
beibuwandeluori/DRCT ``network/f3net.py``, the same code with a ``pretrained`` switch, and against yyk-wew/F3Net
(``models.py``), which both derive from. GenImage's F3Net row in its Table 3 is the row the SEP paper reports.
This is an independent re-implementation (no code copied). Module and parameter names are those of the variant,
so its state dicts load strictly (the classifier is converted, see below).

Architecture (the variant's names):
- ``fad_head`` (FAD, frequency-aware decomposition): ``X_f = D x D^T`` per colour channel with the
  ``img_size``-point orthonormal DCT matrix (``_DCT_all``, ``_DCT_all_T``, frozen). Four ``filters`` keep
  diagonal bands ``start < i + j <= end``: (0, s/16], (s/16, s/8], (s/8, s] and (0, 2s] ("all"), with integer
  ``s // 16`` and ``s // 8``. Each band is ``base`` (the frozen 0/1 mask) plus ``2 sigmoid(learnable) - 1``, with
  ``learnable`` (s x s) drawn from N(0, 0.1). The result goes back through ``D^T y D`` and the 4 x 3 bands are
  concatenated into 12 channels. Quirk kept: the half-open bands exclude the DC coefficient even from "all".
- ``lfs_head`` (LFS, local frequency statistics): grey ``0.299 R + 0.587 G + 0.114 B`` of the [-1, 1] input,
  rescaled by ``(x + 1) * 122.5``. A 10 x 10 sliding window (stride 2, zero padding 4) gives a block DCT
  (`sep_bench.layers.dct.sliding_block_dct`) and ``log10(|X| + 1e-15)``. Each of M = 6 ``filters`` (bands
  ``(20 i / M, 20 (i + 1) / M]``, learnable as above, divided by the band size ``ft_num``) is summed over the
  window. This gives M maps of ``(s - 2) // 2 + 1`` per side (149 for 299).
- ``fad_excep`` / ``lfs_excep``: two Xceptions (Cadene's ImageNet Xception, timm ``legacy_xception``; blocks are
  timm's ``Block``/``SeparableConv2d``, so the keys are the Cadene/timm keys without the ImageNet ``fc``).
  The FAD stem is ``conv1 = Conv2d(12, 32, 3, stride 2)`` and the LFS stem is ``Conv2d(M, 32, 3, stride 1)``.
  With pretrained weights these start from the ImageNet ``conv1`` repeated over input groups of three and
  divided by the number of groups (4 and M / 3), as the variant does.
- ``mix_block7`` / ``mix_block12`` (MixBlock after Xception blocks 7 and 12): 1x1 query/key convs of each stream.
  Row attention ``softmax([q_F, q_L] [k_F; k_L])`` is taken per channel. The cross-stream residuals are
  ``x_F + BN(dwconv(x_L * A * (2 sigmoid(gamma_L) - 1)))`` and the symmetric one; the gammas start at zero.
- Head: ReLU on each stream's ``bn4`` output, global average pooling, concatenation (4096), ``dp`` Dropout(0.2),
  then ``fc``.

Label convention: the variant's ``fc`` is ``Linear(4096, 2)``, softmax over (real, fake), index 1 = fake (DRCT's
data code labels real 0). Here ``fc`` is ``Linear(4096, 1)``; `_load_official` converts it to the fake-vs-real
log-odds ``w[1] - w[0]``, ``b[1] - b[0]`` (an exact equivalence of the softmax probability). Everything else
loads strictly under the variant's keys; a state dict with a ``module.`` prefix (DDP) is unwrapped.

Deviations and guesses (no official recipe for generated images):
- Recipe (params.yaml): DeepfakeBench ``training/config/detector/f3net.yaml``: Adam lr 2e-4, weight decay 5e-4,
  batch 32, 10 epochs. The paper used batch 128 (yyk-wew README). DeepfakeBench trains at 256 px and the variant
  at 299 (its MixBlock sizes and LFS assert). Here ``img_size`` is a free choice (default 299: the variant and the
  Xception ImageNet input); the LFS output size and the two streams' matching sizes follow from it.
- View (guess): the short side is resized to ``resize`` (default 299; null: no resize). Then a random
  ``img_size`` crop (train, with flip) or the centre crop (eval), normalised to [-1, 1] (Xception's mean/std 0.5,
  which the LFS rescaling assumes).
- Random init (``pretrained: false``): PyTorch's default initialisation (the variant's Xception class has no
  custom init). timm's hub name is ``legacy_xception.tf_in1k``; offline it raises, never silently random.
- ``mini``: the same classes with narrower/fewer Xception blocks (``stem``, ``entry``, ``middle_blocks``,
  ``exit``) and MixBlocks after the last middle block and the exit block (``mix_after``). The module names then
  follow the block numbers (``mix_block4``, ...). Its recipe raises the learning rate to 1e-3 (params.yaml): at
  2e-4 the random-init net reaches only 0.68 validation accuracy in 3 epochs.

Parity (development, not committed): GenImage's ``F3Net(num_classes=2)`` with random weights (its
``return_pytorch04_xception`` patched to skip the ImageNet file) was loaded into this model with `official_to_fake`.
On the same two 299 x 299 inputs, the FAD and LFS outputs and the pooled features are identical, and the fake
log-odds differ by at most 3.7e-8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from sep_bench.data.transforms import crop_view
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.dct import dct_matrix, diagonal_band_mask, sliding_block_dct
from sep_bench.protocol import ProtocolError
from sep_bench.weights import PretrainedUnavailableError, WeightsSource, load_state_dict, timm_state_dict

__all__ = ["F3NetConfig", "F3Net", "BandFilter", "FADHead", "LFSHead", "MixBlock", "XceptionTrunk",
           "official_to_fake", "SPEC"]

XCEPTION_MEAN = (0.5, 0.5, 0.5)
XCEPTION_STD = (0.5, 0.5, 0.5)


class F3NetConfig(BaseModel):
    """``detectors.f3net.model`` (defaults: the GenImage variant at full size)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    img_size: int = Field(299, ge=16, description="square input side (FAD DCT size)")
    resize: int | None = Field(299, ge=16, description="short side resized before the crop; null: none (guess)")
    lfs_window: int = Field(10, ge=2, description="LFS sliding-window size")
    lfs_m: int = Field(6, ge=3, description="LFS bands M (a multiple of 3 for the pretrained stem)")
    stem: tuple[int, int] = (32, 64)
    entry: tuple[int, int, int] = (128, 256, 728)
    middle_blocks: int = Field(8, ge=1)
    exit: tuple[int, int, int] = (1024, 1536, 2048)
    mix_after: tuple[int, int] = Field((7, 12), description="Xception block numbers followed by a MixBlock")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> "F3NetConfig":
        n_blocks = 3 + self.middle_blocks + 1
        if not all(1 <= b <= n_blocks for b in self.mix_after) or self.mix_after[0] >= self.mix_after[1]:
            raise ValueError(f"mix_after {self.mix_after} must be two increasing block numbers in 1..{n_blocks}")
        return self


class BandFilter(nn.Module):
    """A fixed 0/1 band plus a learnable adjustment in (-1, 1) (the variant's ``Filter``).

    ``base``: frozen ``diagonal_band_mask``; ``learnable`` ~ N(0, 0.1); ``ft_num`` (only when `norm`): the band
    size, the output is divided by it.
    """

    def __init__(self, size: int, band_start: float, band_end: float, use_learnable: bool = True,
                 norm: bool = False) -> None:
        super().__init__()
        self.use_learnable = use_learnable
        self.base = nn.Parameter(diagonal_band_mask(size, band_start, band_end), requires_grad=False)
        if use_learnable:
            self.learnable = nn.Parameter(torch.empty(size, size).normal_(0.0, 0.1))
        self.norm = norm
        if norm:
            self.ft_num = nn.Parameter(self.base.detach().sum(), requires_grad=False)

    def band(self) -> torch.Tensor:
        return self.base + (2.0 * torch.sigmoid(self.learnable) - 1.0) if self.use_learnable else self.base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.band()
        return y / self.ft_num if self.norm else y


class FADHead(nn.Module):
    """Frequency-aware decomposition: 4 learnable DCT bands of each colour channel -> 12 channels."""

    def __init__(self, size: int) -> None:
        super().__init__()
        d = dct_matrix(size, torch.float64)
        self._DCT_all = nn.Parameter(d.float(), requires_grad=False)
        self._DCT_all_T = nn.Parameter(d.T.contiguous().float(), requires_grad=False)
        bands = [(0, size // 16), (size // 16, size // 8), (size // 8, size), (0, size * 2)]
        self.filters = nn.ModuleList([BandFilter(size, a, b) for a, b in bands])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_freq = self._DCT_all @ x @ self._DCT_all_T
        return torch.cat([self._DCT_all_T @ f(x_freq) @ self._DCT_all for f in self.filters], dim=1)


class LFSHead(nn.Module):
    """Local frequency statistics: log-amplitude sliding-window DCT, M learnable bands summed per window."""

    def __init__(self, size: int, window_size: int = 10, M: int = 6) -> None:  # noqa: N803 (the paper's M)
        super().__init__()
        self.window_size = window_size
        self._M = M
        d = dct_matrix(window_size, torch.float64)
        # the window's DCT matrices, kept as the variant's (frozen) parameters so its state dicts load strictly
        self._DCT_patch = nn.Parameter(d.float(), requires_grad=False)
        self._DCT_patch_T = nn.Parameter(d.T.contiguous().float(), requires_grad=False)
        self.stride, self.padding = 2, 4
        self.filters = nn.ModuleList([
            BandFilter(window_size, window_size * 2.0 / M * i, window_size * 2.0 / M * (i + 1), norm=True)
            for i in range(M)
        ])
        self.out_size = (size + 2 * self.padding - window_size) // self.stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        gray = (gray + 1.0) * 122.5  # [-1, 1] -> [0, 245] (the variant's constant)
        n, _, h, w = gray.shape
        h_out = (h + 2 * self.padding - self.window_size) // self.stride + 1
        w_out = (w + 2 * self.padding - self.window_size) // self.stride + 1
        x_dct = sliding_block_dct(gray, self.window_size, self.stride, self.padding)  # (N, L, 1, S, S)
        log_amp = torch.log10(torch.abs(x_dct) + 1e-15)
        # the variant's order of operations, kept: log10 of near-zero coefficients amplifies float rounding
        maps = [f(log_amp).sum(dim=(2, 3, 4)).reshape(n, 1, h_out, w_out) for f in self.filters]
        return torch.cat(maps, dim=1)


class MixBlock(nn.Module):
    """Cross-attention fusion of the FAD and LFS feature maps (square maps of equal size)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.FAD_query = nn.Conv2d(c_in, c_in, (1, 1))
        self.LFS_query = nn.Conv2d(c_in, c_in, (1, 1))
        self.FAD_key = nn.Conv2d(c_in, c_in, (1, 1))
        self.LFS_key = nn.Conv2d(c_in, c_in, (1, 1))
        self.softmax = nn.Softmax(dim=-1)
        self.FAD_gamma = nn.Parameter(torch.zeros(1))
        self.LFS_gamma = nn.Parameter(torch.zeros(1))
        self.FAD_conv = nn.Conv2d(c_in, c_in, (1, 1), groups=c_in)
        self.FAD_bn = nn.BatchNorm2d(c_in)
        self.LFS_conv = nn.Conv2d(c_in, c_in, (1, 1), groups=c_in)
        self.LFS_bn = nn.BatchNorm2d(c_in)

    def forward(self, x_fad: torch.Tensor, x_lfs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x_fad.shape
        if h != w or x_lfs.shape != x_fad.shape:
            raise ValueError(f"MixBlock needs equal square maps, got {tuple(x_fad.shape)} and {tuple(x_lfs.shape)}")
        query = torch.cat([self.FAD_query(x_fad).view(-1, h, w), self.LFS_query(x_lfs).view(-1, h, w)], dim=2)
        key = torch.cat([self.FAD_key(x_fad).view(-1, h, w).transpose(1, 2),
                         self.LFS_key(x_lfs).view(-1, h, w).transpose(1, 2)], dim=1)
        attention = self.softmax(torch.bmm(query, key)).view(b, c, h, h)
        y_fad = x_fad + self.FAD_bn(self.FAD_conv(x_lfs * attention * (torch.sigmoid(self.LFS_gamma) * 2.0 - 1.0)))
        y_lfs = x_lfs + self.LFS_bn(self.LFS_conv(x_fad * attention * (torch.sigmoid(self.FAD_gamma) * 2.0 - 1.0)))
        return y_fad, y_lfs


class XceptionTrunk(nn.Module):
    """Cadene's Xception without its classifier, built from timm's ``Block``/``SeparableConv2d`` (timm
    ``legacy_xception`` keys: conv1, bn1, conv2, bn2, block1..blockN, conv3, bn3, conv4, bn4), with configurable
    input channels, stem stride and widths."""

    def __init__(self, in_chans: int = 3, stem_stride: int = 2, stem: tuple[int, int] = (32, 64),
                 entry: tuple[int, int, int] = (128, 256, 728), middle_blocks: int = 8,
                 exit: tuple[int, int, int] = (1024, 1536, 2048)) -> None:
        super().__init__()
        from timm.models.xception import Block, SeparableConv2d

        self.conv1 = nn.Conv2d(in_chans, stem[0], 3, stem_stride, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(stem[0])
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(stem[0], stem[1], 3, bias=False)
        self.bn2 = nn.BatchNorm2d(stem[1])
        self.block1 = Block(stem[1], entry[0], 2, 2, start_with_relu=False)
        self.block2 = Block(entry[0], entry[1], 2, 2)
        self.block3 = Block(entry[1], entry[2], 2, 2)
        for i in range(middle_blocks):
            setattr(self, f"block{4 + i}", Block(entry[2], entry[2], 3, 1))
        self.n_blocks = 4 + middle_blocks
        setattr(self, f"block{self.n_blocks}", Block(entry[2], exit[0], 2, 2, grow_first=False))
        self.conv3 = SeparableConv2d(exit[0], exit[1], 3, 1, 1)
        self.bn3 = nn.BatchNorm2d(exit[1])
        self.conv4 = SeparableConv2d(exit[1], exit[2], 3, 1, 1)
        self.bn4 = nn.BatchNorm2d(exit[2])
        self.num_features = exit[2]

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))

    def exit_forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv3, bn3, relu, conv4, bn4 (no final ReLU: the head applies it)."""
        return self.bn4(self.conv4(self.relu(self.bn3(self.conv3(x)))))


class F3Net(Detector):
    """FAD and LFS streams on two Xceptions, MixBlocks after two blocks, one fake logit."""

    def __init__(self, img_size: int = 299, lfs_window: int = 10, lfs_m: int = 6, stem: tuple[int, int] = (32, 64),
                 entry: tuple[int, int, int] = (128, 256, 728), middle_blocks: int = 8,
                 exit: tuple[int, int, int] = (1024, 1536, 2048), mix_after: tuple[int, int] = (7, 12),
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.img_size = img_size
        self.fad_head = FADHead(img_size)
        self.lfs_head = LFSHead(img_size, lfs_window, lfs_m)
        widths = dict(stem=stem, entry=entry, middle_blocks=middle_blocks, exit=exit)
        self.fad_excep = XceptionTrunk(12, 2, **widths)
        self.lfs_excep = XceptionTrunk(lfs_m, 1, **widths)
        self.mix_after = tuple(mix_after)
        for b in self.mix_after:
            setattr(self, f"mix_block{b}", MixBlock(self._block_width(b, entry, exit)))
        self.relu = nn.ReLU(inplace=True)
        self.dp = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2 * exit[2], 1)

    def _block_width(self, b: int, entry: tuple[int, int, int], exit: tuple[int, int, int]) -> int:
        return exit[0] if b == self.fad_excep.n_blocks else entry[min(b, 3) - 1]

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = views["image"]
        x_fad = self.fad_excep.stem_forward(self.fad_head(x))
        x_lfs = self.lfs_excep.stem_forward(self.lfs_head(x))
        for i in range(1, self.fad_excep.n_blocks + 1):
            x_fad = getattr(self.fad_excep, f"block{i}")(x_fad)
            x_lfs = getattr(self.lfs_excep, f"block{i}")(x_lfs)
            if i in self.mix_after:
                x_fad, x_lfs = getattr(self, f"mix_block{i}")(x_fad, x_lfs)
        x_fad = self.fad_excep.exit_forward(x_fad)
        x_lfs = self.lfs_excep.exit_forward(x_lfs)
        pooled = [torch.flatten(F.adaptive_avg_pool2d(self.relu(t), 1), 1) for t in (x_fad, x_lfs)]
        return torch.cat(pooled, dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dp(features))


def _init_from_imagenet(trunk: XceptionTrunk, sd: dict[str, torch.Tensor], ref: str) -> None:
    """Cadene/timm ImageNet Xception weights into one stream; conv1 = the RGB kernel repeated per 3 input
    channels and divided by the number of repeats (the variant's ``_init_xcep_fad`` / ``_init_xcep_lfs``)."""
    sd = {k: v for k, v in sd.items() if not k.startswith(("fc.", "last_linear."))}
    rgb = sd.pop("conv1.weight")
    own = trunk.state_dict()
    bad = [k for k, v in sd.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in sd and k != "conv1.weight"]
    if bad or missing or rgb.shape != own["conv1.weight"][:, :3].shape:
        raise PretrainedUnavailableError(
            f"{ref}: not an ImageNet Xception of this width (unexpected/mismatched {bad[:3]}, missing {missing[:3]}); "
            "pretrained weights need the full-size Xception (mini: pretrained: false)"
        )
    trunk.load_state_dict(sd, strict=False)
    conv1 = trunk.conv1.weight.data
    groups = conv1.shape[1] // 3
    for i in range(groups):
        conv1[:, 3 * i:3 * (i + 1)] = rgb / float(conv1.shape[1] / 3.0)


def _build(cfg: F3NetConfig, weights: WeightsSource) -> F3Net:
    model = F3Net(img_size=cfg.img_size, lfs_window=cfg.lfs_window, lfs_m=cfg.lfs_m, stem=cfg.stem, entry=cfg.entry,
                  middle_blocks=cfg.middle_blocks, exit=cfg.exit, mix_after=cfg.mix_after, dropout=cfg.dropout)
    if weights.kind == "hub":
        sd = timm_state_dict(weights.ref, "legacy_xception")
    elif weights.kind == "file":
        sd = load_state_dict(weights.ref)
    else:
        sd = None
    if sd is not None:
        for trunk in (model.fad_excep, model.lfs_excep):
            _init_from_imagenet(trunk, sd, weights.describe())
    model.weights = weights
    return model


def official_to_fake(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a variant state dict (``fc``: 2 logits, index 1 = fake) to this model (``fc``: 1 fake logit)."""
    sd = dict(sd)
    for key in ("fc.weight", "fc.bias"):
        if key not in sd:
            raise KeyError(f"not an F3Net checkpoint: {key!r} missing")
        v = sd[key]
        if v.shape[0] == 2:
            sd[key] = (v[1] - v[0]).unsqueeze(0) if key == "fc.weight" else (v[1] - v[0]).reshape(1)
        elif v.shape[0] != 1:
            raise ValueError(f"{key}: expected 1 or 2 outputs, got shape {tuple(v.shape)}")
    return sd


def _load_official(model: Detector, path: Path) -> None:
    """Load a GenImage/DRCT-variant F3Net state dict (strict), converting its 2-way softmax to one fake logit."""
    model.load_state_dict(official_to_fake(load_state_dict(path)), strict=True)


def _views(cfg: F3NetConfig, train: bool, hflip: bool):
    if cfg.resize is not None and cfg.resize < cfg.img_size:
        raise ProtocolError(f"detectors.f3net.model.resize ({cfg.resize}) must be >= img_size ({cfg.img_size})")
    return crop_view(cfg.img_size, cfg.resize, cfg.resize, XCEPTION_MEAN, XCEPTION_STD, train=train, hflip=hflip)


SPEC = DetectorSpec(
    name="f3net",
    summary="F3Net: FAD (DCT bands) + LFS (local DCT statistics) streams on two Xceptions with MixBlocks",
    paper="Qian et al., Thinking in Frequency: Face Forgery Detection by Mining Frequency-aware Clues, ECCV 2020",
    repo="https://github.com/GenImage-Dataset/GenImage (detector_codes/F3Net-main; no official code)",
    config=F3NetConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="timm:legacy_xception.tf_in1k",
    provenance="paper",
)
