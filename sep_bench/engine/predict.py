"""Fake probabilities for arbitrary image files or folders, with any registered detector.

The model comes from a sep-bench checkpoint (safetensors + JSON, which knows its detector and config) or from
the authors' released weights (`load_official`). Images that cannot be decoded are reported with their reason,
never dropped silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from sep_bench.data.layouts import IMAGE_SUFFIXES, Sample
from sep_bench.detectors import Detector, get_detector
from sep_bench.engine.checkpoint import load_detector
from sep_bench.engine.inference import run_inference
from sep_bench.protocol import Recipe
from sep_bench.weights import WeightsSource, parse_pretrained, sha256_file

__all__ = ["collect_images", "load_model", "predict"]


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, plus those under named folders (recursive, sorted, links not followed)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p, followlinks=False):
                dirnames.sort()
                found += [Path(dirpath) / f for f in sorted(filenames) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        elif p.exists() or p.is_symlink():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return found


def load_model(detector: str, checkpoint: Path, *, official: bool, recipe: Recipe | None = None) -> Detector:
    """A sep-bench checkpoint, or (official=True) the authors' released weights in a model built from `recipe`."""
    if not official:
        model, _ = load_detector(checkpoint, expect=detector)
        return model
    spec = get_detector(detector)
    if spec.load_official is None:
        raise ValueError(f"detector {detector!r} has no loader for the authors' released weights")
    cfg = spec.make_config(recipe.model if recipe else {})
    backbone = WeightsSource.none()
    if spec.official_needs_backbone:
        backbone = parse_pretrained(recipe.pretrained if recipe else True, spec.default_weights)
    model = spec.build(cfg, backbone)
    spec.load_official(model, Path(checkpoint))
    if spec.official_needs_backbone and not backbone.pretrained:
        # the released file covers part of the model (UnivFD: the head) and the backbone is random: say so
        model.weights = WeightsSource("none", f"{Path(checkpoint).name} on a random-init backbone")
    else:
        model.weights = WeightsSource("file", str(Path(checkpoint).resolve()), sha256_file(checkpoint))
    return model


def predict(
    model: Detector,
    detector: str,
    model_config: dict,
    files: Sequence[Path],
    *,
    batch_size: int = 32,
    device: torch.device = torch.device("cpu"),
    max_pixels: int,
    on_batch: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """One row per file: path, fake_prob, fake_logit, status ("ok" or the skip reason)."""
    spec = get_detector(detector)
    cfg = spec.make_config(model_config)
    samples = [Sample(str(f), -1, "", "predict") for f in files]
    model.to(device)
    res = run_inference(model, samples, spec.views(cfg, False, False), seed=0, batch_size=batch_size,
                        num_workers=0, device=device, max_pixels=max_pixels, on_batch=on_batch)
    reasons = {s["path"]: s["skip"] for s in res.skipped}
    logits = res.logits
    return pd.DataFrame({
        "path": [str(f) for f in files],
        "fake_prob": 1.0 / (1.0 + np.exp(-logits)),
        "fake_logit": logits,
        "status": [reasons.get(str(f), "ok") for f in files],
    })
