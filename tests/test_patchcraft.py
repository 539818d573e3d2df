"""PatchCraft / RPTC: texture diversity, smash & reconstruct, official key list, label convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate

from sep_bench.baselines.patchcraft import PatchCraft, smash_reconstruct, texture_diversity
from sep_bench.detectors import get_detector
from sep_bench.layers.srm import srm_bank
from sep_bench.protocol import ProtocolError
from sep_bench.weights import WeightsSource

MINI = {"patch_size": 8, "grid": 2, "width": 4}


def _official_keys_and_shapes(width: int = 32) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the authors' RPTC.pth (``netC``, ``module.`` prefix removed)."""
    shapes: dict[str, tuple[int, ...]] = {"group1.hpf.weight": (30, 1, 5, 5)}

    def conv_bn(prefix: str, conv: int, c_in: int) -> None:
        shapes[f"{prefix}.{conv}.weight"] = (width, c_in, 3, 3)
        shapes[f"{prefix}.{conv}.bias"] = (width,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{conv + 1}.{name}"] = (width,)
        shapes[f"{prefix}.{conv + 1}.num_batches_tracked"] = ()

    conv_bn("group1_b", 0, 90)
    for group, n in (("group2", 4), ("group3", 2), ("group4", 2), ("group5", 2)):
        for i in range(n):
            conv_bn(group, 3 * i, width)
    shapes["fc2.weight"], shapes["fc2.bias"] = (1, width), (1,)
    return shapes


def test_texture_diversity_by_hand():
    patch = np.array([[0, 1], [3, 7]], dtype=np.uint8)[:, :, None]
    # vertical |0-3|+|1-7| = 9, horizontal |0-1|+|3-7| = 5, diagonal |0-7| = 7, anti-diagonal |1-3| = 2
    assert texture_diversity(patch) == 23
    two = np.stack([patch, np.zeros_like(patch)])
    assert texture_diversity(two).tolist() == [23, 0]
    rgb = np.repeat(patch, 3, axis=2)
    assert texture_diversity(rgb) == 69  # summed over the channels


class _Positions:
    """A stand-in for the numpy Generator: returns the given crop corners (rows, then columns)."""

    def __init__(self, ys, xs):
        self.draws = [np.array(ys), np.array(xs)]

    def integers(self, low, high, size):
        out = self.draws.pop(0)
        assert len(out) == size and out.min() >= low and out.max() < high
        return out


def test_smash_reconstruct_ranks_and_tiles_by_hand():
    img = np.zeros((4, 4, 1), np.uint8)
    img[0:2, 2:4, 0] = [[0, 9], [0, 0]]  # top-right tile: diversity 9 + 9 + 0 + 9 = 27
    img[2:4, 0:2, 0] = [[0, 1], [0, 0]]  # bottom-left: 3
    img[2:4, 2:4, 0] = [[5, 0], [0, 0]]  # bottom-right: 5 + 5 + 5 + 0 = 15; top-left: flat, 0
    # candidates in the order TL, TR, BL, BR; a 2x2 grid uses all four
    poor, rich = smash_reconstruct(img, _Positions([0, 0, 2, 2], [0, 2, 0, 2]), patch_size=2, grid=2, n_candidates=4)
    tiles = {0: img[0:2, 0:2], 27: img[0:2, 2:4], 3: img[2:4, 0:2], 15: img[2:4, 2:4]}
    for image, order in ((poor, [0, 3, 15, 27]), (rich, [27, 15, 3, 0])):
        assert image.shape == (4, 4, 1)
        got = [image[0:2, 0:2], image[0:2, 2:4], image[2:4, 0:2], image[2:4, 2:4]]  # row by row from the top left
        assert all(np.array_equal(g, tiles[s]) for g, s in zip(got, order))
    # grid 1 keeps the single poorest and the single richest
    poor, rich = smash_reconstruct(img, _Positions([0, 0, 2, 2], [0, 2, 0, 2]), patch_size=2, grid=1, n_candidates=4)
    assert np.array_equal(poor, tiles[0]) and np.array_equal(rich, tiles[27])


def test_small_images_are_resized_to_one_patch():
    img = np.random.default_rng(0).integers(0, 256, (5, 20, 3), dtype=np.uint8)
    poor, rich = smash_reconstruct(img, np.random.default_rng(0), patch_size=8, grid=2, n_candidates=12)
    assert poor.shape == rich.shape == (16, 16, 3)
    assert np.array_equal(poor[:8, :8], poor[8:, 8:])  # every crop of an 8x8 image is the image itself


def test_srm_stage_is_the_30_filters_per_channel():
    model = PatchCraft(width=4).eval()
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    maps = model.group1.double()(x.reshape(3, 1, 12, 12)).reshape(1, 90, 12, 12)
    bank = srm_bank("srm30")
    for c, f in ((0, 0), (1, 17), (2, 29)):
        ref = correlate(x[0, c].numpy(), bank[f], mode="constant")
        assert np.allclose(maps[0, c * 30 + f].detach().numpy(), ref, atol=1e-6)  # float32 kernel
    assert not model.group1.hpf.weight.requires_grad


def test_mini_forward_backward_every_trainable_parameter_gets_a_gradient():
    spec = get_detector("patchcraft")
    cfg = spec.make_config(MINI)
    model = spec.build(cfg, WeightsSource.none()).train()
    view = spec.views(cfg, True, True)
    rng = np.random.default_rng(0)
    batch = torch.stack([view(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8), rng)["patches"] for _ in range(3)])
    assert batch.shape == (3, 2, 3, 16, 16) and 0.0 <= batch.min() and batch.max() <= 1.0
    logits = model({"patches": batch})
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    model.loss(logits, torch.tensor([0.0, 1.0, 1.0])).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["group1.hpf.weight"]


def test_state_dict_matches_the_official_key_list():
    sd = get_detector("patchcraft").build(get_detector("patchcraft").make_config({}), WeightsSource.none()).state_dict()
    official = _official_keys_and_shapes()
    assert set(sd) == set(official)
    assert all(tuple(sd[k].shape) == official[k] for k in official)


def test_official_checkpoint_loads_strictly_and_keeps_its_fake_logit(tmp_path):
    gen = torch.Generator().manual_seed(0)
    net_c = {}
    for k, shape in _official_keys_and_shapes().items():
        v = torch.tensor(3) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=gen) * 0.1
        net_c["module." + k] = v.abs() + 0.5 if k.endswith("running_var") else v
    net_c["module.group1.hpf.weight"] = torch.from_numpy(srm_bank("srm30")).float()[:, None]
    path = tmp_path / "RPTC.pth"
    torch.save({"netC": net_c}, path)
    from sep_bench.engine.predict import load_model

    model = load_model("patchcraft", path, official=True).eval()
    x = torch.rand(2, 2, 3, 32, 32)
    ref = PatchCraft()
    ref.load_state_dict({k.removeprefix("module."): v for k, v in net_c.items()})
    ref.eval()
    with torch.no_grad():  # the official forward written out: fc2(pool(g5..g2(f(poor) - f(rich))))
        res = ref.texture_features(x[:, 0]) - ref.texture_features(x[:, 1])
        h = ref.group5(ref.group4(ref.group3(ref.group2(res))))
        expected = ref.fc2(torch.flatten(ref.advpool(h), 1)).reshape(-1)
        assert torch.equal(model({"patches": x}), expected)


def test_views_are_seeded_and_pretrained_weights_are_refused():
    spec = get_detector("patchcraft")
    cfg = spec.make_config(MINI)
    img = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    view = spec.views(cfg, False, False)
    a, b = view(img, np.random.default_rng(3))["patches"], view(img, np.random.default_rng(3))["patches"]
    assert torch.equal(a, b)
    with pytest.raises(ProtocolError, match="from scratch"):
        spec.build(cfg, WeightsSource("hub", "timm:resnet18"))
    with pytest.raises(ProtocolError, match="n_candidates"):
        spec.views(spec.make_config({**MINI, "n_candidates": 3}), False, False)
