"""guided-diffusion ADM checkpoints as diffusers UNet2DModel: key map, legacy qkv split, loading, refusals.

The official code is not needed: the guided-diffusion key names and shapes are generated here from ADM's build
rules (``guided_diffusion/unet.py`` ``UNetModel.__init__``), independently of `sep_bench.recon.adm_port`. The
numerical parity against the official UNetModel (max |diff| ~3e-6 in float32) was checked while developing.
"""

import math

import pytest
import torch

from sep_bench.recon.adm_port import AdmArch, AdmCheckpointError, adm_state_dict_shapes, convert_adm_state_dict
from sep_bench.recon.models import ADM_256_UNCOND, TINY_UNET, load_adm_unet

DIRE_FLAGS = dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
                  num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True)
TINY = AdmArch.from_unet_config(TINY_UNET)


def official_shapes(nc, mult, nrb, attn_ds, updown=True, scale_shift=True, cin=3, cout=6):
    """guided-diffusion UNetModel state dict keys -> shapes, following its __init__ (numbered containers)."""
    out, temb = {}, 4 * nc

    def wb(name, w, b):
        out[f"{name}.weight"], out[f"{name}.bias"] = w, b

    def res(p, i, o):
        wb(f"{p}.in_layers.0", (i,), (i,))
        wb(f"{p}.in_layers.2", (o, i, 3, 3), (o,))
        wb(f"{p}.emb_layers.1", ((2 if scale_shift else 1) * o, temb), ((2 if scale_shift else 1) * o,))
        wb(f"{p}.out_layers.0", (o,), (o,))
        wb(f"{p}.out_layers.3", (o, o, 3, 3), (o,))
        if i != o:
            wb(f"{p}.skip_connection", (o, i, 1, 1), (o,))

    def attn(p, c):
        wb(f"{p}.norm", (c,), (c,))
        wb(f"{p}.qkv", (3 * c, c, 1), (3 * c,))
        wb(f"{p}.proj_out", (c, c, 1), (c,))

    wb("time_embed.0", (temb, nc), (temb,))
    wb("time_embed.2", (temb, temb), (temb,))
    ch = nc * mult[0]
    wb("input_blocks.0.0", (ch, cin, 3, 3), (ch,))
    chans, ds, n = [ch], 1, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            res(f"input_blocks.{n}.0", ch, m * nc)
            ch = m * nc
            if ds in attn_ds:
                attn(f"input_blocks.{n}.1", ch)
            chans.append(ch)
            n += 1
        if level != len(mult) - 1:
            res(f"input_blocks.{n}.0", ch, ch) if updown else wb(f"input_blocks.{n}.0.op", (ch, ch, 3, 3), (ch,))
            chans.append(ch)
            ds, n = ds * 2, n + 1
    res("middle_block.0", ch, ch)
    attn("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    n = 0
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(nrb + 1):
            res(f"output_blocks.{n}.0", ch + chans.pop(), m * nc)
            ch, k = m * nc, 1
            if ds in attn_ds:
                attn(f"output_blocks.{n}.1", ch)
                k = 2
            if level and i == nrb:
                res(f"output_blocks.{n}.{k}", ch, ch) if updown else wb(f"output_blocks.{n}.{k}.conv", (ch, ch, 3, 3),
                                                                          (ch,))
                ds //= 2
            n += 1
    wb("out.0", (ch,), (ch,))
    wb("out.2", (cout, nc * mult[0], 3, 3), (cout,))
    return out


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) / math.sqrt(math.prod(s[1:]) or 1) for k, s in shapes.items()}


def tiny_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(**TINY_UNET).eval()


def test_adm_256_uncond_config_is_dires_guided_diffusion_model():
    arch = AdmArch.from_flags(**DIRE_FLAGS)
    assert arch == AdmArch.from_unet_config(ADM_256_UNCOND)
    assert arch.unet_config(256) == {k: v for k, v in ADM_256_UNCOND.items() if k != "dropout"}
    assert arch.attention_levels == (3, 4, 5) and arch.widths == (256, 256, 512, 512, 1024, 1024)
    shapes = adm_state_dict_shapes(arch)
    assert shapes == official_shapes(256, (1, 1, 2, 2, 4, 4), 2, {8, 16, 32})
    # the official model (built on the meta device from guided-diffusion's code while developing): 566 tensors,
    # 552,814,086 parameters; UNet2DModel(**ADM_256_UNCOND) has exactly as many
    assert len(shapes) == 566 and sum(math.prod(s) for s in shapes.values()) == 552_814_086
    from diffusers import UNet2DModel

    with torch.device("meta"):
        unet = UNet2DModel(**ADM_256_UNCOND)
    assert sum(p.numel() for p in unet.parameters()) == 552_814_086
    converted = convert_adm_state_dict({k: torch.empty(s, device="meta") for k, s in shapes.items()}, arch)
    unet.load_state_dict(converted, strict=True, assign=True)  # every key, every shape


def test_tiny_unet_is_the_adm_code_path_with_resnet_up_down():
    assert TINY.resblock_updown and TINY.use_scale_shift_norm and TINY.attention_levels == (1,)
    assert TINY_UNET["down_block_types"] == ("ResnetDownsampleBlock2D", "AttnDownBlock2D")
    assert TINY_UNET["up_block_types"] == ("AttnUpBlock2D", "ResnetUpsampleBlock2D")
    with pytest.raises(ValueError, match="down_block_types"):  # conv down blocks with resnet downsampling
        AdmArch.from_unet_config({**TINY_UNET, "down_block_types": ("DownBlock2D", "AttnDownBlock2D")})
    with pytest.raises(ValueError, match="attn_norm_num_groups"):  # ADM's middle attention has a GroupNorm
        AdmArch.from_unet_config({**TINY_UNET, "attn_norm_num_groups": None})
    with pytest.raises(ValueError, match="flip_sin_to_cos"):
        AdmArch.from_unet_config({**TINY_UNET, "flip_sin_to_cos": False})


@pytest.mark.parametrize("variant", [{}, {"updown": False, "scale_shift": False}])
def test_official_keys_convert_and_load_strictly(variant):
    from diffusers import UNet2DModel

    arch = AdmArch(8, (1, 2), 1, (1,), 8, variant.get("updown", True), variant.get("scale_shift", True))
    shapes = official_shapes(8, (1, 2), 1, {2}, **variant)
    assert adm_state_dict_shapes(arch) == shapes
    state = random_state(shapes)
    unet = UNet2DModel(**arch.unet_config(32, norm_num_groups=4)).eval()
    converted = convert_adm_state_dict(state, arch)
    unet.load_state_dict(converted, strict=True)
    assert torch.equal(unet.conv_in.weight, state["input_blocks.0.0.weight"])
    assert torch.equal(unet.conv_out.weight, state["out.2.weight"])
    assert torch.equal(unet.time_embedding.linear_2.weight, state["time_embed.2.weight"])
    down = unet.down_blocks[0].downsamplers[0]
    up = unet.up_blocks[0].upsamplers[0]
    if arch.resblock_updown:  # the down/up-sampling ResBlocks
        assert torch.equal(down.conv1.weight, state["input_blocks.2.0.in_layers.2.weight"])
        assert torch.equal(up.time_emb_proj.weight, state["output_blocks.1.2.emb_layers.1.weight"])
    else:
        assert torch.equal(down.conv.weight, state["input_blocks.2.0.op.weight"])
        assert torch.equal(up.conv.weight, state["output_blocks.1.2.conv.weight"])
    assert torch.equal(unet.up_blocks[1].resnets[0].conv_shortcut.weight,
                       state["output_blocks.2.0.skip_connection.weight"])
    assert torch.equal(unet.mid_block.attentions[0].group_norm.weight, state["middle_block.1.norm.weight"])
    assert torch.equal(unet.mid_block.attentions[0].to_out[0].weight, state["middle_block.1.proj_out.weight"][..., 0])
    with torch.no_grad():
        out = unet(torch.randn(2, 3, 32, 32), torch.tensor([10, 500])).sample
    assert out.shape == (2, 6, 32, 32) and torch.isfinite(out).all()


def test_legacy_qkv_is_split_per_head_into_q_k_v():
    shapes = adm_state_dict_shapes(TINY)
    state = {k: torch.zeros(s) for k, s in shapes.items()}
    c, d = 16, 8  # level-1 width, head dim -> 2 heads
    heads = c // d
    h, p, r, col = torch.meshgrid(torch.arange(heads), torch.arange(3), torch.arange(d), torch.arange(c),
                                  indexing="ij")
    code = 1000 * h + 100 * p + r + col / 100  # fused row (h * 3 + p) * d + r encodes (head, q/k/v, row)
    state["input_blocks.3.1.qkv.weight"] = code.reshape(3 * c, c, 1).float()
    state["input_blocks.3.1.qkv.bias"] = code[..., 0].reshape(3 * c).float()
    state["input_blocks.3.1.proj_out.weight"] = torch.arange(c * c).reshape(c, c, 1).float()
    out = convert_adm_state_dict(state, TINY)
    attn = "down_blocks.1.attentions.0"
    for part, name in enumerate("qkv"):
        w, b = out[f"{attn}.to_{name}.weight"], out[f"{attn}.to_{name}.bias"]
        assert w.shape == (c, c) and b.shape == (c,)
        for head in range(heads):
            for row in range(d):
                want = 1000 * head + 100 * part + row
                assert b[head * d + row] == want
                assert torch.allclose(w[head * d + row], want + torch.arange(c) / 100)
    assert torch.equal(out[f"{attn}.to_out.0.weight"], torch.arange(c * c).reshape(c, c).float())


def test_pt_file_loads_via_load_adm_unet(tmp_path):
    state = random_state(official_shapes(8, (1, 2), 1, {2}), seed=1)
    torch.save(state, tmp_path / "adm.pt")
    unet = load_adm_unet(tmp_path / "adm.pt", arch=TINY_UNET)
    ref = tiny_unet()
    ref.load_state_dict(convert_adm_state_dict(state, TINY), strict=True)
    assert all(not t.is_meta and t.dtype == torch.float32 for t in unet.state_dict().values())
    assert torch.equal(unet.down_blocks[1].attentions[0].to_k.weight, ref.down_blocks[1].attentions[0].to_k.weight)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.equal(unet.eval()(x, t).sample, ref(x, t).sample)
    # a diffusers-format folder of the same architecture still loads; another architecture is refused
    ref.save_pretrained(tmp_path / "folder")
    assert torch.equal(load_adm_unet(str(tmp_path / "folder"), arch=TINY_UNET).conv_in.weight, ref.conv_in.weight)
    with pytest.raises(ValueError, match="not the expected ADM UNet"):
        load_adm_unet(str(tmp_path / "folder"))


def test_checkpoint_with_missing_extra_or_misshapen_keys_is_refused_by_name(tmp_path):
    state = random_state(official_shapes(8, (1, 2), 1, {2}))
    del state["middle_block.1.qkv.bias"]
    state["label_emb.weight"] = torch.zeros(10, 32)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(AdmCheckpointError) as err:
        load_adm_unet(tmp_path / "bad.pt", arch=TINY_UNET)
    assert "missing keys (1: middle_block.1.qkv.bias)" in str(err.value)
    assert "unexpected keys (1: label_emb.weight)" in str(err.value)
    shapes = official_shapes(8, (1, 2), 1, {2})
    state = random_state(shapes)
    state["out.2.weight"] = torch.zeros(3, 8, 3, 3)  # learn_sigma False checkpoint
    with pytest.raises(AdmCheckpointError, match=r"wrong shapes \(1: out.2.weight \(3, 8, 3, 3\) "
                                                 r"\(expected \(6, 8, 3, 3\)\)\)"):
        convert_adm_state_dict(state, TINY)
    with pytest.raises(AdmCheckpointError, match="missing keys"):  # the real ADM-256 wants all of its 566 tensors
        load_adm_unet(tmp_path / "bad.pt")
    torch.save({"model": state}, tmp_path / "wrapped.pt")  # unwrapped like every checkpoint (weights.load_state_dict)
    with pytest.raises(AdmCheckpointError, match="wrong shapes"):
        load_adm_unet(tmp_path / "wrapped.pt", arch=TINY_UNET)
    torch.save({"step": 3, "ema_rate": "0.9999"}, tmp_path / "not_weights.pt")
    with pytest.raises(AdmCheckpointError, match="not a guided-diffusion UNetModel state dict"):
        load_adm_unet(tmp_path / "not_weights.pt", arch=TINY_UNET)
