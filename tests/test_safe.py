import argparse
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sep_bench.baselines.safe import SAFE, official_to_fake, random_mask
from sep_bench.detectors import get_detector
from sep_bench.protocol import ProtocolError
from sep_bench.weights import WeightsSource
from tests.official_keys import add_batchnorm, add_bottleneck_layers

MINI = {"crop_size": 32, "layers": (1, 1)}


def _official_keys_and_shapes(layers=(3, 4)) -> dict[str, tuple]:
    """The official SAFE state dict (models/resnet.py ``resnet50(num_classes=2)``: conv1 3x3, layer1-2, fc1 2-way)."""
    shapes = {"conv1.weight": (64, 3, 3, 3), "fc1.weight": (2, 512), "fc1.bias": (2,)}

    add_batchnorm(shapes, "bn1", 64)
    add_bottleneck_layers(shapes, ((64, layers[0]), (128, layers[1])))
    return shapes


def _build(**model):
    spec = get_detector("safe")
    return spec.build(spec.make_config({**MINI, **model}), WeightsSource.none())


def test_state_dict_is_the_official_key_list():
    sd = SAFE().state_dict()
    official = _official_keys_and_shapes()
    assert len(official) == 146 and set(sd) == set(official)
    assert all(tuple(sd[k].shape) == official[k] for k in official)


def test_forward_backward_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = _build().train()
    x = torch.rand(2, 3, 32, 32)
    out = model.train_forward({"image": x})
    assert out["logits"].shape == (2,) and torch.isfinite(out["logits"]).all()
    model.train_loss(out, torch.tensor([0.0, 1.0])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.trainable_parameters())


def test_released_checkpoint_format_loads_strictly_and_the_fake_logit_is_the_difference(tmp_path):
    gen = torch.Generator().manual_seed(0)
    sd = OrderedDict()
    for k, shape in _official_keys_and_shapes().items():
        sd[k] = torch.tensor(5) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=gen) * 0.05
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 1.0
    path = tmp_path / "checkpoint-best.pth"
    # the released file: save_model's dict, with the training args as an argparse.Namespace
    torch.save({"model": sd, "epoch": "best", "args": argparse.Namespace(blr=1e-2, model="SAFE")}, path)
    spec = get_detector("safe")
    model = spec.build(spec.make_config({}), WeightsSource.none())
    spec.load_official(model, path)
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        two = model.class_logits(model.forward_features({"image": x}))
        fake = model({"image": x})
    assert torch.allclose(torch.sigmoid(fake), torch.softmax(two, 1)[:, 1], atol=1e-6)  # official score
    with pytest.raises(KeyError):
        official_to_fake({"fc1.weight": torch.zeros(1, 512)})


def test_hh_band_matches_pywavelets_dwt2_diagonal_detail():
    pywt = pytest.importorskip("pywt")
    rng = np.random.default_rng(0)
    img = rng.random((3, 20, 24))
    model = SAFE(layers=(1, 1))
    x = torch.from_numpy(img).float()[None]
    from sep_bench.layers.dwt import dwt_bands

    hh = dwt_bands(model.hh.dwt, x)[3][0].double().numpy()
    _, (_, _, cd) = pywt.dwt2(img, "bior1.3", mode="symmetric", axes=(-2, -1))
    assert hh.shape == cd.shape == (3, 12, 14)
    np.testing.assert_allclose(hh, cd, atol=1e-5)
    # the model's input: that band resized back to the image size (bilinear)
    full = model.hh(x)
    expected = F.interpolate(torch.from_numpy(cd)[None].float(), size=(20, 24), mode="bilinear", align_corners=False)
    assert full.shape == (1, 3, 20, 24) and torch.allclose(full, expected, atol=1e-5)


def test_label_smoothing_equals_two_class_smoothed_cross_entropy():
    model = _build()
    two = torch.randn(6, 2)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    # timm LabelSmoothingCrossEntropy(0.1): 0.9 * nll + 0.1 * mean over classes of -log p
    logp = torch.log_softmax(two, 1)
    ref = (0.9 * -logp.gather(1, labels[:, None])[:, 0] + 0.1 * -logp.mean(1)).mean()
    got = model.train_loss({"logits": two[:, 1] - two[:, 0]}, labels.float())
    assert torch.allclose(got, ref, atol=1e-6)


def test_random_mask_zeroes_whole_grid_cells_of_the_drawn_ratio():
    img = np.full((64, 64, 3), 200, np.uint8)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        apply, r = rng.random() < 1.0, rng.uniform(0.0, 0.75)
        out = random_mask(img, np.random.default_rng(seed), p=1.0, ratio=(0.0, 0.75), patch=16)
        cells = (out[::16, ::16, 0] == 0).sum()
        assert apply and cells == int(64 * 64 * r / 256)
        assert set(np.unique(out)) <= {0, 200}
    assert random_mask(img, np.random.default_rng(0), p=0.0, ratio=(0.0, 0.75), patch=16) is img


def test_views_crop_never_resize_and_are_seeded():
    spec = get_detector("safe")
    cfg = spec.make_config(MINI)
    img = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    train = spec.views(cfg, True, True)
    a, b = train(img, np.random.default_rng(3)), train(img, np.random.default_rng(3))
    assert a["image"].shape == (3, 32, 32) and torch.equal(a["image"], b["image"])
    ev = spec.views(cfg, False, False)(img, np.random.default_rng(0))["image"]
    assert torch.equal(ev, torch.from_numpy(img[4:36, 9:41]).permute(2, 0, 1).float() / 255)  # centre crop, no norm


def test_pretrained_backbone_refused():
    with pytest.raises(ProtocolError, match="from scratch"):
        get_detector("safe").build(get_detector("safe").make_config({}), WeightsSource("hub", "timm:resnet50"))
