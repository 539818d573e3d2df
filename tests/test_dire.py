"""DIRE: the classifier (official key list, strict {'model': sd} load, fake-logit convention) and its DIRE maps."""

import numpy as np
import pytest
import torch
import torchvision

from sep_bench.detectors import get_detector
from sep_bench.recon.config import ReconConfig
from sep_bench.weights import WeightsSource

MINI = {"backbone": "resnet18", "crop_size": 32, "train_resize": None, "eval_resize": None,
        "reconstruct": {"arch": "tiny-unet", "steps": 2, "image_size": 32, "batch_size": 4}}


def test_defaults_are_the_official_recipe():
    cfg = get_detector("dire").make_config({})
    assert (cfg.backbone, cfg.crop_size, cfg.train_resize, cfg.eval_resize) == ("resnet50", 224, 256, 256)
    assert cfg.blur_prob == 0.0 and cfg.jpeg_prob == 0.0 and cfg.fc_init_std == 0.02
    r = cfg.reconstruct
    assert (r.method, r.steps, r.image_size, r.clip_denoised, r.use) == ("ddim-inversion", 20, 256, True, "replace")
    assert r.arch in ("sd-v1", "adm-256-uncond") and r.weights


def test_official_checkpoint_format_loads_strictly(tmp_path):
    spec = get_detector("dire")
    model = spec.build(spec.make_config({}), WeightsSource.none()).eval()
    # networks/resnet.py of ZhendongWang6/DIRE is torchvision's ResNet: resnet50(num_classes=1)
    official = torchvision.models.resnet50(num_classes=1).state_dict()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in official.items()}
    gen = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=gen) * 0.02 if v.is_floating_point() else v) for k, v in official.items()}
    sd = {k: (v.abs() + 1 if k.endswith("running_var") else v) for k, v in sd.items()}
    torch.save({"model": sd, "epoch": 3}, tmp_path / "lsun_adm.pth")
    spec.load_official(model, tmp_path / "lsun_adm.pth")
    ref = torchvision.models.resnet50(num_classes=1)
    ref.load_state_dict(sd)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # demo.py: model(x).sigmoid() = P(synthetic): the logit is already the fake logit
        assert torch.allclose(model({"image": x}), ref.eval()(x).reshape(-1))
    torch.save({"model": {k: v for k, v in sd.items() if k != "fc.bias"}}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError):
        spec.load_official(model, tmp_path / "bad.pth")


def test_mini_forward_backward_on_dire_maps():
    from sep_bench.recon.ddim import dire_batch
    from sep_bench.recon.models import build_model

    spec = get_detector("dire")
    cfg = spec.make_config(MINI)
    assert isinstance(cfg.reconstruct, ReconConfig) and cfg.reconstruct.tiny
    imgs = [np.random.default_rng(i).integers(0, 256, (48, 40, 3), dtype=np.uint8) for i in range(2)]
    dm = build_model(cfg.reconstruct).to(torch.device("cpu"), torch.float32)
    rec, dire = dire_batch(dm, cfg.reconstruct, imgs, torch.device("cpu"), torch.float32)
    assert dire.shape == (2, 32, 32, 3) and dire.dtype == np.uint8
    model = spec.build(cfg, WeightsSource.none()).train()
    view = spec.views(cfg, True, True)
    x = torch.stack([view(d, np.random.default_rng(i))["image"] for i, d in enumerate(dire)])
    logits = model({"image": x})
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    model.loss(logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in model.trainable_parameters())
