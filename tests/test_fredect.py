import numpy as np
import pytest
import torch
from scipy.fft import dctn

from sep_bench.baselines.fredect import fit_dct_statistics, log_dct
from sep_bench.detectors import get_detector
from sep_bench.weights import WeightsFileError, WeightsSource


def _mini(**extra):
    spec = get_detector("fredect")
    cfg = spec.make_config({"backbone": "resnet18", "crop_size": 16, "train_resize": None, "eval_resize": None,
                            **extra})
    return spec, cfg


def _images(n, size=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size))).float()


def test_dct_against_scipy():
    x = _images(2, 12)
    ref = np.log(np.abs(dctn(x.numpy().astype(np.float64), type=2, norm="ortho", axes=(-2, -1))) + 1e-12)
    assert np.allclose(log_dct(x).numpy(), ref, rtol=0, atol=1e-9)


def test_statistics_are_the_training_mean_and_population_variance():
    spec, cfg = _mini()
    model = spec.build(cfg, WeightsSource.none())
    x = _images(7)
    fit_dct_statistics(model, [x[:3], x[3:5], x[5:]])
    d = log_dct(x)
    assert torch.allclose(model.dct_mean, d.mean(0), atol=1e-10)
    assert torch.allclose(model.dct_var, d.var(0, unbiased=False), atol=1e-9)
    assert float(model.stats_count) == 7 and bool(model.stats_frozen)
    assert {"dct_mean", "dct_var", "stats_count", "stats_frozen"} <= set(model.state_dict())
    z = model.normalise(x)
    assert torch.allclose(z.double().mean(0), torch.zeros_like(z[0]).double(), atol=1e-5)


def test_first_epoch_statistics_pass_then_training():
    """Training forwards accumulate statistics and change no weight; eval() (end of epoch) freezes them."""
    spec, cfg = _mini()
    model = spec.build(cfg, WeightsSource.none()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = _images(8)
    for batch in (x[:4], x[4:]):
        out = model.train_forward({"image": batch})
        loss = model.train_loss(out, torch.tensor([0, 1, 0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k not in ("dct_mean", "dct_var", "stats_count"))
    assert torch.allclose(model.dct_mean, log_dct(x).mean(0), atol=1e-10) and not bool(model.stats_frozen)
    model.eval()
    assert bool(model.stats_frozen)
    model.train()
    out = model.train_forward({"image": x})["logits"]  # now a real forward: gradients reach every parameter
    assert out.shape == (8,) and torch.isfinite(out).all()
    model.train_loss({"logits": out}, torch.tensor([0, 1] * 4)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    mean = model.dct_mean.clone()
    model.train_forward({"image": _images(4, seed=1)})
    assert torch.equal(model.dct_mean, mean)  # frozen


def _port_checkpoint(tmp_path):
    import torchvision

    net = torchvision.models.resnet18()
    net.fc = torch.nn.Linear(512, 1)
    path = tmp_path / "fredect_port.pth"
    torch.save({"model": net.state_dict()}, path)
    return net, path


def test_port_checkpoint_needs_its_statistics_file(tmp_path):
    spec, cfg = _mini()
    _, path = _port_checkpoint(tmp_path)
    with pytest.raises(WeightsFileError, match="stats_file"):
        spec.load_official(spec.build(cfg, WeightsSource.none()), path)
    gen = torch.Generator().manual_seed(0)
    mean, var = torch.randn(3, 16, 16, generator=gen, dtype=torch.float64), torch.rand(3, 16, 16, dtype=torch.float64) + 0.5
    torch.save(mean, tmp_path / "dct_mean")  # the port's format: two torch-saved float64 (3, S, S) tensors
    torch.save(var, tmp_path / "dct_var")
    spec, cfg = _mini(stats_file=[str(tmp_path / "dct_mean"), str(tmp_path / "dct_var")])
    model = spec.build(cfg, WeightsSource.none())
    spec.load_official(model, path)
    assert torch.equal(model.dct_mean, mean) and torch.equal(model.dct_var, var) and bool(model.stats_frozen)
    model.eval()
    x = _images(2)
    with torch.no_grad():
        expected = ((log_dct(x) - mean) / var.sqrt()).float()
        assert torch.equal(model.normalise(x), expected)
        assert model({"image": x}).shape == (2,)


def test_views_center_crop_pixel_values():
    spec = get_detector("fredect")
    cfg = spec.make_config({})
    img = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    a = spec.views(cfg, True, False)(img, np.random.default_rng(0))["image"]
    b = spec.views(cfg, False, False)(img, np.random.default_rng(5))["image"]
    assert a.shape == (3, 224, 224) and torch.equal(a, b) and a.max() > 1.5  # the port: same view, values 0..255
