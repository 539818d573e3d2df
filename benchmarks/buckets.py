"""Variable-size evaluation: size-bucketed batches against the official batch size 1; persistent loader workers.

    python benchmarks/buckets.py [--images N] [--sizes 256x256,512x512,...] [--batch-size B] [--small-batch b]
                                 [--workers W]
                                 [--repeats R] [--passes P] [--quick] [--device auto|cpu|cuda]
                                 [--out results/benchmarks/buckets.json]

With random-init weights (``WeightsSource.none()``) and the aigcbench profile's NPR recipe (``eval_crop_size: null``:
the full image, as the official AIGCBenchmark evaluation; no resize, no crop), over ``--images`` files in four
sizes, interleaved in sample order (the worst case for batching), all in one run:
- ``batch1``: `run_inference` at batch size 1, the official AIGCBenchmark setting (the reference);
- ``bucketed``: `run_inference` at ``--batch-size`` (32) with ``eval.bucket_by_size`` (batches of one size, from
  the image headers); its logits are compared with the reference's (max |difference|);
- ``bucketed_small``: the same at ``--small-batch`` (4; 0 leaves it out): on CPU the forward of large batches of
  large images is memory-bound, and a few images per batch are the fastest there;
- ``unbucketed``: the same batch size without buckets: every batch is split by view shape (``collate_by_shape``),
  so it runs in pieces of the sizes that happen to fall together.
Each is a whole pass after a warm-up (first batch included: start-up is part of an evaluation), ``--repeats``
times, interleaved in a new order each repeat, the fastest kept (other load on the machine hits all alike).

Loader workers: ``--passes`` passes over the same dataset through one `inference_loader` (decode + views +
collate, no model: the workers' side) with ``--workers`` workers, ``loader.persistent_workers`` true vs false,
passes interleaved. Reported per pass: seconds and the first batch's latency (worker start-up plus the first
batch); persistent workers start once, so only their first pass pays the start-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

DEFAULT_SIZES = "256x256,512x512,384x256,255x255"  # AIGCBenchmark: 256 (GANs, ADM, Glide), 512 (SD, Wukong); odd
QUICK_SIZES = "64x64,96x96,80x64,63x63"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"HxW,HxW,..." -> [(height, width), ...]."""
    sizes = []
    for part in text.split(","):
        h, _, w = part.strip().partition("x")
        sizes.append((int(h), int(w or h)))
    return sizes


def mixed_image_set(n: int, sizes: list[tuple[int, int]]) -> list[Path]:
    """N files, the sizes taking turns in sample order: the generated square set per size, resized to HxW once."""
    from PIL import Image

    per_size = -(-n // len(sizes))
    groups = []
    for h, w in sizes:
        square = C.make_image_set(per_size, max(h, w))
        out = []
        for p in square:
            target = p.with_name(f"{p.stem}_{h}x{w}{p.suffix}")
            if h != w and not target.is_file():
                with Image.open(p) as im:
                    im.resize((w, h), Image.BICUBIC).save(target, quality=95)
            out.append(target if h != w else p)
        groups.append(out)
    return [groups[i % len(sizes)][i // len(sizes)] for i in range(n)]


def timed_inference(model, samples, view, spec, device, amp: str, batch_size: int, bucket: bool, workers: int):
    from sep_bench.engine.inference import run_inference

    C.sync(device)
    t0 = time.perf_counter()
    res = run_inference(model, samples, view, seed=spec.seed, batch_size=batch_size, num_workers=workers,
                        device=device, amp=amp, max_pixels=spec.profile.data.max_image_pixels,
                        bucket_by_size=bucket)
    C.sync(device)
    seconds = time.perf_counter() - t0
    if res.skipped or not np.isfinite(res.logits).all():
        raise RuntimeError(f"run_inference skipped {len(res.skipped)} images: {res.skipped[:2]}")
    return {"seconds": round(seconds, 3), "images_per_s": C.rate(len(samples), seconds)}, res.logits


def loader_passes(samples, view, spec, device, args) -> dict:
    """Seconds and first-batch latency of each pass, persistent vs non-persistent workers, passes interleaved."""
    from sep_bench.engine.inference import inference_loader
    from sep_bench.protocol import LoaderSpec

    loaders = {
        mode: inference_loader(samples, view, seed=spec.seed, batch_size=args.batch_size, num_workers=args.workers,
                               device=device, max_pixels=spec.profile.data.max_image_pixels,
                               loader_settings=LoaderSpec(persistent_workers=mode == "persistent"))
        for mode in ("persistent", "non_persistent")
    }
    runs: dict[str, list[dict]] = {mode: [] for mode in loaders}
    for _ in range(args.passes):
        for mode, loader in loaders.items():
            t0 = time.perf_counter()
            first, n = None, 0
            for parts in loader:
                n += sum(len(b) for b in parts)
                first = first if first is not None else time.perf_counter() - t0
            assert n == len(samples)
            runs[mode].append({"seconds": round(time.perf_counter() - t0, 3), "first_batch_s": round(first, 3)})
    out: dict = {"workers": args.workers, "passes": args.passes, "batch_size": args.batch_size, "runs": runs}
    for mode, passes in runs.items():
        later = passes[1:] or passes
        out[mode] = {"total_s": round(sum(p["seconds"] for p in passes), 3),
                     "first_pass_s": passes[0]["seconds"],
                     "later_pass_s": round(C.median(p["seconds"] for p in later), 3),
                     "later_first_batch_s": round(C.median(p["first_batch_s"] for p in later), 3)}
    out["later_pass_speedup"] = round(out["non_persistent"]["later_pass_s"] / out["persistent"]["later_pass_s"], 2)
    out["total_speedup"] = round(out["non_persistent"]["total_s"] / out["persistent"]["total_s"], 2)
    return out


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, "buckets", images=200, quick_images=32)
    parser.add_argument("--sizes", default=None, help=f"image sizes HxW, comma-separated (default {DEFAULT_SIZES}; "
                                                      f"{QUICK_SIZES} with --quick)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the bucketed path (default 32)")
    parser.add_argument("--small-batch", type=int, default=4,
                        help="batch size of a second bucketed path (default 4; 0: none)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers (default 2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed passes per evaluation path, best kept (default 2; 1 with --quick)")
    parser.add_argument("--passes", type=int, default=None, help="passes per loader mode (default 5; 3 with --quick)")
    parser.add_argument("--amp", choices=["bf16", "fp16", "off"], default="bf16", help="autocast (CUDA only)")
    args = parser.parse_args()
    if args.profile is None:
        args.profile = "aigcbench"  # the protocol that evaluates full images; --quick keeps it (the point here)
    args = C.finish_args(args)
    args.detectors = ["npr"]
    sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    args.passes = args.passes or (3 if args.quick else 5)
    args.repeats = args.repeats or (1 if args.quick else 2)

    paths = mixed_image_set(args.images, sizes)  # before CUDA is initialised (the writer forks)
    device = C.pick_device(args.device)
    spec = C.load_specs(args.params, args.profile, ["npr"])["npr"]
    det, cfg = C.detector_config(spec)
    if cfg.eval_crop_size is not None:
        raise SystemExit(f"profile {args.profile}: NPR's eval_crop_size is {cfg.eval_crop_size}; this benchmark "
                         "measures full-image evaluation (eval_crop_size: null, the aigcbench profile)")
    amp = C.amp_for(device, args.amp)
    view = det.views(cfg, False, False)
    samples = C.samples_of(paths)
    model = C.build_random_model(det, cfg, device).eval()
    C.header(f"Variable-size evaluation (NPR, full image, {len(sizes)} sizes interleaved) and loader workers; "
             f"amp {amp}", args, device, paths)
    print(f"  sizes {', '.join(f'{h}x{w}' for h, w in sizes)}")

    warm = samples[: 2 * len(sizes)]  # kernels and allocator for every size, through every path
    for bs, bucket in ((1, False), (args.batch_size, True)):
        timed_inference(model, warm, view, spec, device, amp, bs, bucket, 0)
    paths_run = {"batch1": (1, False), "bucketed": (args.batch_size, True), "unbucketed": (args.batch_size, False)}
    if args.small_batch:
        paths_run["bucketed_small"] = (args.small_batch, True)
    inference, logits = {}, {}
    order = list(paths_run)
    rng = np.random.default_rng(0)
    for _ in range(args.repeats):
        rng.shuffle(order)
        for name in order:
            bs, bucket = paths_run[name]
            run, logits[name] = timed_inference(model, samples, view, spec, device, amp, bs, bucket, args.workers)
            if name not in inference or run["seconds"] < inference[name]["seconds"]:
                inference[name] = {**run, "batch_size": bs, "bucket_by_size": bucket}
    inference = {name: inference[name] for name in paths_run}
    ref = inference["batch1"]["images_per_s"]
    for name in list(paths_run)[1:]:
        inference[name]["vs_batch1"] = round(inference[name]["images_per_s"] / ref, 2)
        inference[name]["max_abs_logit_diff_vs_batch1"] = float(np.max(np.abs(logits[name] - logits["batch1"])))
    print(f"\n  evaluation, {len(samples)} images, {args.workers} workers (whole pass, start-up included; best of "
          f"{args.repeats})")
    for name, r in inference.items():
        extra = "" if name == "batch1" else (f"  x{r['vs_batch1']:.2f} vs batch 1; max |logit diff| "
                                             f"{r['max_abs_logit_diff_vs_batch1']:.1e}")
        print(f"    {name:<14} batch {r['batch_size']:>3}  {r['images_per_s']:8.1f} img/s  ({r['seconds']} s){extra}")

    workers = loader_passes(samples, view, spec, device, args)
    print(f"\n  loader only, {args.passes} passes over the same {len(samples)} images, {args.workers} workers, "
          f"batch {args.batch_size} (bucketed)")
    for mode in ("persistent", "non_persistent"):
        r = workers[mode]
        print(f"    {mode:<15} first pass {r['first_pass_s']:.3f} s, later passes {r['later_pass_s']:.3f} s "
              f"(first batch {r['later_first_batch_s']:.3f} s), total {r['total_s']:.3f} s")
    print(f"    persistent vs not: later passes x{workers['later_pass_speedup']:.2f}, "
          f"total x{workers['total_speedup']:.2f}")

    C.write_report(args.out, "buckets", args, device, {
        "reference": "batch1: run_inference at batch size 1 (the official AIGCBenchmark setting); workers: the "
                     "same loader with non-persistent workers; all in the same run",
        "profile": args.profile,
        "model_config": cfg.model_dump(mode="json"),
        "amp": amp,
        "sizes": [f"{h}x{w}" for h, w in sizes],
        "images": C.describe_images(paths),
        "torch_threads": torch.get_num_threads(),
        "inference": inference,
        "loader_workers": workers,
    })


if __name__ == "__main__":
    main()
