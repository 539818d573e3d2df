"""Format alignment: re-encode real and fake images identically, so a detector cannot tell them apart by format.

GenImage's real images are JPEGs (ImageNet) and its fakes PNGs, so a detector can score by reading compression
traces instead of generation traces (Grommelt et al., "Fake or JPEG? Revealing Common Biases in Generated Image
Detection Datasets", the UnbiasedGenImage protocol). Alignment removes that shortcut: every image of both classes
is decoded and re-encoded as JPEG at one quality before the detector's views.

An alignment is written as a name (params.yaml ``train.align`` for the training split, ``eval.align`` for the
test split):

- ``none``: the images as stored;
- ``jpeg<q>`` (e.g. ``jpeg96``): JPEG round trip at quality ``q`` (the same function as the ``jpeg<q>``
  perturbation of data.perturb);
- ``jpeg``: JPEG at the real images' own quality, read from their quantisation tables (the median over the real
  JPEGs of the split, IJG quality scale): the fakes get the compression the reals already have, and the reals are
  re-encoded at (nearly) their own quality, which changes them little. A split without any real JPEG has no
  quality to read: give ``jpeg<q>`` instead;
- ``<steps>+jpeg<q>`` / ``<steps>+jpeg`` (e.g. ``down0.5+jpeg95``): the data.perturb steps ``down<scale>`` and
  ``blur<sigma>`` first, then the JPEG. A JPEG re-encoding alone does not remove an *earlier* compression: the
  reals' old 8 x 8 blocking and quantisation lattice stay under the new one, so a real image is then
  double-compressed and a fake single-compressed, which is itself a format trace (measured on mini:
  results/benchmarks/format_alignment.json, docs/protocols.md#format-alignment). Resampling both classes before
  the JPEG (antialiased bicubic for ``down``) mixes the old blocks' coefficients, so the old lattice is gone and
  both classes carry one compression, the new one, on the same grid. The price: the detector sees a resampled
  image of both classes.

A PNG re-encoding is not offered: PNG is lossless, so it changes no pixel and removes no JPEG trace from the reals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from sep_bench.protocol.syntax import ALIGNMENT, check_alignment, split_alignment

__all__ = ["check_alignment", "resolve_alignment", "Alignment", "jpeg_quality", "IJG_LUMA"]

#: The IJG (libjpeg) base luminance table, row-major; quality q scales it (see `_ijg_table`).
IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)


def _ijg_table(quality: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((IJG_LUMA * scale + 50) // 100, 1, 255)


def jpeg_quality(path: str) -> int | None:
    """The IJG quality whose luminance table is closest to the file's (None for a file that is not a JPEG).

    Reads the header only (no decode). Pillow returns the tables in natural (row-major) order.
    """
    try:
        with Image.open(path) as im:
            if im.format != "JPEG":
                return None
            tables = getattr(im, "quantization", None) or {}
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if 0 not in tables:
        return None
    luma = np.asarray(tables[0], dtype=np.int64)
    if luma.size != 64:
        return None
    errors = [np.abs(_ijg_table(q) - luma).sum() for q in range(1, 101)]
    return int(np.argmin(errors)) + 1


@dataclass(frozen=True)
class Alignment:
    """A resolved alignment: the name asked for, the quality used and where it comes from."""

    name: str
    quality: int | None
    source: str  # e.g. "params" or "median of 812 real JPEGs (qualities 75..100)"
    pre: str = ""  # data.perturb steps applied before the JPEG, e.g. "down0.5" ("" for none)

    @property
    def label(self) -> str:
        if self.quality is None:
            return "none"
        return f"{self.pre}+jpeg{self.quality}" if self.pre else f"jpeg{self.quality}"

    def describe(self) -> dict:
        return {"align": self.name, "applied": self.label, "source": self.source}

    def function(self) -> Callable[[np.ndarray], np.ndarray] | None:
        if self.quality is None:
            return None
        from sep_bench.data.perturb import jpeg, parse_perturbation

        q = self.quality
        pre = parse_perturbation(self.pre) if self.pre else None
        if pre is None:
            return lambda img: jpeg(img, q)
        return lambda img: jpeg(pre(img), q)


def resolve_alignment(name: str, real_paths: Sequence[str] = (), max_files: int = 500) -> Alignment:
    """The `Alignment` that `name` stands for; ``jpeg`` reads the quality of up to `max_files` of `real_paths`
    (evenly spread, deterministic)."""
    name = check_alignment(name)
    pre, last = split_alignment(name)
    m = ALIGNMENT.match(last)
    if m.group(1) == "none":
        return Alignment(name, None, "params")
    if m.group(2) is not None:
        return Alignment(name, int(m.group(2)), "params", pre)
    paths = list(real_paths)
    if len(paths) > max_files:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, max_files).round().astype(int)]
    qualities = [q for q in (jpeg_quality(p) for p in paths) if q is not None]
    if not qualities:
        from sep_bench.protocol import ProtocolError

        raise ProtocolError(f"align: jpeg reads the quality of the real JPEG images, but none of the {len(paths)} "
                            "real images looked at is a JPEG; give the quality instead, e.g. align: jpeg95")
    q = int(np.median(qualities))
    return Alignment(name, q, f"median of {len(qualities)} real JPEGs (qualities {min(qualities)}..{max(qualities)})",
                     pre)
