"""Shared pieces of the benchmark scripts: arguments, the image set, the protocol's recipes, timing, JSON reports.

Not a test module and not part of the package: the scripts import it as ``_common`` (they run as
``python benchmarks/<name>.py`` from the repository root, so this folder is on ``sys.path``).

Image set: ``make_image_set(n, size)`` writes N images of size x size once into a cache folder under the system
temp dir and reuses them afterwards. They are crops of the photographs that minigen also uses (shipped inside
installed wheels, no download), resized and with mild noise so PNG/JPEG sizes are close to camera/generator
output. Half are PNG (``ai/``, like generator output) and half JPEG quality 95 (``nature/``, like ImageNet
photos), the mix of GenImage. ``--data DIR`` uses the images of a real folder instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DETECTORS = ("npr", "sep", "univfd", "cnnspot", "ssp")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
#: Default image side per profile: GenImage's generators mostly write 512x512; minigen images are 128x128;
#: AIGCBenchmark's ProGAN images are 256x256.
PROFILE_SIZES = {"genimage": 512, "mini": 128, "aigcbench": 256}
_IMAGE_SET_VERSION = 1


def clone_sources(clone: Path) -> dict[str, str]:
    """The environment that runs `clone`'s own sources with this checkout's virtual environment.

    PYTHONPATH puts the clone's ``sep_bench`` first, but the editable install maps ``sep_bench.baselines`` to THIS
    checkout's ``baselines/``; a link ``sep_bench/baselines -> ../baselines`` in the clone (kept out of its git
    status) is found first, so the clone's detector modules run too."""
    link = clone / "sep_bench" / "baselines"
    if not link.is_symlink():
        link.symlink_to(Path("..") / "baselines")
    exclude = clone / ".git" / "info" / "exclude"
    if exclude.parent.is_dir() and "/sep_bench/baselines" not in (exclude.read_text() if exclude.exists() else ""):
        with exclude.open("a") as f:
            f.write("\n/sep_bench/baselines\n")
    return {"PYTHONPATH": str(clone)}


# ---- arguments -------------------------------------------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser, name: str, *, images: int, quick_images: int) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: few images and iterations; profile mini unless --profile is given")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--profile", default=None,
                        help="params.yaml profile whose recipes are measured (default: genimage; mini with --quick)")
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated registry names")
    parser.add_argument("--images", type=int, default=None,
                        help=f"number of image files (default {images}; {quick_images} with --quick)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default: the profile's, " +
                             ", ".join(f"{k} {v}" for k, v in PROFILE_SIZES.items()) + ")")
    parser.add_argument("--data", type=Path, default=None,
                        help="use the images under this folder (recursively) instead of the generated set")
    parser.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "benchmarks" / f"{name}.json")
    parser.set_defaults(_quick_images=quick_images, _images=images)


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on --quick and the profile."""
    if args.profile is None:
        args.profile = "mini" if args.quick else "genimage"
    if args.images is None:
        args.images = args._quick_images if args.quick else args._images
    if args.size is None:
        args.size = PROFILE_SIZES.get(args.profile, 256)
    args.detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    if not args.detectors:
        raise SystemExit("--detectors: give at least one detector")
    return args


# ---- protocol ----------------------------------------------------------------------------------------------------


def load_specs(params_path: Path, profile: str, detectors: Sequence[str]) -> dict[str, Any]:
    """detector -> RunSpec of `profile` (recipe with the profile's overrides), as `sep-bench` resolves it."""
    from sep_bench.protocol import load_params, resolve

    params = load_params(params_path)
    return {d: resolve(params, d, profile) for d in detectors}


def detector_config(spec) -> tuple[Any, Any]:
    """(DetectorSpec, validated model config) of a RunSpec."""
    from sep_bench.detectors import get_detector

    det = get_detector(spec.detector)
    return det, det.config_for(spec)


def build_random_model(det, cfg, device, *, channels_last: bool = False, seed: int = 0):
    """The detector with random weights (``WeightsSource.none()``), on `device`."""
    import torch

    from sep_bench.weights import WeightsSource

    torch.manual_seed(seed)
    model = det.build(cfg, WeightsSource.none()).to(device)
    if channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def pick_device(name: str):
    from sep_bench.engine.runtime import pick_device as _pick

    return _pick(name)


def amp_for(device, amp: str) -> str:
    """The autocast setting actually in force (the engine's autocast is a no-op on CPU)."""
    return amp if device.type == "cuda" else "off"


def to_device(views: dict, device, channels_last: bool) -> dict:
    """Views onto `device`; 4-D tensors channels-last on CUDA when asked (as the engine's training loop does)."""
    import torch

    fmt = torch.channels_last if channels_last and device.type == "cuda" else torch.contiguous_format
    return {k: v.to(device, non_blocking=True, memory_format=fmt if v.dim() == 4 else torch.preserve_format)
            for k, v in views.items()}


def prebuilt_views(paths: Sequence[Path], view, batch_size: int, seed: int, max_pixels: int) -> dict:
    """One batch of views, built once on the host (decode + view, per-sample RNG as the engine does)."""
    import torch

    from sep_bench.data.images import decode_image
    from sep_bench.data.transforms import sample_rng

    items = [view(decode_image(paths[i % len(paths)], max_pixels), sample_rng(seed, i, 0)) for i in range(batch_size)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


# ---- image set ---------------------------------------------------------------------------------------------------


def _write_one(job: tuple[str, int, int, int, str]) -> None:
    path, size, seed, index, fmt = job
    from PIL import Image

    from sep_bench.data.minigen import load_photos

    photos = load_photos()
    names = sorted(photos)
    rng = np.random.default_rng([seed, index])
    src = photos[names[index % len(names)]]
    h, w = src.shape[:2]
    side = int(min(h, w) * rng.uniform(0.55, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(np.ascontiguousarray(src[y : y + side, x : x + side]))
    img = np.asarray(crop.resize((size, size), Image.BICUBIC), dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img + rng.normal(0.0, 2.0, img.shape)  # sensor/generator-like noise: realistic file sizes
    out = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8))
    if fmt == "png":
        out.save(path, format="PNG")
    else:
        out.save(path, format="JPEG", quality=95)


def make_image_set(n: int, size: int, *, seed: int = 0, log: Callable[[str], None] = print) -> list[Path]:
    """N images of size x size (half PNG in ai/, half JPEG in nature/), written once and reused."""
    root = Path(tempfile.gettempdir()) / "sep-bench-benchmarks" / f"v{_IMAGE_SET_VERSION}-s{size}-seed{seed}"
    jobs = []
    for i in range(n):
        fmt = "png" if i % 2 == 0 else "jpg"
        sub = "ai" if fmt == "png" else "nature"
        jobs.append((str(root / sub / f"{i:06d}.{fmt}"), size, seed, i, "png" if fmt == "png" else "jpeg"))
    todo = [j for j in jobs if not Path(j[0]).is_file()]
    if todo:
        t0 = time.perf_counter()
        (root / "ai").mkdir(parents=True, exist_ok=True)
        (root / "nature").mkdir(parents=True, exist_ok=True)
        workers = min(len(todo) // 32 + 1, os.cpu_count() or 1, 16)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_write_one, [(j[0] + ".tmp", *j[1:]) for j in todo], chunksize=16))
        else:
            for j in todo:
                _write_one((j[0] + ".tmp", *j[1:]))
        for j in todo:  # atomic: an interrupted run never leaves a half-written image behind
            os.replace(j[0] + ".tmp", j[0])
        log(f"wrote {len(todo)} images ({size}x{size}, PNG + JPEG q95) to {root} in {time.perf_counter() - t0:.1f} s")
    return [Path(j[0]) for j in jobs]


def folder_images(folder: Path, n: int) -> list[Path]:
    """The first N images under `folder` (sorted), for measurements on real data."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SystemExit(f"--data {folder}: no images found")
    return files[:n]


def image_set(args: argparse.Namespace) -> list[Path]:
    return folder_images(args.data, args.images) if args.data else make_image_set(args.images, args.size)


def describe_images(paths: Sequence[Path]) -> dict:
    from PIL import Image

    sizes = []
    for p in paths[: min(len(paths), 64)]:
        with Image.open(p) as im:
            sizes.append(im.size)
    suffixes: dict[str, int] = {}
    for p in paths:
        suffixes[p.suffix.lower()] = suffixes.get(p.suffix.lower(), 0) + 1
    mean_bytes = statistics.mean(p.stat().st_size for p in paths) if paths else 0
    return {
        "count": len(paths),
        "folder": str(Path(os.path.commonpath([str(p) for p in paths]))) if paths else "",
        "formats": suffixes,
        "sizes_sample": sorted({f"{w}x{h}" for w, h in sizes}),
        "mean_file_kib": round(mean_bytes / 1024, 1),
    }


def samples_of(paths: Sequence[Path], length: int | None = None) -> list:
    """`Sample`s for the engine (label from the folder name: ai = fake = 1); cycled to `length` if given."""
    from sep_bench.data.layouts import Sample

    n = len(paths) if length is None else length
    out = []
    for i in range(n):
        p = paths[i % len(paths)]
        label = 1 if p.parent.name in ("ai", "1_fake") else 0
        out.append(Sample(path=str(p), label=label, generator="bench", split="test"))
    return out


# ---- timing ------------------------------------------------------------------------------------------------------


def sync(device) -> None:
    import torch

    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    methods: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, seed: int = 0
) -> dict[str, list[float]]:
    """Seconds per call of each method; one call of every method per repeat, in a new (seeded) random order each
    repeat, so background load and position effects (caches, allocator, lazily closed files) hit all alike."""
    for _ in range(warmup):
        for fn in methods.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    order = list(methods)
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            fn = methods[name]
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def steady_rate(marks: Sequence[tuple[float, int]], skip_fraction: float = 0.25) -> float | None:
    """Images/s a long run settles at: the least-squares slope of images done against time over the marks past
    `skip_fraction` of the images.

    `marks` are (seconds since start, images done) after each batch. Skipping the first quarter leaves out the
    worker start-up; the slope over many batches evens out the bursts in which W workers deliver their batches.
    """
    if len(marks) < 4:
        return None
    total = marks[-1][1]
    window = [m for m in marks if m[1] >= skip_fraction * total]
    if len(window) < 3 or window[-1][0] <= window[0][0]:
        return None
    t = np.array([m[0] for m in window])
    n = np.array([m[1] for m in window], dtype=np.float64)
    slope = float(np.polyfit(t, n, 1)[0])
    return round(slope, 1) if slope > 0 else None


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def rate(n: float, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


# ---- reports -----------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    from sep_bench.hostinfo import cpu_model

    return cpu_model()


def _git_commit() -> dict:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = run("git", "rev-parse", "--verify", "HEAD")
    if len(commit) != 40:  # not a git checkout (e.g. a copied working tree)
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(run("git", "status", "--porcelain", "--untracked-files=no"))}


def machine_info(device=None) -> dict:
    import PIL
    import torch
    import torchvision

    from sep_bench.hostinfo import usable_cores

    usable = usable_cores()
    info = {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": str(device) if device is not None else None,
        "gpu": None,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        },
        "git": _git_commit(),
    }
    if torch.cuda.is_available():
        idx = device.index if device is not None and device.type == "cuda" and device.index is not None else 0
        props = torch.cuda.get_device_properties(idx)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "count": torch.cuda.device_count(), "driver_cuda": torch.version.cuda}
    return info


def write_report(path: Path, benchmark: str, args: argparse.Namespace, device, payload: dict) -> None:
    argv = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}
    report = {
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": argv,
        "machine": machine_info(device),
        **payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


def header(title: str, args: argparse.Namespace, device, paths: Sequence[Path]) -> None:
    import torch

    info = describe_images(paths)
    gpu = torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else "-"
    print(f"{title}")
    print(f"  profile {args.profile}; {info['count']} images {','.join(info['sizes_sample'][:3])} "
          f"({', '.join(f'{k} {v}' for k, v in info['formats'].items())}; mean {info['mean_file_kib']} KiB)")
    print(f"  device {device} (GPU {gpu}); CPU {_cpu_model()} x{os.cpu_count()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")


def render_docs() -> None:
    """Every generated figure of README.md and docs/*.md from the results files (what `make docs` renders first)."""
    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts/render_docs.py")], check=True)
