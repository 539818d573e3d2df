"""C2P-CLIP port: forward/backward contract, LoRA merge, the released state-dict format, the training loss."""

from __future__ import annotations

import torch

from sep_bench.detectors import get_detector
from sep_bench.layers.adapters import merge_lora
from sep_bench.layers.clip import create_hf_clip
from sep_bench.weights import WeightsSource

MINI = {"arch": "tiny-vit-b16", "crop_size": 112, "train_resize": 112, "eval_resize": 112, "lora_rank": 4}


def build(**over):
    spec = get_detector("c2pclip")
    cfg = spec.make_config({**MINI, **over})
    torch.manual_seed(0)
    return spec, cfg, spec.build(cfg, WeightsSource.none())


def released_keys(arch: str) -> dict[str, tuple[int, ...]]:
    """The official C2P_CLIP state dict (inference.py): a CLIPModel without text_model, text_projection and
    logit_scale, under ``model.``, plus ``model.fc`` (Linear(768, 1)); shapes from the HF configuration."""
    with torch.device("meta"):
        clip = create_hf_clip(arch, "clip")
    keys = {f"model.{k}": tuple(v.shape) for k, v in clip.state_dict().items()
            if not k.startswith(("text_model.", "text_projection.", "logit_scale"))}
    keys.update({"model.fc.weight": (1, clip.config.projection_dim), "model.fc.bias": (1,)})
    return keys


def test_released_key_list_of_vit_l14():
    keys = released_keys("openai/clip-vit-large-patch14")
    assert len(keys) == 5 + 24 * 16 + 2 + 1 + 2   # embeddings+pre LN, 24 layers, post LN, projection, fc
    assert keys["model.visual_projection.weight"] == (768, 1024) and keys["model.fc.weight"] == (1, 768)
    assert keys["model.vision_model.embeddings.position_embedding.weight"] == (257, 1024)


def test_forward_backward_every_trainable_param_gets_a_gradient():
    spec, cfg, model = build()
    model.train()
    out = model.train_forward({"image": torch.randn(3, 3, 112, 112)})
    assert out["logits"].shape == (3,) and torch.isfinite(out["logits"]).all()
    loss = model.train_loss(out, torch.tensor([0.0, 1.0, 1.0]))
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert {n for n, _ in trainable if "lora_" not in n} == {"model.fc.weight", "model.fc.bias"}
    assert len([n for n, _ in trainable if "lora_A" in n]) == 2 * 4
    for n, p in trainable:
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert "prompt_embeds" not in model.state_dict()   # the frozen text side is not part of the detector


def test_lora_merged_forward_equals_unmerged():
    _, _, model = build()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.05)   # a trained (non-zero) LoRA update
    model.eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        before = model({"image": x})
        merge_lora(model.model.vision_model)
        after = model({"image": x})
    assert not any("lora_" in k or "base_layer" in k for k in model.state_dict())
    assert torch.allclose(before, after, atol=1e-5)


def test_load_official_strict(tmp_path):
    spec, cfg, model = build()
    official = released_keys("tiny-vit-b16")
    torch.manual_seed(5)
    sd = {k: torch.randn(shape) * 0.02 for k, shape in official.items()}
    sd["model.vision_model.embeddings.position_ids"] = torch.arange(50)[None]   # legacy buffer: dropped
    torch.save(sd, tmp_path / "c2p.pth")
    spec.load_official(model, tmp_path / "c2p.pth")
    assert set(model.state_dict()) == set(official)
    # the fc logit is the fake logit (sigmoid -> fake probability, as inference.py): checked by hand
    model.eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        emb = model.model.visual_projection(model.model.vision_model(pixel_values=x).pooler_output)
        expected = (emb / emb.norm(dim=-1, keepdim=True)) @ sd["model.fc.weight"].T + sd["model.fc.bias"]
        assert torch.allclose(model({"image": x}), expected.reshape(-1), atol=1e-5)


def test_contrastive_loss_uses_the_category_prompts():
    _, cfg, model = build()
    assert cfg.prompts == ("Camera", "Deepfake") and model.prompt_embeds.shape == (2, 768)
    emb = model.prompt_embeds.clone()             # images that sit exactly on their prompt embeddings
    labels = torch.tensor([0.0, 1.0])
    out = {"logits": torch.zeros(2), "embeds": emb}
    swapped = {"logits": torch.zeros(2), "embeds": emb.flip(0)}
    assert model.train_loss(out, labels) < model.train_loss(swapped, labels)
    _, _, plain = build(contrastive_weight=0.0)
    assert torch.isclose(plain.train_loss(out, labels), torch.log(torch.tensor(2.0)))
