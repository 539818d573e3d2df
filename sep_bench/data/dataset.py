"""From samples to batches: decode each image once, apply the detector's view, count what cannot be used.

A sample that fails to decode becomes a *skip* record (path and reason) instead of an exception, so one bad file
never kills an epoch; the engine counts skips and refuses to report a metric on a set shrunk past the protocol's
`max_skip_fraction`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from sep_bench.data.images import DecodeError, decode_image
from sep_bench.data.layouts import Sample
from sep_bench.data.transforms import sample_rng

__all__ = ["ViewDataset", "Batch", "collate", "collate_by_shape", "OrderSampler", "EpochSampler", "epoch_order"]


class ViewDataset(Dataset):
    """samples[i] -> {"views", "label", "index"} or {"skip": reason, "path", "index"}.

    ``dataset[(i, epoch)]`` draws the views of that epoch instead of `epoch` (see EpochSampler).
    `index_offset` maps local positions to global sample indices (used for the per-sample RNG and returned as
    "index"), for datasets that hold a subset. `perturb` (see data.perturb) post-processes each decoded image
    before the view. `features` holds pre-computed frozen-backbone features by global
    index (see engine.feature_cache): those samples are not decoded, their view is ``{"features": f}``.

    `variants` (evaluation only): a list of post-processing functions (``None`` = the clean image). Each item is
    then a LIST with one entry per variant (tagged ``"variant": j``), all made from ONE decode of the image; every
    variant's view draws from a fresh per-sample RNG with the same seed, so variant j is exactly what a separate
    pass with ``perturb=variants[j]`` would see.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        view,
        *,
        seed: int,
        max_pixels: int,
        epoch: int = 0,
        index_offset: Sequence[int] | None = None,
        features: dict[int, torch.Tensor] | None = None,
        perturb=None,
        variants: Sequence[Callable | None] | None = None,
    ) -> None:
        if perturb is not None and variants is not None:
            raise ValueError("give perturb or variants, not both")
        self.samples = list(samples)
        self.view = view
        self.seed = seed
        self.max_pixels = max_pixels
        self.epoch = epoch
        self.global_index = list(index_offset) if index_offset is not None else None
        self.features = features or {}
        self.perturb = perturb
        self.variants = list(variants) if variants is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        position, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        s = self.samples[position]
        index = self.global_index[position] if self.global_index is not None else position
        if self.variants is not None:
            return self._variant_items(s, index, epoch)
        if index in self.features:
            return {"views": {"features": self.features[index]}, "label": s.label, "index": index}
        try:
            img = decode_image(s.path, self.max_pixels)
            if self.perturb is not None:
                img = self.perturb(img)
            views = self.view(img, sample_rng(self.seed, index, epoch))
        except DecodeError as err:
            return {"skip": err.reason, "detail": str(err), "path": s.path, "index": index}
        return {"views": views, "label": s.label, "index": index}

    def _variant_items(self, s: Sample, index: int, epoch: int) -> list[dict[str, Any]]:
        def skip(j: int, err: DecodeError) -> dict[str, Any]:
            return {"skip": err.reason, "detail": str(err), "path": s.path, "index": index, "variant": j}

        try:
            decoded = decode_image(s.path, self.max_pixels)
        except DecodeError as err:
            return [skip(j, err) for j in range(len(self.variants))]
        items = []
        for j, post in enumerate(self.variants):
            try:
                img = decoded if post is None else post(decoded)
                views = self.view(img, sample_rng(self.seed, index, epoch))
            except DecodeError as err:
                items.append(skip(j, err))
                continue
            items.append({"views": views, "label": s.label, "index": index, "variant": j})
        return items


@dataclass
class Batch:
    views: dict[str, torch.Tensor]
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list[dict[str, Any]] = field(default_factory=list)
    variants: torch.Tensor | None = None  # per row: which evaluation variant (ViewDataset `variants`) it is

    def __len__(self) -> int:
        return int(self.labels.numel())

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        views = {k: v.to(device, non_blocking=non_blocking) for k, v in self.views.items()}
        return Batch(views, self.labels.to(device, non_blocking=non_blocking), self.indices, self.skipped,
                     self.variants)

    def pin_memory(self) -> "Batch":
        return Batch({k: v.pin_memory() for k, v in self.views.items()}, self.labels.pin_memory(), self.indices,
                     self.skipped, self.variants)


def collate(items: list[dict[str, Any]]) -> Batch:
    good = [it for it in items if "skip" not in it]
    skipped = [it for it in items if "skip" in it]
    if not good:
        return Batch({}, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), skipped)
    keys = good[0]["views"].keys()
    views = {k: torch.stack([it["views"][k] for it in good]) for k in keys}
    labels = torch.tensor([it["label"] for it in good], dtype=torch.long)
    indices = torch.tensor([it["index"] for it in good], dtype=torch.long)
    variants = torch.tensor([it.get("variant", 0) for it in good], dtype=torch.long)
    return Batch(views, labels, indices, skipped, variants)


def collate_by_shape(items: list[dict[str, Any]]) -> list[Batch]:
    """`collate` per group of items whose views have equal shapes (first-seen order; the skips ride with the first).

    For views that keep the image size: a batch whose sizes differ (the size buckets rely on image headers, which
    can lie, e.g. an EXIF rotation the header reader missed) is split instead of failing in ``torch.stack``.
    Items of a multi-variant dataset (lists) are flattened first: rows of different variants but equal view
    shapes share a batch (``Batch.variants`` says which is which), so the forward batch keeps its size.
    """
    items = [it for entry in items for it in (entry if isinstance(entry, list) else [entry])]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for it in items:
        if "skip" not in it:
            groups.setdefault(tuple((k, tuple(v.shape)) for k, v in it["views"].items()), []).append(it)
    batches = [collate(group) for group in groups.values()] or [collate([])]
    batches[0].skipped.extend(it for it in items if "skip" in it)
    return batches


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The visiting order of one epoch: a pure function of (seed, epoch), so a resumed run sees the same order."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, 0x5EB])).permutation(n)


class OrderSampler(Sampler[int]):
    """Yields a fixed index order from position `start` on (resuming mid-epoch skips what was already seen)."""

    def __init__(self, order: np.ndarray, start: int = 0) -> None:
        self.order = order
        self.start = start

    def __iter__(self):
        return iter(self.order[self.start :].tolist())

    def __len__(self) -> int:
        return max(0, len(self.order) - self.start)


class EpochSampler(Sampler[tuple[int, int]]):
    """One epoch's visiting order, ``order_of(epoch)``, from position `start` on, as ``(position, epoch)`` keys.

    Lets one loader serve every epoch: its workers (persistent ones included, which keep the dataset copy they
    started with) read the epoch from each key, so every sample's views stay a function of (seed, epoch, index).
    Call `set_epoch` before iterating the loader for the next epoch.
    """

    def __init__(self, order_of: Callable[[int], np.ndarray], epoch: int = 0, start: int = 0) -> None:
        self.order_of = order_of
        self.set_epoch(epoch, start)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.order, self.start = epoch, self.order_of(epoch), start

    def __iter__(self):
        return ((position, self.epoch) for position in self.order[self.start :].tolist())

    def __len__(self) -> int:
        return max(0, len(self.order) - self.start)
