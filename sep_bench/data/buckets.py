"""Size buckets for evaluation: batches of images of one decoded size, read from the headers (no pixel decoding).

Views that keep the image size (NPR on the full image, AIGCBenchmark's official protocol) cannot be stacked
across sizes; the official evaluation therefore runs at batch size 1. Grouping indices by size lets it batch
with the same logits. Perturbations map equal sizes to equal sizes (``down0.5`` halves every image alike), so
the sizes of the files stay valid keys under them.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import Sampler

from sep_bench.data.images import _open_regular

__all__ = ["FEATURES", "UNKNOWN_SIZE", "BucketBatchSampler", "header_size", "size_keys"]

UNKNOWN_SIZE = "unknown"  # the key of samples whose header cannot be read (the dataset skips them, or they decode)
FEATURES = "features"  # the key of samples served from the feature cache (no image is decoded)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap height and width (applied by decode_image)


def header_size(path: str | Path, max_pixels: int) -> tuple[int, int] | None:
    """(height, width) of the decoded image, from the header alone; None when the header cannot be read or
    `decode_image` would refuse the image for its size."""
    try:
        with _open_regular(path) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fh) as img:
                w, h = img.size
                exif = img.info.get("exif")  # only what the header holds: img.getexif() decodes a PNG
                if exif:
                    tags = Image.Exif()
                    tags.load(exif)
                    if tags.get(_EXIF_ORIENTATION) in _TRANSPOSED:
                        w, h = h, w
    except Exception:  # any unreadable or hostile header: the sample's own bucket, the dataset decides
        return None
    if w < 1 or h < 1 or w * h > max_pixels:
        return None
    return h, w


def size_keys(paths: Sequence[str], max_pixels: int, skip: Sequence[int] | set[int] = ()) -> list[Hashable]:
    """One bucket key per path: its decoded size, UNKNOWN_SIZE, or FEATURES for the positions in `skip`."""
    skip = set(skip)
    keys: list[Hashable] = []
    for i, path in enumerate(paths):
        if i in skip:
            keys.append(FEATURES)
        else:
            size = header_size(path, max_pixels)
            keys.append(UNKNOWN_SIZE if size is None else size)
    return keys


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of up to `batch_size` indices sharing one key, ordered by their first index (deterministic; the
    pass still moves through the samples front to back)."""

    def __init__(self, keys: Sequence[Hashable], batch_size: int) -> None:
        buckets: dict[Hashable, list[int]] = {}
        for i, key in enumerate(keys):
            buckets.setdefault(key, []).append(i)
        batches = [idx[j : j + batch_size] for idx in buckets.values() for j in range(0, len(idx), batch_size)]
        self.batches = sorted(batches, key=lambda b: b[0])

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
