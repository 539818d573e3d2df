"""SEP, the central detector: exposed-patch selection (`sep_bench.layers.eps`, shared with SSP), spatial branch
SRM + GBCSA (`sapm`), frequency branch DWT + enhancer (`fpm`), the assembled model and its official-checkpoint
loading (`model`), and per-image explanations (`explain`).

The selector is re-exported eagerly (light, numpy only); the model, which needs torchvision and pytorch_wavelets,
is imported on first use of its names.
"""

from __future__ import annotations

from typing import Any

from sep_bench.layers.eps import (
    candidate_positions,
    ensure_min_size,
    patch_scores,
    score_map,
    select_patch,
    texture_integral,
    texture_score,
)

__all__ = [
    "select_patch",
    "candidate_positions",
    "texture_integral",
    "patch_scores",
    "score_map",
    "texture_score",
    "ensure_min_size",
    "SEP",
    "SEPConfig",
    "SPEC",
    "render_explanation",
]

_LAZY = {"SEP": "model", "SEPConfig": "model", "SPEC": "model", "render_explanation": "explain"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"sep_bench.sep.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sep_bench.sep' has no attribute {name!r}")
