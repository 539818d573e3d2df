import numpy as np
import pytest
import torch

from sep_bench.baselines.lgrad import LGrad, StyleGANDiscriminator, input_gradient, normalize_gradient
from sep_bench.detectors import get_detector
from sep_bench.protocol import ProtocolError
from sep_bench.weights import PretrainedUnavailableError, WeightsSource

TINY = {"resolution": 16, "fmaps_base": 32, "fmaps_max": 4, "backbone": "resnet18", "crop_size": 12}


def _official_keys_and_shapes(res_log2: int = 8, base: int = 16 << 10, fmax: int = 512) -> dict[str, tuple]:
    """img2gad_pytorch/models/stylegan_discriminator.py ``StyleGANDiscriminator(256)``: 51 entries."""
    nf = lambda res: min(base // res, fmax)  # noqa: E731
    shapes: dict[str, tuple] = {"lod": ()}
    for r2 in range(res_log2, 1, -1):
        res, i = 2**r2, res_log2 - r2
        shapes[f"input{i}.weight"], shapes[f"input{i}.bias"] = (nf(res), 3, 1, 1), (nf(res),)
        if res != 4:
            shapes[f"layer{2 * i}.weight"], shapes[f"layer{2 * i}.bias"] = (nf(res), nf(res), 3, 3), (nf(res),)
            shapes[f"layer{2 * i + 1}.weight"] = (nf(res // 2), nf(res), 3, 3)
            shapes[f"layer{2 * i + 1}.bias"] = (nf(res // 2),)
            shapes[f"layer{2 * i + 1}.blur.kernel"] = (nf(res), 1, 3, 3)
        else:
            shapes[f"layer{2 * i}.weight"], shapes[f"layer{2 * i}.bias"] = (nf(4), nf(4) + 1, 3, 3), (nf(4),)
            shapes[f"layer{2 * i + 1}.weight"] = (nf(2), nf(4) * 16)
            shapes[f"layer{2 * i + 1}.bias"] = (nf(2),)
    shapes[f"layer{2 * i + 2}.weight"], shapes[f"layer{2 * i + 2}.bias"] = (1, nf(2)), (1,)
    return shapes


def _build(**model):
    spec = get_detector("lgrad")
    return spec.build(spec.make_config({**TINY, **model}), WeightsSource.none())


def test_discriminator_state_dict_is_the_official_key_list():
    sd = StyleGANDiscriminator(256).state_dict()
    official = _official_keys_and_shapes()
    assert len(official) == 51 and set(sd) == set(official)
    assert all(tuple(sd[k].shape) == official[k] for k in official)
    assert sd["layer1.blur.kernel"][0, 0].tolist() == [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16],
                                                       [1 / 16, 2 / 16, 1 / 16]]


def test_forward_backward_trains_the_classifier_only():
    torch.manual_seed(0)
    model = _build().train()
    spec = get_detector("lgrad")
    view = spec.views(spec.make_config(TINY), True, True)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 12, 10, 3), dtype=np.uint8)
    batch = [view(i, np.random.default_rng(k)) for k, i in enumerate(imgs)]
    views = {k: torch.stack([b[k] for b in batch]) for k in batch[0]}
    assert views["image"].shape == (2, 3, 16, 16) and views["box"][:, 2].tolist() == [12, 12]
    out = model.train_forward(views)
    assert out["logits"].shape == (2,) and torch.isfinite(out["logits"]).all()
    model.train_loss(out, torch.tensor([0.0, 1.0])).backward()
    trainable = model.trainable_parameters()
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert all(not p.requires_grad for p in model.discriminator.parameters())
    with torch.no_grad():  # evaluation: the gradient is still taken
        ev = spec.views(spec.make_config(TINY), False, False)(imgs[0], np.random.default_rng(0))
        assert torch.isfinite(model.eval()({k: v[None] for k, v in ev.items()})).all()


def test_input_gradient_matches_finite_differences():
    torch.manual_seed(0)
    disc = StyleGANDiscriminator(8, fmaps_base=32, fmaps_max=4).double().eval()
    for m in disc.minibatch_std_layers():
        m.group_size = 1
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        grad = input_gradient(disc, x)
    gen = torch.Generator().manual_seed(1)
    eps = 1e-6
    for _ in range(6):
        b, c, i, j = (int(torch.randint(0, n, (1,), generator=gen)) for n in (2, 3, 8, 8))
        xp, xm = x.clone(), x.clone()
        xp[b, c, i, j] += eps
        xm[b, c, i, j] -= eps
        with torch.no_grad():
            fd = (disc(xp).sum() - disc(xm).sum()) / (2 * eps)
        assert abs(float(fd) - float(grad[b, c, i, j])) < 1e-6 * max(1.0, abs(float(fd)))


def test_gradients_do_not_depend_on_the_batch_with_group_size_one():
    model = _build()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    together = input_gradient(model.discriminator, x)
    alone = torch.cat([input_gradient(model.discriminator, x[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-6)


def test_normalize_gradient_is_per_image_min_max_rounded():
    g = torch.tensor([[-1.0, 0.0], [1.0, 3.0]]).expand(1, 3, 2, 2).clone()
    out = normalize_gradient(torch.cat([g, torch.zeros_like(g)]))
    assert out[0, 0].tolist() == [[0.0, 64.0], [128.0, 255.0]]  # (g + 1) / 4 * 255 = 63.75, 127.5 -> 128 (even)
    assert out[1].abs().sum() == 0  # a constant gradient stays 0


def test_discriminator_file_loads_strictly_official_classifier_and_weight_rules(tmp_path):
    spec = get_detector("lgrad")
    disc = StyleGANDiscriminator(16, fmaps_base=32, fmaps_max=4)
    path = tmp_path / "disc.pth"
    torch.save(disc.state_dict(), path)
    model = spec.build(spec.make_config({**TINY, "discriminator": str(path)}), WeightsSource.none())
    assert isinstance(model, LGrad) and model.discriminator_pretrained
    assert torch.equal(model.discriminator.layer0.weight, disc.layer0.weight)
    cls = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.classifier.state_dict().items()}
    torch.save({"model": cls}, tmp_path / "lgrad.pth")
    spec.load_official(model, tmp_path / "lgrad.pth")
    assert torch.equal(model.classifier.fc.weight, cls["fc.weight"])  # the logit is already the fake logit
    with pytest.raises(PretrainedUnavailableError):
        spec.load_official(_build(), tmp_path / "lgrad.pth")  # random discriminator
    with pytest.raises(PretrainedUnavailableError, match="not found"):
        _build(discriminator=str(tmp_path / "missing.pth"))
    with pytest.raises(ProtocolError, match="random discriminator"):
        spec.build(spec.make_config(TINY), WeightsSource("hub", "timm:resnet18.tv_in1k"))
