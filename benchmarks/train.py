"""Training speed: images/s of one optimisation step per detector, on pre-built batches and through the real loader.

    python benchmarks/train.py [--profile genimage|mini] [--detectors npr,sep,...] [--steps N] [--batch-size B]
                               [--workers W] [--loader-samples N] [--amp bf16|off] [--channels-last] [--images N]
                               [--size S] [--quick] [--device auto|cpu|cuda] [--out results/benchmarks/train.json]

Per detector, random-init weights (``WeightsSource.none()``), the profile's recipe (model config, train batch size,
optimiser from `sep_bench.engine.train.make_optimizer`, ``grad_clip``), the step of the engine's training loop:
autocast forward (``--amp``, CUDA only), ``model.loss``, ``zero_grad(set_to_none=True)``, backward, optional
gradient clipping, ``optimizer.step()``; the loss is read back every step (``float(loss)``) as the engine does.
- ``prebuilt`` (the reference): the step alone, ``--steps`` times after ``--warmup``, on one batch of training
  views built once and kept on the device: what the model and optimiser can do;
- ``loader``: the same step fed by the engine's training loader (`ViewDataset` with the training view, the
  epoch's shuffled order through `OrderSampler`, `make_loader` with ``--workers``) over ``--loader-samples``
  images (the ``--images`` files cycled). Its rate is steady-state, the slope of images against time over the
  batches after the first quarter: W workers deliver their batches in bursts, and with W x 4 batches prefetched a
  short window would time batches prepared before it. The whole-pass rate (worker start-up included, as at every
  epoch) is beside it.
  ``loader / prebuilt`` near 1 means the data pipeline keeps up with the accelerator;
- ``features`` (frozen-backbone detectors only, e.g. UnivFD): the head step on cached backbone features
  (what ``train.feature_cache: true`` trains).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def make_step(model, optimizer, device, amp: str, grad_clip: float | None):
    import torch

    from sep_bench.engine.runtime import autocast

    params = model.trainable_parameters()

    def step(views: dict, labels) -> float:
        with autocast(device, amp):
            logits = model(views)
        loss = model.loss(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        return float(loss.detach())  # the engine reads the loss back every step (a device sync)

    return step


def repeated_steps(step, views, labels, device, warmup: int, steps: int) -> dict:
    for _ in range(warmup):
        step(views, labels)
    C.sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(views, labels)
    C.sync(device)
    return {"seconds": time.perf_counter() - t0, "images": steps * int(labels.shape[0]), "steps": steps}


def bench_detector(name: str, spec, paths, args, device) -> dict:
    import torch

    from sep_bench.data.dataset import OrderSampler, ViewDataset, epoch_order
    from sep_bench.engine.runtime import make_loader
    from sep_bench.engine.train import make_optimizer

    det, cfg = C.detector_config(spec)
    recipe = spec.recipe
    amp = C.amp_for(device, args.amp)
    cl = bool(args.channels_last and device.type == "cuda")
    bs = args.batch_size or recipe.train.batch_size
    workers = spec.profile.loader.train_workers if args.workers is None else args.workers
    max_pixels = spec.profile.data.max_image_pixels
    view = det.views(cfg, True, recipe.train.hflip)

    model = C.build_random_model(det, cfg, device, channels_last=cl, seed=spec.seed)
    model.train()
    optimizer = make_optimizer(model.trainable_parameters(), recipe.optim)
    step = make_step(model, optimizer, device, amp, recipe.train.grad_clip)
    labels = (torch.arange(bs) % 2).to(device)
    out: dict = {"model_config": cfg.model_dump(mode="json"), "batch_size": bs, "workers": workers, "amp": amp,
                 "channels_last": cl, "optimizer": recipe.optim.name, "hflip": recipe.train.hflip}

    # reference: one batch of training views, built once, on the device
    views = C.to_device(C.prebuilt_views(paths, view, bs, spec.seed, max_pixels), device, cl)
    pre = repeated_steps(step, views, labels, device, args.warmup, args.steps)

    # the real loader: the epoch's shuffled order, files cycled to enough samples for several waves of workers
    n = args.loader_samples or max(8192, 8 * max(1, workers) * bs)
    if args.quick and not args.loader_samples:
        n = bs * (4 + 2 * max(1, workers))
    n = max(bs, n - n % bs)  # whole batches only: every step has the same shape
    samples = C.samples_of(paths, n)
    dataset = ViewDataset(samples, view, seed=spec.seed, max_pixels=max_pixels, epoch=0)
    sampler = OrderSampler(epoch_order(len(samples), spec.seed, 0, shuffle=True))
    marks: list[tuple[float, int]] = []
    done = 0
    C.sync(device)
    t0 = time.perf_counter()
    for batch in make_loader(dataset, bs, workers, device, sampler):
        if batch.skipped:
            raise RuntimeError(f"{len(batch.skipped)} images skipped: {batch.skipped[:1]}")
        step(C.to_device(batch.views, device, cl), batch.labels.to(device, non_blocking=True))
        done += len(batch)
        marks.append((time.perf_counter() - t0, done))
    C.sync(device)
    total = time.perf_counter() - t0
    loader = {"seconds": total, "images": done, "steps": len(marks), "first_batch_s": round(marks[0][0], 3),
              "marks": [(round(t, 4), k) for t, k in marks[:: max(1, len(marks) // 24)] + marks[-1:]]}

    out["prebuilt"] = pre
    out["loader"] = loader
    out["prebuilt_images_per_s"] = C.rate(pre["images"], pre["seconds"])
    out["loader_images_per_s"] = C.steady_rate(marks) or C.rate(done, total)
    out["loader_whole_pass_images_per_s"] = C.rate(done, total)
    out["loader_vs_prebuilt"] = round(out["loader_images_per_s"] / out["prebuilt_images_per_s"], 3)

    if getattr(model, "frozen_features", False):
        with torch.no_grad():
            feats = model.forward_features(views).float()
        f = repeated_steps(step, {"features": feats}, labels, device, args.warmup, args.steps)
        out["features"] = f
        out["features_images_per_s"] = C.rate(f["images"], f["seconds"])

    del model, optimizer, views
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, "train", images=512, quick_images=16)
    parser.add_argument("--steps", type=int, default=None, help="timed pre-built steps (default 20; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed pre-built steps first (default 3; 1 with --quick)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's (8 with --quick)")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader workers (default: the profile's loader.train_workers)")
    parser.add_argument("--loader-samples", type=int, default=None,
                        help="images through the loader pass (default max(8192, 8 x workers x batch); "
                             "small with --quick)")
    parser.add_argument("--amp", choices=["bf16", "fp16", "off"], default="bf16", help="autocast (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model and inputs (CUDA only)")
    args = C.finish_args(parser.parse_args())
    args.steps = args.steps or (2 if args.quick else 20)
    args.warmup = args.warmup or (1 if args.quick else 3)
    if args.quick and args.batch_size is None:
        args.batch_size = 8

    paths = C.image_set(args)  # before CUDA is initialised (the writer forks)
    device = C.pick_device(args.device)
    specs = C.load_specs(args.params, args.profile, args.detectors)
    C.header(f"Training step; amp {C.amp_for(device, args.amp)}, channels_last "
             f"{bool(args.channels_last and device.type == 'cuda')}; pre-built: {args.steps} steps after "
             f"{args.warmup} warm-up", args, device, paths)

    results = {}
    print(f"\n  {'detector':10s} {'batch':>5s} {'workers':>7s} {'prebuilt':>10s} {'loader':>10s} {'ratio':>6s} "
          f"{'whole':>8s} {'samples':>8s} {'features':>10s}   (images/s)")
    for name, spec in specs.items():
        results[name] = r = bench_detector(name, spec, paths, args, device)
        feats = f"{r['features_images_per_s']:10.1f}" if "features_images_per_s" in r else f"{'-':>10s}"
        print(f"  {name:10s} {r['batch_size']:5d} {r['workers']:7d} {r['prebuilt_images_per_s']:10.1f} "
              f"{r['loader_images_per_s']:10.1f} {r['loader_vs_prebuilt']:6.2f} "
              f"{r['loader_whole_pass_images_per_s']:8.1f} "
              f"{r['loader']['images']:8d} {feats}")
    print("\n  loader: steady rate (slope after the first quarter of the pass); "
          "whole: the whole pass, start-up included")

    C.write_report(args.out, "train", args, device, {
        "reference": "prebuilt: the same optimisation step on one batch already on the device, same run",
        "profile": args.profile,
        "images": C.describe_images(paths),
        "results": results,
    })


if __name__ == "__main__":
    main()
