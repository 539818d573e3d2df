"""SAPM, the spatial branch of SEP: fixed SRM filters ``srm`` and the SRM-guided bidirectional cross-spatial
attention GBCSA ``spalAtten``.

Independent re-implementation of 1112348/SEP-for-AIGCDetection ``models/model.py`` (``SRMConv2d_simple``,
``MultiHeadBidirectionalCrossSpatialAttention_srm``; no licence in that repository, no code copied). Module and
parameter names are the official ones, so these official state-dict keys load unchanged:

- ``srm.kernel`` (3, 3, 5, 5): a ``Parameter`` with ``requires_grad=False`` (`sep_bench.layers.srm.SRMConv2d`);
- ``spalAtten.{q_conv_h, k_conv_w, v_conv_w, q_conv_w, k_conv_h, v_conv_h}.weight`` (C, C, 1, 1), no bias;
- ``spalAtten.q_conv_h_srm.{0,2}.weight``, ``spalAtten.q_conv_w_srm.{0,2}.weight`` (C, C, 1, 1): Sequential
  Conv-ReLU-Conv-ReLU, no bias;
- ``spalAtten.projection.0.weight`` (C, 2C, 1, 1) and ``spalAtten.projection.1.*`` (BatchNorm2d(C)): Sequential
  Conv-BN-ReLU.

GBCSA on a patch x (B, C, H, W) with SRM residual r (official C = 3 channels, 3 heads of dimension 1):
``gap_h = mean_H(x)`` (B, C, 1, W), ``gap_w = mean_W(x)`` (B, C, H, 1).
H -> W: ``Q = q_conv_h(gap_h) * (1 + q_conv_h_srm(mean_H(r)))``, ``K, V = k_conv_w(gap_w), v_conv_w(gap_w)``;
per head ``softmax(Q K^T / sqrt(d))`` (W x H) times V gives a (B, C, 1, W) row broadcast over H.
W -> H symmetric (``q_conv_w``, ``q_conv_w_srm``, ``k_conv_h``, ``v_conv_h``) gives a (B, C, H, 1) column
broadcast over W. ``w = projection(cat(out_HW, out_WH))``; output ``x + w * x``.
``guide=False`` (the ``srm_guide`` ablation) drops the ``(1 + ...)`` factors and their modules.
"""

from __future__ import annotations

import torch
from torch import nn

from sep_bench.layers.srm import SRMConv2d, srm_kernel  # the shared SRM bank (re-exported for SEP)

__all__ = ["srm_kernel", "SRMConv2d", "GBCSA"]


def _conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)


def _guide(c: int) -> nn.Sequential:
    return nn.Sequential(_conv1x1(c, c), nn.ReLU(), _conv1x1(c, c), nn.ReLU())


class GBCSA(nn.Module):
    """SRM-guided bidirectional cross-spatial attention (official attribute ``spalAtten``).

    Args:
        channels: channels of the patch (official 3).
        num_heads: attention heads; must divide `channels` (official 3, so the head dimension is 1).
        guide: SRM guidance of the queries (official True; False is the ``srm_guide`` ablation).

    ``forward(x, srm)`` takes the patch (B, C, H, W) and its SRM residual of the same shape (None when
    ``guide=False``) and returns (B, C, H, W).
    """

    def __init__(self, channels: int = 3, num_heads: int = 3, guide: bool = True) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels={channels} is not divisible by num_heads={num_heads}")
        self.channels = channels
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.guide = guide
        self.q_conv_h = _conv1x1(channels, channels)
        self.k_conv_w = _conv1x1(channels, channels)
        self.v_conv_w = _conv1x1(channels, channels)
        self.q_conv_w = _conv1x1(channels, channels)
        self.k_conv_h = _conv1x1(channels, channels)
        self.v_conv_h = _conv1x1(channels, channels)
        if guide:
            self.q_conv_h_srm = _guide(channels)
            self.q_conv_w_srm = _guide(channels)
        self.projection = nn.Sequential(_conv1x1(2 * channels, channels), nn.BatchNorm2d(channels), nn.ReLU())

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, 1, L) or (B, C, L, 1) -> (B, heads, L, head_dim)."""
        b, c = t.shape[:2]
        return t.reshape(b, self.num_heads, self.head_dim, -1).transpose(2, 3)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Per head softmax(q k^T / sqrt(d)) v; returns (B, C, L_q)."""
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        attn = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim**0.5, dim=-1)
        out = attn @ v  # (B, heads, L_q, head_dim)
        return out.transpose(2, 3).reshape(q.shape[0], self.channels, -1)

    def forward(self, x: torch.Tensor, srm: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        gap_h = x.mean(dim=2, keepdim=True)  # (B, C, 1, W)
        gap_w = x.mean(dim=3, keepdim=True)  # (B, C, H, 1)
        q_h = self.q_conv_h(gap_h)
        q_w = self.q_conv_w(gap_w)
        if self.guide:
            if srm is None:
                raise ValueError("GBCSA with guide=True needs the SRM residual")
            q_h = q_h * (1 + self.q_conv_h_srm(srm.mean(dim=2, keepdim=True)))
            q_w = q_w * (1 + self.q_conv_w_srm(srm.mean(dim=3, keepdim=True)))
        out_hw = self._attend(q_h, self.k_conv_w(gap_w), self.v_conv_w(gap_w)).view(b, c, 1, w).expand(b, c, h, w)
        out_wh = self._attend(q_w, self.k_conv_h(gap_h), self.v_conv_h(gap_h)).view(b, c, h, 1).expand(b, c, h, w)
        weight = self.projection(torch.cat([out_hw, out_wh], dim=1))
        return x + weight * x
