"""Data pipeline speed: decode + each detector's views against PIL decoding alone, on the same files, in one run.

    python benchmarks/data_pipeline.py [--profile genimage|mini] [--detectors npr,sep,...] [--images N] [--size S]
                                       [--repeats R] [--quick] [--out results/benchmarks/data_pipeline.json]

What one DataLoader worker does per image, single-threaded (torch and OpenMP at one thread, as in a worker):
- ``pil``: the reference, ``np.asarray(Image.open(p).convert("RGB"))`` (what the official loaders start with);
- ``decode``: `sep_bench.data.images.decode_image` (EXIF orientation, bomb and truncation checks);
- ``<detector>:train`` / ``<detector>:eval``: decode + the detector's view, built with
  ``spec.views(cfg, train, hflip)`` from the profile's recipe (``spec.recipe.model``, ``train.hflip``), with the
  per-sample generator `sample_rng(seed, index, epoch)` exactly as `ViewDataset` does.
Goal: a view adds at most 25% to PIL decoding. Training views that include the official blur/JPEG augmentation
(CNNSpot, UnivFD) re-encode every other image as JPEG, so they are reported but expected to exceed it.

Timings interleave the methods (one pass over all images per method per repeat, in a new random order each
repeat) and keep each method's fastest pass (medians are in the JSON): on a shared machine the fastest pass is the
least disturbed one.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a DataLoader worker runs one thread; set before numpy/torch load

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import _common as C  # noqa: E402

GOAL_OVERHEAD = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, "data_pipeline", images=48, quick_images=12)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed passes per method, the fastest kept (default 5; 2 with --quick)")
    args = C.finish_args(parser.parse_args())
    repeats = args.repeats or (2 if args.quick else 5)

    import torch

    from sep_bench.data.images import decode_image
    from sep_bench.data.transforms import sample_rng

    torch.set_num_threads(1)
    paths = C.image_set(args)
    specs = C.load_specs(args.params, args.profile, args.detectors)
    max_pixels = next(iter(specs.values())).profile.data.max_image_pixels
    seed = next(iter(specs.values())).seed
    C.header(f"Data pipeline (decode + views), single-threaded, best of {repeats} passes", args, None, paths)

    def pil_pass() -> None:
        for p in paths:
            np.asarray(Image.open(p).convert("RGB"))

    def decode_pass() -> None:
        for p in paths:
            decode_image(p, max_pixels)

    def view_pass(view):
        def run() -> None:
            for i, p in enumerate(paths):
                view(decode_image(p, max_pixels), sample_rng(seed, i, 0))

        return run

    methods = {"pil": pil_pass, "decode": decode_pass}
    shapes: dict[str, dict] = {}
    recipes: dict[str, dict] = {}
    for name, spec in specs.items():
        det, cfg = C.detector_config(spec)
        recipes[name] = {"model": cfg.model_dump(mode="json"), "hflip": spec.recipe.train.hflip}
        for train in (True, False):
            view = det.views(cfg, train, spec.recipe.train.hflip if train else False)
            key = f"{name}:{'train' if train else 'eval'}"
            out = view(decode_image(paths[0], max_pixels), sample_rng(seed, 0, 0))
            shapes[key] = {k: list(v.shape) for k, v in out.items()}
            methods[key] = view_pass(view)

    times = C.interleaved(methods, repeats, warmup=1)
    n = len(paths)
    ms = {k: min(v) / n * 1e3 for k, v in times.items()}  # best of R: the least disturbed pass
    ms_median = {k: C.median(v) / n * 1e3 for k, v in times.items()}
    base, dec = ms["pil"], ms["decode"]

    rows = []
    print(f"\n  {'method':16s} {'ms/img':>8s} {'img/s':>8s} {'vs pil':>8s} {'view ms':>8s}  views")
    for key, t in ms.items():
        over = t / base - 1.0
        view_ms = t - dec if ":" in key else None
        rows.append({
            "method": key,
            "ms_per_image": round(t, 3),
            "ms_per_image_median": round(ms_median[key], 3),
            "images_per_s": C.rate(1e3, t),
            "overhead_vs_pil": round(over, 3),
            "view_ms_per_image": round(view_ms, 3) if view_ms is not None else None,
            "goal_met": (over <= GOAL_OVERHEAD) if ":" in key else None,
            "views": shapes.get(key),
        })
        flag = "" if ":" not in key else ("  ok" if over <= GOAL_OVERHEAD else "  > goal")
        vms = f"{view_ms:8.3f}" if view_ms is not None else f"{'':8s}"
        shp = " ".join(f"{k}{tuple(v)}" for k, v in shapes.get(key, {}).items())
        print(f"  {key:16s} {t:8.3f} {1e3 / t:8.1f} {over:+8.1%} {vms}  {shp}{flag}")
    met = {r["method"]: r["goal_met"] for r in rows if r["goal_met"] is not None}
    print(f"\ngoal: views add <= {GOAL_OVERHEAD:.0%} over PIL decode; met for "
          f"{sum(met.values())}/{len(met)}: missed by {[k for k, v in met.items() if not v] or 'none'}")

    C.write_report(args.out, "data_pipeline", args, None, {
        "reference": "pil: np.asarray(Image.open(p).convert('RGB')) on the same files, same run",
        "profile": args.profile,
        "images": C.describe_images(paths),
        "repeats": repeats,
        "threads": 1,
        "goal_overhead_vs_pil": GOAL_OVERHEAD,
        "recipes": recipes,
        "results": rows,
        "goals_met": met,
    })


if __name__ == "__main__":
    main()
