"""Batched inference over samples: fake logits for every decodable image, skip records for the rest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from sep_bench.data.dataset import ViewDataset
from sep_bench.data.layouts import Sample
from sep_bench.detectors import Detector, View
from sep_bench.engine.runtime import autocast, make_loader

__all__ = ["InferenceResult", "run_inference", "SkipBudgetError", "check_skips"]


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


@torch.no_grad()
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
) -> InferenceResult:
    """Fake logits in sample order. Views are seeded per (seed, sample index), epoch 0: bit-identical reruns."""
    model.eval()
    dataset = ViewDataset(samples, view, seed=seed, max_pixels=max_pixels, epoch=0, features=features,
                          perturb=perturb)
    loader = make_loader(dataset, batch_size, num_workers, device)
    logits = np.full(len(samples), np.nan, dtype=np.float64)
    skipped: list[dict] = []
    for batch in loader:
        skipped += batch.skipped
        if len(batch):
            views = {k: v.to(device, non_blocking=True) for k, v in batch.views.items()}
            with autocast(device, amp):
                out = model(views)
            logits[batch.indices.numpy()] = out.float().cpu().numpy()
        if on_batch is not None:
            on_batch(len(batch) + len(batch.skipped))
    return InferenceResult(logits, skipped)
