"""minigen: the embedded, offline, smoke-scale benchmark.

Real images are native-resolution crops of colour photographs that ship inside installed wheels (scikit-image,
scikit-learn, matplotlib); fakes are reconstructions of real crops by five small conv autoencoders, trained on the
train photos only, that differ in how they up-sample. The tree is laid out like GenImage. minigen exercises the
whole pipeline on a CPU; it is NOT GenImage, and numbers measured on it are not the paper's.

Same pixels on every CPU. Float training and inference depend on the kernels a CPU picks (oneDNN/MKL code paths,
vector widths of ATen's reductions and transcendental functions), so fakes made that way differ between an
AVX-512 server, an AVX2 laptop and an ARM machine. minigen therefore:

- ships the generators' weights (`GENERATOR_WEIGHTS`, trained once by `train_generator_weights` and quantised:
  weights on a 2^-10 grid, biases on a 2^-20 grid) for the training settings of the default configuration;
  any other training setting (`ae_*`, seed, train photos) trains its weights at build time, which is
  reproducible on one machine only, and the build log says so;
- runs the generators in float64 on integer-grid values: inputs are pixels / 256, every layer's output is
  rounded to the 2^-10 grid, activations are hard-swish written as IEEE basic operations (no exp), and every
  partial sum of a convolution is an exact multiple of the grid below 2^53, so the result is exact whatever the
  summation order, vector width, FMA use or thread count;
- digests the PIXELS (``pixels_sha256``: relative path and sha256 of the decoded RGB bytes of every image), not
  the PNG bytes, whose compression may differ between zlib builds. ``files_sha256`` (PNG bytes) is kept beside.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache, partial
from multiprocessing.queues import SimpleQueue
from pathlib import Path

import logging

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sep_bench.hostinfo import usable_cores

__all__ = [
    "BUILD_LOG_SUFFIX",
    "build_log_path",
    "GENERATORS",
    "GROUP_PATTERN",
    "MANIFEST_NAME",
    "GENERATOR_WEIGHTS",
    "MinigenConfig",
    "build_minigen",
    "exact_forward",
    "load_photos",
    "pixels_sha256",
    "train_generator_weights",
]

log = logging.getLogger(__name__)
MANIFEST_NAME = "minigen.json"
BUILD_LOG_SUFFIX = "-build_log.json"
VERSION = 2  # 2: hard-swish generators with pinned weights, exact integer-grid inference, pixel digest
# File names are `<photo>__<index>.png`; the harness groups (and holds out) samples by photo with this pattern.
GROUP_PATTERN = r"^(?P<group>[a-z_]+?)__"
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "china",
    "flower",
    "grace_hopper",
)
# Photos of one scene (the two stereo views are near-identical) must share a split.
_SAME_SCENE = (("motorcycle_left", "motorcycle_right"),)
_INFER_BATCH = 20
_KL_WEIGHT = 1e-3
ProgressHook = Callable[[str, int, int], None]
_Result = tuple[dict, dict, dict]  # one generator's manifest entry, counts, timings


@dataclass(frozen=True)
class MinigenConfig:
    """Everything that determines the built tree; a manifest is reused only if its config is equal."""

    seed: int = 0
    image_size: int = 128
    train_generators: tuple[str, ...] = ("vae8",)
    generators: tuple[str, ...] = ("tconv", "nearest", "bilinear", "pixelshuffle", "vae8")
    n_train_real: int = 280
    n_val_real: int = 40
    n_test_real: int = 100
    ae_steps: int = 200
    ae_width: int = 32
    ae_crop: int = 48
    ae_batch: int = 16
    ae_lr: float = 2e-3
    train_photos: tuple[str, ...] = ("astronaut", "chelsea", "rocket", "china")
    val_photos: tuple[str, ...] = ("coffee",)
    test_photos: tuple[str, ...] = ("motorcycle_left", "motorcycle_right", "flower", "grace_hopper")
    # torch threads per build process, fixed because float reductions (hence the PNG bytes) can depend on it.
    # Parallelism comes from worker processes instead: 2 OpenMP threads slow down 5x when the cores are busy.
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("train_generators", "generators", "train_photos", "val_photos", "test_photos"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # lists from YAML/JSON -> hashable
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if unknown := sorted(set(self.generators) - set(GENERATORS)):
            raise ValueError(f"unknown generators {unknown}; allowed: {sorted(GENERATORS)}")
        if missing := sorted(set(self.train_generators) - set(self.generators)):
            raise ValueError(f"train_generators {missing} are not in generators {list(self.generators)}")
        for size_name in ("image_size", "ae_crop"):
            size = getattr(self, size_name)
            if size < 8 or size % 8:
                raise ValueError(f"{size_name} must be a positive multiple of 8 (vae8 down-samples 8x), got {size}")
        if min(self.ae_steps, self.ae_batch, self.threads) < 1 or self.ae_width < 2 or self.ae_lr <= 0:
            raise ValueError("ae_steps, ae_batch, ae_lr and threads must be positive and ae_width >= 2")
        if self.n_test_real < 1:
            raise ValueError(f"n_test_real must be >= 1 (every generator needs test data), got {self.n_test_real}")
        splits = {"train": self.train_photos, "val": self.val_photos, "test": self.test_photos}
        counts = {"train": self.n_train_real, "val": self.n_val_real, "test": self.n_test_real}
        seen: dict[str, str] = {}
        for split, photos in splits.items():
            if counts[split] < 0 or (counts[split] > 0 and not photos):
                raise ValueError(f"n_{split}_real={counts[split]} needs >= 0 and, if > 0, some {split}_photos")
            for photo in photos:
                if photo not in PHOTOS:
                    raise ValueError(f"unknown photo {photo!r} in {split}_photos; allowed: {list(PHOTOS)}")
                if photo in seen:
                    raise ValueError(f"photo {photo!r} is in both {seen[photo]}_photos and {split}_photos")
                seen[photo] = split
        if not self.train_photos:
            raise ValueError("train_photos must not be empty: the generators are trained on them")
        for scene in _SAME_SCENE:
            if len({seen[p] for p in scene if p in seen}) > 1:
                raise ValueError(f"photos {list(scene)} show one scene and must be in the same split")


# --------------------------------------------------------------------------------------------------- photos


@cache
def _photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_image

    left, right, _disparity = skimage.data.stereo_motorcycle()
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        grace = np.asarray(Image.open(fh).convert("RGB"))
    photos = {
        "astronaut": skimage.data.astronaut(),
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
        "motorcycle_left": left,
        "motorcycle_right": right,
        "china": load_sample_image("china.jpg"),
        "flower": load_sample_image("flower.jpg"),
        "grace_hopper": grace,
    }
    for name, img in photos.items():
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise RuntimeError(f"sample photo {name!r} is {img.shape} {img.dtype}, expected HxWx3 uint8")
        img = np.ascontiguousarray(img)
        img.setflags(write=False)
        photos[name] = img
    return photos


def load_photos() -> dict[str, np.ndarray]:
    """The real photographs, name -> HxWx3 uint8 (read-only arrays), from installed wheels only."""
    return dict(_photos())


# ----------------------------------------------------------------------------------------------- generators


def _up(kind: str, c_in: int, c_out: int) -> nn.Module:
    """One 2x up-sampling layer; these are what leave each generator's distinct traces."""
    if kind == "tconv":
        return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
    if kind == "pixelshuffle":
        return nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 3, padding=1), nn.PixelShuffle(2))
    if kind == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1))
    if kind == "bilinear":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(c_in, c_out, 3, padding=1)
        )
    raise ValueError(f"unknown up-sampling {kind!r}")


def _down(c_in: int, c_out: int) -> nn.Module:
    return nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)


class ConvAE(nn.Module):
    """4x-bottleneck conv autoencoder without skips, so every output pixel is re-synthesised by the decoder.

    The last up-sampling halves the width (as image decoders taper): it runs at full resolution and dominates cost.
    """

    def __init__(self, upsampling: str, width: int = 32) -> None:
        super().__init__()
        self.upsampling = upsampling
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.Hardswish(), _down(w, w), nn.Hardswish(), _down(w, w), nn.Hardswish()
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(w, w, 3, padding=1), nn.Hardswish(),
            _up(upsampling, w, w), nn.Hardswish(),
            _up(upsampling, w, w // 2), nn.Hardswish(),
            nn.Conv2d(w // 2, 3, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def exact_forward(self, x: torch.Tensor) -> torch.Tensor:
        return exact_forward(self.decoder, exact_forward(self.encoder, x))

    def loss(self, x: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        return F.l1_loss(self(x), x)


class VAE8(nn.Module):
    """Latent-diffusion-style VAE: 8x spatial bottleneck to a few latent channels, nearest+conv decoder."""

    upsampling = "nearest"

    def __init__(self, width: int = 32, latent: int = 4) -> None:
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.Hardswish(),
            _down(w, w), nn.Hardswish(), _down(w, w), nn.Hardswish(), _down(w, w), nn.Hardswish(),
            nn.Conv2d(w, 2 * latent, 3, padding=1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, w, 3, padding=1), nn.Hardswish(),
            _up("nearest", w, w), nn.Hardswish(), _up("nearest", w, w), nn.Hardswish(),
            _up("nearest", w, w // 2), nn.Hardswish(),
            nn.Conv2d(w // 2, 3, 3, padding=1),
        )  # fmt: skip

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: reconstructions are deterministic."""
        return self.decoder(self._moments(x)[0])

    def exact_forward(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` on the integer grid (see `exact_forward`): the posterior mean, then the decoder."""
        mean = exact_forward(self.encoder, x)[:, : self.decoder[0].in_channels]
        return exact_forward(self.decoder, mean)

    def loss(self, x: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        mean, logvar = self._moments(x)
        std = torch.exp(0.5 * logvar)
        z = mean + std * torch.randn(mean.shape, generator=noise, dtype=mean.dtype)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return F.l1_loss(self.decoder(z), x) + _KL_WEIGHT * kl


GENERATORS: dict[str, Callable[[int], nn.Module]] = {
    "tconv": partial(ConvAE, "tconv"),
    "nearest": partial(ConvAE, "nearest"),
    "bilinear": partial(ConvAE, "bilinear"),
    "pixelshuffle": partial(ConvAE, "pixelshuffle"),
    "vae8": VAE8,
}
"""name -> builder(width) of the untrained autoencoder."""

_UPSAMPLING = {
    "tconv": "transposed_conv",
    "nearest": "nearest+conv",
    "bilinear": "bilinear+conv",
    "pixelshuffle": "pixel_shuffle",
    "vae8": "vae_8x_latent, nearest+conv",
}

# ------------------------------------------------------------------------------------ exact integer-grid inference

_GRID = 2.0**10  # activations and weights: multiples of 2^-10
_BIAS_GRID = 2.0**20  # biases: multiples of 2^-20 (the grid of a product of two grid values)
_PIXEL_SCALE = 256.0  # inputs are pixels / 256, exact in binary (unlike / 255)


def _on_grid(x: torch.Tensor, grid: float = _GRID) -> torch.Tensor:
    """Round x IN PLACE to the nearest multiple of 1/grid (ties to even): exact, the same on every IEEE machine
    (scaling by a power of two is exact)."""
    return x.mul_(grid).round_().div_(grid)


def _hardswish(x: torch.Tensor) -> torch.Tensor:
    """x * clamp(x + 3, 0, 6) / 6 IN PLACE, as separate IEEE basic operations (each correctly rounded everywhere)."""
    return x.mul_(torch.clamp(x + 3.0, 0.0, 6.0)).div_(6.0)


def exact_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run `module` (a Sequential tree of convolutions, up-sampling, pixel shuffle and hard-swish) in float64 with
    every leaf's output rounded to the 2^-10 grid.

    With grid-valued inputs, weights (2^-10) and biases (2^-20), each product is exact and each partial sum is an
    exact multiple of 2^-22 far below 2^53 in magnitude, so convolutions are exact in any summation order; bilinear
    2x up-sampling multiplies by 1/4 and 3/4 (exact); the hard-swish is rounded once per IEEE operation. The
    output therefore does not depend on the CPU, its vector instructions, the BLAS or the thread count.
    """
    if isinstance(module, nn.Sequential):
        for child in module:
            x = exact_forward(child, x)
        return x
    if isinstance(module, nn.Hardswish):
        return _on_grid(_hardswish(x))
    if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Upsample, nn.PixelShuffle)):
        raise TypeError(f"exact_forward does not know {type(module).__name__}")
    return _on_grid(module(x))


def quantise_state(model: nn.Module) -> dict[str, np.ndarray]:
    """Integer weights (x 2^10, int16) and biases (x 2^20, int32) of `model`, by state-dict key."""
    out = {}
    for key, value in model.state_dict().items():
        scale, dtype = (_BIAS_GRID, np.int32) if key.endswith(".bias") else (_GRID, np.int16)
        q = torch.round(value.double() * scale)
        info = np.iinfo(dtype)
        if q.abs().max() > info.max:
            raise ValueError(f"{key}: a value of {float(value.abs().max()):.3g} does not fit the {dtype.__name__} grid")
        out[key] = q.numpy().astype(dtype)
    return out


def load_quantised(model: nn.Module, state: dict[str, np.ndarray]) -> nn.Module:
    """`model` in float64 with the grid values of `quantise_state` (exactly representable)."""
    model = model.double()
    sd = {k: torch.from_numpy(v.astype(np.float64) / (_BIAS_GRID if k.endswith(".bias") else _GRID))
          for k, v in state.items()}
    model.load_state_dict(sd, strict=True)
    return model.eval()


# -------------------------------------------------------------------------------------- pinned generator weights

#: The generators' weights for the default training settings, trained once by `train_generator_weights` and
#: committed (reproducing the training elsewhere gives slightly different floats; that is why they are pinned).
GENERATOR_WEIGHTS = Path(__file__).with_name("minigen_generators.npz")
#: Fields of MinigenConfig that determine the generators' weights.
TRAINING_FIELDS = ("seed", "ae_steps", "ae_width", "ae_crop", "ae_batch", "ae_lr", "train_photos", "threads")


def training_settings(cfg: MinigenConfig, name: str) -> dict:
    """What determines generator `name`'s weights (recorded in the weights file, compared on load)."""
    settings = {f: getattr(cfg, f) for f in TRAINING_FIELDS}
    settings["train_photos"] = list(settings["train_photos"])
    return {"generator": name, "pixel_scale": _PIXEL_SCALE, "activation": "hardswish", **settings}


def _read_weights(path: Path) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    """{generator: (training settings, quantised state)} from a weights file (.npz, no pickles)."""
    if not path.is_file():
        return {}
    out: dict[str, tuple[dict, dict[str, np.ndarray]]] = {}
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        for name, settings in meta.items():
            prefix = f"{name}/"
            out[name] = (settings, {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)})
    return out


def _pinned_state(cfg: MinigenConfig, name: str, path: Path = GENERATOR_WEIGHTS) -> dict[str, np.ndarray] | None:
    entry = _read_weights(path).get(name)
    if entry is None or entry[0] != json.loads(json.dumps(training_settings(cfg, name))):
        return None
    return entry[1]


def train_generator_weights(cfg: MinigenConfig = MinigenConfig(), out: Path = GENERATOR_WEIGHTS,
                            progress: ProgressHook | None = None) -> dict:
    """Train every generator of `cfg` (float32, this machine) and write their quantised weights to `out`.

    Maintainers run this (``sep-bench data minigen-weights``) when the generators or their training settings
    change; the file is committed so every machine builds the same pixels from it."""
    arrays: dict[str, np.ndarray] = {}
    meta = {}
    for name in cfg.generators:
        with _deterministic_torch(cfg.threads):
            model = _train(name, cfg, progress)
        for key, value in quantise_state(model).items():
            arrays[f"{name}/{key}"] = value
        meta[name] = training_settings(cfg, name)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)
    return meta


# -------------------------------------------------------------------------------------------------- build


def _rng(seed: int, *purpose: str) -> np.random.Generator:
    """An independent stream per purpose, so adding a generator does not shift another one's crops."""
    return np.random.default_rng([seed, *(zlib.crc32(p.encode()) for p in purpose)])


def _torch_seed(seed: int, *purpose: str) -> int:
    return int(_rng(seed, "torch", *purpose).integers(2**62))


@contextmanager
def _deterministic_torch(threads: int) -> Iterator[None]:
    """Fixed threads and deterministic kernels inside; the caller's settings come back after."""
    previous = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """NxHxWx3 uint8 -> Nx3xHxW float32 pixels / 256 (the generators' input and target scale)."""
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous().float().div(_PIXEL_SCALE)


def _train(name: str, cfg: MinigenConfig, progress: ProgressHook | None) -> nn.Module:
    photos = [_to_tensor(_photos()[p][None])[0] for p in cfg.train_photos]
    rng = _rng(cfg.seed, "ae-crops", name)
    noise = torch.Generator().manual_seed(_torch_seed(cfg.seed, "ae-noise", name))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_torch_seed(cfg.seed, "ae-init", name))
        model = GENERATORS[name](cfg.ae_width)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.ae_lr)
    model.train()
    c = cfg.ae_crop
    for step in range(cfg.ae_steps):
        batch = []
        for k in rng.integers(len(photos), size=cfg.ae_batch):
            _, h, w = photos[k].shape
            y, x = rng.integers(h - c + 1), rng.integers(w - c + 1)
            batch.append(photos[k][:, y : y + c, x : x + c])
        loss = model.loss(torch.stack(batch), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress(f"train {name}", step + 1, cfg.ae_steps)
    return model.eval()


def _crops(photo_names: tuple[str, ...], n: int, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`n` random native-resolution crops spread evenly over the photos, keyed by `<photo>__<index>`."""
    out: dict[str, np.ndarray] = {}
    for k, photo in enumerate(photo_names):
        img = _photos()[photo]
        h, w, _ = img.shape
        for i in range(n // len(photo_names) + (k < n % len(photo_names))):
            y, x = rng.integers(h - size + 1), rng.integers(w - size + 1)
            out[f"{photo}__{i:04d}"] = img[y : y + size, x : x + size]
    return out


@torch.inference_mode()
def _reconstruct(model: nn.Module, images: list[np.ndarray]) -> list[np.ndarray]:
    """Exact float64 reconstructions (`exact_forward`) as uint8 pixels."""
    out: list[np.ndarray] = []
    for i in range(0, len(images), _INFER_BATCH):
        x = _to_tensor(np.stack(images[i : i + _INFER_BATCH])).double()
        rec = model.exact_forward(x).mul(_PIXEL_SCALE).round().clamp(0.0, 255.0)
        out.extend(rec.to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return out


def _psnr_db(real: list[np.ndarray], fake: list[np.ndarray]) -> float:
    mse = [np.mean((r.astype(np.float64) - f.astype(np.float64)) ** 2) for r, f in zip(real, fake)]
    return float(np.mean([10.0 * np.log10(255.0**2 / max(m, 1e-10)) for m in mse]))


def _write_png(path: Path, image: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=6, optimize=False)
    path.write_bytes(buf.getvalue())


def _files_sha256(root: Path) -> str:
    """sha256 over the sorted (relative path, file sha256) list of every image in the tree (PNG bytes)."""
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")):
        h.update(f"{rel}\t{hashlib.sha256((root / rel).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def pixel_digest(image: np.ndarray) -> str:
    """sha256 of an RGB image's shape and raw pixel bytes (independent of how the PNG was compressed)."""
    return hashlib.sha256(f"{image.shape}".encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


def pixels_sha256(root: Path) -> str:
    """sha256 over the sorted (relative path, `pixel_digest`) list of every image in the tree: the build's
    identity, compared with the digest pinned in params.yaml."""
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")):
        with Image.open(root / rel) as im:
            h.update(f"{rel}\t{pixel_digest(np.asarray(im.convert('RGB')))}\n".encode())
    return h.hexdigest()


def _load_generator(cfg: MinigenConfig, name: str, progress: ProgressHook | None) -> tuple[nn.Module, str]:
    """Generator `name` with its pinned weights, or trained here (other training settings): (model, weights kind)."""
    state = _pinned_state(cfg, name)
    weights = "pinned" if state is not None else "trained here (reproducible on this machine only)"
    if state is None:
        state = quantise_state(_train(name, cfg, progress))
    return load_quantised(GENERATORS[name](cfg.ae_width), state), weights


def _generator_splits(cfg: MinigenConfig, name: str) -> tuple[str, ...]:
    return ("train", "val") if name in cfg.train_generators else ("val",)


def _split_crops(cfg: MinigenConfig, name: str, split: str) -> dict[str, np.ndarray]:
    """The real crops of one split of generator `name` (each split has its own RNG, so splits are independent)."""
    if split == "train":
        rng = _rng(cfg.seed, "crops", "train", name)
        crops = _crops(cfg.train_photos, cfg.n_train_real, cfg.image_size, rng)
        return crops | _crops(cfg.val_photos, cfg.n_val_real, cfg.image_size, rng)
    return _crops(cfg.test_photos, cfg.n_test_real, cfg.image_size, _rng(cfg.seed, "crops", "val", name))


def _build_job(root: Path, name: str, splits: tuple[str, ...], cfg: MinigenConfig,
               progress: ProgressHook | None) -> _Result:
    """Write `splits` of generator `name` under `root/name`: (manifest entry, counts, timings).

    Depends only on (cfg, name, split), so jobs run in any order, in any process, with the same bytes.
    """
    task = f"write {name}" if splits == _generator_splits(cfg, name) else f"write {name} {'+'.join(splits)}"
    with _deterministic_torch(cfg.threads):
        t0 = time.perf_counter()
        model, weights = _load_generator(cfg, name, progress)
        t1 = time.perf_counter()
        crops_by_split = {split: _split_crops(cfg, name, split) for split in splits}
        total, done = 2 * sum(len(c) for c in crops_by_split.values()), 0
        counts, psnr = {}, None
        for split, crops in crops_by_split.items():
            fakes = _reconstruct(model, list(crops.values()))
            if split == "val":
                psnr = round(_psnr_db(list(crops.values()), fakes), 3)
            for cls, images in (("nature", crops.values()), ("ai", fakes)):
                d = root / name / split / cls
                d.mkdir(parents=True)
                for stem, image in zip(crops, images):
                    _write_png(d / f"{stem}.png", image)
                    done += 1
                    if progress:
                        progress(task, done, total)
            counts[split] = {"ai": len(crops), "nature": len(crops)}
    entry = {"upsampling": _UPSAMPLING[name], "psnr_db": psnr, "params": sum(p.numel() for p in model.parameters()),
             "weights": weights}
    timings = {"weights_seconds": round(t1 - t0, 3), "write_seconds": round(time.perf_counter() - t1, 3)}
    return entry, counts, timings


def _jobs(cfg: MinigenConfig) -> list[tuple[str, tuple[str, ...]]]:
    """(generator, splits) jobs, longest first. A generator with pinned weights gets one job per split, so the
    training generator's large train split and its test split run in parallel; one that trains here keeps one
    job (training it twice would cost more than it saves)."""
    jobs, trains_here = [], set()
    for name in cfg.generators:
        splits = _generator_splits(cfg, name)
        if _pinned_state(cfg, name) is None:
            trains_here.add(name)
            jobs.append((name, splits))
        else:
            jobs += [(name, (split,)) for split in splits]
    size = {"train": cfg.n_train_real + cfg.n_val_real, "val": cfg.n_test_real}
    return sorted(jobs, key=lambda job: (job[0] not in trains_here, -sum(size[s] for s in job[1])))


def _merge(results: dict[tuple[str, tuple[str, ...]], _Result], cfg: MinigenConfig) -> dict[str, _Result]:
    """Per-generator results from per-job ones: counts of every split, the test split's PSNR, summed seconds."""
    merged: dict[str, _Result] = {}
    for (name, _splits), (entry, counts, timings) in results.items():
        if name not in merged:
            merged[name] = (dict(entry), dict(counts), dict(timings))
            continue
        m_entry, m_counts, m_timings = merged[name]
        m_entry["psnr_db"] = m_entry["psnr_db"] if entry["psnr_db"] is None else entry["psnr_db"]
        m_counts.update(counts)
        for k, v in timings.items():
            m_timings[k] = round(m_timings[k] + v, 3)
    return {name: (merged[name][0], {s: merged[name][1][s] for s in _generator_splits(cfg, name)}, merged[name][2])
            for name in cfg.generators}


_worker_queue: SimpleQueue | None = None


def _init_worker(queue: SimpleQueue) -> None:
    global _worker_queue
    _worker_queue = queue


def _worker_build(root: Path, name: str, splits: tuple[str, ...], cfg: MinigenConfig) -> _Result:
    return _build_job(root, name, splits, cfg, lambda *event: _worker_queue.put(event))


def _build_generators(
    root: Path, cfg: MinigenConfig, progress: ProgressHook | None, workers: int
) -> dict[str, _Result]:
    """Build every generator, in `workers` spawned processes when > 1 (progress events come back by a queue)."""
    jobs = _jobs(cfg)
    if workers <= 1:
        return _merge({job: _build_job(root, *job, cfg, progress) for job in jobs}, cfg)
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch's thread pools exist
    queue = ctx.SimpleQueue()

    def pump() -> None:
        while not queue.empty():
            event = queue.get()
            if progress:
                progress(*event)

    with ctx.Pool(workers, initializer=_init_worker, initargs=(queue,)) as pool:
        pending = {job: pool.apply_async(_worker_build, (root, *job, cfg)) for job in jobs}
        while not all(r.ready() for r in pending.values()):
            pump()
            for r in pending.values():
                if r.ready() and not r.successful():
                    r.get()  # re-raises the worker's error; leaving the block terminates the others
            time.sleep(0.05)
        results = {job: r.get() for job, r in pending.items()}
    pump()
    return _merge(results, cfg)


def _build_into(root: Path, cfg: MinigenConfig, progress: ProgressHook | None, workers: int) -> tuple[dict, dict]:
    results = _build_generators(root, cfg, progress, workers)
    manifest = {
        "name": "minigen",
        "version": VERSION,
        "seed": cfg.seed,
        "image_size": cfg.image_size,
        "train_generators": list(cfg.train_generators),
        "generators": {name: results[name][0] for name in cfg.generators},
        "splits": {"train": list(cfg.train_photos), "validation": list(cfg.val_photos), "test": list(cfg.test_photos)},
        "group_pattern": GROUP_PATTERN,
        "counts": {name: results[name][1] for name in cfg.generators},
        "config": _config_json(cfg),
        "pixels_sha256": pixels_sha256(root),
        "files_sha256": _files_sha256(root),
    }
    return manifest, {name: results[name][2] for name in cfg.generators}


def _config_json(cfg: MinigenConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _reusable(out_dir: Path, cfg: MinigenConfig) -> dict | None:
    """The existing manifest if `out_dir` is a complete build of exactly `cfg`, else None."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("version") != VERSION or manifest.get("config") != _config_json(cfg):
        return None
    expected = sum(2 * n["nature"] for splits in manifest.get("counts", {}).values() for n in splits.values())
    if sum(1 for _ in out_dir.rglob("*.png")) != expected:
        return None
    if pixels_sha256(out_dir) != manifest.get("pixels_sha256"):
        log.warning("%s: the images on disk differ from the build's manifest (pixels digest); rebuilding", out_dir)
        return None
    return manifest


def _check_photo_sizes(cfg: MinigenConfig) -> None:
    photos = _photos()
    for split, names, size in (
        ("train", cfg.train_photos, max(cfg.image_size, cfg.ae_crop)),
        ("val", cfg.val_photos, cfg.image_size),
        ("test", cfg.test_photos, cfg.image_size),
    ):
        for name in names:
            if min(photos[name].shape[:2]) < size:
                raise ValueError(f"{split} photo {name!r} {photos[name].shape[:2]} is smaller than a {size}px crop")


def _remove_stale_siblings(out_dir: Path) -> None:
    """Delete `<out>.tmp-<pid>` / `<out>.old-<pid>` left by builds whose process is gone (e.g. killed)."""
    if not out_dir.parent.is_dir():
        return
    for sib in out_dir.parent.glob(f"{out_dir.name}.*-*"):
        kind, _, pid = sib.name[len(out_dir.name) + 1 :].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(sib, ignore_errors=True)
        except PermissionError:
            pass  # alive, owned by someone else


def build_minigen(
    out_dir: Path,
    config: MinigenConfig = MinigenConfig(),
    *,
    force: bool = False,
    progress: ProgressHook | None = None,
    workers: int | None = None,
) -> dict:
    """Build minigen into `out_dir` (or reuse a complete build of the same config) and return its manifest.

    The tree is built in `<out>.tmp-<pid>` and renamed into place only when complete, so an interrupted build
    never looks finished. An existing `out_dir` is replaced only if it is an earlier minigen build (or empty).
    Generators use the pinned weights (or, for other training settings, train here) and run exactly (see the
    module docstring): the same config gives the same pixels on every machine with the pinned weights.
    `progress(task, completed, total)` is called while training a generator (unpinned only) and writing images.
    `workers` processes build generators in parallel (default: one per usable CPU core, at most one per
    generator); it changes only the speed, never the bytes. With more than one, scripts that call this need the
    usual `if __name__ == "__main__":` guard (worker processes are spawned).
    """
    out_dir = Path(out_dir)
    if not force and (manifest := _reusable(out_dir, config)) is not None:
        return manifest
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).exists():
        raise FileExistsError(f"{out_dir} exists and is not a minigen build; refusing to replace it")
    _check_photo_sizes(config)
    _remove_stale_siblings(out_dir)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        if workers is None:
            workers = min(usable_cores(), len(config.generators))
        manifest, gen_log = _build_into(tmp, config, progress, workers)
        _write_json(tmp / MANIFEST_NAME, manifest)
        build_log = {
            "wall_seconds": round(time.perf_counter() - t0, 3),
            "torch": torch.__version__,
            "workers": workers,
            "generators": gen_log,
        }
        if out_dir.exists():
            old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_json(build_log_path(out_dir), build_log)
    return manifest


def build_log_path(out_dir: Path) -> Path:
    """Where a build's timings go: beside the build, not in it, so the build (a DVC output) has the same hash on
    every run and machine."""
    return out_dir.with_name(f"{out_dir.name}{BUILD_LOG_SUFFIX}")
