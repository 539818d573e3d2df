"""Fixed SRM (spatial rich model) high-pass filter banks, from steganalysis.

Two banks are used in this field:

- `SRM3`: the three 5x5 filters of SEP and SSP (their official ``SRMConv2d_simple``): KB/4, KV/12 and the
  horizontal second-order residual /2.
- `SRM30`: the 30 basic high-pass filters of Fridrich and Kodovsky's rich model as packaged for CNN
  steganalysis (Ye-Net) and used by AIDE (shilinyan99/AIDE ``models/srm_filter_kernel.py``,
  ``all_normalized_hpf_list``) and by PatchCraft: 8 first-order, 4 second-order and 8 third-order residuals,
  4 3x3 and 4 5x5 "edge" halves of the KB and KV squares, and the two squares, each normalised by its
  order (1, 2, 3, 4, 12; KB 4, KV 12) and zero-padded to 5x5. The filters are built here from that structure
  (no table copied); the tests check them against hand-written entries.

`srm_kernel(bank, in_channels)` repeats every filter over the input channels (a conv with it sums the filter
response over RGB), which is what every official implementation does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KB", "KV", "SRM3", "SRM30", "srm_bank", "srm_kernel", "SRMConv2d"]

#: The 3x3 "KB" square (second-order in both directions) and the 5x5 "KV" square, unnormalised.
KB = np.array([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]], dtype=np.float64)
KV = np.array([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
              dtype=np.float64)

# The 8 neighbours of a 3x3 window in raster order, and the 8 directions clockwise from the upper left.
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
_CLOCKWISE = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]


def _pad5(f: np.ndarray) -> np.ndarray:
    return np.pad(f, 1) if f.shape[0] == 3 else f


def _first_order() -> list[np.ndarray]:
    out = []
    for dy, dx in _NEIGHBOURS:
        f = np.zeros((3, 3))
        f[1, 1], f[1 + dy, 1 + dx] = -1, 1
        out.append(f)
    return out


def _second_order() -> list[np.ndarray]:
    out = []
    for dy, dx in [(-1, -1), (-1, 0), (-1, 1), (0, -1)]:  # the diagonal, vertical, anti-diagonal, horizontal pairs
        f = np.zeros((3, 3))
        f[1, 1], f[1 + dy, 1 + dx], f[1 - dy, 1 - dx] = -2, 1, 1
        out.append(f / 2)
    return out


def _third_order() -> list[np.ndarray]:
    out = []
    for dy, dx in _CLOCKWISE:  # -1, 3, -3, 1 along the direction, the -3 at the centre
        f = np.zeros((5, 5))
        f[2 + 2 * dy, 2 + 2 * dx], f[2 + dy, 2 + dx], f[2, 2], f[2 - dy, 2 - dx] = -1, 3, -3, 1
        out.append(f / 3)
    return out


def _edges(square: np.ndarray) -> list[np.ndarray]:
    """The top, right, bottom and left halves (centre row/column included) of a square filter."""
    n, c = square.shape[0], square.shape[0] // 2
    masks = []
    for keep in ("top", "right", "bottom", "left"):
        m = np.zeros((n, n))
        if keep == "top":
            m[: c + 1] = 1
        elif keep == "right":
            m[:, c:] = 1
        elif keep == "bottom":
            m[c:] = 1
        else:
            m[:, : c + 1] = 1
        masks.append(square * m)
    return masks


def _srm30() -> np.ndarray:
    bank = (_first_order() + _second_order() + _third_order() + [e / 4 for e in _edges(KB)]
            + [e / 12 for e in _edges(KV)] + [KB / 4, KV / 12])
    return np.stack([_pad5(f) for f in bank])


SRM3 = np.stack([_pad5(KB) / 4, KV / 12, _pad5(np.array([[0, 0, 0], [1, -2, 1], [0, 0, 0]], dtype=np.float64)) / 2])
SRM30 = _srm30()
_BANKS = {"srm3": SRM3, "srm30": SRM30}


def srm_bank(name: str) -> np.ndarray:
    """The (N, 5, 5) float64 filters of bank ``srm3`` or ``srm30``."""
    if name not in _BANKS:
        raise ValueError(f"unknown SRM bank {name!r}; available: {', '.join(_BANKS)}")
    return _BANKS[name]


def srm_kernel(in_channels: int = 3, bank: str = "srm3") -> torch.Tensor:
    """(N, in_channels, 5, 5) float32: each filter of `bank` repeated over the input channels (summing them)."""
    k = torch.from_numpy(srm_bank(bank)).float()
    return k[:, None].repeat(1, in_channels, 1, 1)


class SRMConv2d(nn.Module):
    """Fixed SRM residuals: conv with `srm_kernel` (padding 2), then Hardtanh(-limit, limit) if `limit` is set.

    The kernel is a ``Parameter`` named ``kernel`` with ``requires_grad=False`` (as the official
    ``SRMConv2d_simple`` of SEP and SSP), so it appears in state dicts under that key.
    """

    def __init__(self, in_channels: int = 3, bank: str = "srm3", limit: float | None = 3.0,
                 learnable: bool = False) -> None:
        super().__init__()
        self.kernel = nn.Parameter(srm_kernel(in_channels, bank), requires_grad=learnable)
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.kernel.to(x.dtype), padding=2)
        return y if self.limit is None else F.hardtanh(y, -self.limit, self.limit)
