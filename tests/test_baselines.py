"""UnivFD, CNNSpot and SSP ports: forward/backward contract, deterministic views, a toy task that they learn,
official checkpoint formats, and where the weights come from. Small architectures only (CPU, seconds)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from sep_bench.layers.augment import blur_jpeg
from sep_bench.weights import PretrainedUnavailableError
from sep_bench.detectors import get_detector
from sep_bench.weights import WeightsSource, parse_pretrained

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
SIZE = 48

# The smallest settings of each detector (the CPU "mini" profile uses the same kinds at 112 px).
SMALL = {
    "univfd": {"arch": "tiny-vit-768", "image_size": SIZE, "crop_size": SIZE, "train_resize": None},
    "cnnspot": {"backbone": "resnet18", "crop_size": SIZE, "train_resize": None},
    "ssp": {"backbone": "resnet18", "input_size": SIZE, "patch_size": 16, "n_candidates_train": 8, "n_candidates_eval": 8},
}
NAMES = sorted(SMALL)


def toy_image(rng: np.random.Generator, fake: bool, size: int = SIZE) -> np.ndarray:
    """Smooth random content; fakes carry a 2-pixel checkerboard (a periodic up-sampling-like trace)."""
    base = rng.normal(128, 40, (size // 8, size // 8, 3)).clip(0, 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((size, size), Image.BILINEAR), dtype=np.float64)
    if fake:
        yy, xx = np.mgrid[:size, :size]
        img += 20.0 * (((yy + xx) % 2) * 2 - 1)[..., None]
    return img.clip(0, 255).astype(np.uint8)


def build(name: str, weights: WeightsSource | None = None, **overrides):
    spec = get_detector(name)
    cfg = spec.make_config({**SMALL[name], **overrides})
    return spec, cfg, spec.build(cfg, weights or WeightsSource.none())


def batch(spec, cfg, images, *, train: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    view = spec.views(cfg, train, True)
    items = [view(img, np.random.default_rng([seed, i])) for i, img in enumerate(images)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 8)
    return [toy_image(rng, bool(y)) for y in labels], torch.tensor(labels, dtype=torch.float32)


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_contract(name, toy):
    torch.manual_seed(0)
    spec, cfg, model = build(name)
    images, labels = toy
    views = batch(spec, cfg, images[:4], train=True)
    model.train()
    logits = model(views)
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    model.loss(logits, labels[:4]).backward()
    trainable = model.trainable_parameters()
    assert trainable
    for p in trainable:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    ids = {id(p) for p in trainable}
    frozen = [p for p in model.parameters() if id(p) not in ids]
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    if name == "univfd":
        assert len(trainable) == 2 and frozen  # fc.weight, fc.bias; the encoder gets nothing
        assert model.frozen_features and not model.visual.training and model.training
    if name == "ssp":
        assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["srm.kernel"]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", NAMES)
def test_views_deterministic(name, train, toy):
    spec = get_detector(name)
    cfg = spec.make_config(SMALL[name])
    view = spec.views(cfg, train, True)
    img = toy_image(np.random.default_rng(5), True, size=SIZE + 37)
    a, b = view(img, np.random.default_rng(7)), view(img, np.random.default_rng(7))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if train or name == "ssp":  # random crops / candidate patches differ with another seed
        others = [view(img, np.random.default_rng(s)) for s in range(8, 12)]
        assert any(not torch.equal(a[k], o[k]) for o in others for k in a)


@pytest.mark.parametrize("name", NAMES)
def test_learns_toy_task(name, toy):
    """A few Adam steps on 16 toy images lower the training loss. A frozen-feature model (UnivFD) trains its head
    on features computed once, as an engine's feature cache would; its random tiny encoder separates the classes
    only weakly, so it gets more (cheap) steps."""
    torch.manual_seed(0)
    spec, cfg, model = build(name)
    images, labels = toy
    views = batch(spec, cfg, images, train=True)
    model.train()
    if getattr(model, "frozen_features", False):
        with torch.no_grad():
            feats = model.forward_features(views)
        forward, steps = (lambda: model.forward_head(feats).reshape(-1)), 30
    else:
        forward, steps = (lambda: model(views)), 8
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = model.loss(forward(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


def test_univfd_official_head_fixture():
    path = FIXTURES / "univfd_fc_weights.pth"
    if not path.is_file():
        pytest.skip(f"official UnivFD head not found at {path} (shared/fixtures is next to the repository in CI)")
    spec, cfg, model = build("univfd")
    assert model.feature_dim == 768
    spec.load_official(model, path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert model.fc.weight.device.type == "cpu"
    assert torch.equal(model.fc.weight, raw["weight"]) and torch.equal(model.fc.bias, raw["bias"])
    feats = torch.randn(5, 768, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.forward_head(feats)
        ref = feats @ raw["weight"].T + raw["bias"]
        assert out.shape == (5, 1)
        assert torch.equal(out, ref), (out - ref).abs().max()
        x = torch.randn(2, 3, SIZE, SIZE)
        assert torch.equal(model({"image": x}), model.fc(model.visual(x)).reshape(-1))


def test_univfd_head_shape_mismatch_is_clear(tmp_path):
    spec, cfg, model = build("univfd")
    torch.save({"weight": torch.zeros(1, 512), "bias": torch.zeros(1)}, tmp_path / "fc.pth")
    with pytest.raises(PretrainedUnavailableError, match="768"):
        spec.load_official(model, tmp_path / "fc.pth")


def test_univfd_crop_must_match_encoder():
    with pytest.raises(ValueError, match="crop_size"):
        build("univfd", crop_size=SIZE + 16)


def test_univfd_openai_tag_uses_quick_gelu(monkeypatch, tmp_path):
    """open_clip 3.x builds ViT-L-14 with GELU even for the OpenAI tag (it only warns); the port must ask for
    QuickGELU, the activation the OpenAI weights were trained with. The tag's checkpoint comes from the hub cache
    (here a cache of the test's own holding a stand-in file: open_clip itself is replaced by a recorder)."""
    import open_clip

    from sep_bench.baselines.univfd import create_clip
    from tests.hubcache import cache_file, use_cache

    cache_file(use_cache(tmp_path, monkeypatch), "timm/vit_large_patch14_clip_224.openai",
               "open_clip_model.safetensors", {"stand_in": torch.zeros(1)})
    calls = []
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **kw: calls.append((a, kw)) or "model")
    assert create_clip("ViT-L-14", "openai") == "model"
    assert calls[-1][0] == ("ViT-L-14",) and calls[-1][1]["force_quick_gelu"] is True
    assert calls[-1][1]["pretrained"].endswith("vit_large_patch14_clip_224.openai/snapshots/"
                                               "0123456789abcdef0123456789abcdef01234567/open_clip_model.safetensors")
    create_clip("ViT-L-14", None)
    assert calls[-1][1]["force_quick_gelu"] is False


def test_cnnspot_loads_official_format(tmp_path):
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet50(num_classes=1).eval()
    torch.save({"model": ref.state_dict(), "optimizer": {}, "total_steps": 3}, tmp_path / "blur_jpg_prob0.5.pth")
    spec, cfg, model = build("cnnspot", backbone="resnet50")
    assert list(model.state_dict()) == list(ref.state_dict())  # torchvision key names, no mapping
    spec.load_official(model, tmp_path / "blur_jpg_prob0.5.pth")
    model.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(model({"image": x}), ref(x).reshape(-1))


def test_ssp_official_format_and_label_flip(tmp_path):
    import torch.nn.functional as F

    from sep_bench.layers.srm import srm_kernel

    torch.manual_seed(2)
    spec, cfg, official = build("ssp")  # stands in for an official model: same module names
    sd = official.state_dict()
    assert {k.split(".")[0] for k in sd} == {"srm", "disc"} and "srm.kernel" in sd
    torch.save(sd, tmp_path / "ssp.pth")  # its logit is read as the *nature* logit
    spec, cfg, model = build("ssp")
    spec.load_official(model, tmp_path / "ssp.pth")
    official.eval(), model.eval()
    patch = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model({"patch": patch}), -official({"patch": patch}))
        # the pipeline by hand: bilinear up-sampling -> SRM (summed over RGB) -> Hardtanh(-3, 3) -> ResNet
        x = F.hardtanh(F.conv2d(F.interpolate(patch, size=(SIZE, SIZE), mode="bilinear"), srm_kernel(), padding=2), -3, 3)
        assert torch.allclose(official.disc(x).reshape(-1), official({"patch": patch}))
    k = srm_kernel()
    assert k.shape == (3, 3, 5, 5) and torch.equal(k[:, 0], k[:, 2])
    assert torch.allclose(k.sum(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert k[0, 0, 2, 2] == -1.0 and k[1, 0, 2, 2] == -1.0 and k[2, 0, 2, 2] == -1.0


def test_ssp_view_uses_the_exposed_patch_selector():
    from sep_bench.layers.eps import select_patch

    spec = get_detector("ssp")
    cfg = spec.make_config(SMALL["ssp"])
    img = toy_image(np.random.default_rng(3), False, size=SIZE + 10)
    y, x = select_patch(img, np.random.default_rng(4), size=16, n_candidates=8, mode="official")
    patch = spec.views(cfg, False, False)(img, np.random.default_rng(4))["patch"]
    assert patch.shape == (3, 16, 16)
    from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor

    assert torch.equal(patch, to_tensor(img[y : y + 16, x : x + 16], IMAGENET_MEAN, IMAGENET_STD))
    tiny = toy_image(np.random.default_rng(3), False, size=8)  # below the patch size: resized to 256 first
    assert spec.views(cfg, True, False)(tiny, np.random.default_rng(0))["patch"].shape == (3, 16, 16)


def test_blur_jpeg_draws_from_rng_only():
    img = toy_image(np.random.default_rng(0), True)
    kw = dict(blur_sigma=(0.0, 3.0), jpeg_quality=(30, 100))
    same = [blur_jpeg(img, np.random.default_rng(9), blur_prob=1.0, jpeg_prob=1.0, **kw) for _ in range(2)]
    assert np.array_equal(*same) and not np.array_equal(same[0], img)
    untouched = blur_jpeg(img, np.random.default_rng(9), blur_prob=0.0, jpeg_prob=0.0, **kw)
    assert np.array_equal(untouched, img)


@pytest.fixture
def offline_empty_hub(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE with an empty cache, so that `pretrained: true` cannot find the weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    try:
        from huggingface_hub import constants
    except ImportError:
        return
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_true_offline_is_a_clear_error(name, offline_empty_hub):
    spec = get_detector(name)
    weights = parse_pretrained(True, spec.default_weights)
    assert weights.kind == "hub"
    cfg = spec.make_config({})  # the official architecture, which the default weights belong to
    with pytest.raises(PretrainedUnavailableError, match="unavailable"):
        spec.build(cfg, weights)


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_false_is_recorded(name):
    spec = get_detector(name)
    weights = parse_pretrained(False, spec.default_weights)
    _, _, model = build(name, weights)
    assert model.weights == WeightsSource.none() and model.weights.describe() == "random-init"


def test_default_weights_must_match_the_small_architecture():
    for name in NAMES:
        spec = get_detector(name)
        with pytest.raises(ValueError, match="match"):
            build(name, parse_pretrained(True, spec.default_weights))


def test_resnet_backbone_from_file(tmp_path):
    import torchvision

    sd = torchvision.models.resnet18().state_dict()  # an ImageNet-style file: its 1000-way fc is dropped
    torch.save(sd, tmp_path / "r18.pth")
    spec, cfg, model = build("cnnspot", parse_pretrained(str(tmp_path / "r18.pth"), None))
    assert model.weights.kind == "file" and model.fc.weight.shape == (1, 512)
    assert torch.equal(model.state_dict()["layer4.1.bn2.running_var"], sd["layer4.1.bn2.running_var"])
    assert torch.equal(model.conv1.weight, sd["conv1.weight"])


def test_univfd_encoder_from_file(tmp_path):
    from sep_bench.baselines.univfd import create_clip

    torch.manual_seed(3)
    clip = create_clip("tiny-vit-768", image_size=SIZE)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    spec, cfg, model = build("univfd", parse_pretrained(str(tmp_path / "clip.pt"), None))
    assert model.weights.kind == "file" and model.weights.sha256
    assert all(torch.equal(v, clip.visual.state_dict()[k]) for k, v in model.visual.state_dict().items())
