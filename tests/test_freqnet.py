import numpy as np
import pytest
import torch

from sep_bench.baselines.freqnet import FreqNet, hfreq_c, hfreq_wh, highpass_mask_wh
from sep_bench.detectors import get_detector
from sep_bench.protocol import ProtocolError
from sep_bench.weights import WeightsSource
from tests.official_keys import add_bottleneck_layers


def _official_keys_and_shapes(layers=(3, 4)) -> dict[str, tuple]:
    """The official state dict (networks/freqnet.py FreqNet(), 156 keys for layers [3, 4]; written out from the
    official class's state_dict while developing)."""
    shapes: dict[str, tuple] = {"fc1.weight": (1, 512), "fc1.bias": (1,)}
    for k, (cout, cin) in enumerate(((64, 3), (64, 64), (256, 256), (256, 256)), start=1):
        shapes[f"weight{k}"] = (cout, cin, 1, 1)
        shapes[f"bias{k}"] = (cout,)
        shapes[f"realconv{k}.weight"] = (cout, cout, 1, 1)
        shapes[f"imagconv{k}.weight"] = (cout, cout, 1, 1)

    add_bottleneck_layers(shapes, ((64, layers[0]), (128, layers[1])))
    return shapes


def test_state_dict_matches_the_official_key_list():
    official = _official_keys_and_shapes()
    sd = FreqNet().state_dict()
    assert len(official) == 156 and set(sd) == set(official)
    assert all(tuple(sd[k].shape) == official[k] for k in official)


def _mini():
    spec = get_detector("freqnet")
    return spec, spec.make_config({"resize": None, "crop_size": 32, "eval_crop_size": 32, "layers": [1, 1]})


def test_forward_backward_every_parameter_gets_a_gradient():
    spec, cfg = _mini()
    model = spec.build(cfg, WeightsSource.none()).train()
    x = torch.randn(3, 3, 32, 32)
    out = model({"image": x})
    assert out.shape == (3,) and torch.isfinite(out).all()
    model.train_loss(model.train_forward({"image": x}), torch.tensor([0, 1, 1])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


@pytest.mark.parametrize("h,w", [(8, 8), (12, 10), (9, 7), (32, 33)])
def test_highpass_mask_against_signed_frequencies(h, w):
    """Removed: the integer frequencies k with -(n // 4) <= k < n // 4 on both axes (numpy's fftfreq)."""
    kh, kw = np.fft.fftshift(np.fft.fftfreq(h) * h), np.fft.fftshift(np.fft.fftfreq(w) * w)
    low_h = (kh >= -(h // 4)) & (kh < h // 4)
    low_w = (kw >= -(w // 4)) & (kw < w // 4)
    expected = 1.0 - np.outer(low_h, low_w)
    assert np.array_equal(highpass_mask_wh(h, w).numpy(), expected)


def test_spatial_highpass_against_numpy():
    x = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    kh, kw = np.round(np.fft.fftfreq(12) * 12), np.round(np.fft.fftfreq(10) * 10)  # unshifted order
    low = np.outer((kh >= -3) & (kh < 3), (kw >= -2) & (kw < 2))
    f = np.fft.fft2(x.numpy(), norm="ortho") * (1.0 - low)
    expected = np.maximum(np.fft.ifft2(f, norm="ortho").real, 0.0)
    assert np.allclose(hfreq_wh(x).numpy(), expected, atol=1e-12)
    # a pure low frequency vanishes, a pure high one passes (ReLU of itself)
    yy, xx = np.mgrid[:8, :8]
    lo, hi = np.cos(2 * np.pi * 1 * xx / 8), np.cos(2 * np.pi * 3 * xx / 8)
    assert torch.allclose(hfreq_wh(torch.tensor(lo)[None, None]), torch.zeros(1, 1, 8, 8, dtype=torch.float64),
                          atol=1e-12)
    assert torch.allclose(hfreq_wh(torch.tensor(hi)[None, None])[0, 0], torch.tensor(hi).clamp(min=0), atol=1e-12)


def test_channel_highpass_against_numpy():
    x = torch.randn(2, 16, 3, 3, dtype=torch.float64)
    k = np.round(np.fft.fftfreq(16) * 16)
    keep = ~((k >= -4) & (k < 4))
    f = np.fft.fft(x.numpy(), axis=1, norm="ortho") * keep[None, :, None, None]
    expected = np.maximum(np.fft.ifft(f, axis=1, norm="ortho").real, 0.0)
    assert np.allclose(hfreq_c(x).numpy(), expected, atol=1e-12)


def test_official_checkpoint_loads_strictly_and_keeps_its_logit(tmp_path):
    spec, cfg = _mini()
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in _official_keys_and_shapes((1, 1)).items():
        sd[k] = torch.tensor(5) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=gen) * 0.05
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 1.0
    torch.save(sd, tmp_path / "freqnet.pth")
    model = spec.build(cfg, WeightsSource.none())
    spec.load_official(model, tmp_path / "freqnet.pth")
    model.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        f = model.forward_features({"image": x})
        assert torch.equal(model({"image": x}), (f @ sd["fc1.weight"].T + sd["fc1.bias"]).reshape(-1))


def test_pretrained_refused_and_views():
    spec, cfg = _mini()
    with pytest.raises(ProtocolError, match="from scratch"):
        spec.build(cfg, WeightsSource("hub", "timm:resnet50"))
    official = spec.make_config({})
    img = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    assert spec.views(official, True, True)(img, np.random.default_rng(0))["image"].shape == (3, 224, 224)
    assert spec.views(official, False, False)(img, np.random.default_rng(0))["image"].shape == (3, 256, 256)


def _shifted_reference(x, scale, real_conv, imag_conv):  # written out, independent of the port's switch
    """The official order of operations: fftshift, mask / 1x1 conv, ifftshift (the port drops the two rolls)."""
    f = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))
    hp = torch.fft.ifft2(torch.fft.ifftshift(f * highpass_mask_wh(*f.shape[-2:], scale=scale), dim=(-2, -1)),
                         norm="ortho").real.relu()
    c = hp.shape[1]
    mask = torch.ones(c)
    mask[c // 2 - c // scale: c // 2 + c // scale] = 0.0
    g = torch.fft.fftshift(torch.fft.fft(hp, dim=1, norm="ortho"), dim=1) * mask.view(1, c, 1, 1)
    hc = torch.fft.ifft(torch.fft.ifftshift(g, dim=1), dim=1, norm="ortho").real.relu()
    h = torch.fft.fftshift(torch.fft.fft2(hc, norm="ortho"), dim=(-2, -1))
    h = torch.complex(real_conv(h.real), imag_conv(h.imag))
    return torch.fft.ifft2(torch.fft.ifftshift(h, dim=(-2, -1)), norm="ortho").real.relu()


@pytest.mark.parametrize("size", [(12, 12), (9, 14)])
def test_unshifted_blocks_equal_the_official_shifted_ones_exactly(size):
    from sep_bench.baselines.freqnet import _fcl

    torch.manual_seed(0)
    real_conv, imag_conv = torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(8, 8, 1)
    x = torch.randn(2, 8, *size, requires_grad=True)
    ours = _fcl(hfreq_c(hfreq_wh(x)), real_conv, imag_conv)
    ref = _shifted_reference(x, 4, real_conv, imag_conv)
    assert torch.equal(ours, ref)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    assert torch.equal(g_ours, g_ref)


def test_official_shifts_switch_gives_the_same_forward_pass():
    from sep_bench.baselines.freqnet import FreqNet

    torch.manual_seed(0)
    a = FreqNet(layers=(1, 1)).eval()
    b = FreqNet(layers=(1, 1), shifted=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(a({"image": x}), b({"image": x}))
