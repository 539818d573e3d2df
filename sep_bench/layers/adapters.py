"""Parameter-efficient adapters of pretrained linear layers: LoRA (through ``peft``) and an SVD residual split.

- **LoRA** (C2P-CLIP): `add_lora` injects ``peft`` LoRA layers into the named ``nn.Linear`` modules of a model in
  place (``peft.inject_adapter_in_model``: no ``PeftModel`` wrapper, so the model keeps its own forward and
  attribute names; the wrapped layers gain ``base_layer`` / ``lora_A`` / ``lora_B``); `merge_lora` folds the
  LoRA update into the base weights and puts the plain ``nn.Linear`` back, so the state dict has the original
  key names again (how released LoRA-tuned checkpoints are distributed).
- **SVD residual** (Effort, Yan et al., ICML 2025): `SVDResidualLinear` splits a weight W = U S V^T into a frozen
  main part from the top ``r`` singular triplets and a trainable residual from the rest,
  W = weight_main + U_residual diag(S_residual) V_residual. `apply_svd_residual` replaces every ``nn.Linear``
  inside the children whose name contains ``self_attn`` (Effort's rule: q, k, v and out projections of CLIP's
  attention). Parameter names follow Effort's ``effort_detector.py`` (``weight_main``, ``bias``,
  ``S_residual``, ``U_residual``, ``V_residual`` and, in its DeepfakeBench version, the frozen factors ``S_r``,
  ``U_r``, ``V_r``), so its checkpoints load strictly. The two regularisers of that file
  (`SVDResidualLinear.orthogonal_loss`, `SVDResidualLinear.keep_sv_loss`) are provided; the official training
  leaves them out of the loss.

  The split of a weight (a float64 SVD; for Effort's CLIP ViT-L/14, 96 of them of 1024 x 1024, on every build:
  training, evaluation, each process) is cached on disk, content-addressed: the file name is the sha256 of the
  weight's bytes, shape and dtype, the rank, whether the main factors are kept and the torch version, so a cached
  split is exactly what the SVD gave for these weights; a file that does not load is recomputed. Where:
  ``$SEP_BENCH_SVD_CACHE``, else ``$XDG_CACHE_HOME/sep-bench/svd`` (``~/.cache/sep-bench/svd``); ``off`` turns it
  off. Safe to delete. CPU weights only (a meta or GPU tensor is split as before).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["add_lora", "merge_lora", "lora_parameters", "SVDResidualLinear", "svd_residual_linear",
           "apply_svd_residual", "svd_cache_dir", "SVD_CACHE_ENV"]

#: where the SVD splits are cached: a folder, or ``off``; unset: ``$XDG_CACHE_HOME/sep-bench/svd``
SVD_CACHE_ENV = "SEP_BENCH_SVD_CACHE"


# ----------------------------------------------------------------------------------------------------------------
# LoRA


def add_lora(model: nn.Module, target_modules: Sequence[str], rank: int, alpha: float, dropout: float = 0.0,
             adapter_name: str = "default") -> nn.Module:
    """Inject LoRA (``peft``) into the ``nn.Linear`` modules of `model` whose names end with one of
    `target_modules` (peft's rule), in place; freezes everything else of `model` (``peft`` marks only the LoRA
    matrices trainable).

    Args:
        model: any module (e.g. a ``transformers`` CLIP vision tower).
        target_modules: module-name suffixes, e.g. ``("q_proj", "k_proj", "v_proj", "out_proj")``.
        rank: LoRA rank r. alpha: scaling numerator (update = B A x * alpha / r). dropout: on the LoRA input.

    Returns:
        `model` itself. ``lora_A`` is Kaiming-uniform initialised and ``lora_B`` zero, so the model's function is
        unchanged at injection.

    Example:
        >>> add_lora(vision_tower, ("q_proj", "v_proj"), rank=8, alpha=16)
    """
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout),
                     target_modules=list(target_modules), bias="none")
    inject_adapter_in_model(cfg, model, adapter_name=adapter_name)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA matrices of `model` (``lora_A`` / ``lora_B`` of every injected layer)."""
    return [p for n, p in model.named_parameters() if "lora_" in n]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base ``nn.Linear`` and put the plain linear layer back (in place).

    Afterwards the state-dict keys are the ones the model had before `add_lora`; the output is the same up to
    float rounding (W + s B A computed once instead of W x + s B (A x)).
    """
    from peft.tuners.lora import LoraLayer

    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in targets:
        module.merge()
        base = module.get_base_layer()
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, name.rsplit(".", 1)[-1], base)
    return model


# ----------------------------------------------------------------------------------------------------------------
# SVD residual (Effort)


class SVDResidualLinear(nn.Module):
    """A linear layer W x + b with W = weight_main + U_residual diag(S_residual) V_residual.

    ``weight_main`` (frozen) is the rank-``r`` truncation of the original weight; the residual factors (the
    remaining singular triplets) are trainable. With ``keep_main_factors`` the main part's factors ``U_r``,
    ``S_r``, ``V_r`` are kept as frozen parameters as well (Effort's DeepfakeBench detector does, for its
    orthogonality loss; its UnivFD-codebase variant does not). Build it with `svd_residual_linear`.
    """

    def __init__(self, in_features: int, out_features: int, r: int, n_residual: int, bias: bool = True,
                 keep_main_factors: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.r = in_features, out_features, r
        self.weight_main = nn.Parameter(torch.zeros(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        if n_residual > 0:
            self.S_residual = nn.Parameter(torch.zeros(n_residual))
            self.U_residual = nn.Parameter(torch.zeros(out_features, n_residual))
            self.V_residual = nn.Parameter(torch.zeros(n_residual, in_features))
        else:
            self.S_residual = self.U_residual = self.V_residual = None
        if keep_main_factors and n_residual > 0:
            self.S_r = nn.Parameter(torch.zeros(r), requires_grad=False)
            self.U_r = nn.Parameter(torch.zeros(out_features, r), requires_grad=False)
            self.V_r = nn.Parameter(torch.zeros(r, in_features), requires_grad=False)
        else:
            self.S_r = self.U_r = self.V_r = None
        # Frobenius norm of the original weight (a plain attribute, as in the official code: not in state dicts)
        self.weight_original_fnorm: torch.Tensor | None = None

    def residual_weight(self) -> torch.Tensor | None:
        if self.S_residual is None:
            return None
        return self.U_residual @ torch.diag(self.S_residual) @ self.V_residual

    def weight(self) -> torch.Tensor:
        """The current full weight."""
        res = self.residual_weight()
        return self.weight_main if res is None else self.weight_main + res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)

    def orthogonal_loss(self) -> torch.Tensor:
        """0.5 ||[U_r U_res][U_r U_res]^T - I||_F + 0.5 ||[V_r; V_res][V_r; V_res]^T - I||_F (needs the main factors)."""
        if self.S_residual is None or self.U_r is None:
            return self.weight_main.new_zeros(())
        u = torch.cat((self.U_r, self.U_residual), dim=1)
        v = torch.cat((self.V_r, self.V_residual), dim=0)
        eye_u = torch.eye(u.shape[0], device=u.device, dtype=u.dtype)
        eye_v = torch.eye(v.shape[0], device=v.device, dtype=v.dtype)
        return 0.5 * torch.linalg.matrix_norm(u @ u.T - eye_u) + 0.5 * torch.linalg.matrix_norm(v @ v.T - eye_v)

    def keep_sv_loss(self) -> torch.Tensor:
        """| ||W_current||_F^2 - ||W_original||_F^2 | (the singular-value energy kept)."""
        if self.S_residual is None or self.weight_original_fnorm is None:
            return self.weight_main.new_zeros(())
        return torch.abs(torch.linalg.matrix_norm(self.weight()) ** 2 - self.weight_original_fnorm.to(self.weight_main) ** 2)

    def extra_repr(self) -> str:
        n = 0 if self.S_residual is None else self.S_residual.numel()
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, residual={n}"


def svd_cache_dir() -> Path | None:
    """The folder of the cached SVD splits (`SVD_CACHE_ENV`), or None when the cache is off."""
    value = os.environ.get(SVD_CACHE_ENV, "").strip()
    if value.lower() == "off":
        return None
    if value:
        return Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sep-bench" / "svd"


def _svd_split(w: torch.Tensor, r: int, keep_main_factors: bool) -> dict[str, torch.Tensor]:
    """The parameters of the split of `w` (float64 SVD, stored in `w`'s dtype): ``weight_main`` and, with a
    residual, ``S/U/V_residual`` (and ``S/U/V_r`` with `keep_main_factors`)."""
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    out = {"weight_main": (u[:, :r] * s[:r]) @ vh[:r]}
    if s.numel() > r:
        out.update(S_residual=s[r:], U_residual=u[:, r:], V_residual=vh[r:])
        if keep_main_factors:
            out.update(S_r=s[:r], U_r=u[:, :r], V_r=vh[:r])
    return {k: v.to(w.dtype).contiguous() for k, v in out.items()}


def _split_key(w: torch.Tensor, r: int, keep_main_factors: bool) -> str:
    h = hashlib.sha256(f"svd-split v1 {tuple(w.shape)} {w.dtype} r={r} keep={keep_main_factors} "
                       f"torch={torch.__version__}|".encode())
    h.update(w.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _cached_svd_split(w: torch.Tensor, r: int, keep_main_factors: bool) -> dict[str, torch.Tensor]:
    """`_svd_split`, read from the on-disk cache when it holds this weight's split, else computed and stored."""
    folder = svd_cache_dir()
    if folder is None or w.device.type != "cpu":
        return _svd_split(w, r, keep_main_factors)
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = folder / f"{_split_key(w, r, keep_main_factors)}.safetensors"
    try:
        return load_file(path)
    except (OSError, SafetensorError):  # absent, unreadable or damaged: computed again
        pass
    split = _svd_split(w, r, keep_main_factors)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(split, str(tmp))
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"SVD split not cached ({err}); set {SVD_CACHE_ENV} to a writable folder or to off",
                      RuntimeWarning, stacklevel=3)
    return split


@torch.no_grad()
def svd_residual_linear(linear: nn.Linear, r: int, keep_main_factors: bool = False) -> SVDResidualLinear:
    """Split `linear` into an `SVDResidualLinear`: top ``min(r, rank)`` singular triplets frozen in
    ``weight_main``, the rest trainable. The SVD runs in float64 for an exact split; the stored parameters have the
    original dtype. At creation ``weight_main + U_res diag(S_res) V_res`` equals the original weight up to float
    rounding. The split comes from the on-disk cache when it holds it (see the module docstring)."""
    w = linear.weight.detach()
    r = min(int(r), min(w.shape))
    n_res = min(w.shape) - r
    new = SVDResidualLinear(linear.in_features, linear.out_features, r, n_res, bias=linear.bias is not None,
                            keep_main_factors=keep_main_factors).to(device=w.device, dtype=w.dtype)
    for name, value in _cached_svd_split(w, r, keep_main_factors).items():
        getattr(new, name).copy_(value)
    if linear.bias is not None:
        new.bias.copy_(linear.bias.detach())
    new.weight_original_fnorm = torch.linalg.matrix_norm(w.float())
    return new


def apply_svd_residual(model: nn.Module, r: int, name_contains: str = "self_attn",
                       keep_main_factors: bool = False, trainable: Iterable[str] = ("S_residual", "U_residual",
                                                                                      "V_residual")) -> nn.Module:
    """Replace every ``nn.Linear`` inside the children of `model` whose name contains `name_contains` by an
    `SVDResidualLinear` (Effort's ``apply_svd_residual_to_self_attn``), in place; then only parameters whose
    name contains one of `trainable` require gradients (the whole of `model` is frozen otherwise)."""
    for name, child in list(model.named_children()):
        if name_contains in name:
            if isinstance(child, nn.Linear):
                setattr(model, name, svd_residual_linear(child, r, keep_main_factors))
                continue
            for sub_name, sub in list(child.named_modules()):
                if isinstance(sub, nn.Linear):
                    parent = child.get_submodule(sub_name.rsplit(".", 1)[0]) if "." in sub_name else child
                    setattr(parent, sub_name.rsplit(".", 1)[-1], svd_residual_linear(sub, r, keep_main_factors))
        else:
            apply_svd_residual(child, r, name_contains, keep_main_factors, trainable=())
    if trainable:
        keys = tuple(trainable)
        for pname, p in model.named_parameters():
            p.requires_grad_(any(k in pname for k in keys))
    return model
