"""C2P-CLIP: "Injecting Category Common Prompt in CLIP to Enhance Generalization in Deepfake Detection" (Tan et al., AAAI 2025).

Independent re-implementation (no code copied) of chuangchuangtan/C2P-CLIP-DeepfakeDetection (no licence file).
Files read: ``inference.py`` (model, released-weights loading, test view), ``data.py`` (test transform),
``decode_clipfeature_image.py`` (ClipCap captioner, the released ``fc``), README (training code is an open TODO).
Provenance: official-inference: the test-time model and its weights are official, the training is reconstructed
from the paper (caption enhancement with category prompts, contrastive + classification loss, LoRA on the image
encoder, frozen text encoder); every training value below is a guess.

Model (``inference.py`` ``C2P_CLIP``): HF ``CLIPModel`` (``openai/clip-vit-large-patch14``) with ``text_model``,
``text_projection`` and ``logit_scale`` deleted, so ``model`` holds ``vision_model`` and ``visual_projection``;
``model.fc = Linear(768, 1)`` (weight ~ N(0, 0.02)) on the L2-normalised 768-d projected CLS embedding gives the
fake logit (sigmoid = fake probability; already this harness's convention). The released
``C2P_CLIP_release_20240901.zip`` is that module's state dict with the LoRA merged into the image encoder (keys
``model.vision_model.*``, ``model.visual_projection.weight``, ``model.fc.*``); `_load_official` merges this
model's LoRA away (`sep_bench.layers.adapters.merge_lora`) and loads it strictly. Test view: resize the short side
to 224 (bicubic in CLIP's processor; bilinear in ``data.py``, as here), centre crop 224, CLIP normalisation.

Training (reconstructed; the paper and its summaries): LoRA (``peft``) on the image encoder's attention
projections, the text encoder frozen. Each training image's caption (ClipCap on the frozen CLIP embedding in the
paper) is enhanced with its category common prompt, "Camera" (real) or "Deepfake" (fake); the loss is a
contrastive image-text loss plus BCE of ``fc``. Here:

- captions: the caption step is pluggable (`C2PCLIP.set_caption_embeddings`), but no captioner ships with this
  harness (ClipCap is a separate GPT-2 model with weights on the authors' server): *deviation*: the text of an
  image is its category prompt alone (``caption_template: "{prompt}"``), whose embeddings through the frozen text
  encoder are computed once at build time (buffer ``prompt_embeds``, not saved);
- contrastive loss (guess): cross-entropy of CLIP-scaled cosine similarities between each normalised image
  embedding and the two prompt embeddings (the image-to-text direction of CLIP's loss; with only two distinct
  texts the batch-wise InfoNCE reduces to this), weight ``contrastive_weight`` 1.0 (guess);
- guesses: LoRA rank 8, alpha 16, dropout 0.1 on ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` of every
  vision layer; AdamW lr 1e-4 (weight decay 0), batch 32, 1 epoch on GenImage SD v1.4 and 10 on ProGAN; training
  view: resize short side to 224, random crop 224, horizontal flip, no blur/JPEG (the authors' NPR recipe).

Mini profile: ``arch: tiny-vit-b16`` (the same HF classes, 2 layers, 64 wide, 768-d projection so the official
``fc`` shape applies, 112 px; `sep_bench.layers.clip`), random init (``pretrained: false``), LoRA rank 4. The
tower is random and frozen apart from low-rank attention updates, so the 85% vae8 target is not required.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sep_bench.layers.augment import CropViewConfig, crop_view
from sep_bench.layers.backbones import check_input_size, load_strict
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.adapters import add_lora, merge_lora
from sep_bench.layers.clip import CLIP_MEAN, CLIP_STD, clip_tokenize, hf_clip_from_weights
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["C2PCLIPConfig", "C2PCLIP", "SPEC"]


class C2PCLIPConfig(CropViewConfig):
    """``detectors.c2pclip.model`` (defaults: the official test model; training values are guesses)."""

    arch: str = Field("openai/clip-vit-large-patch14", description="HF CLIP model (sep_bench.layers.clip name, hub "
                      "id or local directory)")
    image_size: int | None = Field(None, ge=16, description="encoder input size override (random init only)")
    lora_rank: int = Field(8, ge=1, description="LoRA rank (guess)")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha (guess)")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="LoRA dropout (guess)")
    lora_targets: tuple[str, ...] = Field(("q_proj", "k_proj", "v_proj", "out_proj"), description="LoRA target "
                                          "modules of the vision tower (guess)")
    prompts: tuple[str, str] = Field(("Camera", "Deepfake"), description="category common prompts (real, fake)")
    caption_template: str = Field("{prompt}", description="text of an image without a captioner")
    contrastive_weight: float = Field(1.0, ge=0.0, description="weight of the image-text loss (guess)")
    fc_init_std: float = Field(0.02, gt=0.0)
    crop_size: int = Field(224, ge=8)
    train_resize: int | None = Field(224, ge=8)
    eval_resize: int | None = Field(224, ge=8, description="official test view: resize 224, centre crop 224")
    blur_prob: float = Field(0.0, ge=0.0, le=1.0)
    jpeg_prob: float = Field(0.0, ge=0.0, le=1.0)


class C2PCLIP(Detector):
    """``model.vision_model`` (+ LoRA) -> ``model.visual_projection`` -> L2 norm -> ``model.fc``."""

    def __init__(self, clip: nn.Module, prompts: tuple[str, str] = ("Camera", "Deepfake"), caption_template: str = "{prompt}",
                 lora_rank: int = 8, lora_alpha: float = 16.0, lora_dropout: float = 0.1,
                 lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj"),
                 contrastive_weight: float = 1.0, fc_init_std: float = 0.02) -> None:
        super().__init__()
        texts = [caption_template.format(prompt=p) for p in prompts]
        with torch.no_grad():  # the frozen text encoder runs once: the prompt texts do not change
            ids = clip_tokenize(texts, int(clip.config.text_config.max_position_embeddings))
            text = clip.get_text_features(input_ids=ids)
            text = getattr(text, "pooler_output", text)  # transformers 5 may return an output object
            scale = clip.logit_scale.detach().exp().float()
        self.register_buffer("prompt_embeds", F.normalize(text.float(), dim=-1), persistent=False)
        self.register_buffer("logit_scale", scale, persistent=False)
        del clip.text_model, clip.text_projection, clip.logit_scale  # as the official model (test time: image only)
        self.model = clip
        self.model.requires_grad_(False)
        self.model.fc = nn.Linear(int(clip.config.projection_dim), 1)
        nn.init.normal_(self.model.fc.weight, 0.0, fc_init_std)
        add_lora(self.model.vision_model, lora_targets, lora_rank, lora_alpha, lora_dropout)
        self.model.fc.requires_grad_(True)
        self.contrastive_weight = float(contrastive_weight)

    @property
    def image_size(self) -> tuple[int, int]:
        s = int(self.model.config.vision_config.image_size)
        return (s, s)

    def set_caption_embeddings(self, embeds: torch.Tensor) -> None:
        """Replace the (2, D) class-text embeddings (e.g. from captions enhanced with the category prompts)."""
        self.prompt_embeds = F.normalize(embeds.detach().to(self.prompt_embeds), dim=-1)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.model.vision_model(pixel_values=x).pooler_output
        return self.model.visual_projection(pooled)

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.encode_image(views["image"]), dim=-1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.fc(features)

    def train_forward(self, views: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        emb = self.forward_features(views)
        return {"logits": self.forward_head(emb).reshape(-1), "embeds": emb}

    def train_loss(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        loss = self.loss(outputs["logits"], labels)
        if self.contrastive_weight:
            sim = self.logit_scale * outputs["embeds"].float() @ self.prompt_embeds.T
            loss = loss + self.contrastive_weight * F.cross_entropy(sim, labels.long())
        return loss


def _build(cfg: C2PCLIPConfig, weights: WeightsSource) -> C2PCLIP:
    clip = hf_clip_from_weights(cfg.arch, "clip", weights, cfg.image_size)
    model = C2PCLIP(clip, cfg.prompts, cfg.caption_template, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout,
                    cfg.lora_targets, cfg.contrastive_weight, cfg.fc_init_std)
    check_input_size(model, cfg)
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load the released state dict (LoRA merged: HF CLIP vision keys under ``model.`` + ``model.fc``) strictly;
    this model's LoRA layers are merged away first (the release has none)."""
    sd = load_state_dict(path)
    sd = {k: v for k, v in sd.items() if not k.endswith("embeddings.position_ids")}  # legacy buffer (transformers < 4.31)
    merge_lora(model.model.vision_model)
    load_strict(model, sd, path, "a C2P-CLIP")


def _views(cfg: C2PCLIPConfig, train: bool, hflip: bool):
    return crop_view(cfg, train, hflip, CLIP_MEAN, CLIP_STD)


SPEC = DetectorSpec(
    name="c2pclip",
    summary="C2P-CLIP: CLIP ViT-L/14 image encoder with LoRA, category-prompt contrastive training, linear head",
    paper="Tan et al., C2P-CLIP: Injecting Category Common Prompt in CLIP to Enhance Generalization in Deepfake "
          "Detection, AAAI 2025",
    repo="https://github.com/chuangchuangtan/C2P-CLIP-DeepfakeDetection",
    config=C2PCLIPConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="hf-hub:openai/clip-vit-large-patch14",
    provenance="official-inference",
    extra={"reported_name": "C2CLIP"},  # the SEP paper's table calls it C2CLIP
)
