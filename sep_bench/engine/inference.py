"""Batched inference over samples: fake logits for every decodable image, skip records for the rest.

Batches hold images of one size when `bucket_by_size` is on (see data.buckets), and are split by view shape where
sizes still differ, so views that keep the image size (NPR on the full image) batch without resizing; a sample's
logit does not depend on the batch it is in (eval mode; up to float rounding), and logits are written back
in sample order.

Several evaluation variants (the clean image and each perturbation of the robustness suite) run in ONE pass:
each image is decoded once, post-processed once per variant, and rows of equal view shape share a forward
batch whatever their variant (`infer_variants`). Each variant's logits equal those of a separate pass.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from sep_bench.data.buckets import BucketBatchSampler, size_keys
from sep_bench.data.dataset import ViewDataset, collate_by_shape
from sep_bench.data.layouts import Sample
from sep_bench.detectors import Detector, View
from sep_bench.engine.runtime import autocast, make_loader
from sep_bench.protocol import LoaderSpec

__all__ = ["InferenceResult", "run_inference", "inference_loader", "infer", "infer_variants", "SkipBudgetError",
           "check_skips"]


class SkipBudgetError(RuntimeError):
    """More images could not be used than the protocol's max_skip_fraction allows."""


@dataclass
class InferenceResult:
    logits: np.ndarray  # (N,) float64, NaN where skipped
    skipped: list[dict] = field(default_factory=list)

    @property
    def kept(self) -> np.ndarray:
        return np.isfinite(self.logits)

    @property
    def skip_reasons(self) -> Counter:
        return Counter(s["skip"] for s in self.skipped)

    def check(self, max_fraction: float, what: str) -> None:
        example = self.skipped[0]["path"] if self.skipped else ""
        check_skips(len(self.logits), self.skip_reasons, max_fraction, what, example)


def check_skips(n_seen: int, reasons: Counter | dict, max_fraction: float, what: str, example: str = "") -> None:
    """Raise when more than `max_fraction` of the `n_seen` images were skipped (never a silently shrunken set)."""
    n_skipped = sum(reasons.values())
    if n_seen and n_skipped / n_seen > max_fraction:
        raise SkipBudgetError(
            f"{what}: {n_skipped} of {n_seen} images could not be used ({dict(reasons)}"
            f"{'; e.g. ' + example if example else ''}), more than data.max_skip_fraction={max_fraction}; "
            "fix the data or raise the limit"
        )


def inference_loader(
    samples: Sequence[Sample],
    view: View,
    *,
    seed: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    max_pixels: int,
    features: dict | None = None,
    perturb=None,
    bucket_by_size: bool = True,
    loader_settings: LoaderSpec | None = None,
    variants: Sequence[Callable | None] | None = None,
    index_offset: Sequence[int] | None = None,
) -> DataLoader:
    """The loader `infer` reads: views seeded per (seed, sample index), epoch 0; each item a list of same-shape
    batches. Build it once to evaluate the same samples repeatedly (persistent workers then start once).

    With `variants` (k post-processing functions, None = clean) each loader batch holds ceil(batch_size / k)
    images, so it carries about `batch_size` views, as a single-variant batch does. `index_offset`: the samples'
    indices in the full list (a subset keeps each image's RNG stream and its place in the results)."""
    dataset = ViewDataset(samples, view, seed=seed, max_pixels=max_pixels, epoch=0, features=features,
                          perturb=perturb, variants=variants, index_offset=index_offset)
    images_per_batch = max(1, -(-batch_size // len(variants))) if variants else batch_size
    batches = None
    if bucket_by_size:
        batches = BucketBatchSampler(size_keys([s.path for s in samples], max_pixels, skip=set(features or ())),
                                     images_per_batch)
    return make_loader(dataset, images_per_batch, num_workers, device, settings=loader_settings,
                       batch_sampler=batches, collate_fn=collate_by_shape)


def infer(
    model: Detector,
    loader: DataLoader,
    n_samples: int,
    *,
    device: torch.device,
    amp: str = "off",
    on_batch: Callable[[int], None] | None = None,
) -> InferenceResult:
    """Fake logits in sample order over an `inference_loader` of `n_samples` samples; skips in sample order."""
    return infer_variants(model, loader, n_samples, 1, device=device, amp=amp, on_batch=on_batch)[0]


@torch.no_grad()
def infer_variants(
    model: Detector,
    loader: DataLoader,
    n_samples: int,
    n_variants: int,
    *,
    device: torch.device,
    amp: str = "off",
    on_batch: Callable[[int], None] | None = None,
) -> list[InferenceResult]:
    """One `InferenceResult` per variant of a multi-variant `inference_loader` (or one for a plain loader).

    `on_batch` receives the number of images (not views) the loader batch covered."""
    model.eval()
    logits = np.full((n_variants, n_samples), np.nan, dtype=np.float64)
    skipped: list[list[dict]] = [[] for _ in range(n_variants)]
    for parts in loader:
        views_seen = 0
        for batch in parts:
            for rec in batch.skipped:
                skipped[rec.get("variant", 0)].append(rec)
            views_seen += len(batch) + len(batch.skipped)
            if len(batch):
                views = {k: v.to(device, non_blocking=True) for k, v in batch.views.items()}
                with autocast(device, amp):
                    out = model(views)
                rows = batch.variants.numpy() if batch.variants is not None else np.zeros(len(batch), dtype=np.int64)
                logits[rows, batch.indices.numpy()] = out.float().cpu().numpy()
        if on_batch is not None:
            on_batch(views_seen // n_variants)
    results = []
    for j in range(n_variants):
        skipped[j].sort(key=lambda s: s["index"])
        results.append(InferenceResult(logits[j], skipped[j]))
    return results


def run_inference(
    model: Detector,
    samples: Sequence[Sample],
    view: View,
    *,
    seed: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    amp: str = "off",
    max_pixels: int,
    on_batch: Callable[[int], None] | None = None,
    features: dict | None = None,
    perturb=None,
    bucket_by_size: bool = True,
    loader_settings: LoaderSpec | None = None,
) -> InferenceResult:
    """Fake logits in sample order. Views are seeded per (seed, sample index), epoch 0: bit-identical reruns."""
    loader = inference_loader(samples, view, seed=seed, batch_size=batch_size, num_workers=num_workers, device=device,
                              max_pixels=max_pixels, features=features, perturb=perturb,
                              bucket_by_size=bucket_by_size, loader_settings=loader_settings)
    return infer(model, loader, len(samples), device=device, amp=amp, on_batch=on_batch)
