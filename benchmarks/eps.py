"""Exposed-patch selection speed: sep_bench.sep.eps against the official per-patch loop, in the same run.

    python benchmarks/eps.py [--repeats 7] [--out results/benchmarks/eps.json]

References (written here, per candidate, as the official ``data/dataset.py`` does it):
- ``reference``: a random position, a PIL crop, ``np.array(patch).astype(np.int64)``, the four-direction score,
  then Python's stable sort of the candidates by score (the official ``select_patch_val`` minus torchvision);
- ``reference_torchvision``: the same with torchvision ``RandomCrop(32)`` drawing each crop on the torch RNG,
  exactly the official loop.
Measured: ``official`` mode (256 random candidates, the same count as the references) and ``exhaustive`` mode
(every position, stride 1; and stride 4) of `select_patch`; and, on their own line, ``official_64`` against
``reference_64`` (64 candidates, the official training count). For ``official`` mode the script first checks, on every
image, that the fast path picks the same patch as the reference loop given the same candidate positions.

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
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from sep_bench.sep.eps import candidate_positions, select_patch  # noqa: E402

N_CANDIDATES = 256
TRAIN_CANDIDATES = 64  # the official training count, reported on its own line against its own reference
PATCH = 32
GOALS = {"official": 50.0, "exhaustive": 10.0}


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
    import skimage.data as data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"):
        img = getattr(data, name)()
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        out.append(np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR)))
    return out


def check_parity(images: list[np.ndarray]) -> None:
    for i, img in enumerate(images):
        ys, xs = candidate_positions(*img.shape[:2], PATCH, N_CANDIDATES, np.random.default_rng(i))
        fast = select_patch(img, np.random.default_rng(i), size=PATCH, n_candidates=N_CANDIDATES, mode="official")
        ref = reference_select(Image.fromarray(img), ys, xs)
        if fast != ref:
            raise AssertionError(f"image {i}: official mode picked {fast}, the reference loop {ref}")


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
    methods = {
        "reference": lambda: [reference(p, np.random.default_rng(i)) for i, p in enumerate(pil)],
        "reference_torchvision": lambda: [reference_torchvision(p, crop) for p in pil],
        "official": lambda: [
            select_patch(im, np.random.default_rng(i), size=PATCH, n_candidates=N_CANDIDATES, mode="official") for i, im in enumerate(images)
        ],
        "reference_64": lambda: [reference(p, np.random.default_rng(i), TRAIN_CANDIDATES) for i, p in enumerate(pil)],
        "official_64": lambda: [
            select_patch(im, np.random.default_rng(i), size=PATCH, n_candidates=TRAIN_CANDIDATES, mode="official")
            for i, im in enumerate(images)
        ],
        "exhaustive": lambda: [select_patch(im, rng, size=PATCH, n_candidates=N_CANDIDATES, mode="exhaustive") for im in images],
        "exhaustive_stride4": lambda: [
            select_patch(im, rng, size=PATCH, n_candidates=N_CANDIDATES, mode="exhaustive", stride=4) for im in images
        ],
    }
    for fn in methods.values():  # warm-up (work buffers, imports)
        fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / len(images))
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    ref = ms["reference"]
    speedup = {k: round(ref / v, 2) for k, v in ms.items() if not k.startswith("reference") and k != "official_64"}
    speedup["official_64"] = round(ms["reference_64"] / ms["official_64"], 2)
    return {
        "image_size": size,
        "images": len(images),
        "ms_per_image": {k: round(v, 4) for k, v in ms.items()},
        "images_per_s": {k: round(1e3 / v, 1) for k, v in ms.items()},
        "speedup_vs_reference": speedup,  # official_64 against reference_64
        "speedup_vs_reference_torchvision": {
            k: round(ms["reference_torchvision"] / v, 2)
            for k, v in ms.items()
            if not k.startswith("reference") and k != "official_64"
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/eps.json"))
    args = parser.parse_args()

    results = [bench(size, args.repeats) for size in (256, 512)]
    print(f"EPS, {N_CANDIDATES} candidates, patch {PATCH}; ms per image (images/s); speed-up vs the reference loop")
    for r in results:
        print(f"\n{r['image_size']}x{r['image_size']} ({r['images']} images)")
        for k, v in r["ms_per_image"].items():
            extra = ""
            if k in r["speedup_vs_reference_torchvision"]:
                extra = f"  x{r['speedup_vs_reference'][k]:.1f} (x{r['speedup_vs_reference_torchvision'][k]:.1f} vs torchvision loop)"
            elif k == "official_64":
                extra = f"  x{r['speedup_vs_reference'][k]:.1f} vs reference_64"
            print(f"  {k:24s} {v:9.3f} ms ({r['images_per_s'][k]:8.1f}/s){extra}")
    met = {mode: all(r["speedup_vs_reference"][mode] >= goal for r in results) for mode, goal in GOALS.items()}
    print(f"\ngoals (speed-up >= {GOALS} at both sizes): {met}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {
        "benchmark": "eps",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(), "loadavg": load},
        "versions": {"python": platform.python_version(), "numpy": np.__version__},
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
