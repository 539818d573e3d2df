import numpy as np
import torch

from sep_bench.baselines.gramnet import GramNet, gram_matrix
from sep_bench.detectors import get_detector
from sep_bench.weights import WeightsSource

# The official state dict (stylegan-ffhq/resnet18_gram.py, resnet18()): torchvision ResNet-18 without `fc`
# (120 keys) plus these 113 (generated from the official class while developing).
_BRANCH_IN = {"conv_interi_0": 3, "conv_inter0_0": 64, "conv_inter1_0": 64, "conv_inter2_0": 64,
              "conv_inter3_0": 128, "conv_inter4_0": 256}
_GRAM_CONVS = ("gi_fc", "g0_fc", "g2_fc", "g3_fc", "g4_fc")


def _official_extra_keys(head: int = 2) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {"scale.scale": (1,), "fcnewr.0.weight": (512, 704), "fcnewr.0.bias": (512,),
                                "fcnewr.3.weight": (head, 512), "fcnewr.3.bias": (head,)}

    def block(name, cin, cout):
        shapes[f"{name}.0.weight"] = (cout, cin, 3, 3)
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.1.{k}"] = (cout,)
        shapes[f"{name}.1.num_batches_tracked"] = ()

    for name, cin in _BRANCH_IN.items():
        block(name, cin, 32)
    for prefix in _GRAM_CONVS:
        block(f"{prefix}1", 1, 16), block(f"{prefix}2", 16, 32)
    block("g_fc1r", 1, 16), block("g_fc2r", 16, 32)
    return shapes


def _official_keys(head: int = 2) -> dict[str, tuple]:
    import torchvision

    tv = {k: tuple(v.shape) for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    return {**tv, **_official_extra_keys(head)}


def _mini():
    spec = get_detector("gramnet")
    cfg = spec.make_config({"train_view": "crop", "crop_size": 32, "train_resize": None, "eval_crop_size": 32,
                            "input_format": "imagenet"})
    return spec, cfg


def test_state_dict_matches_the_official_key_list():
    official = _official_keys(head=1)
    sd = get_detector("gramnet").build(_mini()[1], WeightsSource.none()).state_dict()
    assert len(official) == 233 and set(sd) == set(official)
    assert all(tuple(sd[k].shape) == official[k] for k in official)


def test_forward_backward_every_parameter_gets_a_gradient():
    spec, cfg = _mini()
    model = spec.build(cfg, WeightsSource.none()).train()
    x = torch.randn(3, 3, 32, 32)
    out = model({"image": x})
    assert out.shape == (3,) and torch.isfinite(out).all()
    model.train_loss(model.train_forward({"image": x}), torch.tensor([0, 1, 1])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_gram_matrix_against_a_hand_computation():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, -1.0], [2.0, 0.5]]]])  # (1, 2, 2, 2)
    # F = [[1, 2, 3, 4], [0, -1, 2, 0.5]]; G = F F^T / (C*H*W = 8)
    expected = torch.tensor([[1 + 4 + 9 + 16, 0 - 2 + 6 + 2], [0 - 2 + 6 + 2, 0 + 1 + 4 + 0.25]]) / 8.0
    assert torch.allclose(gram_matrix(x), expected.view(1, 1, 2, 2))


def _official_checkpoint(tmp_path, head: int):
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in _official_keys(head).items():
        sd[k] = torch.tensor(3) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=gen) * 0.05
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 1.0
    path = tmp_path / f"gram{head}.pth"
    torch.save(sd, path)
    return sd, path


def test_official_two_class_head_becomes_the_fake_logit(tmp_path):
    """Face models: LogSoftmax over (fake, real), class 0 = fake -> logit = z_fake - z_real."""
    spec, cfg = _mini()
    sd, path = _official_checkpoint(tmp_path, head=2)
    model = spec.build(cfg, WeightsSource.none())
    spec.load_official(model, path)
    model.eval()
    ref = GramNet(__import__("torchvision").models.resnet18(), num_classes=2)
    ref.load_state_dict(sd, strict=True)
    ref.eval()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        logp = torch.log_softmax(ref.forward_head(ref.forward_features({"image": x})), 1)
        assert torch.allclose(model({"image": x}), logp[:, 0] - logp[:, 1], atol=1e-5)


def test_port_one_logit_head_loads_as_is(tmp_path):
    spec, cfg = _mini()
    sd, path = _official_checkpoint(tmp_path, head=1)
    model = spec.build(cfg, WeightsSource.none())
    spec.load_official(model, path)
    assert torch.equal(model.fcnewr[3].weight, sd["fcnewr.3.weight"])


def test_views_official_and_port():
    spec = get_detector("gramnet")
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    off = spec.make_config({"input_size": 40, "down_range": [8, 16]})
    x = spec.views(off, True, False)(img, np.random.default_rng(1))["image"]
    assert x.shape == (3, 40, 40) and x.max() > 1.5  # BGR pixel values 0..255, no normalisation
    ev = spec.views(off, False, False)(img, np.random.default_rng(1))["image"]
    assert ev.shape == (3, 48, 64) and torch.equal(ev[0], torch.from_numpy(img[:, :, 2]).float())  # full image, B
    spec2, port = _mini()
    a = spec2.views(port, True, True)(img, np.random.default_rng(3))["image"]
    assert a.shape == (3, 32, 32) and torch.equal(a, spec2.views(port, True, True)(img, np.random.default_rng(3))["image"])
