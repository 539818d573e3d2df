"""SEP: shapes, gradients, ablations, official-checkpoint loading against an independent functional forward, views."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sep_bench.detectors import get_detector
from sep_bench.layers.eps import select_patch
from sep_bench.baselines.sep import AI, NATURE, SEP, SEPConfig, SPEC, _load_official, _views
from sep_bench.weights import WeightsFileError, WeightsSource, parse_pretrained
from tests.hubcache import cache_file, use_cache

SMALL = dict(classifier_size=64, backbone="resnet18", dwt_size=64, train_candidates=16, eval_candidates=32)


def _img(seed: int, h: int = 90, w: int = 100) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _batch(cfg: SEPConfig, n: int = 2, train: bool = False) -> dict[str, torch.Tensor]:
    view = _views(cfg, train, False)
    items = [view(_img(i), np.random.default_rng(i)) for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _varied_img(i: int, h: int = 80, w: int = 70) -> np.ndarray:
    """Images that differ in content and spectrum (i.i.d. noise images all look alike after pooling)."""
    yy, xx = np.mgrid[:h, :w]
    wave = 127 * np.sin(2 * np.pi * (xx * (i + 1) / 17 + yy * (3 - i) / 23))[..., None] * np.array([1.0, 0.5 + 0.2 * i, 1 - 0.2 * i])
    noise = np.random.default_rng(i).normal(0, 8 * i, (h, w, 3))
    return np.clip(128 + wave + noise, 0, 255).astype(np.uint8)


def _normalised(patch: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float() / 255
    return (t - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def _build(**kw) -> SEP:
    torch.manual_seed(0)
    return SPEC.build(SEPConfig(**{**SMALL, **kw}), WeightsSource.none())


def test_registered_with_official_defaults():
    assert get_detector("sep") is SPEC
    cfg = SPEC.make_config({})
    assert (cfg.classifier_size, cfg.backbone, cfg.patch_size, cfg.train_candidates, cfg.eval_candidates, cfg.dwt_size) == (
        512, "resnet50", 32, 64, 256, 256
    )
    assert cfg.official_architecture and cfg.eps and cfg.eps_mode == "official"
    with pytest.raises(Exception, match="unknown|extra|not permitted"):
        SPEC.make_config({"classifer_size": 64})


def test_shapes():
    model = _build().eval()
    batch = _batch(SEPConfig(**SMALL), n=3)
    assert batch["patch"].shape == (3, 3, 32, 32) and batch["img_dwt"].shape == (3, 3, 64, 64)
    with torch.no_grad():
        assert model.classifier_input(batch).shape == (3, 3, 64, 64)
        assert model.forward_features(batch).shape == (3, 512)
        out = model(batch)
        logits = model.logits2(batch)
    assert out.shape == (3,) and logits.shape == (3, 2) and torch.isfinite(out).all()
    assert torch.allclose(out, logits[:, AI] - logits[:, NATURE], atol=1e-5)


def test_every_trainable_parameter_gets_a_gradient():
    model = _build().train()
    batch = _batch(SEPConfig(**SMALL), n=2, train=True)
    loss = model.loss(model(batch), torch.tensor([0.0, 1.0]))
    loss.backward()
    assert model.srm.kernel.requires_grad is False and model.srm.kernel.grad is None
    trainable = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    assert "srm.kernel" not in trainable
    for name, p in trainable.items():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    for prefix in ("spalAtten.", "dwt.", "dwt_piex.", "disc."):
        assert any(p.grad.abs().sum() > 0 for n, p in trainable.items() if n.startswith(prefix)), prefix


def test_bce_on_the_fake_logit_is_the_official_cross_entropy():
    model = _build().eval()
    batch = _batch(SEPConfig(**SMALL), n=2)
    fake = torch.tensor([1.0, 0.0])
    with torch.no_grad():
        bce = model.loss(model(batch), fake)
        ce = F.cross_entropy(model.logits2(batch), torch.where(fake > 0, AI, NATURE))
    assert torch.allclose(bce, ce, atol=1e-5)


def test_ablation_switches_change_the_graph_as_documented():
    full = _build()
    keys = set(full.state_dict())
    prefixes = lambda m: {k.split(".")[0] for k in m.state_dict()}  # noqa: E731
    assert prefixes(full) == {"srm", "spalAtten", "dwt", "dwt_piex", "disc"}

    no_gbcsa = _build(gbcsa=False)
    assert prefixes(no_gbcsa) == {"dwt", "dwt_piex", "disc"}
    no_guide = _build(srm_guide=False)
    assert prefixes(no_guide) == {"spalAtten", "dwt", "dwt_piex", "disc"}
    assert not any("_srm." in k for k in no_guide.state_dict())
    no_fpm = _build(fpm=False)
    assert prefixes(no_fpm) == {"srm", "spalAtten", "disc"}
    for ablated in (no_gbcsa, no_guide, no_fpm):  # the kept modules are the official ones
        ablated.load_state_dict({k: v for k, v in full.state_dict().items() if k in ablated.state_dict()}, strict=True)
        assert set(ablated.state_dict()) < keys

    batch = _batch(SEPConfig(**SMALL), n=2)
    size = (64, 64)
    up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
    for m in (full, no_gbcsa, no_guide, no_fpm):
        m.eval()
    with torch.no_grad():
        patch = batch["patch"]
        freq = full.dwt(full.dwt_map(batch["img_dwt"]))
        attn = full.spalAtten(patch, full.srm(patch))
        assert torch.allclose(full.classifier_input(batch), full.dwt_piex(up(attn), freq) + up(patch), atol=1e-5)
        assert torch.allclose(no_gbcsa.classifier_input(batch), full.dwt_piex(up(patch), freq) + up(patch), atol=1e-5)
        assert torch.allclose(no_fpm.classifier_input({"patch": patch}), up(attn) + up(patch), atol=1e-5)
        # without guidance = the guided model whose guides output 0 (the last ReLU of a zero conv)
        for guide in (full.spalAtten.q_conv_h_srm, full.spalAtten.q_conv_w_srm):
            guide[2].weight.zero_()
        assert torch.allclose(no_guide.classifier_input(batch), full.classifier_input(batch), atol=1e-5)

    assert "img_dwt" not in _views(SEPConfig(**SMALL, fpm=False), True, False)(_img(0), np.random.default_rng(0))
    # eps: false -> the uniformly random patch
    img = _img(3)
    cfg = SEPConfig(**SMALL, eps=False)
    patch = _views(cfg, False, False)(img, np.random.default_rng(5))["patch"]
    y, x = select_patch(img, np.random.default_rng(5), size=32, n_candidates=1, mode="random")
    assert torch.allclose(patch, _normalised(img[y : y + 32, x : x + 32]), atol=1e-6)


# --- the official checkpoint ----------------------------------------------------------------------------------


def _bn(keys: dict, prefix: str, c: int) -> None:
    for n in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{prefix}.{n}"] = (c,)
    keys[f"{prefix}.num_batches_tracked"] = ()


def official_key_shapes() -> dict[str, tuple[int, ...]]:
    """The official SEP state_dict (models/model.py: SEP), written out from the official module structure."""
    keys: dict[str, tuple[int, ...]] = {"srm.kernel": (3, 3, 5, 5)}
    for n in ("q_conv_h", "k_conv_w", "v_conv_w", "q_conv_w", "k_conv_h", "v_conv_h"):
        keys[f"spalAtten.{n}.weight"] = (3, 3, 1, 1)
    for n in ("q_conv_h_srm", "q_conv_w_srm"):
        for i in (0, 2):
            keys[f"spalAtten.{n}.{i}.weight"] = (3, 3, 1, 1)
    keys["spalAtten.projection.0.weight"] = (3, 6, 1, 1)
    _bn(keys, "spalAtten.projection.1", 3)
    chans = (3, 32, 64, 64, 64)
    for s in range(4):
        keys[f"dwt.{4 * s}.weight"] = (chans[s + 1], chans[s], 3, 3)
        keys[f"dwt.{4 * s}.bias"] = (chans[s + 1],)
        _bn(keys, f"dwt.{4 * s + 1}", chans[s + 1])
    for g in range(16):
        for i, shape in ((0, (32, 4, 3, 3)), (2, (32, 32, 3, 3)), (4, (3, 32, 1, 1))):
            keys[f"dwt_piex.group_encoders.{g}.{i}.weight"] = shape
            keys[f"dwt_piex.group_encoders.{g}.{i}.bias"] = (shape[0],)
    keys["disc.conv1.weight"] = (64, 3, 7, 7)
    _bn(keys, "disc.bn1", 64)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for j in range(blocks):
            p = f"disc.layer{layer}.{j}"
            keys[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            _bn(keys, f"{p}.bn1", planes)
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            _bn(keys, f"{p}.bn2", planes)
            keys[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
            _bn(keys, f"{p}.bn3", 4 * planes)
            if j == 0:
                keys[f"{p}.downsample.0.weight"] = (4 * planes, inplanes, 1, 1)
                _bn(keys, f"{p}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    keys["disc.fc.weight"] = (2, 2048)
    keys["disc.fc.bias"] = (2,)
    return keys


def _is_bn(key: str) -> bool:
    return key.rsplit(".", 1)[0] + ".running_mean" in official_key_shapes()


def _official_checkpoint(path: Path, seed: int = 0) -> OrderedDict:
    """Random weights under the official keys (BN statistics near identity so every branch stays input-dependent)."""
    g = torch.Generator().manual_seed(seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape in official_key_shapes().items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith(".bias"):
            sd[key] = 0.01 * torch.randn(shape, generator=g)
        elif key.endswith(".weight") and _is_bn(key):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif key == "srm.kernel":
            from sep_bench.layers.sapm import srm_kernel

            sd[key] = srm_kernel(3)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            sd[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    torch.save(sd, path)
    return sd


def _official_forward(sd: dict[str, torch.Tensor], patch: torch.Tensor, img_dwt: torch.Tensor, size: int):
    """The official SEP forward written functionally from the state dict (eval mode), for comparison.

    Returns the intermediate tensors: encoded DWT map, enhancer weights, SRM residual, GBCSA output, classifier
    input (``patch_fusion``) and the two logits."""
    import torchvision
    from pytorch_wavelets import DWTForward

    def conv(x, p, **kw):
        return F.conv2d(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"), **kw)

    def bn(x, p):
        return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5)

    # DWT map: tiled sub-bands, torchvision Resize back to the input size
    yl, yh = DWTForward(J=1, mode="symmetric", wave="bior1.3")(img_dwt)
    top = torch.cat([yl, yh[0][:, :, 0]], dim=-1)
    bottom = torch.cat([yh[0][:, :, 1], yh[0][:, :, 2]], dim=-1)
    x = torchvision.transforms.Resize([img_dwt.shape[-2], img_dwt.shape[-1]])(torch.cat([top, bottom], dim=-2))
    for s in range(4):
        x = F.avg_pool2d(F.relu(bn(conv(x, f"dwt.{4 * s}", padding=1), f"dwt.{4 * s + 1}")), 3, 2, 1)
    freq = x

    # SRM + GBCSA, as the official code: reshape_heads, matmul, softmax, expand
    srm = F.hardtanh(F.conv2d(patch, sd["srm.kernel"], padding=2), -3, 3)
    b, c, h, w = patch.shape
    heads, hd = 3, 1

    def c1(t, p):
        return F.conv2d(t, sd[f"spalAtten.{p}.weight"])

    def guide(t, p):
        return F.relu(c1(F.relu(c1(t, f"{p}.0")), f"{p}.2"))

    def rh(t, dim):
        t = t.view(t.shape[0], heads, hd, t.shape[2], t.shape[3])
        return t.squeeze(3).permute(0, 1, 3, 2) if dim == "h" else t.squeeze(4).permute(0, 1, 3, 2)

    gap_h, gap_w = patch.mean(2, keepdim=True), patch.mean(3, keepdim=True)
    q_hh = rh(c1(gap_h, "q_conv_h") * (1 + guide(srm.mean(2, keepdim=True), "q_conv_h_srm")), "h")
    a = torch.softmax(q_hh @ rh(c1(gap_w, "k_conv_w"), "w").transpose(-2, -1) / hd**0.5, -1)
    out_hw = (a @ rh(c1(gap_w, "v_conv_w"), "w")).permute(0, 1, 3, 2).contiguous().view(b, c, 1, w).expand(-1, -1, h, -1)
    q_ww = rh(c1(gap_w, "q_conv_w") * (1 + guide(srm.mean(3, keepdim=True), "q_conv_w_srm")), "w")
    a = torch.softmax(q_ww @ rh(c1(gap_h, "k_conv_h"), "h").transpose(-2, -1) / hd**0.5, -1)
    out_wh = (a @ rh(c1(gap_h, "v_conv_h"), "h")).permute(0, 1, 3, 2).contiguous().view(b, c, h, 1).expand(-1, -1, -1, w)
    wgt = F.relu(bn(c1(torch.cat([out_hw, out_wh], 1), "projection.0"), "spalAtten.projection.1"))
    fusion = F.interpolate(patch + wgt * patch, size=(size, size), mode="bilinear")


    # grouped dilated enhancer: the official loop over 16 groups
    weights = []
    for g in range(16):
        p = f"dwt_piex.group_encoders.{g}"
        t = F.relu(conv(freq[:, 4 * g : 4 * g + 4], f"{p}.0", padding=2, dilation=2))
        t = F.relu(conv(t, f"{p}.2", padding=4, dilation=4))
        weights.append(torch.sigmoid(F.adaptive_avg_pool2d(conv(t, f"{p}.4"), 1)))
    w_enh = torch.stack(weights, 0).mean(0)
    attn = patch + wgt * patch
    fusion = fusion * (1 + 0.2 * w_enh) + F.interpolate(patch, size=(size, size), mode="bilinear")

    disc = torchvision.models.resnet50(weights=None)
    disc.fc = torch.nn.Linear(2048, 2)
    disc.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("disc.")})
    return {"freq": freq, "w": w_enh, "srm": srm, "attn": attn, "fusion": fusion, "logits": disc.eval()(fusion)}


def test_official_checkpoint_loads_strictly_and_matches_the_official_forward(tmp_path):
    expected = official_key_shapes()
    model = SEP(classifier_size=64)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected

    path = tmp_path / "GenImage_SEP.pth"
    sd = _official_checkpoint(path)
    cfg = SEPConfig(classifier_size=64, dwt_size=64, eval_candidates=16)
    model = SPEC.build(cfg, WeightsSource.none())  # as `sep-bench` loads released weights: build, then load_official
    SPEC.load_official(model, path)
    model.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # `pretrained: <file>` with SEP's keys starts from the whole checkpoint too
    started = SPEC.build(cfg, parse_pretrained(str(path), SPEC.default_weights))
    assert started.weights.kind == "file" and torch.equal(started.disc.fc.weight, sd["disc.fc.weight"])

    view = _views(cfg, False, False)
    items = [view(_varied_img(i), np.random.default_rng(i)) for i in range(4)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    with torch.no_grad():
        patch = batch["patch"]
        ours = {"freq": model.dwt(model.dwt_map(batch["img_dwt"])), "srm": model.srm(patch)}
        ours["w"] = model.dwt_piex.channel_weights(ours["freq"])
        ours["attn"] = model.spalAtten(patch, ours["srm"])
        ours["fusion"] = model.classifier_input(batch)
        ours["logits"] = logits = model.logits2(batch)
        fake = model(batch)
        ref = _official_forward(sd, patch, batch["img_dwt"], 64)
    assert (ref["freq"][0] - ref["freq"][1]).abs().max() > 1e-3  # the images differ enough for the checks to bite
    for name, tol in (("freq", 1e-5), ("w", 1e-6), ("srm", 1e-5), ("attn", 1e-5), ("fusion", 1e-5), ("logits", 1e-4)):
        assert torch.allclose(ours[name], ref[name], rtol=tol, atol=tol), (name, (ours[name] - ref[name]).abs().max())
    reference = ref["logits"]
    assert torch.allclose(fake, logits[:, AI] - logits[:, NATURE], atol=1e-5)
    p_ai = torch.softmax(reference, dim=1)[:, AI]
    assert torch.equal(fake > 0, p_ai > 0.5)
    assert torch.allclose(torch.sigmoid(fake), p_ai, atol=1e-5)

    # strict: a checkpoint with a missing or an extra key is refused, with the key named
    del sd["spalAtten.q_conv_h_srm.2.weight"]
    torch.save(sd, path)
    with pytest.raises(WeightsFileError, match="q_conv_h_srm"):
        _load_official(SEP(classifier_size=64), path)
    with pytest.raises(WeightsFileError, match="full model"):
        _load_official(SEP(classifier_size=64, backbone="resnet18"), tmp_path / "GenImage_SEP.pth")


def test_dwt_map_and_grouped_enhancer_match_the_official_formulas():
    import torchvision
    from pytorch_wavelets import DWTForward

    from sep_bench.layers.fpm import DWTMap, GroupedDilatedFrequencyEnhancer

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    yl, yh = DWTForward(J=1, mode="symmetric", wave="bior1.3")(x)
    assert yl.shape[-2:] == (34, 34)
    tiled = torch.cat([torch.cat([yl, yh[0][:, :, 0]], -1), torch.cat([yh[0][:, :, 1], yh[0][:, :, 2]], -1)], -2)
    dwt = DWTMap()
    assert len(dwt.state_dict()) == 0
    assert torch.allclose(dwt(x), torchvision.transforms.Resize([64, 64], antialias=True)(tiled), atol=1e-6)
    assert torch.allclose(DWTMap(antialias=False)(x), torchvision.transforms.Resize([64, 64], antialias=False)(tiled), atol=1e-6)
    hh = torchvision.transforms.Resize([64, 64])(yh[0][:, :, 2])  # the official code's earlier revision
    assert torch.allclose(DWTMap(bands="hh")(x), hh, atol=1e-6)
    assert SEP(classifier_size=64, backbone="resnet18", dwt_bands="hh").dwt_map.bands == "hh"

    torch.manual_seed(0)
    enh = GroupedDilatedFrequencyEnhancer(64, 3, 16, 0.2)
    freq, patch = torch.randn(2, 64, 8, 8), torch.randn(2, 3, 16, 16)
    loop = torch.stack([enh.group_encoders[g](freq[:, 4 * g : 4 * g + 4]) for g in range(16)]).mean(0)
    assert torch.allclose(enh(patch, freq), patch * (1 + 0.2 * loop), atol=1e-6)


def test_pretrained_backbone_from_the_hub_or_a_file(monkeypatch, tmp_path):
    import timm

    cfg = SEPConfig(**SMALL)
    with pytest.raises(ValueError, match="timm:resnet18.tv_in1k"):
        SPEC.build(cfg, parse_pretrained(True, SPEC.default_weights))  # resnet50 weights for a resnet18 backbone

    from huggingface_hub import constants  # offline with an empty cache: the real failure, not a mock

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(RuntimeError, match="unavailable.*HF_HUB_OFFLINE"):
        SPEC.build(SEPConfig(), parse_pretrained(True, SPEC.default_weights))

    torch.manual_seed(1)
    donor = timm.models.resnet18(num_classes=1000)  # timm's ResNet has torchvision's key names
    cache = use_cache(tmp_path, monkeypatch)  # the hub's file, in a cache of this test's own
    cache_file(cache, "timm/resnet18.tv_in1k", "model.safetensors",
               {k: v.clone() for k, v in donor.state_dict().items()})
    model = SPEC.build(cfg, WeightsSource("hub", "timm:resnet18.tv_in1k"))
    assert model.weights.describe() == "hub:timm:resnet18.tv_in1k"
    assert torch.equal(model.disc.layer3[1].conv2.weight, donor.layer3[1].conv2.weight)
    assert model.disc.fc.out_features == 2

    # a backbone file (torchvision/timm keys, ImageNet fc dropped) initialises disc; anything else is refused
    path = tmp_path / "resnet18.pth"
    torch.save(donor.state_dict(), path)
    model = SPEC.build(cfg, parse_pretrained(str(path), SPEC.default_weights))
    assert torch.equal(model.disc.layer2[0].conv1.weight, donor.layer2[0].conv1.weight) and model.weights.kind == "file"
    torch.save({"conv1.weight": donor.conv1.weight}, path)
    with pytest.raises(WeightsFileError, match="not a resnet18 state dict"):
        SPEC.build(cfg, parse_pretrained(str(path), SPEC.default_weights))


def test_views_are_deterministic_and_take_the_patch_from_the_full_image():
    cfg = SEPConfig(**SMALL)
    img = _img(7, 120, 110)
    for train, hflip in ((True, True), (True, False), (False, False)):
        view = _views(cfg, train, hflip)
        a, b = view(img, np.random.default_rng(42)), view(img, np.random.default_rng(42))
        assert a.keys() == b.keys() == {"patch", "img_dwt"}
        for k in a:
            assert torch.equal(a[k], b[k])
        assert a["patch"].shape == (3, 32, 32) and a["img_dwt"].shape == (3, 64, 64)
        assert 0.0 <= a["img_dwt"].min() and a["img_dwt"].max() <= 1.0
    train = _views(cfg, True, True)
    draws = {train(img, np.random.default_rng(s))["img_dwt"].sum().item() for s in range(6)}
    assert len(draws) > 1

    # a flat corner outside the centre crop: the patch comes from the full image, img_dwt is the centre crop
    img = _img(8, 200, 200)
    img[:40, :40] = (10, 200, 30)
    ex = SEPConfig(**{**SMALL, "eps_mode": "exhaustive"})
    out = _views(ex, False, False)(img, np.random.default_rng(0))
    assert torch.allclose(out["patch"], _normalised(img[:32, :32]), atol=1e-6)
    assert torch.equal(out["img_dwt"], torch.from_numpy(img[68:132, 68:132]).permute(2, 0, 1).float() / 255)

    # short side below the patch size: the patch comes from the 256x256 resize; the crop is zero-padded
    small = _img(9, 20, 300)
    out = _views(cfg, False, False)(small, np.random.default_rng(0))
    assert out["patch"].shape == (3, 32, 32) and out["img_dwt"].shape == (3, 64, 64)
    assert out["img_dwt"][:, 0].abs().sum() == 0


def test_explain_renders_a_png(tmp_path):
    from sep_bench.engine.explain import render_explanation

    img = _img(4, 96, 128)
    img[50:90, 10:60] = 128
    cfg = SEPConfig(**SMALL)
    info = render_explanation(img, cfg, np.random.default_rng(3), 0.87, tmp_path / "x" / "a.png")
    png = (tmp_path / "x" / "a.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # with the same generator, the figure shows the patch the evaluation view gives the model
    view_patch = _views(cfg, False, False)(img, np.random.default_rng(3))["patch"]
    assert torch.allclose(view_patch, _normalised(img[info["y"] : info["y"] + 32, info["x"] : info["x"] + 32]), atol=1e-6)
    assert info["mode"] == "official" and info["prob"] == pytest.approx(0.87) and not info["resized"]
    info = render_explanation(_img(5, 20, 40), SEPConfig(**{**SMALL, "eps": False}), np.random.default_rng(0), None, tmp_path / "b.png")
    assert info["resized"] and info["mode"] == "random" and (tmp_path / "b.png").stat().st_size > 1000
