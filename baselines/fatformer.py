"""FatFormer: "Forgery-aware Adaptive Transformer for Generalizable Synthetic Image Detection" (Liu et al., CVPR 2024).

Independent re-implementation (no code copied) of Michel-liu/FatFormer (Apache-2.0). Files read: ``models/
clip_models.py`` (language-guided alignment, text encoder, text-guided interactor, the two logits),
``models/clip/model.py`` (forgery-aware adapter, its placement, the CLIP vision forward with ``return_full``),
``models/clip/clip.py`` (loading: fp32 on CPU, ``clip.tokenize``), ``models/__init__.py``, ``main.py`` (arguments,
evaluation: softmax[:, 1] is the fake probability, ``ckpt['model']``), ``utils/dataset.py`` (test transform),
README (``--num_vit_adapter 3 --num_context_embedding 8``). Provenance: official-inference (the repository has
no training code; its issue #13 asking for it is open).

Model (module names as the official ``CLIPModel``, so ``ckpt['model']`` loads strictly):

- ``clip_model``: OpenAI CLIP ViT-L/14 (open_clip's ``CLIP``, whose parameter names are OpenAI's; from
  `sep_bench.layers.clip`), with QuickGELU in its MLPs as the official ``models/clip/model.py``
  (``quick_gelu: true`` by default, whatever pretrained tag or file is given: the official-weights path builds
  with no tag, where open_clip gives GELU, which moved the logits; ``results/benchmarks/official_parity.json``).
  After every ``layers / num_vit_adapter``-th vision block (blocks 7, 15, 23) sits a ``forgery_aware_adapter``
  (`ForgeryAwareAdapter`), added in parallel with the block's MLP:
  x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)) + adapter(x). The adapter = a conv branch (Conv1d D->64, ReLU,
  dropout 0.1, Conv1d 64->D, times 0.1) + ``freq_scale`` (init 0) times a frequency branch: the patch-token map
  -> one-level Haar DWT (pytorch_wavelets, 4 bands) -> GroupNorm(128) -> attention across the 4 bands at each
  position (``intra_band``) -> attention across positions within each band (``inter_band``) -> FFN -> inverse
  DWT; zeros for the CLS token. The vision tower returns all tokens after ``ln_post`` and ``proj``.
- ``language_guided_alignment``: 8 learnable context vectors (N(0, 0.02)) in the prompt "X X X X X X X X
  {real|fake}."; a ``patch_basaed_enhancer`` (sic: the official name) cross-attends them to the image tokens
  (+ LayerNorm, FFN), giving per-image prompts for the 2 classes; their token prefix/suffix are buffers.
- ``text_encoder``: the frozen CLIP text transformer on the prompt embeddings (EOT token, ``text_projection``).
- logits = logit_scale * cos(CLS image feature, text feature) + logit_scale * cos(mean of the image patch tokens
  after the ``text_guided_interactor`` (patch tokens attend to the 2 text features, LayerNorm, FFN), text
  feature): (B, 2), class 1 = fake. The fake logit here is ``logits[:, 1] - logits[:, 0]`` (its sigmoid is the
  official softmax[:, 1]).
- ``image_encoder`` (= ``clip_model.visual``), ``text_encoder.*`` and ``logit_scale`` are the same modules and
  parameters registered a second time, as the official code does, so the state dict has those keys twice
  (`FatFormer.state_dict` returns copies of the aliases: safetensors refuses shared tensors).

Test view (``utils/dataset.py``): Resize((256, 256)) (square, aspect not kept) -> CenterCrop 224 -> ImageNet
normalisation (not CLIP's). Official weights (``ckpt['model']``, ProGAN 4-class training) load with
`_load_official`; 2 classes (real, fake) -> one fake logit.

Training (reconstructed, *not official*): the third-party trainer Mark-Dou/AIGIDetectionBenchmark
(``bash_scripts/FatFormer/train.sh``, ``models/trainers/FatFormer_trainer.py``, ``options/train_options.py``):
cross-entropy on the 2 logits (= BCE on the fake logit), AdamW lr 1e-4, betas (0.9, 0.999), torch's default
weight decay 0.01, batch 12, early stopping (lr / 10, patience 5, stop below 1e-6). Trainable there: the
adapters, ``clip_model.visual.ln_post``, the alignment and interactor modules, and CLIP's text-side parameters
outside the text transformer (positional embedding, ``ln_final``, ``text_projection``, ``logit_scale``); here the
same (config ``extra_trainable``), except ``token_embedding``, which the forward never uses (the prompt
token embeddings are buffers), so training it changes nothing. Training view (guess): the test view with a
random 224 crop and a horizontal flip.

Deviations: the 2 prompts of all images go through the text encoder as one batch (official: a loop over images;
same values up to float rounding: 1.2e-6 on the 2-class logits of the full-size official model with random
weights, ``results/benchmarks/official_parity.json``); the adapter's width, GroupNorm groups and head counts are
config fields (official: hard-coded 1024 / 128 / 8 / 12) so the tiny mini configuration can use the same classes.

Mini profile: ``arch: tiny-vit-64`` (open_clip ``CLIP``: 3 vision layers, one adapter each, 64 wide, 128 px,
16 px patches: an 8x8 grid as ViT-L/14's 16x16; `sep_bench.layers.clip`), random init (``pretrained: false``),
GroupNorm 32 groups, 4 alignment heads. The CLIP towers are random and frozen, only the adapters and the
alignment modules train: exempt from the 85% vae8 target.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sep_bench.layers.backbones import check_input_size, load_strict
from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop, maybe_hflip, random_crop, resize, to_tensor
from sep_bench.detectors import Detector, DetectorSpec
from sep_bench.layers.clip import clip_tokenize, open_clip_from_weights
from sep_bench.layers.dwt import dwt_forward
from sep_bench.weights import WeightsSource, load_state_dict

__all__ = ["FatFormerConfig", "ForgeryAwareAdapter", "LanguageGuidedAlignment", "FatFormer", "SPEC"]


class FatFormerConfig(BaseModel):
    """``detectors.fatformer.model`` (defaults: the official ViT-L/14 model of the README command)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = Field("ViT-L-14", description="open_clip architecture or a sep_bench.layers.clip local arch")
    quick_gelu: bool | None = Field(
        True, description="QuickGELU MLP activation, as the OpenAI CLIP of the official models/clip/model.py that the "
        "released weights were trained with (whatever pretrained tag or file is given); null: as the tag needs")
    num_vit_adapter: int = Field(3, ge=0)
    num_context_embedding: int = Field(8, ge=1)
    classnames: tuple[str, str] = ("real", "fake")
    adapter_bottleneck: int = Field(64, ge=1)
    adapter_scalar: float = 0.1
    adapter_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    adapter_heads: int = Field(8, ge=1)
    adapter_norm_groups: int = Field(128, ge=1, description="GroupNorm groups of the DWT bands (official 128)")
    lga_heads: int = Field(12, ge=1, description="heads of the enhancer and interactor attention (official 12)")
    extra_trainable: tuple[str, ...] = Field(
        ("clip_model.visual.ln_post", "clip_model.positional_embedding", "clip_model.ln_final",
         "clip_model.text_projection", "clip_model.logit_scale"),
        description="CLIP parameters trained besides the adapters and alignment modules (third-party recipe)")
    img_resolution: int = Field(256, ge=8, description="square resize before the crop")
    crop_size: int = Field(224, ge=8)


class ForgeryAwareAdapter(nn.Module):
    """The official ``ForgeryAwareAdapterLayer`` (parameter names kept), on sequence-first tokens (L, B, D)."""

    def __init__(self, d_model: int = 1024, bottleneck: int = 64, dropout: float = 0.1, adapter_scalar: float = 0.1,
                 head: int = 8, norm_groups: int = 128) -> None:
        super().__init__()
        from pytorch_wavelets import DWTInverse  # the forward DWT comes from the shared wrapper

        self.d_model, self.dropout, self.scale = d_model, dropout, float(adapter_scalar)
        self.first_conv_layer = nn.Conv1d(d_model, bottleneck, kernel_size=1)
        self.non_linear_func = nn.ReLU()
        self.second_conv_layer = nn.Conv1d(bottleneck, d_model, kernel_size=1)
        self.freq_scale = nn.Parameter(torch.zeros(1))
        self.dwt_transform = dwt_forward("haar", mode="zero", levels=1)
        self.idwt_transform = DWTInverse(wave="haar", mode="zero")
        self.dwt_norm = nn.GroupNorm(norm_groups, d_model)
        self.intra_band = nn.MultiheadAttention(d_model, head)
        self.dropout_intra = nn.Dropout(dropout)
        self.norm_intra = nn.LayerNorm(d_model)
        self.inter_band = nn.MultiheadAttention(d_model, head)
        self.dropout_inter = nn.Dropout(dropout)
        self.norm_inter = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_model * 4)
        self.activation = nn.ReLU()
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_model * 4, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def dwt_bands(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, D, 4, H/2, W/2): the Haar bands LL, LH, HL, HH (pytorch_wavelets' order)."""
        low, highs = self.dwt_transform(maps)
        return torch.cat([low[:, :, None], highs[0]], dim=2)

    def forward_freq(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 4, N, D) band tokens -> the same shape."""
        b, c, n, d = x.shape
        seq = x.transpose(0, 1).flatten(1, 2)                       # (4, B*N, D): attention across bands
        out = self.intra_band(seq, seq, seq)[0].reshape(c, b, n, d).transpose(0, 1)
        x = self.norm_intra(x + self.dropout_intra(out))
        seq = x.flatten(0, 1).transpose(0, 1)                       # (N, B*4, D): attention across positions
        out = self.inter_band(seq, seq, seq)[0].transpose(0, 1).reshape(b, c, n, d)
        x = self.norm_inter(x + self.dropout_inter(out))
        return self.norm3(x + self.dropout4(self.linear2(self.dropout3(self.activation(self.linear1(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nq, bs, md = x.shape
        side = int(math.sqrt(nq))
        maps = x[1:].transpose(0, 1).reshape(bs, side, side, md).permute(0, 3, 1, 2)
        bands = self.dwt_bands(maps)                                # (B, D, 4, h, w)
        hh, ww = bands.shape[-2:]
        bands = self.dwt_norm(bands.flatten(-2)).permute(0, 2, 3, 1)  # (B, 4, h*w, D)
        feat = self.forward_freq(bands).reshape(bs, 4, hh, ww, md).permute(0, 4, 1, 2, 3)
        freq = self.idwt_transform((feat[:, :, 0], [feat[:, :, 1:]])).flatten(-2).permute(2, 0, 1)
        freq = torch.cat([torch.zeros_like(x[:1]), freq], dim=0)
        down = self.non_linear_func(self.first_conv_layer(x.permute(1, 2, 0)))
        down = F.dropout(down, p=self.dropout, training=self.training)
        up = self.second_conv_layer(down).permute(2, 0, 1) * self.scale
        return up + freq * self.freq_scale


class LanguageGuidedAlignment(nn.Module):
    """Context tokens conditioned on the image tokens (official names; ``patch_basaed_enhancer`` sic)."""

    def __init__(self, clip_model: nn.Module, classnames=("real", "fake"), n_ctx: int = 8, heads: int = 12) -> None:
        super().__init__()
        ctx_dim = int(clip_model.ln_final.weight.shape[0])
        self.ctx = nn.Parameter(torch.empty(n_ctx, ctx_dim).normal_(std=0.02))
        prefix = " ".join(["X"] * n_ctx)
        tokenized = clip_tokenize([f"{prefix} {name.replace('_', ' ')}." for name in classnames])
        with torch.no_grad():
            emb = clip_model.token_embedding(tokenized)
        self.register_buffer("token_prefix", emb[:, :1, :].clone())          # SOS
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx:, :].clone())  # class name, ".", EOS, padding
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        self.n_cls, self.n_ctx = len(classnames), n_ctx
        self.patch_basaed_enhancer = nn.MultiheadAttention(ctx_dim, num_heads=heads)
        self.norm1 = nn.LayerNorm(ctx_dim)
        self.linear1 = nn.Linear(ctx_dim, 4 * ctx_dim)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(4 * ctx_dim, ctx_dim)
        self.norm2 = nn.LayerNorm(ctx_dim)

    def forward(self, im_features: torch.Tensor) -> torch.Tensor:
        """im_features (B, L, E) -> prompt embeddings (B, n_cls, 77, E)."""
        b = im_features.shape[0]
        tgt = self.ctx[:, None].repeat_interleave(b, dim=1)         # (n_ctx, B, E)
        mem = im_features.transpose(0, 1)
        tgt = self.norm1(tgt + self.patch_basaed_enhancer(tgt, mem, mem)[0])
        tgt = self.norm2(tgt + self.linear2(self.activation(self.linear1(tgt))))
        ctx = tgt.transpose(0, 1)[:, None].expand(-1, self.n_cls, -1, -1)   # (B, n_cls, n_ctx, E)
        prefix = self.token_prefix[None].expand(b, -1, -1, -1)
        suffix = self.token_suffix[None].expand(b, -1, -1, -1)
        return torch.cat([prefix, ctx, suffix], dim=2)


class TextEncoder(nn.Module):
    """CLIP's text transformer on prompt embeddings (official ``TextEncoder``: the same modules as ``clip_model``)."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask.clone(), persistent=False)
        self.batch_first = bool(getattr(clip_model.transformer, "batch_first", True))

    def forward(self, prompts: torch.Tensor, tokenized: torch.Tensor) -> torch.Tensor:
        x = prompts + self.positional_embedding.to(prompts.dtype)
        if not self.batch_first:
            x = x.transpose(0, 1)
        x = self.transformer(x, attn_mask=self.attn_mask)
        if not self.batch_first:
            x = x.transpose(0, 1)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), tokenized.argmax(dim=-1)] @ self.text_projection


def _vision_tokens(visual: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's VisionTransformer forward with ``return_full=True`` and the adapters: (B, L, E) tokens."""
    x = visual.conv1(image).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
    x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype))
    batch_first = bool(getattr(visual.transformer, "batch_first", True))
    x = x.transpose(0, 1)                                            # LND, as the official blocks and adapter
    for blk in visual.transformer.resblocks:
        h = blk.ln_1(x)
        h = h.transpose(0, 1) if batch_first else h
        a = blk.attn(h, h, h, need_weights=False)[0]
        x = x + blk.ls_1(a.transpose(0, 1) if batch_first else a)
        adapter = getattr(blk, "forgery_aware_adapter", None)
        mlp = blk.ls_2(blk.mlp(blk.ln_2(x)))
        x = x + mlp + adapter(x) if adapter is not None else x + mlp
    return visual.ln_post(x.transpose(0, 1)) @ visual.proj


class FatFormer(Detector):
    """The official ``CLIPModel`` of FatFormer (module names kept); forward gives the fake logit."""

    def __init__(self, clip_model: nn.Module, cfg: FatFormerConfig) -> None:
        super().__init__()
        self.clip_model = clip_model
        visual = clip_model.visual
        blocks = list(visual.transformer.resblocks)
        width = int(visual.conv1.weight.shape[0])
        if cfg.num_vit_adapter > 0:
            if len(blocks) % cfg.num_vit_adapter:
                raise ValueError(f"{len(blocks)} vision layers are not divisible by num_vit_adapter {cfg.num_vit_adapter}")
            step = len(blocks) // cfg.num_vit_adapter
            for i in range(cfg.num_vit_adapter):
                blocks[(i + 1) * step - 1].forgery_aware_adapter = ForgeryAwareAdapter(
                    width, cfg.adapter_bottleneck, cfg.adapter_dropout, cfg.adapter_scalar, cfg.adapter_heads,
                    cfg.adapter_norm_groups)
        self.language_guided_alignment = LanguageGuidedAlignment(clip_model, cfg.classnames,
                                                                 cfg.num_context_embedding, cfg.lga_heads)
        self.image_encoder = visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        d = int(clip_model.ln_final.weight.shape[0])
        self.text_guided_interactor = nn.MultiheadAttention(d, num_heads=cfg.lga_heads)
        self.norm1 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, 4 * d)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(4 * d, d)
        self.norm2 = nn.LayerNorm(d)
        self._set_trainable(cfg.extra_trainable)

    def _set_trainable(self, extra: tuple[str, ...]) -> None:
        clip_params = set()
        for name, p in self.clip_model.named_parameters():  # the aliases share these parameters
            p.requires_grad_("forgery_aware_adapter" in name or f"clip_model.{name}".startswith(tuple(extra)))
            clip_params.add(id(p))
        for p in self.parameters():
            if id(p) not in clip_params:
                p.requires_grad_(True)

    @property
    def image_size(self) -> tuple[int, int]:
        s = self.clip_model.visual.image_size
        return (s, s) if isinstance(s, int) else tuple(s)

    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        if not kwargs.get("keep_vars", False):  # the alias keys as copies: safetensors refuses shared storage
            for k in sd:
                if k.startswith(("image_encoder.", "text_encoder.")) or k == "logit_scale":
                    sd[k] = sd[k].clone()
        return sd

    def two_class_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The official output: (B, 2) logits (real, fake)."""
        feats = _vision_tokens(self.image_encoder, image)               # (B, L, E)
        feats_norm = feats / feats.norm(dim=-1, keepdim=True)
        prompts = self.language_guided_alignment(feats)                # (B, 2, 77, E)
        b, n_cls = prompts.shape[:2]
        tokenized = self.language_guided_alignment.tokenized_prompts.repeat(b, 1)
        text = self.text_encoder(prompts.flatten(0, 1), tokenized).reshape(b, n_cls, -1)   # (B, 2, E)
        text_norm = text / text.norm(dim=-1, keepdim=True)
        scale = self.logit_scale.exp()
        logits = scale * torch.einsum("be,bce->bc", feats_norm[:, 0], text_norm)
        mem = text.transpose(0, 1)                                      # (2, B, E)
        tgt = feats[:, 1:].transpose(0, 1)
        tgt = self.norm1(tgt + self.text_guided_interactor(tgt, mem, mem)[0])
        tgt = self.norm2(tgt + self.linear2(self.activation(self.linear1(tgt))))
        aug = tgt.transpose(0, 1).mean(dim=1)
        aug = aug / aug.norm(dim=-1, keepdim=True)
        return logits + scale * torch.einsum("be,bce->bc", aug, text_norm)

    def forward_features(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.two_class_logits(views["image"])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, 1] - features[:, 0]


def _build(cfg: FatFormerConfig, weights: WeightsSource) -> FatFormer:
    clip_model = open_clip_from_weights(cfg.arch, weights, None, cfg.quick_gelu, owner="FatFormer")
    model = FatFormer(clip_model, cfg)
    check_input_size(model, cfg, hint="")
    model.weights = weights
    return model


def _load_official(model: Detector, path: Path) -> None:
    """Load the official ``ckpt['model']`` (real = 0, fake = 1 logits) strictly."""
    load_strict(model, load_state_dict(path), path, "a FatFormer")


def _views(cfg: FatFormerConfig, train: bool, hflip: bool):
    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        img = resize(img, cfg.img_resolution, cfg.img_resolution)
        if train:
            img = random_crop(img, cfg.crop_size, rng)
            if hflip:
                img = maybe_hflip(img, rng)
        else:
            img = center_crop(img, cfg.crop_size)
        return {"image": to_tensor(img, IMAGENET_MEAN, IMAGENET_STD)}

    return view


SPEC = DetectorSpec(
    name="fatformer",
    summary="FatFormer: frozen CLIP ViT-L/14 with forgery-aware (conv + DWT) adapters and language-guided alignment",
    paper="Liu et al., Forgery-aware Adaptive Transformer for Generalizable Synthetic Image Detection, CVPR 2024",
    repo="https://github.com/Michel-liu/FatFormer",
    config=FatFormerConfig,
    build=_build,
    views=_views,
    load_official=_load_official,
    default_weights="open_clip:ViT-L-14/openai",
    provenance="official-inference",
)
