"""Effort port: forward/backward contract, the SVD residual split, the official state-dict format, label convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sep_bench.detectors import get_detector
from sep_bench.layers.adapters import SVDResidualLinear, svd_residual_linear
from sep_bench.weights import PretrainedUnavailableError, WeightsSource

MINI = {"arch": "tiny-vit-b16", "crop_size": 112, "train_resize": 112, "eval_resize": 112}

# The official DeepfakeBench EffortDetector (CLIP ViT-L/14, r = 1023) state dict, generated from
# YZY-stack/Effort-AIGI-Detection effort_detector.py while porting: 969 keys = 7 outside the layers + 2 head keys +
# 24 layers x 40 (4 attention projections x 8 SVD keys, 2 layer norms x 2, fc1/fc2 x 2).
_SVD_KEYS = ("weight_main", "bias", "S_residual", "U_residual", "V_residual", "S_r", "U_r", "V_r")
_OFFICIAL_SHAPES = {  # a few shapes of that file
    "backbone.embeddings.patch_embedding.weight": (1024, 3, 14, 14),
    "backbone.embeddings.position_embedding.weight": (257, 1024),
    "backbone.encoder.layers.0.self_attn.q_proj.weight_main": (1024, 1024),
    "backbone.encoder.layers.0.self_attn.q_proj.U_residual": (1024, 1),
    "backbone.encoder.layers.0.self_attn.q_proj.S_residual": (1,),
    "backbone.encoder.layers.0.self_attn.q_proj.V_residual": (1, 1024),
    "backbone.encoder.layers.23.self_attn.out_proj.U_r": (1024, 1023),
    "backbone.encoder.layers.23.self_attn.out_proj.S_r": (1023,),
    "head.weight": (2, 1024),
}


def official_keys(layers: int) -> set[str]:
    keys = {f"backbone.{k}" for k in ("embeddings.class_embedding", "embeddings.patch_embedding.weight",
                                      "embeddings.position_embedding.weight", "pre_layrnorm.weight",
                                      "pre_layrnorm.bias", "post_layernorm.weight", "post_layernorm.bias")}
    keys |= {"head.weight", "head.bias"}
    for i in range(layers):
        p = f"backbone.encoder.layers.{i}."
        keys |= {f"{p}self_attn.{proj}.{k}" for proj in ("k_proj", "v_proj", "q_proj", "out_proj") for k in _SVD_KEYS}
        keys |= {f"{p}{m}.{k}" for m in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2") for k in ("weight", "bias")}
    return keys


def build(**over):
    spec = get_detector("effort")
    cfg = spec.make_config({**MINI, **over})
    torch.manual_seed(0)
    return spec, cfg, spec.build(cfg, WeightsSource.none())


def test_official_key_list_has_969_keys():
    assert len(official_keys(24)) == 969
    assert set(_OFFICIAL_SHAPES) <= official_keys(24)


def test_forward_backward_every_trainable_param_gets_a_gradient():
    spec, cfg, model = build()
    model.train()
    x = torch.randn(2, 3, 112, 112)
    out = model({"image": x})
    assert out.shape == (2,) and torch.isfinite(out).all()
    loss = model.train_loss({"logits": out}, torch.tensor([0.0, 1.0]))
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # only the rank-1 residuals and the head train (everything else of CLIP is frozen)
    assert trainable and all(n.startswith("head.") or n.rsplit(".", 1)[-1] in ("S_residual", "U_residual", "V_residual")
                             for n in trainable)
    assert len([n for n in trainable if n.endswith("S_residual")]) == 2 * 4
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n


def test_state_dict_matches_the_official_structure():
    _, _, model = build()
    assert set(model.state_dict()) == official_keys(2)
    q = model.backbone.encoder.layers[0].self_attn.q_proj
    assert q.S_residual.shape == (1,) and q.U_r.shape == (64, 63)     # rank-1 residual: r = width - 1
    _, _, lean = build(keep_main_factors=False)
    assert set(lean.state_dict()) == {k for k in official_keys(2) if k.rsplit(".", 1)[-1] not in ("U_r", "S_r", "V_r")}


def test_svd_split_reconstructs_the_weight_at_init():
    torch.manual_seed(1)
    lin = nn.Linear(48, 32)
    for r in (31, 10, 32, 100):
        svd = svd_residual_linear(lin, r, keep_main_factors=True)
        assert isinstance(svd, SVDResidualLinear)
        assert torch.allclose(svd.weight(), lin.weight, atol=1e-6, rtol=0)
        x = torch.randn(5, 48)
        assert torch.allclose(svd(x), lin(x), atol=1e-5)
        n_res = 32 - min(r, 32)
        assert (0 if svd.S_residual is None else svd.S_residual.numel()) == n_res
        if n_res:  # the frozen main part is the rank-r truncation (Eckart-Young), independently via numpy
            u, s, vh = np.linalg.svd(lin.weight.detach().double().numpy(), full_matrices=False)
            main = (u[:, :r] * s[:r]) @ vh[:r]
            assert np.allclose(svd.weight_main.detach().numpy(), main, atol=1e-6)
            assert np.allclose(svd.S_residual.detach().numpy(), s[r:], atol=1e-6)
            assert torch.allclose(svd.orthogonal_loss(), torch.zeros(()), atol=1e-5)
            assert torch.allclose(svd.keep_sv_loss(), torch.zeros(()), atol=1e-3)


def test_model_function_unchanged_by_the_split():
    from sep_bench.layers.clip import create_hf_clip

    torch.manual_seed(0)
    tower = create_hf_clip("tiny-vit-b16", "vision").eval()
    _, _, model = build()
    model.eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(model.forward_features({"image": x}), tower(pixel_values=x).pooler_output, atol=1e-5)


def test_load_official_strict_and_label_convention(tmp_path):
    spec, cfg, model = build()
    sd = model.state_dict()
    sd["head.weight"] = torch.zeros(2, 64)
    sd["head.bias"] = torch.tensor([0.0, 2.5])  # class 1 = fake (official), so the fake logit is +2.5
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "effort.pth")  # DDP wrapper removed
    spec.load_official(model, tmp_path / "effort.pth")
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model({"image": torch.randn(2, 3, 112, 112)}), torch.full((2,), 2.5))
    lean = {k: v for k, v in sd.items() if not k.endswith(("U_r", "S_r", "V_r"))}
    torch.save(lean, tmp_path / "lean.pth")
    with pytest.raises(PretrainedUnavailableError, match="keep_main_factors: false"):
        spec.load_official(model, tmp_path / "lean.pth")


def test_regularisers_are_switches_default_off():
    _, cfg, model = build()
    assert cfg.orthogonal_loss_weight == 0.0 and cfg.keep_sv_loss_weight == 0.0
    logits, labels = torch.zeros(2), torch.tensor([0.0, 1.0])
    base = model.train_loss({"logits": logits}, labels)
    assert torch.isclose(base, torch.tensor(np.log(2.0), dtype=base.dtype))
    _, _, reg = build(orthogonal_loss_weight=1.0, keep_sv_loss_weight=1.0)
    with torch.no_grad():
        reg.backbone.encoder.layers[0].self_attn.q_proj.S_residual.add_(1.0)
    assert reg.train_loss({"logits": logits}, labels) > base


def test_official_view_is_the_deepfakebench_opencv_cubic_squash():
    """DeepfakeBench ``load_rgb``: ``cv2.resize(img, (224, 224), interpolation=cv2.INTER_CUBIC)`` of the whole RGB
    image, then ToTensor and CLIP normalisation; the UnivFD-codebase view stays selectable."""
    import cv2

    spec = get_detector("effort")
    cfg = spec.make_config({})
    rng = np.random.default_rng(0)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    for shape in ((397, 512, 3), (300, 300, 3), (150, 90, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = cv2.resize(img, (224, 224), interpolation=cv2.INTER_CUBIC)
        expected = (torch.from_numpy(expected).permute(2, 0, 1).float() / 255.0 - mean) / std
        out = spec.views(cfg, False, False)(img, np.random.default_rng(1))["image"]
        assert out.shape == (3, 224, 224)
        assert torch.allclose(out, expected, atol=1e-6, rtol=0)
    crop = spec.views(spec.make_config({"geometry": "short_side_crop", "eval_resize": None}), False, False)
    img = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    expected = (torch.from_numpy(img[38:262, 18:242].copy()).permute(2, 0, 1).float() / 255.0 - mean) / std
    assert torch.allclose(crop(img, np.random.default_rng(1))["image"], expected, atol=1e-6, rtol=0)


def test_missing_opencv_is_a_clear_error(monkeypatch):
    import sys

    from sep_bench.data.transforms import resize_cv2

    monkeypatch.setitem(sys.modules, "cv2", None)  # as if opencv-python-headless were not installed
    with pytest.raises(ImportError, match="opencv-python-headless"):
        resize_cv2(np.zeros((4, 6, 3), np.uint8), 2, 2, "cubic")
    with pytest.raises(ValueError, match="interpolation"):
        resize_cv2(np.zeros((4, 6, 3), np.uint8), 2, 2, "bilinear")


def test_svd_split_is_cached_by_the_weights_content(tmp_path, monkeypatch):
    """The split of a weight is computed once and read back from the content-addressed cache: the same parameters
    bit for bit; other weights get their own file; a damaged file is computed again; ``off`` writes nothing."""
    monkeypatch.setenv("SEP_BENCH_SVD_CACHE", str(tmp_path / "svd"))
    torch.manual_seed(0)
    lin = nn.Linear(24, 16)
    first = svd_residual_linear(lin, 15, keep_main_factors=True).state_dict()
    files = list((tmp_path / "svd").glob("*.safetensors"))
    assert len(files) == 1
    again = svd_residual_linear(lin, 15, keep_main_factors=True).state_dict()
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    svd_residual_linear(lin, 15, keep_main_factors=False)  # another split of the same weight: another file
    with torch.no_grad():
        lin.weight.mul_(2)
    svd_residual_linear(lin, 15, keep_main_factors=True)  # other weights: another file
    assert len(list((tmp_path / "svd").glob("*.safetensors"))) == 3
    files[0].write_bytes(b"damaged")
    with torch.no_grad():
        lin.weight.div_(2)
    repaired = svd_residual_linear(lin, 15, keep_main_factors=True).state_dict()
    assert all(torch.equal(first[k], repaired[k]) for k in first) and files[0].stat().st_size > 100
    monkeypatch.setenv("SEP_BENCH_SVD_CACHE", "off")
    svd_residual_linear(nn.Linear(8, 8), 7)
    assert len(list((tmp_path / "svd").glob("*.safetensors"))) == 3
