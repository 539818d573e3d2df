from collections import OrderedDict

import pytest
import torch

from sep_bench.baselines.npr import NPR, npr_residual
from sep_bench.detectors import get_detector
from sep_bench.protocol import ProtocolError
from sep_bench.weights import WeightsSource
from tests.official_keys import add_batchnorm, add_bottleneck_layers


def _official_keys_and_shapes() -> dict[str, tuple]:
    """The official NPR state dict (networks/resnet.py, resnet50 layers [3,4,6,3] of which layer1-2 exist)."""
    shapes = {"conv1.weight": (64, 3, 3, 3), "fc1.weight": (1, 512), "fc1.bias": (1,)}

    add_batchnorm(shapes, "bn1", 64)
    add_bottleneck_layers(shapes, ((64, 3), (128, 4)))
    return shapes


def test_state_dict_matches_the_official_key_list():
    model_sd = NPR().state_dict()
    official = _official_keys_and_shapes()
    assert set(model_sd) == set(official)
    assert all(tuple(model_sd[k].shape) == official[k] for k in official)


def test_official_checkpoint_loads_strictly_and_keeps_its_logit(tmp_path):
    gen = torch.Generator().manual_seed(0)
    sd = OrderedDict()
    for k, shape in _official_keys_and_shapes().items():
        sd[k] = torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=gen) * 0.05
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 1.0
    path = tmp_path / "NPR.pth"
    torch.save(sd, path)
    from sep_bench.engine.predict import load_model

    model = load_model("npr", path, official=True).eval()
    assert model.weights.kind == "file" and model.weights.sha256
    x = torch.rand(2, 3, 64, 64)
    # the official forward, written out: fc1(pool(layer2(layer1(maxpool(relu(bn1(conv1(NPR*2/3))))))))
    ref = NPR()
    ref.load_state_dict(sd)
    ref.eval()
    with torch.no_grad():
        h = ref.maxpool(ref.relu(ref.bn1(ref.conv1(npr_residual(x) * 2 / 3))))
        expected = ref.fc1(torch.flatten(ref.avgpool(ref.layer2(ref.layer1(h))), 1)).reshape(-1)
        assert torch.equal(model({"image": x}), expected)


def test_npr_residual_is_zero_on_2x2_constant_blocks_and_trims_odd_sizes():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert torch.count_nonzero(npr_residual(x)) == 0
    assert npr_residual(torch.rand(1, 3, 33, 31)).shape == (1, 3, 32, 30)


def test_hub_weights_refused_for_a_from_scratch_detector():
    spec = get_detector("npr")
    for source in (WeightsSource("hub", "timm:resnet50"), WeightsSource("file", "x.pth")):
        with pytest.raises(ProtocolError, match="trained from scratch"):
            spec.build(spec.make_config({}), source)


def test_views_train_random_eval_center():
    import numpy as np

    spec = get_detector("npr")
    cfg = spec.make_config({"crop_size": 32, "train_resize": None})
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    tv, ev = spec.views(cfg, True, True), spec.views(cfg, False, False)
    a = tv(img, np.random.default_rng(1))["image"]
    b = tv(img, np.random.default_rng(1))["image"]
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    assert torch.equal(ev(img, np.random.default_rng(1))["image"], ev(img, np.random.default_rng(2))["image"])


def test_full_image_evaluation_on_odd_sizes():
    """eval_crop_size: null (official AIGCBenchmark protocol): the whole image; the residual trims odd rows/cols."""
    import numpy as np

    spec = get_detector("npr")
    assert spec.make_config({"crop_size": 32}).eval_crop_size == 32  # default: the training crop
    cfg = spec.make_config({"crop_size": 32, "train_resize": None, "eval_crop_size": None, "layers": [1, 1]})
    view = spec.views(cfg, False, False)
    assert spec.views(cfg, True, True)(np.zeros((40, 40, 3), np.uint8), np.random.default_rng(0))["image"].shape == (
        3, 32, 32)  # training still crops
    model = spec.build(cfg, WeightsSource.none()).eval()
    rng = np.random.default_rng(0)
    for h, w in ((33, 47), (64, 31), (1, 5)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x = view(img, rng)["image"]
        assert x.shape == (3, max(h, 2), max(w, 2))  # the full image (under 2 px: padded to the residual's grid)
        with torch.no_grad():
            logit = model({"image": x[None]})
            trimmed = model({"image": x[None, :, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]})
        assert logit.shape == (1,) and torch.isfinite(logit).all() and torch.equal(logit, trimmed)
