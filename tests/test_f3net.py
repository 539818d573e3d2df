"""F3Net: FAD bands and LFS statistics against scipy.fft, the variant's key list, label conversion, mini model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from scipy.fft import dctn, idctn

from sep_bench.baselines.f3net import F3Net, FADHead, LFSHead, official_to_fake
from sep_bench.detectors import get_detector
from sep_bench.layers.dct import sliding_block_dct
from sep_bench.weights import PretrainedUnavailableError, WeightsSource

MINI = {"img_size": 64, "resize": None, "stem": [4, 8], "entry": [8, 8, 16], "middle_blocks": 1,
        "exit": [16, 16, 16], "mix_after": [4, 5]}

# sha256 of the sorted "key shape" lines of GenImage detector_codes/F3Net-main/f3net.py `F3Net(num_classes=2)`
# (628 keys, generated from that code's model); fc is (2, 4096) there, (1, 4096) here
VARIANT_KEYS_SHA256 = "d016835daac4a63a20143974fadd8daf757011081f9574e14a5a6b77ec8b7f02"


def _band(size: int, start: float, end: float) -> np.ndarray:
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return ((i + j > start) & (i + j <= end)).astype(np.float64)


def test_fad_bands_match_scipy_dct():
    size = 32
    head = FADHead(size).double()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, size, size))
    learn = [rng.normal(0, 0.1, (size, size)) for _ in range(4)]
    with torch.no_grad():
        for f, lv in zip(head.filters, learn):
            f.learnable.copy_(torch.from_numpy(lv))
        out = head(torch.from_numpy(x)).numpy()
    assert out.shape == (2, 12, size, size)
    spectrum = dctn(x, type=2, norm="ortho", axes=(-2, -1))
    bands = [(0, 2), (2, 4), (4, 32), (0, 64)]  # size // 16, size // 8, size, 2 * size
    for k, ((a, b), lv) in enumerate(zip(bands, learn)):
        filt = _band(size, a, b) + 2.0 / (1.0 + np.exp(-lv)) - 1.0
        ref = idctn(spectrum * filt, type=2, norm="ortho", axes=(-2, -1))
        assert np.allclose(out[:, 3 * k:3 * k + 3], ref, atol=1e-6)  # float32 DCT matrices
    # the "all" band with a zero adjustment removes exactly the DC coefficient
    assert _band(size, 0, 64).sum() == size * size - 1


def test_sliding_block_dct_matches_scipy():
    x = torch.rand(1, 2, 9, 11, dtype=torch.float64)
    blocks = sliding_block_dct(x, 4, stride=2, padding=1)  # (1, L, 2, 4, 4), L = 4 x 5
    padded = np.pad(x[0].numpy(), ((0, 0), (1, 1), (1, 1)))
    assert blocks.shape == (1, 20, 2, 4, 4)
    for r, c in ((0, 0), (1, 3), (3, 4)):
        ref = dctn(padded[:, 2 * r:2 * r + 4, 2 * c:2 * c + 4], type=2, norm="ortho", axes=(-2, -1))
        assert np.allclose(blocks[0, r * 5 + c].numpy(), ref)


def test_lfs_statistics_by_hand_and_against_scipy():
    size, window, m = 24, 10, 6
    head = LFSHead(size, window, m).double()
    assert head.out_size == 12
    with torch.no_grad():
        for f in head.filters:
            f.learnable.zero_()  # 2 sigmoid(0) - 1 = 0: the bands are the 0/1 masks
    # hand example: the M = 6 bands (20 i / 6, 20 (i + 1) / 6] of i + j over a 10 x 10 window hold the diagonals
    # {1,2,3}, {4,5,6}, {7..10}, {11,12,13}, {14,15,16}, {17,18}: 2+3+4, 5+6+7, 8+9+10+9, 8+7+6, 5+4+3, 2+1
    # coefficients (99 = all but DC); ft_num is that count
    assert [int(f.ft_num) for f in head.filters] == [9, 18, 36, 21, 12, 3]
    assert head(torch.zeros(1, 3, size, size, dtype=torch.float64)).shape == (1, m, 12, 12)
    # independent computation of a few windows of a random image
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1, 3, size, size))
    with torch.no_grad():
        out = head(torch.from_numpy(x)).numpy()
    gray = (0.299 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2] + 1.0) * 122.5
    padded = np.pad(gray, 4)
    for r, c in ((0, 0), (5, 7), (11, 11)):
        spec = np.log10(np.abs(dctn(padded[2 * r:2 * r + 10, 2 * c:2 * c + 10], norm="ortho")) + 1e-15)
        for i in range(m):
            mask = _band(window, 20.0 / m * i, 20.0 / m * (i + 1))
            assert np.isclose(out[0, i, r, c], (spec * mask).sum() / mask.sum())


def test_full_size_keys_are_the_variants():
    with torch.device("meta"):
        model = F3Net()
    lines = []
    for k, v in model.state_dict().items():
        shape = (2, 4096) if k == "fc.weight" else (2,) if k == "fc.bias" else tuple(v.shape)
        lines.append(f"{k} {shape}")
    assert len(lines) == 628
    assert hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest() == VARIANT_KEYS_SHA256
    # the backbones are Cadene's Xception (timm legacy_xception) without the ImageNet classifier
    import timm

    with torch.device("meta"):
        xception = timm.create_model("legacy_xception", pretrained=False)
    trunk_keys = {k for k in xception.state_dict() if not k.startswith("fc.")}
    assert {k.split(".", 1)[1] for k in model.state_dict() if k.startswith("fad_excep.")} == trunk_keys
    assert model.state_dict()["fad_excep.conv1.weight"].shape == (32, 12, 3, 3)
    assert model.state_dict()["lfs_excep.conv1.weight"].shape == (32, 6, 3, 3)


def _variant_state_dict(model: F3Net, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the variant's format (fc with 2 outputs) with random values."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(5)
        elif k.startswith(("fad_head.", "lfs_head.")) and not k.endswith("learnable"):
            sd[k] = v.clone()  # fixed DCT matrices and masks
        else:
            sd[k] = torch.randn(v.shape, generator=gen) * 0.05 + (1.0 if k.endswith("running_var") else 0.0)
    sd["fc.weight"] = torch.randn(2, model.fc.in_features, generator=gen)
    sd["fc.bias"] = torch.randn(2, generator=gen)
    return sd


def test_variant_checkpoint_loads_strictly_as_one_fake_logit(tmp_path):
    spec = get_detector("f3net")
    cfg = spec.make_config(MINI)
    model = spec.build(cfg, WeightsSource.none())
    sd = _variant_state_dict(model)
    path = tmp_path / "f3net.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    spec.load_official(model, path)
    model.eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        feats = model.forward_features({"image": x})
        two = feats @ sd["fc.weight"].T + sd["fc.bias"]  # the variant's 2-way head on the same features
        assert torch.allclose(torch.sigmoid(model({"image": x})), torch.softmax(two, 1)[:, 1], atol=1e-6)
    with pytest.raises(KeyError):
        official_to_fake({"fc.weight": torch.zeros(2, 4)})


def test_mini_forward_backward_every_parameter_gets_a_gradient():
    spec = get_detector("f3net")
    cfg = spec.make_config(MINI)
    model = spec.build(cfg, WeightsSource.none()).train()
    view = spec.views(cfg, True, True)
    rng = np.random.default_rng(0)
    batch = torch.stack([view(rng.integers(0, 256, (70, 80, 3), dtype=np.uint8), rng)["image"] for _ in range(3)])
    assert batch.shape == (3, 3, 64, 64) and batch.min() >= -1 and batch.max() <= 1
    with torch.no_grad():  # the gammas start at zero, which would hide the MixBlock convs from the gradient
        for b in (4, 5):
            getattr(model, f"mix_block{b}").FAD_gamma.fill_(0.3)
            getattr(model, f"mix_block{b}").LFS_gamma.fill_(-0.2)
    logits = model({"image": batch})
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    model.loss(logits, torch.tensor([0.0, 1.0, 1.0])).backward()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert all(n.endswith(("base", "ft_num", "_DCT_all", "_DCT_all_T", "_DCT_patch", "_DCT_patch_T")) for n in frozen)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_imagenet_weights_need_the_full_width_and_offline_hub_raises(tmp_path):
    import timm

    spec = get_detector("f3net")
    xception = timm.create_model("legacy_xception", pretrained=False)
    path = tmp_path / "xception.pth"
    torch.save(xception.state_dict(), path)
    with pytest.raises(PretrainedUnavailableError, match="width"):
        spec.build(spec.make_config(MINI), WeightsSource("file", str(path)))
    with pytest.raises(PretrainedUnavailableError):
        spec.build(spec.make_config(MINI), WeightsSource("hub", "timm:legacy_xception.tf_in1k"))  # HF_HUB_OFFLINE
    # full width: conv1 of each stream is the RGB kernel repeated and divided (the variant's init)
    model = spec.build(spec.make_config({"img_size": 64, "resize": None}), WeightsSource("file", str(path)))
    rgb = xception.conv1.weight
    assert torch.allclose(model.fad_excep.conv1.weight[:, 6:9], rgb / 4.0)
    assert torch.allclose(model.lfs_excep.conv1.weight[:, 3:6], rgb / 2.0)
    assert torch.equal(model.lfs_excep.block12.rep[1].pointwise.weight, xception.block12.rep[1].pointwise.weight)
