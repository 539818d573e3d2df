"""Dataset layouts: walk a folder tree and yield `Sample`s (path, label, generator, split).

Readers never open images (decoding is `data.images`' job) and never follow a symbolic link out of the root:
a linked file is listed only if its target resolves inside the root; links that leave the root, dangle or loop
are left out with a logged warning, and linked folders are never walked (so a folder link loop cannot recurse).
Label convention: real = 0, fake = 1.

- GenImage: ``<subset>/{train,val}/{ai,nature}``, also nested deeper as downloads are
  (``stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/train/ai``). The generator is the ``<subset>`` folder name.
- AIGCBenchmark: ``<gen>/{0_real,1_fake}`` and ``<gen>/<class>/{0_real,1_fake}``; everything is one split,
  ``test``.
- folder: ``<root>/{real,fake}`` (also ``0_real``/``1_fake``, ``nature``/``ai``), one generator named after the
  root, split ``test``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["Sample", "IMAGE_SUFFIXES", "read_layout", "LayoutError", "summarize"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
REAL, FAKE = 0, 1

_GENIMAGE_CLASSES = {"nature": REAL, "ai": FAKE}
_AIGC_CLASSES = {"0_real": REAL, "1_fake": FAKE}
_FOLDER_CLASSES = {"real": REAL, "fake": FAKE, **_GENIMAGE_CLASSES, **_AIGC_CLASSES}


class LayoutError(ValueError):
    """The folder does not have the expected layout."""


@dataclass(frozen=True, slots=True)
class Sample:
    path: str
    label: int
    generator: str
    split: str


def _files(folder: Path, root: Path) -> Iterator[Path]:
    """Image files under `folder`, sorted, skipping links that leave `root` (and link loops)."""
    root_real = root.resolve()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if p.is_symlink():
                try:
                    target = p.resolve(strict=True)
                except (OSError, RuntimeError):
                    log.warning("ignored %s: dangling symbolic link or link loop", p)
                    continue
                if not target.is_relative_to(root_real):
                    log.warning("ignored %s: symbolic link to %s, outside the dataset root", p, target)
                    continue
            yield p


def _split_dirs(root: Path) -> list[Path]:
    """`train`/`val` folders holding `ai`/`nature`, at any depth; the walk stops at them (no file listing)."""
    found = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if here.name in ("train", "val") and any(c in dirnames for c in _GENIMAGE_CLASSES):
            found.append(here)
            dirnames.clear()
        else:
            dirnames.sort()
    return sorted(found)


def _genimage(root: Path) -> Iterator[Sample]:
    for split_dir in _split_dirs(root):
        generator = split_dir.parent.name
        for cls, label in sorted(_GENIMAGE_CLASSES.items()):
            cdir = split_dir / cls
            if cdir.is_dir() and not cdir.is_symlink():
                for f in _files(cdir, root):
                    yield Sample(str(f), label, generator, split_dir.name)


def _aigcbench(root: Path) -> Iterator[Sample]:
    for gen_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        class_roots = [gen_dir] if any((gen_dir / c).is_dir() for c in _AIGC_CLASSES) else sorted(
            p for p in gen_dir.iterdir() if p.is_dir() and not p.is_symlink()
        )
        for croot in class_roots:
            for cls, label in sorted(_AIGC_CLASSES.items()):
                cdir = croot / cls
                if cdir.is_dir() and not cdir.is_symlink():
                    for f in _files(cdir, root):
                        yield Sample(str(f), label, gen_dir.name, "test")


def _folder(root: Path) -> Iterator[Sample]:
    for cls, label in sorted(_FOLDER_CLASSES.items()):
        cdir = root / cls
        if cdir.is_dir() and not cdir.is_symlink():
            for f in _files(cdir, root):
                yield Sample(str(f), label, root.name, "test")


_READERS = {"genimage": _genimage, "aigcbench": _aigcbench, "folder": _folder}


def read_layout(root: str | Path, layout: str) -> list[Sample]:
    """All samples under `root` in the given layout, in a deterministic order."""
    root = Path(root)
    if layout not in _READERS:
        raise LayoutError(f"unknown layout {layout!r}; known: {', '.join(_READERS)}")
    if not root.is_dir():
        raise LayoutError(f"dataset folder {str(root)!r} does not exist (build or download it first)")
    samples = list(_READERS[layout](root))
    if not samples:
        raise LayoutError(f"no images found under {str(root)!r} in the {layout!r} layout (see sep_bench.data.layouts)")
    return samples


def summarize(samples: list[Sample]) -> dict[str, dict[str, dict[str, int]]]:
    """Counts per generator, split and class: {generator: {split: {"real": n, "fake": n}}}."""
    counts = Counter((s.generator, s.split, "fake" if s.label == FAKE else "real") for s in samples)
    out: dict[str, dict[str, dict[str, int]]] = {}
    for (g, sp, c), n in sorted(counts.items()):
        out.setdefault(g, {}).setdefault(sp, {"real": 0, "fake": 0})[c] = n
    return out
