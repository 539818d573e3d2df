"""Exposed-patch selection speed: sep_bench.layers.eps against the official per-patch loop, in the same run.

    python benchmarks/eps.py [--repeats 7] [--out results/benchmarks/eps.json]

References (written here, per candidate, as the official ``data/dataset.py`` does it):
- ``reference``: a random position, a PIL crop, ``np.array(patch).astype(np.int64)``, the four-direction score,
  then Python's stable sort of the candidates by score (the official ``select_patch_val`` minus torchvision);
- ``reference_torchvision``: the same with torchvision ``RandomCrop(32)`` drawing each crop on the torch RNG,
  exactly the official loop.
Measured, for the default backend (`resolve_backend`: numba when it imports, or ``SEP_BENCH_EPS_BACKEND``) and, on
their own lines (``numpy/...``), for the numpy backend: ``official`` mode (256 random candidates, the same count as
the references) and ``exhaustive`` mode (every position, stride 1; and stride 4) of `select_patch`; and
``official_64`` against ``reference_64`` (64 candidates, the official training count). Before timing, the script
checks on every image that each backend's official mode picks the same patch as the reference loop given the same
candidate positions, and that the backends' exhaustive score maps are equal.

Start-up, reported apart from the timings: importing numba, and the first official and exhaustive calls in this
process (numba loads the compiled kernels from its on-disk cache, or compiles them when the cache is cold).

Images: natural images from ``skimage.data`` (bundled, no download) resized to 256x256 and 512x512.
Timings interleave the methods (one pass over all images per method per repeat) and report medians, so load
from other processes affects all of them alike. Single-threaded (as in a DataLoader worker).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from PIL import Image

from sep_bench.layers.eps import (
    candidate_positions,
    numba_target,
    resolve_backend,
    score_map,
    select_patch,
)

N_CANDIDATES = 256
TRAIN_CANDIDATES = 64  # the official training count, reported on its own line against its own reference
PATCH = 32
GOALS = {"official": 50.0, "exhaustive": 10.0}
TIMED = ("official", "official_64", "exhaustive", "exhaustive_stride4")


def compute_complexity(patch: Image.Image) -> int:
    p = np.array(patch).astype(np.int64)
    res = np.sum(np.abs(p[:, :-1, :] - p[:, 1:, :])) + np.sum(np.abs(p[:-1, :, :] - p[1:, :, :]))
    res += np.sum(np.abs(p[:-1, :-1, :] - p[1:, 1:, :])) + np.sum(np.abs(p[1:, :-1, :] - p[:-1, 1:, :]))
    return int(res)


def reference_select(img: Image.Image, ys, xs) -> tuple[int, int]:
    """The official loop given the positions: PIL crop each candidate, stable sort by score, take the first."""
    crops = [((int(y), int(x)), img.crop((int(x), int(y), int(x) + PATCH, int(y) + PATCH))) for y, x in zip(ys, xs)]
    crops.sort(key=lambda c: compute_complexity(c[1]))
    return crops[0][0]


def reference(img: Image.Image, rng: np.random.Generator, n: int = N_CANDIDATES) -> tuple[int, int]:
    w, h = img.size
    pos = [(int(rng.integers(0, h - PATCH + 1)), int(rng.integers(0, w - PATCH + 1))) for _ in range(n)]
    return reference_select(img, [p[0] for p in pos], [p[1] for p in pos])


def reference_torchvision(img: Image.Image, crop) -> Image.Image:
    patches = [crop(img) for _ in range(N_CANDIDATES)]
    patches.sort(key=compute_complexity)
    return patches[0]


def load_images(size: int) -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"):
        img = getattr(data, name)()
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        out.append(np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR)))
    return out


def backends() -> list[str]:
    """The default backend, then numpy (once)."""
    default = resolve_backend()
    return [default] + (["numpy"] if default != "numpy" else [])


def key(backend: str, method: str) -> str:
    return method if backend == backends()[0] else f"{backend}/{method}"


def start_up() -> dict:
    """Seconds to import numba (when it is the backend) and of the first calls in this process, before any other."""
    t0 = time.perf_counter()
    backend = resolve_backend()  # imports numba when it is installed
    out = {"backend": backend, "import_ms": round((time.perf_counter() - t0) * 1e3, 1)}
    if backend == "numba":  # the CPU numba compiled for: 'generic' (SSE2 code) runs the kernels about 3x slower
        out["numba_target"] = numba_target()
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for mode in ("official", "exhaustive"):
        t0 = time.perf_counter()
        select_patch(img, np.random.default_rng(0), size=PATCH, n_candidates=N_CANDIDATES, mode=mode)
        out[f"first_{mode}_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
    return out


def check_parity(images: list[np.ndarray]) -> None:
    for i, img in enumerate(images):
        ys, xs = candidate_positions(*img.shape[:2], PATCH, N_CANDIDATES, np.random.default_rng(i))
        ref = reference_select(Image.fromarray(img), ys, xs)
        for b in backends():
            fast = select_patch(img, np.random.default_rng(i), size=PATCH, n_candidates=N_CANDIDATES, backend=b)
            if fast != ref:
                raise AssertionError(f"image {i}: official mode ({b}) picked {fast}, the reference loop {ref}")
        maps = [score_map(img, PATCH, 1, backend=b) for b in backends()]
        if not all(np.array_equal(m, maps[0]) for m in maps):
            raise AssertionError(f"image {i}: the backends' exhaustive score maps differ")


def bench(size: int, repeats: int) -> dict:
    import torch
    from torchvision import transforms

    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = load_images(size)
    pil = [Image.fromarray(im) for im in images]
    check_parity(images)
    crop = transforms.RandomCrop(PATCH)
    rng = np.random.default_rng(0)  # unused by exhaustive mode

    def ours(backend: str, method: str):
        n = TRAIN_CANDIDATES if method == "official_64" else N_CANDIDATES
        mode = "official" if method.startswith("official") else "exhaustive"
        stride = 4 if method.endswith("stride4") else 1
        return lambda: [
            select_patch(
                im,
                np.random.default_rng(i) if mode == "official" else rng,
                size=PATCH,
                n_candidates=n,
                mode=mode,
                stride=stride,
                backend=backend,
            )
            for i, im in enumerate(images)
        ]

    methods = {
        "reference": lambda: [reference(p, np.random.default_rng(i)) for i, p in enumerate(pil)],
        "reference_torchvision": lambda: [reference_torchvision(p, crop) for p in pil],
        "reference_64": lambda: [reference(p, np.random.default_rng(i), TRAIN_CANDIDATES) for i, p in enumerate(pil)],
    }
    for b in backends():
        for m in TIMED:
            methods[key(b, m)] = ours(b, m)
    for fn in methods.values():  # warm-up (work buffers, imports)
        fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / len(images))
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    ours_keys = [k for k in ms if not k.startswith("reference")]

    def base(k: str) -> str:
        return "reference_64" if k.endswith("official_64") else "reference"

    return {
        "image_size": size,
        "images": len(images),
        "ms_per_image": {k: round(v, 4) for k, v in ms.items()},
        "images_per_s": {k: round(1e3 / v, 1) for k, v in ms.items()},
        "speedup_vs_reference": {k: round(ms[base(k)] / ms[k], 2) for k in ours_keys},  # *official_64: reference_64
        "speedup_vs_reference_torchvision": {
            k: round(ms["reference_torchvision"] / ms[k], 2) for k in ours_keys if not k.endswith("official_64")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/eps.json"))
    args = parser.parse_args()

    start = start_up()  # before anything else calls the selector
    backend = start["backend"]
    numba_version = None
    if backend == "numba":
        import numba

        numba_version = numba.__version__
    results = [bench(size, args.repeats) for size in (256, 512)]
    label = f"{backend} {numba_version}" if numba_version else backend
    print(f"EPS, {N_CANDIDATES} candidates, patch {PATCH}; ms per image (images/s); speed-up vs the reference loop")
    print(f"backend: {label}" + (" (the numpy backend on the numpy/ lines)" if backend != "numpy" else ""))
    print(
        f"start-up: import {start['import_ms']:.0f} ms; first call official {start['first_official_ms']:.0f} ms, "
        f"exhaustive {start['first_exhaustive_ms']:.0f} ms"
        + (" (numba start-up; kernels compiled, or loaded from numba's cache)" if backend == "numba" else "")
    )
    for r in results:
        print(f"\n{r['image_size']}x{r['image_size']} ({r['images']} images)")
        for k, v in r["ms_per_image"].items():
            extra = ""
            if k in r["speedup_vs_reference_torchvision"]:
                extra = (
                    f"  x{r['speedup_vs_reference'][k]:.1f}"
                    f" (x{r['speedup_vs_reference_torchvision'][k]:.1f} vs torchvision loop)"
                )
            elif k in r["speedup_vs_reference"]:
                extra = f"  x{r['speedup_vs_reference'][k]:.1f} vs reference_64"
            print(f"  {k:28s} {v:9.3f} ms ({r['images_per_s'][k]:8.1f}/s){extra}")
    met = {mode: all(r["speedup_vs_reference"][mode] >= goal for r in results) for mode, goal in GOALS.items()}
    print(f"\ngoals ({backend} backend, speed-up >= {GOALS} at both sizes): {met}")
    if backend != "numpy":
        met_numpy = {
            mode: all(r["speedup_vs_reference"][f"numpy/{mode}"] >= goal for r in results)
            for mode, goal in GOALS.items()
        }
        print(f"goals (numpy backend): {met_numpy}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {
        "benchmark": "eps",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "loadavg": load,
        },
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "numba": numba_version},
        "backend": backend,
        "start_up": start,
        "n_candidates": N_CANDIDATES,
        "patch_size": PATCH,
        "repeats": args.repeats,
        "goals": GOALS,
        "goals_met": met,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
