"""formatonly: a sanity detector that sees compression evidence only (sep-bench's own; no paper, no official code).

It answers one question about a *benchmark*, not about detection: can real and fake images be told apart by their
file format alone? GenImage's reals are JPEGs and its fakes PNGs (Grommelt et al., "Fake or JPEG? Revealing
Common Biases in Generated Image Detection Datasets"); a classifier that can only read JPEG traces and still
scores far above 50% there shows how much of any detector's accuracy the format can explain. After format
alignment (``eval.align`` / ``train.align``: both classes re-encoded identically) it should be at chance; when it
is not, the alignment left a format difference behind (a JPEG re-encoding alone keeps the reals' earlier
compression under the new one; engine.align), and the report flags the run as "format still leaks"
(report.protocol_tables.format_leak).

Input: the JPEG luma (Y = 0.299 R + 0.587 G + 0.114 B, as libjpeg computes it) of a top-left crop (JPEG's 8 x 8
grid is anchored at the top-left corner, so a top-left crop keeps it; no resize, no flip, which would move or
blur the grid). Features (fixed, no parameters; `format_features`): quantisation traces. A decoded JPEG's block-DCT
coefficients sit near multiples of their quantisation step; for each of the 35 lowest AC frequencies (zig-zag
order) the lattice strength is max_q mean cos(2 pi c / q) over q = 2..12, among the coefficients with
|c| >= q / 2 (1 on a lattice of step q, about 0 elsewhere). The block DCT is taken on the 8 x 8 grid where the
image's edge strength (mean |difference| of adjacent pixels per column/row position modulo 8) peaks, so a crop
that moved the grid is still read on it.

Edge strength itself is deliberately *not* a feature: up-sampling layers leave periodic patterns with periods 2, 4
or 8 (e.g. an 8x decoder), which look like block edges but are generation traces. Only quantisation is specific to
compression, and the lattice strength does not depend on how much high-frequency content an image has (phases,
not magnitudes), so a blurry generator is not told apart from a sharp photograph by it, only a compressed image
from an uncompressed one.

Head: LayerNorm, Linear(`hidden`), ReLU, Linear(1): a few thousand parameters. The features are frozen
(``frozen_features``), so ``train.feature_cache: true`` computes them once per image.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.dct import dct_matrix
from sep_bench.protocol import ProtocolError
from sep_bench.weights import WeightsSource

__all__ = ["FormatOnlyConfig", "FormatOnly", "format_features", "luma_view", "SPEC", "N_FEATURES"]

_LOW_AC = 35  # AC frequencies (zig-zag order) with a lattice feature
_QS = tuple(range(2, 13))
N_FEATURES = _LOW_AC


def _zigzag(n: int = 8) -> list[int]:
    order = sorted(((i, j) for i in range(n) for j in range(n)),
                   key=lambda p: (p[0] + p[1], p[0] if (p[0] + p[1]) % 2 else p[1]))
    return [i * n + j for i, j in order]


_LATTICE_IDX = _zigzag()[1 : 1 + _LOW_AC]


class FormatOnlyConfig(BaseModel):
    """``detectors.formatonly.model``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_size: int = Field(256, ge=16, multiple_of=8, description="top-left crop (zero-padded when smaller)")
    hidden: int = Field(32, ge=1)


def _profile(diff: torch.Tensor) -> torch.Tensor:
    """(B, L) mean |difference| per position modulo 8 of the last axis of `diff` (B, H, L)."""
    b, _, length = diff.shape
    usable = length // 8 * 8
    return diff[..., :usable].reshape(b, -1, usable // 8, 8).mean(dim=(1, 2))


def format_features(y: torch.Tensor) -> torch.Tensor:
    """(B, N_FEATURES) quantisation traces of luma images `y` (B, 1, H, W) in 0..255 (see the module docstring)."""
    y = y[:, 0].float()
    b = y.shape[0]
    h_prof = _profile((y[:, :, 1:] - y[:, :, :-1]).abs())  # between column x and x+1, by x mod 8
    v_prof = _profile((y[:, 1:, :] - y[:, :-1, :]).abs().transpose(1, 2))
    # the grid starts one pixel after the strongest edge position (edge strength only locates the grid)
    ox = ((h_prof.argmax(1) + 1) % 8).tolist()
    oy = ((v_prof.argmax(1) + 1) % 8).tolist()
    h, w = y.shape[1:]
    hh, ww = (h - 7) // 8 * 8, (w - 7) // 8 * 8  # the same block count whatever the grid offset
    if hh < 8 or ww < 8:
        raise ValueError(f"formatonly needs images of at least 15 x 15 pixels, got {h} x {w}")
    img = torch.stack([y[i, oy[i] : oy[i] + hh, ox[i] : ox[i] + ww] for i in range(b)]) - 128.0
    blocks = img.reshape(b, hh // 8, 8, ww // 8, 8).permute(0, 1, 3, 2, 4).reshape(b, -1, 8, 8)
    d = dct_matrix(8, torch.float32, y.device)
    c = (d @ blocks @ d.T).reshape(b, -1, 64)  # JPEG's DCT is the orthonormal one on (Y - 128)
    low = c[:, :, _LATTICE_IDX]  # (B, n_blocks, LOW_AC)
    lattice = torch.zeros(b, len(_LATTICE_IDX), dtype=torch.float32, device=y.device)
    mag_low = low.abs()
    for q in _QS:
        w = (mag_low >= q / 2).float()
        s = (w * torch.cos(low * (2 * math.pi / q))).sum(1) / (w.sum(1) + 1)
        lattice = torch.maximum(lattice, s)
    return lattice.float()


class FormatOnly(Detector):
    """Fixed compression features (`format_features`) and a tiny head: one fake logit per image."""

    frozen_features = True

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(N_FEATURES)
        self.fc1 = nn.Linear(N_FEATURES, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 1)

    @torch.no_grad()
    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return format_features(views["luma"])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(features))))


def _build(cfg: FormatOnlyConfig, weights: WeightsSource) -> FormatOnly:
    if weights.pretrained:
        raise ProtocolError("formatonly has no pretrained part (its features are fixed): set pretrained: false")
    model = FormatOnly(cfg.hidden)
    model.weights = weights
    return model


def luma_view(crop_size: int):
    """The JPEG luma of the top-left `crop_size` square (zero-padded on the right/bottom), (1, S, S) in 0..255."""

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        crop = img[:crop_size, :crop_size].astype(np.float32)
        y = crop @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        out = np.zeros((crop_size, crop_size), dtype=np.float32)
        out[: y.shape[0], : y.shape[1]] = y
        return {"luma": torch.from_numpy(out)[None]}

    return view


def _views(cfg: FormatOnlyConfig, train: bool, hflip: bool):
    return luma_view(cfg.crop_size)  # the same for training and evaluation; a flip would move the JPEG grid


SPEC = DetectorSpec(
    name="formatonly",
    summary="format-bias control: JPEG quantisation traces only, tiny head (sep-bench's own)",
    paper="sep-bench sanity detector (after Grommelt et al., Fake or JPEG? Revealing Common Biases in Generated "
          "Image Detection Datasets, 2024)",
    repo="https://github.com/sep-bench/sep-bench",
    config=FormatOnlyConfig,
    build=_build,
    views=_views,
    provenance="paper",
)
