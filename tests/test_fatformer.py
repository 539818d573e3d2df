"""FatFormer port: forward/backward contract, the official state-dict format, the adapter's DWT branch, the label
convention."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from sep_bench.detectors import get_detector
from sep_bench.weights import WeightsSource

MINI = {"arch": "tiny-vit-64", "crop_size": 128, "img_resolution": 128, "adapter_norm_groups": 32, "lga_heads": 4}

# The official model's state dict (Michel-liu/FatFormer models/clip_models.py CLIPModel, ViT-L/14,
# --num_vit_adapter 3 --num_context_embedding 8), generated from the official code while porting: 1116 keys.
OFFICIAL_PREFIX_COUNTS = {"clip_model": 545, "image_encoder": 395, "text_encoder": 148, "language_guided_alignment": 15,
                          "text_guided_interactor": 4, "norm1": 2, "linear1": 2, "linear2": 2, "norm2": 2,
                          "logit_scale": 1}
OFFICIAL_ADAPTER_BLOCKS = {"7", "15", "23"}
OFFICIAL_ADAPTER_KEYS = {  # under clip_model.visual.transformer.resblocks.<i>.forgery_aware_adapter.
    "dwt_norm.bias", "dwt_norm.weight", "dwt_transform.h0_col", "dwt_transform.h0_row", "dwt_transform.h1_col",
    "dwt_transform.h1_row", "first_conv_layer.bias", "first_conv_layer.weight", "freq_scale", "idwt_transform.g0_col",
    "idwt_transform.g0_row", "idwt_transform.g1_col", "idwt_transform.g1_row", "inter_band.in_proj_bias",
    "inter_band.in_proj_weight", "inter_band.out_proj.bias", "inter_band.out_proj.weight", "intra_band.in_proj_bias",
    "intra_band.in_proj_weight", "intra_band.out_proj.bias", "intra_band.out_proj.weight", "linear1.bias",
    "linear1.weight", "linear2.bias", "linear2.weight", "norm3.bias", "norm3.weight", "norm_inter.bias",
    "norm_inter.weight", "norm_intra.bias", "norm_intra.weight", "second_conv_layer.bias", "second_conv_layer.weight"}
OFFICIAL_SHAPES = {
    "language_guided_alignment.ctx": (8, 768),
    "language_guided_alignment.token_prefix": (2, 1, 768),
    "language_guided_alignment.token_suffix": (2, 68, 768),
    "clip_model.visual.transformer.resblocks.7.forgery_aware_adapter.first_conv_layer.weight": (64, 1024, 1),
    "clip_model.visual.transformer.resblocks.23.forgery_aware_adapter.intra_band.in_proj_weight": (3072, 1024),
    "image_encoder.proj": (1024, 768),
    "text_encoder.text_projection": (768, 768),
    "text_guided_interactor.in_proj_weight": (2304, 768),
    "linear1.weight": (3072, 768),
}


def build(**over):
    spec = get_detector("fatformer")
    cfg = spec.make_config({**MINI, **over})
    torch.manual_seed(0)
    return spec, cfg, spec.build(cfg, WeightsSource.none())


def test_forward_backward_every_trainable_param_gets_a_gradient():
    _, _, model = build()
    model.train()
    out = model({"image": torch.randn(2, 3, 128, 128)})
    assert out.shape == (2,) and torch.isfinite(out).all()
    model.loss(out, torch.tensor([0.0, 1.0])).backward()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum("forgery_aware_adapter" in n for n in names) > 0 and "language_guided_alignment.ctx" in names
    assert "clip_model.visual.conv1.weight" not in names and not any(".transformer.resblocks.0.attn" in n and
                                                                    "adapter" not in n for n in names)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n


def test_official_vit_l14_state_dict_keys():
    import open_clip

    from sep_bench.baselines.fatformer import FatFormer, FatFormerConfig

    with torch.device("meta"):
        model = FatFormer(open_clip.CLIP(**open_clip.get_model_config("ViT-L-14"), quick_gelu=True), FatFormerConfig())
    sd = model.state_dict()
    assert len(sd) == 1116
    assert dict(collections.Counter(k.split(".")[0] for k in sd)) == OFFICIAL_PREFIX_COUNTS
    adapters = [k for k in sd if k.startswith("clip_model.") and "forgery_aware_adapter" in k]
    assert {k.split(".")[4] for k in adapters} == OFFICIAL_ADAPTER_BLOCKS
    assert {k.split("forgery_aware_adapter.")[1] for k in adapters} == OFFICIAL_ADAPTER_KEYS
    for k, shape in OFFICIAL_SHAPES.items():
        assert tuple(sd[k].shape) == shape, k


def test_load_official_strict_and_label_convention(tmp_path):
    spec, _, model = build()
    torch.save({"model": model.state_dict()}, tmp_path / "fatformer.pth")   # the official ckpt['model'] wrapper
    _, _, other = build()
    with torch.no_grad():
        other.language_guided_alignment.ctx.add_(1.0)
    spec.load_official(other, tmp_path / "fatformer.pth")
    model.eval()
    other.eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        two = model.two_class_logits(x)
        # real = 0, fake = 1 as main.py's softmax(dim=1)[:, 1]: sigmoid(fake logit) is that probability
        assert torch.allclose(torch.sigmoid(other({"image": x})), two.softmax(dim=1)[:, 1], atol=1e-6)
    bad = model.state_dict()
    bad.pop("image_encoder.proj")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(Exception, match="image_encoder.proj"):
        spec.load_official(other, tmp_path / "bad.pth")


def test_state_dict_saves_with_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, model = build()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    model.load_state_dict(load_file(str(tmp_path / "m.safetensors")), strict=True)
    assert model.image_encoder is model.clip_model.visual and model.logit_scale is model.clip_model.logit_scale


def test_adapter_dwt_branch_matches_pywt():
    import pywt

    _, _, model = build()
    adapter = model.clip_model.visual.transformer.resblocks[0].forgery_aware_adapter
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    bands = adapter.dwt_bands(x.float()).double()                     # (B, C, 4, 4, 4)
    ca, (ch, cv, cd) = pywt.dwt2(x.numpy(), "haar", axes=(-2, -1))
    for i, ref in enumerate((ca, ch, cv, cd)):
        assert np.allclose(bands[:, :, i].numpy(), ref, atol=1e-5), i
    back = adapter.idwt_transform((bands[:, :, 0].float(), [bands[:, :, 1:].float()]))
    assert torch.allclose(back.double(), x, atol=1e-5)


def test_adapter_is_the_conv_branch_at_init():
    """freq_scale starts at 0, so the adapter output is 0.1 * conv2(relu(conv1(x))), computed here by hand."""
    _, _, model = build()
    adapter = model.clip_model.visual.transformer.resblocks[1].forgery_aware_adapter.eval()
    tokens = torch.randn(65, 2, 64)                                    # (1 + 8x8, B, D)
    with torch.no_grad():
        w1, b1 = adapter.first_conv_layer.weight[:, :, 0], adapter.first_conv_layer.bias
        w2, b2 = adapter.second_conv_layer.weight[:, :, 0], adapter.second_conv_layer.bias
        expected = 0.1 * (torch.relu(tokens @ w1.T + b1) @ w2.T + b2)
        assert torch.allclose(adapter(tokens), expected, atol=1e-5)
        adapter.freq_scale.fill_(1.0)
        out = adapter(tokens)
        assert torch.allclose(out[0], expected[0], atol=1e-5)          # the CLS token gets no frequency term
        assert not torch.allclose(out[1:], expected[1:], atol=1e-3)


def test_views_resize_square_and_imagenet_normalisation():
    spec, cfg, _ = build(img_resolution=144)
    img = np.full((100, 200, 3), 128, dtype=np.uint8)
    rng = np.random.default_rng(0)
    v = spec.views(cfg, False, False)(img, rng)["image"]
    assert v.shape == (3, 128, 128)
    assert torch.allclose(v[0], torch.full((128, 128), (128 / 255 - 0.485) / 0.229), atol=1e-5)
    t = spec.views(cfg, True, True)(img, np.random.default_rng(0))["image"]
    assert t.shape == (3, 128, 128)
