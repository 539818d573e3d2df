import math

import numpy as np
import pytest
import torch

from sep_bench.baselines.drct import (DRCT, CLIPEmbedder, _fancy_pca, _gaussian_blur, _grid_dropout, _hue_saturation_value,
                            drct_augment, drct_label, margin_contrastive_loss)
from sep_bench.detectors import get_detector
from sep_bench.weights import WeightsSource

CONVNEXT_MINI = {"convnext_depths": [1, 1, 1, 1], "convnext_dims": [16, 32, 48, 64], "embedding_size": 32, "crop_size": 64}
CLIP_MINI = {"backbone": "clip", "clip_arch": "tiny-vit-768", "clip_image_size": 64, "crop_size": 64}


def _official_convnext_keys() -> dict[str, tuple]:
    """``ContrastiveModels('convnext_base_in22k', embedding_size=1024)`` (network/models.py): timm ConvNeXt-B
    (depths 3-3-27-3, dims 128-256-512-1024) with head.fc = Linear(1024, 1024), then fc = Linear(1024, 2);
    checked against the official code's model built on the meta device (346 keys)."""
    m = "model"
    dims, depths = (128, 256, 512, 1024), (3, 3, 27, 3)
    shapes = {f"{m}.stem.0.weight": (128, 3, 4, 4), f"{m}.stem.0.bias": (128,), f"{m}.stem.1.weight": (128,),
              f"{m}.stem.1.bias": (128,), f"{m}.head.norm.weight": (1024,), f"{m}.head.norm.bias": (1024,),
              f"{m}.head.fc.weight": (1024, 1024), f"{m}.head.fc.bias": (1024,), "fc.weight": (2, 1024), "fc.bias": (2,)}
    for i, (c, n) in enumerate(zip(dims, depths)):
        if i:
            d = f"{m}.stages.{i}.downsample"
            shapes.update({f"{d}.0.weight": (dims[i - 1],), f"{d}.0.bias": (dims[i - 1],),
                           f"{d}.1.weight": (c, dims[i - 1], 2, 2), f"{d}.1.bias": (c,)})
        for j in range(n):
            b = f"{m}.stages.{i}.blocks.{j}"
            shapes.update({f"{b}.gamma": (c,), f"{b}.conv_dw.weight": (c, 1, 7, 7), f"{b}.conv_dw.bias": (c,),
                           f"{b}.norm.weight": (c,), f"{b}.norm.bias": (c,), f"{b}.mlp.fc1.weight": (4 * c, c),
                           f"{b}.mlp.fc1.bias": (4 * c,), f"{b}.mlp.fc2.weight": (c, 4 * c), f"{b}.mlp.fc2.bias": (c,)})
    return shapes


def _official_clip_keys() -> dict[str, tuple]:
    """``ContrastiveModels('clip-ViT-L-14', embedding_size=1024, freeze_extractor=True)``: ``model.model`` is the
    whole OpenAI CLIP ViT-L/14 (``clip.load``; both towers), ``model.fc`` = Linear(768, 1024), ``fc`` =
    Linear(1024, 2); checked against the official code's model built on the meta device (450 keys)."""
    p = "model.model"
    shapes = {f"{p}.positional_embedding": (77, 768), f"{p}.text_projection": (768, 768), f"{p}.logit_scale": (),
              f"{p}.token_embedding.weight": (49408, 768), f"{p}.ln_final.weight": (768,), f"{p}.ln_final.bias": (768,),
              f"{p}.visual.class_embedding": (1024,), f"{p}.visual.positional_embedding": (257, 1024),
              f"{p}.visual.proj": (1024, 768), f"{p}.visual.conv1.weight": (1024, 3, 14, 14),
              "model.fc.weight": (1024, 768), "model.fc.bias": (1024,), "fc.weight": (2, 1024), "fc.bias": (2,)}
    for ln in ("ln_pre", "ln_post"):
        shapes[f"{p}.visual.{ln}.weight"] = shapes[f"{p}.visual.{ln}.bias"] = (1024,)
    for prefix, width, layers in ((f"{p}.visual.transformer", 1024, 24), (f"{p}.transformer", 768, 12)):
        for i in range(layers):
            r = f"{prefix}.resblocks.{i}"
            shapes.update({f"{r}.attn.in_proj_weight": (3 * width, width), f"{r}.attn.in_proj_bias": (3 * width,),
                           f"{r}.attn.out_proj.weight": (width, width), f"{r}.attn.out_proj.bias": (width,),
                           f"{r}.mlp.c_fc.weight": (4 * width, width), f"{r}.mlp.c_fc.bias": (4 * width,),
                           f"{r}.mlp.c_proj.weight": (width, 4 * width), f"{r}.mlp.c_proj.bias": (width,)})
            for ln in ("ln_1", "ln_2"):
                shapes[f"{r}.{ln}.weight"] = shapes[f"{r}.{ln}.bias"] = (width,)
    return shapes


def _assert_keys(model, official):
    sd = model.state_dict()
    assert set(sd) == set(official)
    assert all(tuple(sd[k].shape) == official[k] for k in official)
    model.load_state_dict({k: torch.empty(s, device="meta") for k, s in official.items()}, strict=True, assign=True)


def test_label_rule():
    assert [drct_label(f, r) for f, r in ((False, False), (True, False), (False, True), (True, True))] == [0, 1, 1, 1]


def test_contrastive_loss_on_a_hand_computed_example():
    # normalised: e0 = (1, 0), e1 = (0, 1), e2 = (1, 0), e3 = (0.6, 0.8); labels 0, 0, 1, 1
    emb = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.5, 0.0], [3.0, 4.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    # positive pairs (both orders): d01 = sqrt 2, d23 = sqrt 0.8; all non-zero -> mean of the two values
    pos = (math.sqrt(2) + math.sqrt(0.8)) / 2
    # negative pairs: 1 - d: d02 = 0 -> 1, d03 = sqrt 0.8, d12 = sqrt 2 -> 0 (dropped), d13 = sqrt 0.4
    neg = (1.0 + (1 - math.sqrt(0.8)) + (1 - math.sqrt(0.4))) / 3
    loss = margin_contrastive_loss(emb, labels)
    assert float(loss.detach()) == pytest.approx(pos + neg, rel=1e-6)
    loss.backward()
    assert torch.isfinite(emb.grad).all()
    # no non-zero loss of a type contributes 0; a single sample has no pairs
    assert float(margin_contrastive_loss(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([1, 1]))) == 0.0
    assert float(margin_contrastive_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))) == 0.0
    # the training objective: 0.7 two-class CE + 0.3 contrastive
    model = get_detector("drct").build(get_detector("drct").make_config(CONVNEXT_MINI), WeightsSource.none())
    two = torch.tensor([[0.2, -0.1], [1.0, 0.3], [-0.5, 0.5], [0.0, 2.0]])
    out = {"logits": two[:, 1] - two[:, 0], "embeddings": emb.detach()}
    expected = 0.7 * torch.nn.functional.cross_entropy(two, labels) + 0.3 * (pos + neg)
    assert float(model.train_loss(out, labels)) == pytest.approx(float(expected), rel=1e-6)


def test_full_models_have_the_official_key_lists():
    import open_clip

    spec = get_detector("drct")
    with torch.device("meta"):
        convb = spec.build(spec.make_config({}), WeightsSource.none())
        clip = open_clip.CLIP(**open_clip.get_model_config("ViT-L-14"), quick_gelu=True)
        vitl = DRCT(CLIPEmbedder(clip, 1024), 1024, frozen_extractor=True)
    _assert_keys(convb, _official_convnext_keys())
    _assert_keys(vitl, _official_clip_keys())


@pytest.mark.parametrize("params", [CONVNEXT_MINI, CLIP_MINI], ids=["convnext", "clip"])
def test_forward_backward(params):
    spec = get_detector("drct")
    cfg = spec.make_config(params)
    model = spec.build(cfg, WeightsSource.none())
    view = spec.views(cfg, True, True)
    rng = np.random.default_rng(0)
    batch = {"image": torch.stack([view(rng.integers(0, 256, (80, 70, 3), dtype=np.uint8), rng)["image"]
                                   for _ in range(4)])}
    model.train()
    out = model.train_forward(batch)
    assert out["logits"].shape == (4,) and out["embeddings"].shape[0] == 4
    loss = model.train_loss(out, torch.tensor([0, 1, 1, 0]))
    assert torch.isfinite(loss)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trainable)
    if params is CLIP_MINI:  # frozen CLIP: model.fc and fc train; features can be cached
        assert model.frozen_features and {n for n, _ in trainable} == {"model.fc.weight", "model.fc.bias", "fc.weight", "fc.bias"}
        with torch.no_grad():
            cached = model.train_forward({"features": model.forward_features(batch)})
        assert torch.allclose(cached["logits"], out["logits"], atol=1e-6)
    else:
        assert not model.frozen_features and len(trainable) == len(list(model.parameters()))


def test_official_checkpoint_loads_strictly(tmp_path):
    spec = get_detector("drct")
    cfg = spec.make_config(CONVNEXT_MINI)
    src = spec.build(cfg, WeightsSource.none())
    gen = torch.Generator().manual_seed(0)
    sd = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in src.state_dict().items()}
    torch.save(sd, tmp_path / "last_acc0.9991.pth")
    model = spec.build(cfg, WeightsSource.none())
    spec.load_official(model, tmp_path / "last_acc0.9991.pth")
    model.eval()
    x = torch.randn(3, 3, 64, 64, generator=gen)
    with torch.no_grad():  # official: y_pred = fc(model(x)); score = 1 - softmax(y_pred)[:, 0]
        net = model.model
        emb = net.head.fc(net.head.norm(net.forward_features(x).mean(dim=(2, 3), keepdim=True)).flatten(1))
        score = 1 - torch.softmax(model.fc(emb), 1)[:, 0]
        assert torch.allclose(torch.sigmoid(model({"image": x})), score, atol=1e-6)
    with pytest.raises(RuntimeError):
        spec.load_official(spec.build(spec.make_config({**CONVNEXT_MINI, "embedding_size": 16}), WeightsSource.none()),
                           tmp_path / "last_acc0.9991.pth")


def test_views():
    spec = get_detector("drct")
    cfg = spec.make_config(CONVNEXT_MINI)
    img = np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    ev = spec.views(cfg, False, False)
    a = ev(img, np.random.default_rng(0))["image"]
    assert a.shape == (3, 64, 64) and torch.equal(a, ev(img, np.random.default_rng(9))["image"])
    # pad 50 -> 64 (7 rows on top), centre crop 90 -> 64 (from column 13)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (img[0, 13] / 255 - mean) / std
    assert np.allclose(a[:, 7, 0].numpy(), expected, atol=1e-5) and np.allclose(a[:, 0, 0].numpy(), -mean / std, atol=1e-5)
    tv = spec.views(cfg, True, False)
    assert torch.equal(tv(img, np.random.default_rng(3))["image"], tv(img, np.random.default_rng(3))["image"])
    outs = {drct_augment(img, np.random.default_rng(s), 64).shape for s in range(30)}
    assert outs == {(64, 64, 3)}


def test_augmentation_blocks():
    flat = np.full((20, 30, 3), 77, np.uint8)
    assert all(np.array_equal(_gaussian_blur(flat, k), flat) for k in (3, 5, 7))  # OpenCV kernels sum to 1
    step = np.zeros((1, 9, 3), np.uint8)
    step[:, 4:] = 64
    assert _gaussian_blur(np.repeat(step, 3, 0), 3)[1, 3, 0] == 16  # 0.25 x 64
    grid = _grid_dropout(np.full((224, 224, 3), 200, np.uint8))  # unit 22, holes 11x11 from (0, 0)
    assert grid[0, 0, 0] == 0 and grid[10, 10, 0] == 0 and grid[0, 11, 0] == 200 and grid[22, 22, 0] == 0
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    assert np.array_equal(_hue_saturation_value(red, 60.0, 0.0, 0.0)[0, 0], [0, 255, 0])  # +120 degrees
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.abs(_hue_saturation_value(img, 0.0, 0.0, 0.0).astype(int) - img).max() <= 5  # 8-bit HSV: 2-degree hue steps
    # FancyPCA: albumentations 1.3.0 fancy_pca, written out
    x = img.reshape(-1, 3) / 255.0
    vals, vecs = np.linalg.eigh(np.cov(x - x.mean(0), rowvar=False))
    order = vals[::-1].argsort()
    vals[::-1].sort()
    m1 = np.column_stack(vecs[:, order])
    add = (np.asarray(m1) @ (0.07 * vals[:, None]))[:, 0]
    expected = np.clip(img.astype(float) + add * 255, 0, 255).astype(np.uint8)
    assert np.array_equal(_fancy_pca(img, 0.07), expected)


def test_layer_scale_start_is_a_random_init_knob():
    from sep_bench.layers.convnext import create_convnext

    small = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    default = create_convnext("convnext_base", **small)
    assert torch.all(default.stages[0].blocks[0].gamma == 1e-6)   # timm's start: every block nearly the identity
    net = create_convnext("convnext_base", **small, ls_init_value=1.0)
    assert torch.all(net.stages[0].blocks[0].gamma == 1.0)
    with pytest.raises(ValueError, match="pretrained"):
        create_convnext("convnext_base", WeightsSource("hub", "timm:convnext_base.fb_in22k"), ls_init_value=1.0)
