import numpy as np
import pytest
import torch

from sep_bench.baselines.aide import band_masks, dct_band_scores, select_windows
from sep_bench.detectors import get_detector
from sep_bench.weights import WeightsSource
from tests.official_keys import add_batchnorm, add_bottleneck_layers

MINI = {"window_size": 16, "stride": 8, "patch_size": 16, "image_size": 32, "resnet": "resnet18",
        "resnet_layers": [1, 1, 1, 1], "convnext_depths": [1, 1, 1, 1], "convnext_dims": [16, 32, 48, 64]}


def _official_keys_and_shapes() -> dict[str, tuple]:
    """The official AIDE_Model state dict (models/AIDE.py: ResNet-50 x2 with a 30-channel conv1 and a 1000-way fc,
    OpenCLIP convnext_xxlarge trunk, depths 3-4-30-3, dims 384-768-1536-3072); checked against the key list
    of the official code built on the meta device (1025 keys)."""
    shapes: dict[str, tuple] = {"hpf.hpf.weight": (30, 3, 5, 5), "fc.fc1.weight": (1024, 2048 + 256),
                                "fc.fc1.bias": (1024,), "fc.fc2.weight": (2, 1024), "fc.fc2.bias": (2,),
                                "convnext_proj.0.weight": (256, 3072), "convnext_proj.0.bias": (256,)}

    for net in ("model_min", "model_max"):
        shapes[f"{net}.conv1.weight"] = (64, 30, 7, 7)
        add_batchnorm(shapes, f"{net}.bn1", 64)
        add_bottleneck_layers(shapes, prefix=f"{net}.")
        shapes[f"{net}.fc.weight"], shapes[f"{net}.fc.bias"] = (1000, 2048), (1000,)
    t = "openclip_convnext_xxl"
    dims, depths = (384, 768, 1536, 3072), (3, 4, 30, 3)
    shapes.update({f"{t}.stem.0.weight": (384, 3, 4, 4), f"{t}.stem.0.bias": (384,), f"{t}.stem.1.weight": (384,),
                   f"{t}.stem.1.bias": (384,), f"{t}.head.norm.weight": (3072,), f"{t}.head.norm.bias": (3072,)})
    for i, (c, n) in enumerate(zip(dims, depths)):
        if i:
            d = f"{t}.stages.{i}.downsample"
            shapes.update({f"{d}.0.weight": (dims[i - 1],), f"{d}.0.bias": (dims[i - 1],),
                           f"{d}.1.weight": (c, dims[i - 1], 2, 2), f"{d}.1.bias": (c,)})
        for j in range(n):
            b = f"{t}.stages.{i}.blocks.{j}"
            shapes.update({f"{b}.gamma": (c,), f"{b}.conv_dw.weight": (c, 1, 7, 7), f"{b}.conv_dw.bias": (c,),
                           f"{b}.norm.weight": (c,), f"{b}.norm.bias": (c,), f"{b}.mlp.fc1.weight": (4 * c, c),
                           f"{b}.mlp.fc1.bias": (4 * c,), f"{b}.mlp.fc2.weight": (c, 4 * c), f"{b}.mlp.fc2.bias": (c,)})
    return shapes


def _mini(**extra):
    spec = get_detector("aide")
    cfg = spec.make_config({**MINI, **extra})
    return spec, cfg, spec.build(cfg, WeightsSource.none())


def test_full_model_state_dict_is_the_official_key_list():
    spec = get_detector("aide")
    with torch.device("meta"):
        model = spec.build(spec.make_config({}), WeightsSource.none())
    official = _official_keys_and_shapes()
    assert len(official) == 1025
    sd = model.state_dict()
    assert set(sd) == set(official)
    assert all(tuple(sd[k].shape) == official[k] for k in official)
    model.load_state_dict({k: torch.empty(s, device="meta") for k, s in official.items()}, strict=True, assign=True)


def test_band_masks_and_scores_match_a_direct_computation():
    from scipy.fft import dctn

    masks = band_masks(32, 6)
    s = np.add.outer(np.arange(32), np.arange(32))
    assert torch.allclose(masks.sum(dim=(1, 2)), torch.ones(6, dtype=torch.float64))
    assert int((masks[0] > 0).sum()) == 66  # i + j <= 10 (64 / 6 = 10.67)
    assert bool((masks[2][s == 32] > 0).all() and (masks[3][s == 32] > 0).all())  # 32 closes band 2, opens band 3
    rng = np.random.default_rng(0)
    x = rng.random((3, 48, 64)).astype(np.float32)
    scores = dct_band_scores(torch.from_numpy(x), 32, 16, 6)
    assert scores.shape == (2 * 3,)
    for idx, (y0, x0) in enumerate((y, xx) for y in (0, 16) for xx in (0, 16, 32)):
        expected = 0.0
        for c in range(3):
            logmag = np.log(np.abs(dctn(x[c, y0:y0 + 32, x0:x0 + 32].astype(np.float64), norm="ortho")) + 1)
            for g in range(6):
                band = (s >= 64 / 6 * g) & (s <= 64 / 6 * (g + 1))
                expected += 2 ** g * logmag[band].sum() / band.sum()
        assert float(scores[idx]) == pytest.approx(expected, rel=1e-5)


def test_flat_window_scores_lowest_and_textured_highest():
    rng = np.random.default_rng(1)
    img = (np.full((96, 96, 3), 0.5) + 0.02 * rng.standard_normal((96, 96, 3))).astype(np.float32)
    img[16:48, 32:64] = 0.3  # flat: window (1, 2) of the 5x5 grid (stride 16)
    img[48:80, 0:32] = rng.random((32, 32, 3))  # strong texture: window (3, 0)
    t = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    lo, hi, lo1, hi1 = select_windows(dct_band_scores(t))
    assert (lo, hi) == (1 * 5 + 2, 3 * 5 + 0)
    assert len({lo, hi, lo1, hi1}) == 4
    assert select_windows(torch.tensor([3.0])) == [0, 0, 0, 0]


def test_views_pick_the_scored_windows():
    spec, cfg, _ = _mini(window_size=32, stride=16, patch_size=32, image_size=64)
    img = np.full((80, 96, 3), 128, np.uint8)
    img[32:64, 48:80] = np.random.default_rng(2).integers(0, 256, (32, 32, 3))
    v = spec.views(cfg, False, False)(img, np.random.default_rng(0))
    assert v["patches"].shape == (4, 3, 32, 32) and v["image"].shape == (3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    textured = (torch.from_numpy(img[32:64, 48:80]).permute(2, 0, 1).float() / 255 - mean) / std
    assert torch.allclose(v["patches"][1], textured, atol=1e-5)  # the max window
    train = spec.views(cfg, True, False)
    a, b = train(img, np.random.default_rng(5)), train(img, np.random.default_rng(5))
    assert all(torch.equal(a[k], b[k]) for k in a)
    tiny = spec.views(cfg, False, False)(np.zeros((20, 40, 3), np.uint8), np.random.default_rng(0))
    assert tiny["patches"].shape == (4, 3, 32, 32)  # resized to small_resize first


def test_forward_backward_and_frozen_parts():
    spec, cfg, model = _mini()
    view = spec.views(cfg, True, False)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (72, 88, 3), dtype=np.uint8) for _ in range(3)]
    batch = {k: torch.stack([view(im, rng)[k] for im in imgs]) for k in ("patches", "image")}
    model.train()
    out = model.train_forward(batch)
    assert out["logits"].shape == (3,) and torch.isfinite(out["logits"]).all()
    model.train_loss(out, torch.tensor([0, 1, 1])).backward()
    trainable = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable.values())
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"hpf", "openclip_convnext_xxl", "convnext_proj", "model_min", "model_max"}  # (+ unused fc)
    assert not any(n.startswith(("model_min.fc", "model_max.fc")) for n in trainable)
    _, _, trained_proj = _mini(train_convnext_proj=True)
    assert all(p.requires_grad for p in trained_proj.convnext_proj.parameters())


def test_official_checkpoint_loads_strictly_and_gives_the_softmax_fake_probability(tmp_path):
    spec, cfg, model = _mini()
    gen = torch.Generator().manual_seed(0)
    sd = {k: (v + 0.05 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
          for k, v in model.state_dict().items()}
    for k in sd:
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 0.5
    torch.save({"model": sd, "epoch": 3}, tmp_path / "checkpoint-best.pth")
    loaded = spec.build(cfg, WeightsSource.none())
    spec.load_official(loaded, tmp_path / "checkpoint-best.pth")
    loaded.eval()
    x = {"patches": torch.randn(2, 4, 3, 16, 16, generator=gen), "image": torch.randn(2, 3, 32, 32, generator=gen)}
    ref = spec.build(cfg, WeightsSource.none())
    ref.load_state_dict(sd)
    ref.eval()
    with torch.no_grad():  # the official forward, written out (models/AIDE.py AIDE_Model.forward)
        def pooled(net, t):
            h = net.maxpool(net.relu(net.bn1(net.conv1(ref.hpf(t)))))
            return torch.flatten(net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(h))))), 1)
        p = x["patches"]
        x1 = (pooled(ref.model_min, p[:, 0]) + pooled(ref.model_max, p[:, 1]) + pooled(ref.model_min, p[:, 2])
              + pooled(ref.model_max, p[:, 3])) / 4
        clip_mean, clip_std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
        im_mean, im_std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        tokens = x["image"] * (im_std / clip_std).view(3, 1, 1) + ((im_mean - clip_mean) / clip_std).view(3, 1, 1)
        trunk = ref.openclip_convnext_xxl
        x0 = ref.convnext_proj(trunk.head.norm(trunk.forward_features(tokens)).mean(dim=(2, 3)))
        two = ref.fc.fc2(torch.nn.functional.gelu(ref.fc.fc1(torch.cat([x0, x1], 1))))
        fake_prob = torch.softmax(two, 1)[:, 1]
        logit = loaded(x)
    assert torch.allclose(torch.sigmoid(logit), fake_prob, atol=1e-6)


def test_label_smoothing_equals_two_class_smoothed_cross_entropy():
    from timm.loss import LabelSmoothingCrossEntropy

    _, _, model = _mini()
    two = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.4, 0.9]])
    labels = torch.tensor([1, 0, 1])
    expected = LabelSmoothingCrossEntropy(smoothing=0.1)(two, labels)
    assert float(model.loss(two[:, 1] - two[:, 0], labels)) == pytest.approx(float(expected), rel=1e-6)


class _NotAllowed:  # a class a weights-only load must refuse (module-level so torch.save can pickle it)
    pass


def test_official_save_format_with_args_loads_and_other_classes_are_refused(tmp_path):
    """``utils.save_model`` pickles ``{'model', 'optimizer', 'epoch', 'scaler', 'args': argparse.Namespace}``."""
    import argparse

    from sep_bench.weights import UnsafeCheckpointError

    spec, cfg, model = _mini()
    sd = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-4)
    args = argparse.Namespace(model="AIDE", blr=1e-4, epochs=20, resnet_path=None, data_path="/data/train")
    torch.save({"model": sd, "optimizer": opt.state_dict(), "epoch": 4, "scaler": {"scale": 65536.0},
                "args": args}, tmp_path / "checkpoint-best.pth")
    loaded = spec.build(cfg, WeightsSource.none())
    spec.load_official(loaded, tmp_path / "checkpoint-best.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())
    torch.save({"model": sd, "args": _NotAllowed()}, tmp_path / "other.pth")
    with pytest.raises(UnsafeCheckpointError, match="_NotAllowed"):
        spec.load_official(spec.build(cfg, WeightsSource.none()), tmp_path / "other.pth")
