"""The CLIP activation of every CLIP-based detector's official path: the released weights were trained on OpenAI
CLIP, whose MLP uses QuickGELU. open_clip builds GELU unless told (it only warns), so a model loaded through
``load_model(official=True)`` must ask for QuickGELU whatever pretrained tag or file it is given."""

from __future__ import annotations

import open_clip
import pytest
import torch

from sep_bench.detectors import get_detector
from sep_bench.engine.predict import load_model
from sep_bench.layers.clip import OPEN_CLIP_LOCAL_ARCHS, hf_clip_config
from sep_bench.protocol import Recipe

FATFORMER_MINI = {"arch": "tiny-vit-64", "crop_size": 128, "img_resolution": 128, "adapter_norm_groups": 32,
                  "lga_heads": 4}


def _randomise(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def test_fatformer_official_checkpoint_built_with_quickgelu_gives_its_logits(tmp_path):
    from sep_bench.baselines.fatformer import FatFormer, FatFormerConfig

    cfg = FatFormerConfig(**FATFORMER_MINI)
    torch.manual_seed(0)
    clip = open_clip.CLIP(**OPEN_CLIP_LOCAL_ARCHS["tiny-vit-64"], quick_gelu=True)
    official = FatFormer(clip, cfg).eval()
    _randomise(official, 1)
    torch.save({"model": official.state_dict()}, tmp_path / "fatformer_4class.pth")
    recipe = Recipe(model=FATFORMER_MINI, train={}, eval={})   # no quick_gelu given: the default must be right
    loaded = load_model("fatformer", tmp_path / "fatformer_4class.pth", official=True, recipe=recipe).eval()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = official.two_class_logits(x)
        assert torch.allclose(loaded.two_class_logits(x), want, atol=1e-5, rtol=0)
        gelu = load_model("fatformer", tmp_path / "fatformer_4class.pth", official=True,
                          recipe=Recipe(model={**FATFORMER_MINI, "quick_gelu": False}, train={}, eval={})).eval()
        assert (gelu.two_class_logits(x) - want).abs().max() > 1e-4   # the activation matters at this size


def test_univfd_openai_backbone_file_and_official_head_give_their_logits(tmp_path):
    """UnivFD's released file is the head; the backbone is OpenAI CLIP given as a local file (no tag)."""
    torch.manual_seed(0)
    clip = open_clip.CLIP(**OPEN_CLIP_LOCAL_ARCHS["tiny-vit-768"], quick_gelu=True).eval()
    _randomise(clip, 3)
    torch.save(clip.state_dict(), tmp_path / "ViT-tiny.pt")                   # OpenAI key names
    head = {"weight": 0.05 * torch.randn(1, 768), "bias": torch.randn(1)}
    torch.save(head, tmp_path / "fc_weights.pth")
    recipe = Recipe(model={"arch": "tiny-vit-768", "image_size": 112, "crop_size": 112},
                    pretrained=str(tmp_path / "ViT-tiny.pt"), train={}, eval={})
    loaded = load_model("univfd", tmp_path / "fc_weights.pth", official=True, recipe=recipe).eval()
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = clip.encode_image(x) @ head["weight"].T + head["bias"]
        assert torch.allclose(loaded({"image": x}), want[:, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["fatformer", "univfd", "drct"])
def test_open_clip_detectors_default_to_quickgelu(name):
    spec = get_detector(name)
    assert spec.make_config({}).quick_gelu is True


@pytest.mark.parametrize("name", ["c2pclip", "effort"])
def test_hf_clip_detectors_build_quickgelu(name):
    spec = get_detector(name)
    for model in ({}, {"arch": "tiny-vit-b16"}):
        cfg = spec.make_config(model)
        assert hf_clip_config(cfg.arch).vision_config.hidden_act == "quick_gelu"
        assert hf_clip_config(cfg.arch).text_config.hidden_act == "quick_gelu"
