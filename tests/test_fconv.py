"""F-ConV / ConV: official flow key list, strict load, loss and score against hand computations, views."""

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from sep_bench.baselines.fconv import FlowModel, GlowCoupling, conv_score, fconv_loss, fconv_score
from sep_bench.detectors import get_detector
from sep_bench.weights import WeightsSource

TINY = {"arch": "vit_small_patch14_dinov2", "arch_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2},
        "crop_size": 28, "fc_internal": 16}


def _official_flow_keys(dim: int = 1024, internal: int = 4096) -> dict[str, tuple]:
    """``flow_model().state_dict()`` of junz-debug/ConV model.py (nf_head: input, permute_0, fc_0, permute_1, fc_1,
    output; keys only at the two couplings, indices 2 and 4; each F_fully_connected has fc1/fc2/fc2b/fc3 + bn)."""
    half = dim // 2
    out = {}
    for k in (2, 4):
        for s in ("s1", "s2"):
            p = f"nf.module_list.{k}.{s}"
            for name, shape in (("fc1", (internal, half)), ("fc2", (internal, internal)),
                                ("fc2b", (internal, internal)), ("fc3", (2 * half, internal))):
                out[f"{p}.{name}.weight"], out[f"{p}.{name}.bias"] = shape, (shape[0],)
            for b in ("weight", "bias", "running_mean", "running_var"):
                out[f"{p}.bn.{b}"] = (half,)
            out[f"{p}.bn.num_batches_tracked"] = ()
    return out


def test_flow_state_dict_is_the_official_key_list():
    sd = FlowModel(1024, 2, 4096).state_dict()
    official = _official_flow_keys()
    assert set(sd) == set(official) and len(sd) == 52
    assert all(tuple(sd[k].shape) == official[k] for k in official)


def test_permutation_is_numpy_legacy_seeded():
    flow = FlowModel(64, 2, 8)
    for k, idx in ((0, 1), (1, 3)):
        np.random.seed(k)
        assert torch.equal(flow.nf.module_list[idx].perm, torch.as_tensor(np.random.permutation(64)))


def test_coupling_matches_hand_computation_and_inverts():
    torch.manual_seed(0)
    c = GlowCoupling(6, 5, clamp=3.0).eval()
    x = torch.randn(4, 6)
    y, jac = c(x)
    x1, x2 = x[:, :3], x[:, 3:]
    r2 = c.s2(x2)
    s2 = 3 * 0.636 * torch.atan(r2[:, :3] / 3)
    y1 = torch.exp(s2) * x1 + r2[:, 3:]
    r1 = c.s1(y1)
    s1 = 3 * 0.636 * torch.atan(r1[:, :3] / 3)
    assert torch.allclose(y, torch.cat([y1, torch.exp(s1) * x2 + r1[:, 3:]], 1))
    assert torch.allclose(jac, s1.sum(1) + s2.sum(1))
    assert torch.allclose(c(y, rev=True)[0], x, atol=1e-5)


def test_loss_and_scores_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    z2 = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    jac = torch.tensor([0.5, 0.25])
    labels = torch.tensor([0, 1])
    shape, cons, total = fconv_loss(z1, z2, jac, jac, labels, margin=2000)
    # real: 0.5 - 0.5 = 0; fake: -4.5 - 0.25; mean over 2, / D=2, same for both views
    assert shape.item() == pytest.approx(((0.5 - 0.5) + (-4.5 - 0.25)) / 2 / 2)
    assert cons.item() == pytest.approx(0.0)  # real cos 1 -> 0; fake cos 0 -> not > 0.1
    assert total.item() == pytest.approx(shape.item())
    assert fconv_loss(z1, z2, jac, jac, labels, margin=1.0)[0].item() == pytest.approx((0.5 - 0.5) / 2 / 2)
    s = fconv_score(z1, z2)
    assert s[0].item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item() - 0.5)
    assert s[1].item() == pytest.approx(torch.sigmoid(torch.tensor(9.0)).item())
    f = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    assert conv_score(f, torch.tensor([[[2.0, 0.0], [2.0, 0.0]]])).item() == pytest.approx(0.5)


def test_tiny_fconv_forward_backward_and_official_load(tmp_path):
    spec = get_detector("fconv")
    cfg = spec.make_config(TINY)
    model = spec.build(cfg, WeightsSource.none())
    view = spec.views(cfg, True, True)
    imgs = [np.random.default_rng(i).integers(0, 256, (40, 36, 3), dtype=np.uint8) for i in range(4)]
    views = [view(im, np.random.default_rng(i)) for i, im in enumerate(imgs)]
    assert views[0]["image"].shape == views[0]["trans"].shape == (3, 28, 28)
    batch = {k: torch.stack([v[k] for v in views]) for k in views[0]}
    labels = torch.tensor([0, 1, 0, 1])
    out = model.train_forward(batch)
    assert out["logits"].shape == (4,) and torch.isfinite(out["logits"]).all()
    model.train_loss(out, labels).backward()
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("backbone.")]
    # official F_fully_connected.bn is never called (no gradient there, as upstream)
    assert all((p.grad is None) == (".bn." in n) for n, p in named)
    assert all(p.grad is None for p in model.backbone.parameters())
    # a checkpoint saved by srcs/F_ConV.py (flow_model.state_dict()) loads strictly into the flow
    sd = OrderedDict((k, torch.randn_like(v.float()).to(v.dtype)) for k, v in model.flow.state_dict().items())
    torch.save(sd, tmp_path / "flow.pth")
    spec.load_official(model, tmp_path / "flow.pth")
    assert torch.equal(model.flow.nf.module_list[2].s1.fc1.weight, sd["nf.module_list.2.s1.fc1.weight"])
    with pytest.raises(Exception):
        torch.save({"nf.module_list.2.s1.fc1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
        spec.load_official(model, tmp_path / "bad.pth")
    eval_view = spec.views(cfg, False, False)
    a, b = eval_view(imgs[0], np.random.default_rng(5)), eval_view(imgs[0], np.random.default_rng(5))
    assert torch.equal(a["trans"], b["trans"])  # deterministic for a given sample RNG (feature cache)
    model.eval()
    with torch.no_grad():
        assert model(batch).shape == (4,)


def test_conv_mode_views_and_score():
    spec = get_detector("fconv")
    cfg = spec.make_config({**TINY, "method": "conv", "conv_crops": 3})
    model = spec.build(cfg, WeightsSource.none()).eval()
    v = spec.views(cfg, False, False)(np.zeros((50, 40, 3), dtype=np.uint8) + 100, np.random.default_rng(0))
    assert v["image"].shape == (3, 3, 28, 28)
    with torch.no_grad():
        feats = model.forward_features({k: t[None] for k, t in v.items()})
    assert feats.shape == (1, 6, 32)
    assert json.dumps(cfg.model_dump())  # the config is JSON-recordable


def test_pretrained_position_embedding_is_dinov2s_interpolation(tmp_path):
    """DINOv2 (``interpolate_pos_encoding``) resamples the 37 x 37 embedding of the released weights on every
    forward: bicubic, ``antialias=False``, ``scale_factor = (16 + 0.1) / 37`` for a 224 px input. The backbone
    built from a native-size file must hold exactly that (timm's own loader resamples with antialiasing)."""
    import timm
    import torch.nn.functional as F

    kwargs = {"embed_dim": 32, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    native = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, **kwargs)
    native.pos_embed.data.normal_()
    assert native.pos_embed.shape == (1, 1 + 37 * 37, 32)
    torch.save(native.state_dict(), tmp_path / "dinov2_native.pth")
    spec = get_detector("fconv")
    cfg = spec.make_config({**TINY, "arch_kwargs": kwargs, "crop_size": 224})
    model = spec.build(cfg, WeightsSource("file", str(tmp_path / "dinov2_native.pth")))
    pe = native.pos_embed.detach()
    grid = pe[:, 1:].reshape(1, 37, 37, 32).permute(0, 3, 1, 2)
    patch = F.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic", antialias=False)
    expected = torch.cat([pe[:, :1], patch.permute(0, 2, 3, 1).reshape(1, 256, 32)], dim=1)
    assert torch.equal(model.backbone.pos_embed.detach(), expected)
    by_size = F.interpolate(grid, size=(16, 16), mode="bicubic", antialias=True)
    assert not torch.allclose(patch, by_size, atol=1e-3)  # the trap: timm's resampling is another function
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, native.blocks[0].attn.qkv.weight)
