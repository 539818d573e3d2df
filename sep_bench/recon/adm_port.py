"""guided-diffusion (ADM) ``UNetModel`` checkpoints as diffusers ``UNet2DModel`` state dicts.

openai/guided-diffusion ``guided_diffusion/unet.py`` (MIT; read, no code copied) builds its UNet from numbered
``TimestepEmbedSequential`` containers; diffusers' ``UNet2DModel`` builds the same network from named blocks.
`AdmArch` holds the architecture flags that decide the key names and shapes (``--num_channels``, ``channel_mult``,
``--num_res_blocks``, ``--attention_resolutions``, ``--num_head_channels``, ``--resblock_updown``,
``--use_scale_shift_norm``, ``--learn_sigma``); `convert_adm_state_dict` maps every tensor of an ADM state dict
onto its ``UNet2DModel`` key and refuses a state dict with a missing, extra or wrongly shaped tensor:

guided-diffusion -> UNet2DModel:

- ``time_embed.0`` / ``.2`` -> ``time_embedding.linear_1`` / ``.linear_2``; ``input_blocks.0.0`` -> ``conv_in``;
  ``out.0`` / ``out.2`` -> ``conv_norm_out`` / ``conv_out``
- ``input_blocks.N.0`` (ResBlock) / ``.1`` (AttentionBlock) -> ``down_blocks.L.resnets.J`` / ``.attentions.J``;
  the level's down ResBlock ``input_blocks.N.0`` -> ``down_blocks.L.downsamplers.0`` (without
  ``--resblock_updown``: ``input_blocks.N.0.op`` -> ``down_blocks.L.downsamplers.0.conv``)
- ``middle_block.0`` / ``.1`` / ``.2`` -> ``mid_block.resnets.0`` / ``.attentions.0`` / ``.resnets.1``
- ``output_blocks.N.0`` / ``.1`` -> ``up_blocks.U.resnets.J`` / ``.attentions.J`` (U = 0 is the lowest resolution);
  the up ResBlock ``output_blocks.N.1`` or ``.2`` -> ``up_blocks.U.upsamplers.0`` (without ``--resblock_updown``:
  ``output_blocks.N.K.conv`` -> ``up_blocks.U.upsamplers.0.conv``)
- in a ResBlock: ``in_layers.0`` / ``in_layers.2`` -> ``norm1`` / ``conv1``, ``emb_layers.1`` -> ``time_emb_proj``,
  ``out_layers.0`` / ``out_layers.3`` -> ``norm2`` / ``conv2``, ``skip_connection`` (1x1 conv) -> ``conv_shortcut``
- in an AttentionBlock: ``norm`` -> ``group_norm``, ``qkv`` (conv1d) -> ``to_q`` / ``to_k`` / ``to_v`` (Linear),
  ``proj_out`` (conv1d, kernel 1) -> ``to_out.0`` (Linear)

The fused ``qkv`` of ``QKVAttentionLegacy`` (``use_new_attention_order=False``, what the released checkpoints use)
orders its 3C output rows head by head, each head as [q, k, v] of ``num_head_channels`` rows: the weight is
reshaped to (heads, 3, head_dim, C) and part 0/1/2 of every head, stacked head-major, is ``to_q``/``to_k``/``to_v``
(diffusers splits heads of a C-wide projection head-major too). Its 1/sqrt(sqrt(d)) scale on q and k equals
diffusers' 1/sqrt(d) on q.k. Everything else is a rename (conv1d kernel-1 weights lose their last axis).

The two networks agree up to float rounding (checked against the official code on a tiny random model) when the
``UNet2DModel`` config is `AdmArch.unet_config`'s: ``ResnetDownsampleBlock2D``/``ResnetUpsampleBlock2D`` and
``downsample_type``/``upsample_type="resnet"`` for ``--resblock_updown``, attention blocks at the levels whose
downsampling factor is in ``image_size // attention_resolutions``, ``attention_head_dim = num_head_channels``,
``resnet_time_scale_shift="scale_shift"``, ``attn_norm_num_groups`` set (ADM's middle attention has a GroupNorm),
``flip_sin_to_cos=True, freq_shift=0`` (ADM's timestep embedding is [cos, sin]).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["AdmArch", "AdmCheckpointError", "adm_state_dict_shapes", "convert_adm_state_dict"]

_Transform = Callable[[torch.Tensor], torch.Tensor]
#: guided-diffusion script_util.create_model's channel_mult for each image size
_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


class AdmCheckpointError(ValueError):
    """A state dict that is not the guided-diffusion UNetModel of the expected architecture."""


@dataclass(frozen=True)
class AdmArch:
    """The flags of a guided-diffusion ``UNetModel`` that decide its state dict's keys and shapes."""

    num_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_levels: tuple[int, ...]  # levels (0 = full resolution) that have attention blocks
    num_head_channels: int
    resblock_updown: bool = True
    use_scale_shift_norm: bool = True
    in_channels: int = 3
    out_channels: int = 6              # 3, or 6 with --learn_sigma (eps and the variance interpolation)

    def __post_init__(self) -> None:
        if any(not float(m).is_integer() or m < 1 for m in self.channel_mult) or self.channel_mult[0] != 1:
            raise ValueError(f"channel_mult {self.channel_mult}: only integer multipliers starting at 1 map to "
                             "UNet2DModel (its time embedding width follows block_out_channels[0])")
        bad = [w for lvl, w in enumerate(self.widths)
               if (lvl in self.attention_levels or lvl == len(self.widths) - 1) and w % self.num_head_channels]
        if bad or not set(self.attention_levels) <= set(range(len(self.channel_mult))):
            raise ValueError(f"attention levels {self.attention_levels} / head channels {self.num_head_channels} "
                             f"do not fit the widths {self.widths}")

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(m * self.num_channels) for m in self.channel_mult)

    @classmethod
    def from_flags(cls, *, image_size: int, num_channels: int, num_res_blocks: int,
                   attention_resolutions: str | tuple[int, ...], num_head_channels: int,
                   channel_mult: tuple[int, ...] | None = None, resblock_updown: bool = True,
                   use_scale_shift_norm: bool = True, learn_sigma: bool = True, in_channels: int = 3) -> "AdmArch":
        """The architecture guided-diffusion's ``create_model`` builds from its command-line flags."""
        mult = tuple(channel_mult) if channel_mult is not None else _CHANNEL_MULT[image_size]
        res = [int(r) for r in attention_resolutions.split(",")] if isinstance(attention_resolutions, str) \
            else [int(r) for r in attention_resolutions]
        ds = {image_size // r for r in res}
        levels = tuple(lvl for lvl in range(len(mult)) if 2 ** lvl in ds)
        return cls(num_channels, mult, num_res_blocks, levels, num_head_channels, resblock_updown,
                   use_scale_shift_norm, in_channels, 2 * in_channels if learn_sigma else in_channels)

    def unet_config(self, sample_size: int, norm_num_groups: int = 32) -> dict[str, Any]:
        """``UNet2DModel`` keyword arguments of this architecture (``norm_num_groups``: ADM uses 32)."""
        n = len(self.widths)
        plain_down, plain_up = (("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if self.resblock_updown
                                else ("DownBlock2D", "UpBlock2D"))
        return {
            "sample_size": sample_size, "in_channels": self.in_channels, "out_channels": self.out_channels,
            "block_out_channels": self.widths, "layers_per_block": self.num_res_blocks,
            "down_block_types": tuple("AttnDownBlock2D" if lvl in self.attention_levels else plain_down
                                      for lvl in range(n)),
            "up_block_types": tuple("AttnUpBlock2D" if lvl in self.attention_levels else plain_up
                                    for lvl in reversed(range(n))),
            "attention_head_dim": self.num_head_channels, "norm_num_groups": norm_num_groups,
            "attn_norm_num_groups": norm_num_groups,
            "resnet_time_scale_shift": "scale_shift" if self.use_scale_shift_norm else "default",
            "downsample_type": "resnet" if self.resblock_updown else "conv",
            "upsample_type": "resnet" if self.resblock_updown else "conv",
            "flip_sin_to_cos": True, "freq_shift": 0,
        }

    @classmethod
    def from_unet_config(cls, config: Mapping[str, Any]) -> "AdmArch":
        """The ADM architecture a ``UNet2DModel`` config expresses; ValueError naming what no ADM UNet has."""
        from diffusers import UNet2DModel

        defaults = {k: p.default for k, p in inspect.signature(UNet2DModel.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        c = {**defaults, **{k: v for k, v in config.items() if k in defaults}}
        widths = tuple(c["block_out_channels"])
        down, up = tuple(c["down_block_types"]), tuple(c["up_block_types"])
        updown = c["downsample_type"] == "resnet"
        plain_down, plain_up = (("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if updown
                                else ("DownBlock2D", "UpBlock2D"))
        levels = tuple(i for i, t in enumerate(down) if t == "AttnDownBlock2D")
        problems = [f"{k}={c[k]!r} (ADM: {v!r})" for k, v in (
            ("flip_sin_to_cos", True), ("freq_shift", 0), ("time_embedding_type", "positional"),
            ("center_input_sample", False), ("mid_block_type", "UNetMidBlock2D"), ("add_attention", True),
            ("class_embed_type", None), ("num_class_embeds", None), ("act_fn", "silu"), ("mid_block_scale_factor", 1),
            ("upsample_type", c["downsample_type"])) if c[k] != v]
        if c["downsample_type"] not in ("resnet", "conv"):
            problems.append(f"downsample_type={c['downsample_type']!r} (ADM: 'resnet' or 'conv')")
        if c["time_embedding_dim"] not in (None, 4 * widths[0]):
            problems.append(f"time_embedding_dim={c['time_embedding_dim']} (ADM: 4 * {widths[0]})")
        if c["attn_norm_num_groups"] is None and c["resnet_time_scale_shift"] != "default":
            problems.append("attn_norm_num_groups=None (ADM's middle attention block has a GroupNorm)")
        if c["resnet_time_scale_shift"] not in ("scale_shift", "default"):
            problems.append(f"resnet_time_scale_shift={c['resnet_time_scale_shift']!r}")
        if any(t not in ("AttnDownBlock2D", plain_down) for t in down):
            problems.append(f"down_block_types={down} (ADM: AttnDownBlock2D / {plain_down})")
        want_up = tuple("AttnUpBlock2D" if t == "AttnDownBlock2D" else plain_up for t in reversed(down))
        if up != want_up:
            problems.append(f"up_block_types={up} (ADM mirrors the down path: {want_up})")
        if any(w % widths[0] for w in widths) or len(widths) != len(down):
            problems.append(f"block_out_channels={widths}")
        if c["attention_head_dim"] is None:
            problems.append("attention_head_dim=None (ADM: num_head_channels)")
        if problems:
            raise ValueError("not a guided-diffusion ADM UNet config: " + "; ".join(problems))
        return cls(widths[0], tuple(w // widths[0] for w in widths), c["layers_per_block"], levels,
                   c["attention_head_dim"], updown, c["resnet_time_scale_shift"] == "scale_shift",
                   c["in_channels"], c["out_channels"])


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _conv1d_to_linear(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], t.shape[1])


def _qkv_part(heads: int, part: int) -> _Transform:
    """Rows of q (part 0), k (1) or v (2) from a legacy fused qkv weight (3C, C, 1) or bias (3C,)."""
    def take(t: torch.Tensor) -> torch.Tensor:
        c = t.shape[0] // 3
        rest = tuple(t.shape[1:2])  # (C,) for the weight (its kernel axis dropped), () for the bias
        return t.reshape(heads, 3, c // heads, *rest)[:, part].reshape(c, *rest)
    return take


_Plan = dict[str, tuple[tuple[int, ...], tuple[tuple[str, _Transform], ...]]]


def _plan(a: AdmArch) -> _Plan:
    """ADM key -> (its shape, the UNet2DModel keys it becomes with their transforms), in ADM's build order."""
    plan: _Plan = {}
    temb = 4 * a.num_channels

    def add(key: str, shape: tuple[int, ...], *targets: tuple[str, _Transform]) -> None:
        plan[key] = (shape, targets)

    def conv(adm: str, dif: str, cin: int, cout: int, k: int) -> None:
        add(f"{adm}.weight", (cout, cin, k, k), (f"{dif}.weight", _same))
        add(f"{adm}.bias", (cout,), (f"{dif}.bias", _same))

    def linear(adm: str, dif: str, cin: int, cout: int) -> None:
        add(f"{adm}.weight", (cout, cin), (f"{dif}.weight", _same))
        add(f"{adm}.bias", (cout,), (f"{dif}.bias", _same))

    def norm(adm: str, dif: str, c: int) -> None:
        add(f"{adm}.weight", (c,), (f"{dif}.weight", _same))
        add(f"{adm}.bias", (c,), (f"{dif}.bias", _same))

    def resblock(adm: str, dif: str, cin: int, cout: int) -> None:
        norm(f"{adm}.in_layers.0", f"{dif}.norm1", cin)
        conv(f"{adm}.in_layers.2", f"{dif}.conv1", cin, cout, 3)
        linear(f"{adm}.emb_layers.1", f"{dif}.time_emb_proj", temb, 2 * cout if a.use_scale_shift_norm else cout)
        norm(f"{adm}.out_layers.0", f"{dif}.norm2", cout)
        conv(f"{adm}.out_layers.3", f"{dif}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{adm}.skip_connection", f"{dif}.conv_shortcut", cin, cout, 1)

    def attention(adm: str, dif: str, c: int) -> None:
        heads = c // a.num_head_channels
        norm(f"{adm}.norm", f"{dif}.group_norm", c)
        add(f"{adm}.qkv.weight", (3 * c, c, 1), *((f"{dif}.to_{n}.weight", _qkv_part(heads, i))
                                                   for i, n in enumerate("qkv")))
        add(f"{adm}.qkv.bias", (3 * c,), *((f"{dif}.to_{n}.bias", _qkv_part(heads, i)) for i, n in enumerate("qkv")))
        add(f"{adm}.proj_out.weight", (c, c, 1), (f"{dif}.to_out.0.weight", _conv1d_to_linear))
        add(f"{adm}.proj_out.bias", (c,), (f"{dif}.to_out.0.bias", _same))

    widths, last = a.widths, len(a.widths) - 1
    linear("time_embed.0", "time_embedding.linear_1", a.num_channels, temb)
    linear("time_embed.2", "time_embedding.linear_2", temb, temb)
    ch = widths[0]
    conv("input_blocks.0.0", "conv_in", a.in_channels, ch, 3)
    skips, n = [ch], 1
    for lvl, width in enumerate(widths):
        for j in range(a.num_res_blocks):
            resblock(f"input_blocks.{n}.0", f"down_blocks.{lvl}.resnets.{j}", ch, width)
            ch = width
            if lvl in a.attention_levels:
                attention(f"input_blocks.{n}.1", f"down_blocks.{lvl}.attentions.{j}", ch)
            skips.append(ch)
            n += 1
        if lvl != last:
            if a.resblock_updown:
                resblock(f"input_blocks.{n}.0", f"down_blocks.{lvl}.downsamplers.0", ch, ch)
            else:
                conv(f"input_blocks.{n}.0.op", f"down_blocks.{lvl}.downsamplers.0.conv", ch, ch, 3)
            skips.append(ch)
            n += 1
    resblock("middle_block.0", "mid_block.resnets.0", ch, ch)
    attention("middle_block.1", "mid_block.attentions.0", ch)
    resblock("middle_block.2", "mid_block.resnets.1", ch, ch)
    n = 0
    for u, lvl in enumerate(reversed(range(len(widths)))):
        for j in range(a.num_res_blocks + 1):
            resblock(f"output_blocks.{n}.0", f"up_blocks.{u}.resnets.{j}", ch + skips.pop(), widths[lvl])
            ch, sub = widths[lvl], 1
            if lvl in a.attention_levels:
                attention(f"output_blocks.{n}.1", f"up_blocks.{u}.attentions.{j}", ch)
                sub = 2
            if lvl and j == a.num_res_blocks:
                if a.resblock_updown:
                    resblock(f"output_blocks.{n}.{sub}", f"up_blocks.{u}.upsamplers.0", ch, ch)
                else:
                    conv(f"output_blocks.{n}.{sub}.conv", f"up_blocks.{u}.upsamplers.0.conv", ch, ch, 3)
            n += 1
    norm("out.0", "conv_norm_out", ch)
    conv("out.2", "conv_out", widths[0], a.out_channels, 3)
    return plan


def adm_state_dict_shapes(arch: AdmArch) -> dict[str, tuple[int, ...]]:
    """Every key of the guided-diffusion ``UNetModel`` state dict of `arch`, with its shape."""
    return {k: shape for k, (shape, _) in _plan(arch).items()}


def _names(keys: list[str], limit: int = 12) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)}: " + ", ".join(keys[:limit]) + more


def convert_adm_state_dict(state_dict: Mapping[str, torch.Tensor], arch: AdmArch) -> dict[str, torch.Tensor]:
    """A guided-diffusion ``UNetModel`` state dict of `arch` as a ``UNet2DModel`` state dict (tensors not copied
    where a rename suffices; dtypes kept). AdmCheckpointError names every missing, unexpected or misshapen key."""
    plan = _plan(arch)
    missing = [k for k in plan if k not in state_dict]
    extra = [k for k in state_dict if k not in plan]
    shapes = [f"{k} {tuple(state_dict[k].shape)} (expected {plan[k][0]})" for k in plan
              if k in state_dict and tuple(state_dict[k].shape) != plan[k][0]]
    if missing or extra or shapes:
        parts = ([f"missing keys ({_names(missing)})"] if missing else []) + \
                ([f"unexpected keys ({_names(extra)})"] if extra else []) + \
                ([f"wrong shapes ({_names(shapes)})"] if shapes else [])
        raise AdmCheckpointError(f"not the guided-diffusion UNetModel of {arch}: " + "; ".join(parts))
    return {dk: fn(state_dict[k]).contiguous() for k, (_, targets) in plan.items() for dk, fn in targets}
