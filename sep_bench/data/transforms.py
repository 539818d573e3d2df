"""Deterministic image transforms on uint8 RGB arrays (H, W, 3), driven by an explicit numpy Generator.

torchvision's random transforms draw from torch's global RNG, which makes results depend on worker count and
call order; these take the per-sample generator from `sample_rng` instead, so evaluation is bit-identical
across runs and worker counts.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLIP_MEAN",
    "CLIP_STD",
    "sample_rng",
    "pad_to",
    "random_crop",
    "center_crop",
    "resize_short",
    "resize",
    "resize_cv2",
    "maybe_hflip",
    "to_tensor",
    "crop_view",
    "squash_view",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def sample_rng(seed: int, index: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """The generator for one sample's random choices: a pure function of (seed, epoch, index, stream)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index, stream]))


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad on the right/bottom to at least size x size (as torchvision's pad_if_needed, fill 0)."""
    h, w = img.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return img
    return np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    img = pad_to(img, size)
    h, w = img.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return img[y : y + size, x : x + size]


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Centre crop; smaller images are zero-padded first (torchvision CenterCrop semantics)."""
    img = pad_to(img, size)
    h, w = img.shape[:2]
    y, x = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img[y : y + size, x : x + size]


def resize(img: np.ndarray, height: int, width: int, resample: int = Image.BILINEAR) -> np.ndarray:
    if img.shape[:2] == (height, width):
        return img
    return np.asarray(Image.fromarray(img).resize((width, height), resample=resample))


#: OpenCV interpolations by name (``cv2.INTER_<NAME>``).
CV2_INTERPOLATION = ("nearest", "linear", "cubic", "area", "lanczos4")


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("OpenCV is needed for this detector's official resize: install opencv-python-headless "
                          "(pinned in requirements.lock; `make env`)") from None
    return cv2


def resize_cv2(img: np.ndarray, height: int, width: int, interpolation: str = "linear") -> np.ndarray:
    """``cv2.resize(img, (width, height), interpolation=cv2.INTER_<interpolation>)`` of a uint8 image: the whole
    image to height x width (aspect ratio not kept), OpenCV's fixed-point arithmetic and rounding, as the official
    code of detectors that resize with OpenCV (Effort's ``load_rgb``: cubic; LOTA's ``bit_patch``: linear)."""
    if interpolation not in CV2_INTERPOLATION:
        raise ValueError(f"unknown OpenCV interpolation {interpolation!r}; one of {', '.join(CV2_INTERPOLATION)}")
    if img.shape[:2] == (height, width):
        return img
    cv2 = _cv2()
    out = cv2.resize(np.ascontiguousarray(img), (int(width), int(height)),
                     interpolation=getattr(cv2, f"INTER_{interpolation.upper()}"))
    return out if out.ndim == img.ndim else out[..., None]  # OpenCV drops a single channel axis


def resize_short(img: np.ndarray, size: int, resample: int = Image.BILINEAR) -> np.ndarray:
    """Resize so the short side is `size`, keeping the aspect ratio (torchvision Resize(int) semantics)."""
    h, w = img.shape[:2]
    if min(h, w) == size:
        return img
    if h <= w:
        return resize(img, size, max(1, int(size * w / h)), resample)
    return resize(img, max(1, int(size * h / w)), size, resample)


def maybe_hflip(img: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Flip horizontally with probability p (one draw from rng, always made so the stream stays aligned)."""
    return img[:, ::-1] if rng.random() < p else img


def to_tensor(img: np.ndarray, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1], optionally normalised."""
    # contiguous CHW uint8 first: normalising the permuted view is ~2x slower and leaves a non-contiguous result
    arr = np.ascontiguousarray(img)
    if not arr.flags.writeable:  # e.g. np.asarray(PIL image): torch would warn about sharing read-only memory
        arr = arr.copy()
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(255.0)
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        t = (t - m) / s
    return t


def crop_view(
    crop_size: int,
    train_resize: int | None,
    eval_resize: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    train: bool,
    hflip: bool,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
) -> Callable[[np.ndarray, np.random.Generator], dict[str, torch.Tensor]]:
    """The common whole-image view: train: [resize short side] -> [augment] -> random crop -> [flip];
    eval: [resize short side] -> centre crop. Returns ``view(img, rng) -> {"image": normalised tensor}``."""

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if train:
            if train_resize:
                img = resize_short(img, train_resize)
            if augment is not None:
                img = augment(img, rng)
            img = random_crop(img, crop_size, rng)
            if hflip:
                img = maybe_hflip(img, rng)
        else:
            if eval_resize:
                img = resize_short(img, eval_resize)
            img = center_crop(img, crop_size)
        return {"image": to_tensor(img, mean, std)}

    return view


def squash_view(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    train: bool,
    hflip: bool,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    interpolation: str = "cubic",
) -> Callable[[np.ndarray, np.random.Generator], dict[str, torch.Tensor]]:
    """The whole image squashed to size x size with OpenCV (`resize_cv2`; DeepfakeBench's ``load_rgb``: cubic),
    then train: [augment] -> [flip]; eval: nothing more. Returns ``view(img, rng) -> {"image": normalised tensor}``."""

    def view(img: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        img = resize_cv2(img, size, size, interpolation)
        if train:
            if augment is not None:
                img = augment(img, rng)
            if hflip:
                img = maybe_hflip(img, rng)
        return {"image": to_tensor(img, mean, std)}

    return view
