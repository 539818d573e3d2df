from collections import OrderedDict

import numpy as np
import pytest
import torch

from sep_bench.baselines.lota import (candidate_scores, noise_image, official_to_fake, patch_score,
                            select_noise_patch)
from sep_bench.detectors import get_detector
from sep_bench.weights import WeightsSource
from tests.official_keys import add_batchnorm, add_bottleneck_layers

MINI = {"backbone": "resnet18", "input_size": 32, "patch_size": 8, "n_candidates": 4}


def _official_keys_and_shapes() -> dict[str, tuple]:
    """LOTA's ``model``: ``disc`` = torchvision ResNet-50 (layers 3, 4, 6, 3) with ``fc = Linear(2048, 1)``."""
    shapes = {"disc.conv1.weight": (64, 3, 7, 7), "disc.fc.weight": (1, 2048), "disc.fc.bias": (1,)}

    add_batchnorm(shapes, "disc.bn1", 64)
    add_bottleneck_layers(shapes, prefix="disc.")
    return shapes


def _build(**model):
    spec = get_detector("lota")
    return spec.build(spec.make_config({**MINI, **model}), WeightsSource.none())


def test_forward_backward_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = _build().train()
    out = model.train_forward({"patch": torch.rand(2, 3, 32, 32)})
    assert out["logits"].shape == (2,) and torch.isfinite(out["logits"]).all()
    model.train_loss(out, torch.tensor([0.0, 1.0])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.trainable_parameters())


def test_official_state_dict_loads_strictly_and_the_real_logit_is_negated(tmp_path):
    spec = get_detector("lota")
    model = spec.build(spec.make_config({}), WeightsSource.none())
    official = _official_keys_and_shapes()
    sd = model.state_dict()
    assert set(sd) == set(official) and all(tuple(sd[k].shape) == official[k] for k in official)
    gen = torch.Generator().manual_seed(0)
    raw = OrderedDict((k, torch.randn(v.shape, generator=gen) * 0.02 if v.is_floating_point() else v)
                      for k, v in sd.items())
    for k in raw:
        if k.endswith("running_var"):
            raw[k] = raw[k].abs() + 1.0
    path = tmp_path / "Network_best.pth"
    torch.save(raw, path)
    spec.load_official(model, path)
    assert torch.equal(model.disc.fc.weight, -raw["disc.fc.weight"])
    assert torch.equal(model.disc.fc.bias, -raw["disc.fc.bias"])
    assert torch.equal(model.disc.conv1.weight, raw["disc.conv1.weight"])
    with pytest.raises(KeyError):
        official_to_fake({"disc.conv1.weight": raw["disc.conv1.weight"]})


def test_noise_image_keeps_the_three_low_bit_planes_times_36():
    img = np.array([[[0, 7, 8], [255, 13, 250]]], np.uint8)
    expected = np.array([[[0, 7 * 36, 0], [7 * 36, 5 * 36, 2 * 36]]], np.uint8)
    assert np.array_equal(noise_image(img), expected)


def test_patch_score_by_hand_and_integral_scores_equal_it():
    p = np.zeros((2, 2, 1), np.uint8)
    p[0, 0, 0], p[1, 1, 0] = 10, 4
    # horizontal |10-0| + |0-4| = 14; vertical |10-0| + |0-4| = 14; diagonal |10-4| = 6; anti-diagonal |0-0| = 0
    assert patch_score(p) == 34
    rng = np.random.default_rng(0)
    noise = noise_image(rng.integers(0, 256, (20, 23, 3), dtype=np.uint8))
    ys, xs = rng.integers(0, 20 - 8 + 1, 16), rng.integers(0, 23 - 8 + 1, 16)
    ref = [patch_score(noise[y : y + 8, x : x + 8]) for y, x in zip(ys, xs)]
    assert candidate_scores(noise, ys, xs, 8).tolist() == ref


def test_max_mode_picks_the_highest_scoring_candidate_and_views_are_seeded():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    img[:, 12:] = 8  # flat right half: noise 0
    patch = select_noise_patch(img, np.random.default_rng(5), bits=3, size=8, n_candidates=16, mode="max",
                               small_resize=32)
    r = np.random.default_rng(5)
    ys, xs = r.integers(0, 17, 16), r.integers(0, 17, 16)
    noise = noise_image(img)
    best = max(range(16), key=lambda k: (patch_score(noise[ys[k] : ys[k] + 8, xs[k] : xs[k] + 8]), -k))
    assert np.array_equal(patch, noise[ys[best] : ys[best] + 8, xs[best] : xs[best] + 8])
    spec = get_detector("lota")
    cfg = spec.make_config(MINI)
    v = spec.views(cfg, True, False)
    assert torch.equal(v(img, np.random.default_rng(2))["patch"], v(img, np.random.default_rng(2))["patch"])
    small = spec.views(cfg, False, False)(img[:5, :5], np.random.default_rng(0))["patch"]  # resized first
    assert small.shape == (3, 32, 32)


def test_view_upsamples_the_patch_with_opencv_exactly():
    """The official ``bit_patch`` ends with ``cv2.resize(patch, (256, 256))`` (INTER_LINEAR) of the uint8 patch."""
    import cv2

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (40, 37, 3), dtype=np.uint8)
    spec = get_detector("lota")
    cfg = spec.make_config({})
    out = spec.views(cfg, False, False)(img, np.random.default_rng(4))["patch"]
    patch = select_noise_patch(img, np.random.default_rng(4), bits=3, size=32, n_candidates=64, mode="max",
                               small_resize=256)
    expected = cv2.resize(patch, (256, 256))
    assert out.shape == (3, 256, 256)
    assert torch.equal(out, torch.from_numpy(expected).permute(2, 0, 1).float() / 255.0)
    with pytest.raises(ValueError, match="up-sampled"):
        _build()({"patch": torch.rand(1, 3, 8, 8)})
