"""Cache of a frozen backbone's features, so that training epochs after the first cost only the head.

Only for detectors whose `forward_features` is frozen (``frozen_features = True``, e.g. UnivFD's CLIP encoder).
An entry is keyed by the sha256 of the image file's bytes and by a *preprocessing key* (detector, model config,
backbone weights, view kind and seed), so editing a file, the crop, the weights or the seed invalidates it.

Documented deviation when enabled (``train.feature_cache: true``): each training image's random view (crop,
flip, blur, JPEG) is drawn once, with the epoch-0 generator, and reused in every epoch, instead of being
redrawn per epoch as in the official recipe. Turn the cache off for the exact recipe.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from sep_bench.data.dataset import ViewDataset
from sep_bench.data.layouts import Sample
from sep_bench.detectors import Detector, View
from sep_bench.engine.runtime import autocast, make_loader
from sep_bench.io import atomic_path

__all__ = ["preprocessing_key", "cached_features"]


def preprocessing_key(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _content_hash(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


@torch.no_grad()
def cached_features(
    model: Detector,
    samples: Sequence[Sample],
    view: View,
    cache_dir: Path,
    key: str,
    *,
    seed: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    amp: str,
    max_pixels: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[dict[int, torch.Tensor], int]:
    """{sample index: feature vector} for every decodable sample, and how many were computed (not cached).

    Undecodable samples are left out; the dataset that uses the cache then decodes them and skips them with
    their reason as usual.
    """
    folder = Path(cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    feats: dict[int, torch.Tensor] = {}
    todo: list[int] = []
    hashes: dict[int, str] = {}
    for i, s in enumerate(samples):
        h = _content_hash(s.path)
        if h is None:
            continue
        hashes[i] = h
        f = folder / h[:2] / f"{h}.npy"
        if f.is_file():
            feats[i] = torch.from_numpy(np.load(f))
        else:
            todo.append(i)
    if todo:
        model.eval()
        dataset = ViewDataset([samples[i] for i in todo], view, seed=seed, max_pixels=max_pixels, epoch=0,
                              index_offset=todo)
        done = 0
        for batch in make_loader(dataset, batch_size, num_workers, device):
            if len(batch):
                with autocast(device, amp):
                    out = model.forward_features({k: v.to(device) for k, v in batch.views.items()}).float().cpu()
                for idx, vec in zip(batch.indices.tolist(), out):
                    vec = vec.contiguous()
                    target = folder / hashes[idx][:2] / f"{hashes[idx]}.npy"
                    target.parent.mkdir(exist_ok=True)
                    with atomic_path(target) as tmp:
                        with open(tmp, "wb") as fh:
                            np.save(fh, vec.numpy())
                    feats[idx] = vec
            done += len(batch) + len(batch.skipped)
            if progress:
                progress("cache features", done, len(todo))
    return feats, len(todo)
