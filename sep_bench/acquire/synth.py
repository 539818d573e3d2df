"""Stand-in datasets with the real ones' shape (`sep-bench data synth --like genimage|aigcbench`).

For trying the real-data path (`data prepare`, `dvc exp run -S profile=genimage`, every full recipe) without the
hundreds of GB: the same folder names and layouts, image sizes, formats and defects as the real sets
(../shared/reference/datasets.md), with random content. Never a result: the pixels are noise, only the shape is
real.

- GenImage: ``<subset>/{train,val}/{ai,nature}`` for the 8 subsets. Reals are ImageNet-like JPEGs (varied sizes and
  qualities, one grayscale and one CMYK per folder, as ImageNet has); fakes are PNGs at each generator's size
  (BigGAN 128, ADM/GLIDE/VQDM 256, SD/Wukong 512, Midjourney 1024), ADM's with the ``.PNG`` suffix. The known
  defects are there: zero-byte PNGs in ADM and GLIDE, unreadable SD v1.5 nature JPEGs.
- AIGCBenchmark: the test tree ``<generator>/{0_real,1_fake}`` or ``<generator>/<class>/{0_real,1_fake}`` for the
  16 generators, and the ProGAN training set ``<class>/{0_real,1_fake}`` (PNG, 256 px) beside it.

`scale` shrinks every size (for tests on small machines); the layout, formats and defects stay.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

__all__ = ["LIKE", "SynthError", "SynthSummary", "synth_tree", "expected_images"]


class SynthError(ValueError):
    """What was asked cannot be synthesised (unknown dataset, an output folder that is not empty, bad sizes)."""


@dataclass(frozen=True)
class Folder:
    """One generator's folder: its name, class sub-folders (AIGCBenchmark), fake size and suffix, defects."""

    name: str
    fake_size: int
    fake_suffix: str = ".png"
    classes: tuple[str, ...] = ()
    zero_byte_fakes: bool = False
    truncated_reals: bool = False


# GenImage (the subset folders of params.yaml's generator_aliases); SD v1.4 is the training subset
GENIMAGE = (
    Folder("imagenet_midjourney", 1024),
    Folder("imagenet_ai_0419_sdv4", 512),
    Folder("imagenet_ai_0424_sdv5", 512, truncated_reals=True),
    Folder("imagenet_ai_0508_adm", 256, fake_suffix=".PNG", zero_byte_fakes=True),
    Folder("imagenet_glide", 256, zero_byte_fakes=True),
    Folder("imagenet_ai_0424_wukong", 512),
    Folder("imagenet_ai_0419_vqdm", 256),
    Folder("imagenet_ai_0419_biggan", 128),
)
GENIMAGE_TRAIN = "imagenet_ai_0419_sdv4"

# AIGCDetectBenchmark's test generators (the class folders of the GAN sets as in CNNSpot's test set)
AIGC = (
    Folder("progan", 256, classes=("airplane", "car", "cat", "horse")),
    Folder("stylegan", 256, classes=("bedroom", "car", "cat")),
    Folder("biggan", 256), Folder("cyclegan", 256, classes=("apple", "horse", "zebra")),
    Folder("stargan", 256), Folder("gaugan", 256),
    Folder("stylegan2", 256, classes=("car", "cat", "church", "horse")),
    Folder("whichfaceisreal", 1024), Folder("ADM", 256), Folder("Glide", 256), Folder("Midjourney", 1024),
    Folder("stable_diffusion_v_1_4", 512), Folder("stable_diffusion_v_1_5", 512), Folder("VQDM", 256),
    Folder("wukong", 512), Folder("DALLE2", 1024),
)
PROGAN_TRAIN = ("car", "cat", "chair", "horse")  # the 4 classes NPR and the AIGCBenchmark profile train on

LIKE = ("genimage", "aigcbench")

# ImageNet-like real sizes (width, height); JPEG qualities as ImageNet's vary
_REAL_SIZES = ((500, 375), (375, 500), (500, 333), (640, 480), (333, 500), (500, 500), (300, 225))
_QUALITIES = (75, 85, 90, 96)


@dataclass
class SynthSummary:
    """What was written: images per folder, the defects on purpose, the roots."""

    roots: list[Path]
    counts: dict[str, int] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)

    @property
    def images(self) -> int:
        return sum(self.counts.values())


def _size(size: int, scale: float) -> int:
    return max(16, int(round(size * scale)))


def _field(rng: np.random.Generator, h: int, w: int, channels: int, smooth: int) -> np.ndarray:
    """Random content: a low-resolution field upsampled (`smooth` px per cell) plus fine noise, as uint8."""
    from PIL import Image

    small = rng.integers(0, 256, (max(1, h // smooth), max(1, w // smooth), channels), dtype=np.uint8)
    img = Image.fromarray(small.squeeze(-1) if channels == 1 else small).resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.int16).reshape(h, w, channels)
    arr = arr + rng.integers(-12, 13, arr.shape, dtype=np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _real_jpeg(rng: np.random.Generator, index: int, scale: float) -> bytes:
    """An ImageNet-like JPEG: index 0 grayscale, index 1 CMYK, the rest RGB; varied size and quality."""
    from PIL import Image

    w, h = (_size(s, scale) for s in _REAL_SIZES[int(rng.integers(len(_REAL_SIZES)))])
    mode, channels = {0: ("L", 1), 1: ("CMYK", 4)}.get(index, ("RGB", 3))
    pixels = _field(rng, h, w, channels, smooth=8)
    img = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.choice(_QUALITIES)))
    return buf.getvalue()


def _fake_png(rng: np.random.Generator, size: int) -> bytes:
    """A generator-like PNG: square, smoother than the reals."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_field(rng, size, size, 3, smooth=16)).save(buf, format="PNG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class _Writer:
    """Writes the images of one tree, counting them per folder and noting each defect."""

    def __init__(self, summary: SynthSummary, rng: np.random.Generator, scale: float,
                 progress: Optional[Callable[[int], None]]):
        self.summary, self.rng, self.scale, self.progress = summary, rng, scale, progress

    def folder(self, folder: Path, n: int, fake: Optional[Folder], real_name: str) -> None:
        """`n` images into `folder`: fakes of `fake`'s shape, or ImageNet-like reals named `real_name`_<i>."""
        for i in range(n):
            if fake is not None:
                path = folder / f"{fake.name}_{i:05d}{fake.fake_suffix}"
                data = _fake_png(self.rng, _size(fake.fake_size, self.scale))
                if fake.zero_byte_fakes and i == n - 1 and n >= 2:  # the folder keeps a readable fake
                    data = b""
                    self.summary.defects.append(f"{path}: zero bytes")
            else:
                path = folder / f"{real_name}_{i:08d}.JPEG"
                data = _real_jpeg(self.rng, i, self.scale)
            _write(path, data)
            if self.progress:
                self.progress(1)
        self.summary.counts[str(folder)] = n

    def truncate_last(self, folder: Path) -> None:
        """Cut the last JPEG of `folder` to half its bytes: readable header, damaged data (an unreadable image)."""
        last = sorted(folder.iterdir())[-1]
        last.write_bytes(last.read_bytes()[: max(64, last.stat().st_size // 2)])
        self.summary.defects.append(f"{last}: truncated JPEG")


def _genimage(out: Path, w: _Writer, n_train: int, n_test: int, defects: bool) -> None:
    for g in GENIMAGE:
        for split, n in (("train", n_train if g.name == GENIMAGE_TRAIN else min(n_train, n_test)), ("val", n_test)):
            if n <= 0:
                continue
            fake = g if defects else Folder(g.name, g.fake_size, g.fake_suffix)
            w.folder(out / g.name / split / "ai", n, fake, "")
            w.folder(out / g.name / split / "nature", n, None, "ILSVRC2012_val" if split == "val" else "n01440764")
            if defects and g.truncated_reals and split == "val" and n >= 2:  # the folder keeps a readable real
                w.truncate_last(out / g.name / split / "nature")


def _aigcbench(out: Path, train_out: Path, w: _Writer, n_train: int, n_test: int) -> None:
    for g in AIGC:
        for sub in [out / g.name / c for c in g.classes] or [out / g.name]:
            w.folder(sub / "1_fake", n_test, g, "")
            w.folder(sub / "0_real", n_test, None, "real")
    progan = Folder("progan", 256)
    for cls in PROGAN_TRAIN:
        w.folder(train_out / cls / "1_fake", n_train, progan, "")
        w.folder(train_out / cls / "0_real", n_train, Folder("real", 256), "")  # LSUN reals are PNG too


def _empty_or_absent(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise SynthError(f"{folder} exists and is not an empty folder: synth writes a new tree (choose another --out, "
                         "or delete that folder)")


def synth_tree(like: str, out: Path, *, n_train: int = 8, n_test: int = 4, scale: float = 1.0, seed: int = 0,
               defects: bool = True, train_out: Optional[Path] = None,
               progress: Optional[Callable[[int], None]] = None) -> SynthSummary:
    """Write a `like`-shaped tree under `out` (and, for aigcbench, the ProGAN training set under `train_out`,
    default ``<out's parent>/progan_train``): `n_train` training images per class, `n_test` test images per
    generator (and class folder) and class. Same arguments, same bytes."""
    if like not in LIKE:
        raise SynthError(f"unknown dataset {like!r}: synth knows {', '.join(LIKE)}")
    if n_train < 0 or n_test < 1 or not 0 < scale <= 4:
        raise SynthError(f"need n_train >= 0, n_test >= 1 and 0 < scale <= 4 (got {n_train}, {n_test}, {scale})")
    train_out = train_out or out.parent / "progan_train"
    roots = [out] if like == "genimage" else [out, train_out]
    for root in roots:
        _empty_or_absent(root)
    summary = SynthSummary(roots=roots)
    writer = _Writer(summary, np.random.default_rng(seed), scale, progress)
    if like == "genimage":
        _genimage(out, writer, n_train, n_test, defects)
    else:
        _aigcbench(out, train_out, writer, n_train, n_test)
    return summary


def expected_images(like: str, n_train: int, n_test: int) -> int:
    """How many images `synth_tree` writes (for a progress bar)."""
    if like == "genimage":
        return sum(2 * (n_test + (n_train if g.name == GENIMAGE_TRAIN else min(n_train, n_test))) for g in GENIMAGE)
    return sum(2 * n_test * max(1, len(g.classes)) for g in AIGC) + 2 * n_train * len(PROGAN_TRAIN)
