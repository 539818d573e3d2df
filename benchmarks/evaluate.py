"""Evaluation speed: the engine's evaluation path against the pure forward and the official evaluation loops.

    python benchmarks/evaluate.py [--profile genimage|mini] [--detectors npr,sep,...] [--images N] [--size S]
                                  [--workers W] [--amp bf16|off] [--channels-last] [--quick] [--device auto|cpu|cuda]
                                  [--out results/benchmarks/evaluate.json]

Per detector, with random-init weights (``WeightsSource.none()``), the profile's recipe (model config, eval batch
size) and the same image files, all in one run:
- ``ours``: `sep_bench.engine.inference.run_inference`, exactly what ``sep-bench evaluate`` runs (ViewDataset:
  decode + eval view per image; the engine's DataLoader with ``--workers``; autocast ``--amp``) over ``--samples``
  images (the ``--images`` files cycled; they sit in the page cache, as a warm dataset does);
- ``forward``: the model alone on one pre-built batch of the same size already on the device (the upper bound;
  goal: ``ours`` within 10% of it; on GPU only, on CPU the forward dominates and the ratio says little);
- ``loader``: the engine's loader alone (decode + views + collate + pinning, no model): the data-side ceiling;
- ``official``: a re-implementation of the official evaluation loop's *structure*, written here, over the
  ``--images`` files (cycled to 8 x its workers x its batch size when that is more, at most ``--samples``):
  the official batch size and worker count, per-image PIL decoding and torchvision transforms in the Dataset,
  default collate, a blocking ``.to(device)``, ``model(x).sigmoid().flatten().tolist()`` per
  batch, fp32 (``--reference-amp``). For SEP and SSP the candidate patches are chosen by the official per-patch
  Python loop (torchvision ``RandomCrop(32)`` per candidate, the four-direction score on
  ``np.array(patch).astype(np.int64)``, a sort). Goal: ``ours`` >= 3x ``official``.
Rates (images/s) are steady-state: the slope of images done against time over the batches after the first quarter
of the images, so worker start-up is left out, as it is in a real evaluation of tens of thousands of images, and
the bursts in which W workers deliver their batches even out; whole-run rates and first-batch latency are
reported beside them.

Official settings (read from the public repositories):
- SEP ``inference.py``: batch 32, ``num_workers = min(cpu_count, batch, 4)``, ``pin_memory=True``; ``MyValDataSet``:
  ``CenterCrop(256)`` + ``ToTensor`` for img_dwt, ``select_patch_val`` (256 candidates) + ``ToTensor`` +
  ``Normalize`` for the patch.
- NPR ``validate.py`` / ``options``: batch 64, ``num_threads`` 8 workers; ImageFolder + ``CenterCrop`` (GenImage),
  ``ToTensor``, ``Normalize`` (ImageNet).
- UnivFD ``validate.py``: batch 128, 4 workers; ``CenterCrop(224)``, ``ToTensor``, ``Normalize`` (CLIP).
- CNNSpot (CNNDetection ``options``): batch 64, ``num_threads`` 4 workers; crop as NPR.
- SSP ``utils/tdataloader.py``: batch 64 (``val_batchsize``), 4 workers, ``pin_memory=True``; ``patch_img``
  (64 candidates), ``ToTensor``, ``Normalize``.
The model, its input sizes and the image files are the same as for ``ours``; worker counts are capped at the
machine's cores.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

GOAL_FORWARD_OVERHEAD = 0.10
GOAL_VS_OFFICIAL = 3.0

# detector -> (batch size, workers, pin_memory, candidate-patch loop) of the official evaluation script
OFFICIAL = {
    "sep": {"batch_size": 32, "workers": 4, "pin_memory": True, "source": "SEP inference.py + data/dataset.py"},
    "npr": {"batch_size": 64, "workers": 8, "pin_memory": False, "source": "NPR validate.py + options (num_threads 8)"},
    "univfd": {"batch_size": 128, "workers": 4, "pin_memory": False, "source": "UnivFD validate.py"},
    "cnnspot": {"batch_size": 64, "workers": 4, "pin_memory": False, "source": "CNNDetection validate.py + options"},
    "ssp": {"batch_size": 64, "workers": 4, "pin_memory": True, "source": "SSP utils/tdataloader.py (val loader)"},
}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


# ---- the official loops' structure (re-implemented here) -------------------------------------------------------


def _texture(patch) -> int:
    """The official score of a PIL patch: 4-direction absolute differences, int64."""
    p = np.array(patch).astype(np.int64)
    res = np.sum(np.abs(p[:, :-1, :] - p[:, 1:, :])) + np.sum(np.abs(p[:-1, :, :] - p[1:, :, :]))
    res += np.sum(np.abs(p[:-1, :-1, :] - p[1:, 1:, :])) + np.sum(np.abs(p[1:, :-1, :] - p[:-1, 1:, :]))
    return int(res)


def _official_patch(img, patch_size: int, n_candidates: int, small: int):
    """``select_patch_val`` / ``patch_img``: n random PIL crops, sorted by score, the first one."""
    from torchvision import transforms

    if min(img.size) < patch_size:
        img = transforms.Resize((small, small))(img)
    crop = transforms.RandomCrop(patch_size)
    patches = [crop(img) for _ in range(n_candidates)]
    patches.sort(key=_texture)
    return patches[0]


class OfficialDataset:
    """Per-image PIL decoding and torchvision transforms, as the official Dataset classes do."""

    def __init__(self, name: str, cfg, paths, labels) -> None:
        from torchvision import transforms as T

        self.name, self.cfg, self.paths, self.labels = name, cfg, [str(p) for p in paths], labels
        norm = T.Normalize(*IMAGENET)
        if name == "sep":
            self.dwt = T.Compose([T.CenterCrop([cfg.dwt_size, cfg.dwt_size]), T.ToTensor()])
            self.patch_tf = T.Compose([T.ToTensor(), norm])
        elif name == "ssp":
            self.patch_tf = T.Compose([T.ToTensor(), norm])
        else:
            mean_std = CLIP if name == "univfd" else IMAGENET
            steps = [T.Resize(cfg.eval_resize)] if getattr(cfg, "eval_resize", None) else []
            crop = getattr(cfg, "eval_crop_size", cfg.crop_size)  # NPR: null = the full image (AIGCBenchmark)
            steps += [T.CenterCrop(crop)] if crop else []
            self.tf = T.Compose([*steps, T.ToTensor(), T.Normalize(*mean_std)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        label = self.labels[i]
        if self.name == "sep":  # MyValDataSet.__getitem__
            img = Image.open(self.paths[i])
            if img.mode != "RGB":
                img = img.convert("RGB")
            dwt = self.dwt(img)
            patch = _official_patch(img, self.cfg.patch_size, self.cfg.eval_candidates, 256)
            return {"patch": self.patch_tf(patch), "img_dwt": dwt}, label
        img = Image.open(self.paths[i]).convert("RGB")
        if self.name == "ssp":  # genImageValDataset: rgb_loader + processing(patch_img)
            patch = _official_patch(img, self.cfg.patch_size, self.cfg.n_candidates_eval, self.cfg.input_size)
            return {"patch": self.patch_tf(patch)}, label
        return {"image": self.tf(img)}, label  # ImageFolder / RealFakeDataset


def official_loop(name: str, model, cfg, paths, labels, device, amp: str, max_samples: int) -> dict:
    """The official evaluation loop's structure over the files, cycled to 8 waves of its workers; returns timings."""
    import torch
    from torch.utils.data import DataLoader

    from sep_bench.engine.runtime import autocast

    o = OFFICIAL.get(name)
    if o is None:
        return {"skipped": f"no official loop known for {name!r}"}
    bs = min(o["batch_size"], len(paths))
    workers = min(o["workers"], os.cpu_count() or 1, bs if name == "sep" else o["workers"])
    n = min(max(len(paths), 8 * max(1, workers) * bs), max(max_samples, len(paths)))
    paths = [paths[i % len(paths)] for i in range(n)]
    labels = [labels[i % len(labels)] for i in range(n)]
    loader = DataLoader(OfficialDataset(name, cfg, paths, labels), batch_size=bs, shuffle=False,
                        num_workers=workers, pin_memory=o["pin_memory"] and device.type == "cuda")
    y_pred: list[float] = []
    marks: list[tuple[float, int]] = []
    C.sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for views, _label in loader:
            views = {k: v.to(device) for k, v in views.items()}
            with autocast(device, amp):
                y_pred.extend(model(views).float().sigmoid().flatten().tolist())
            marks.append((time.perf_counter() - t0, len(y_pred)))
    total = time.perf_counter() - t0
    assert len(y_pred) == len(paths)
    return {"seconds": total, "images": len(paths), "marks": marks, "batch_size": bs, "workers": workers,
            "pin_memory": o["pin_memory"] and device.type == "cuda", "amp": amp, "source": o["source"]}


# ---- ours ----------------------------------------------------------------------------------------------------------


def engine_pass(
    model, samples, view, spec, device, amp: str, workers: int, batch_size: int, channels_last: bool
) -> dict:
    from sep_bench.engine.inference import run_inference

    kwargs = dict(seed=spec.seed, batch_size=batch_size, num_workers=workers, device=device, amp=amp,
                  max_pixels=spec.profile.data.max_image_pixels)
    if "channels_last" in inspect.signature(run_inference).parameters:  # newer engines take it themselves
        kwargs["channels_last"] = channels_last
    marks: list[tuple[float, int]] = []
    done = [0]

    def on_batch(n: int) -> None:
        done[0] += n
        marks.append((time.perf_counter() - t0, done[0]))

    C.sync(device)
    t0 = time.perf_counter()
    res = run_inference(model, samples, view, on_batch=on_batch, **kwargs)
    C.sync(device)
    total = time.perf_counter() - t0
    if res.skipped or not np.isfinite(res.logits).all():
        raise RuntimeError(f"run_inference skipped {len(res.skipped)} images: {res.skipped[:2]}")
    return {"seconds": total, "images": len(samples), "marks": marks}


def loader_pass(samples, view, spec, device, workers: int, batch_size: int) -> dict:
    from sep_bench.data.dataset import ViewDataset
    from sep_bench.engine.runtime import make_loader

    ds = ViewDataset(samples, view, seed=spec.seed, max_pixels=spec.profile.data.max_image_pixels, epoch=0)
    marks: list[tuple[float, int]] = []
    n = 0
    t0 = time.perf_counter()
    for batch in make_loader(ds, batch_size, workers, device):
        n += len(batch)
        marks.append((time.perf_counter() - t0, n))
    return {"seconds": time.perf_counter() - t0, "images": n, "marks": marks}


def forward_pass(model, views, device, amp: str, iters: int, warmup: int) -> dict:
    import torch

    from sep_bench.engine.runtime import autocast

    with torch.no_grad():
        for _ in range(warmup):
            with autocast(device, amp):
                model(views)
        C.sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            with autocast(device, amp):
                out = model(views)
        C.sync(device)
    total = time.perf_counter() - t0
    assert out.shape[0] == next(iter(views.values())).shape[0]
    return {"seconds": total, "iters": iters}


def bench_detector(name: str, spec, paths, args, device) -> dict:
    import torch

    det, cfg = C.detector_config(spec)
    amp = C.amp_for(device, args.amp)
    ref_amp = C.amp_for(device, args.reference_amp)
    bs = min(args.batch_size or spec.recipe.eval.batch_size, len(paths))
    workers = spec.profile.loader.eval_workers if args.workers is None else args.workers
    view = det.views(cfg, False, False)
    samples = C.samples_of(paths, args.samples)  # files cycled to --samples (page cache: decoding as from disk)
    labels = [0 if p.parent.name == "nature" else 1 for p in paths]

    base = C.build_random_model(det, cfg, torch.device("cpu")).eval()
    ref_model = copy.deepcopy(base).to(device).eval()
    model = base.to(device)
    if args.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    in_cl = args.channels_last and "channels_last" in inspect.signature(
        __import__("sep_bench.engine.inference", fromlist=["run_inference"]).run_inference).parameters
    views = C.to_device(C.prebuilt_views(paths, view, bs, spec.seed, spec.profile.data.max_image_pixels), device, in_cl)

    # warm-up: kernels, cuDNN heuristics, allocator, worker code paths (one batch through each path)
    forward_pass(model, views, device, amp, iters=1, warmup=args.warmup)
    engine_pass(model, samples[:bs], view, spec, device, amp, 0, bs, args.channels_last)
    with torch.no_grad():
        ref_model({k: v.contiguous() for k, v in views.items()})

    runs: dict[str, list[dict]] = {"forward": [], "ours": [], "loader": [], "official": []}
    for _ in range(args.repeats):  # interleaved, best of R
        runs["forward"].append(forward_pass(model, views, device, amp, args.iters, warmup=1))
        runs["ours"].append(engine_pass(model, samples, view, spec, device, amp, workers, bs, args.channels_last))
        if not args.no_loader:
            runs["loader"].append(loader_pass(samples, view, spec, device, workers, bs))
        if not args.no_official:
            runs["official"].append(official_loop(name, ref_model, cfg, paths, labels, device, ref_amp, args.samples))

    def per_image(r: dict) -> float:
        return r.get("seconds", float("inf")) / max(1, r.get("images", 1))

    best = {k: min(v, key=per_image) for k, v in runs.items() if v}
    for key, v in runs.items():  # keep the JSON small: batch marks of the best run only, thinned
        for r in v:
            marks = r.pop("marks", None)
            if marks and r is best.get(key):
                r["marks"] = [(round(t, 4), n) for t, n in marks[:: max(1, len(marks) // 24)] + marks[-1:]]
                r["steady_images_per_s"] = C.steady_rate(marks)
                r["first_batch_s"] = round(marks[0][0], 3)

    def whole(r: dict) -> float:
        return C.rate(r["images"], r["seconds"])

    out: dict = {
        "model_config": cfg.model_dump(mode="json"),
        "batch_size": bs,
        "workers": workers,
        "samples": len(samples),
        "files": len(paths),
        "amp": amp,
        "channels_last": bool(args.channels_last and device.type == "cuda"),
        "forward_images_per_s": C.rate(bs * best["forward"]["iters"], best["forward"]["seconds"]),
        "ours_images_per_s": best["ours"]["steady_images_per_s"] or whole(best["ours"]),
        "ours_whole_run_images_per_s": whole(best["ours"]),
        "ours_first_batch_s": best["ours"]["first_batch_s"],
    }
    if "loader" in best:
        out["loader_images_per_s"] = best["loader"]["steady_images_per_s"] or whole(best["loader"])
        out["loader_whole_run_images_per_s"] = whole(best["loader"])
    out["ours_vs_forward"] = round(out["ours_images_per_s"] / out["forward_images_per_s"], 3)
    out["forward_overhead"] = round(1.0 - out["ours_vs_forward"], 3)
    out["goal_forward_met"] = out["forward_overhead"] <= GOAL_FORWARD_OVERHEAD if device.type == "cuda" else None
    off = best.get("official")
    if off and "seconds" in off:
        out["official_images_per_s"] = off["steady_images_per_s"] or whole(off)
        out["official_whole_run_images_per_s"] = whole(off)
        out["official_settings"] = {k: off[k] for k in ("batch_size", "workers", "pin_memory", "amp", "source")}
        out["speedup_vs_official"] = round(out["ours_images_per_s"] / out["official_images_per_s"], 2)
        out["goal_official_met"] = out["speedup_vs_official"] >= GOAL_VS_OFFICIAL
    out["runs"] = runs
    del model, ref_model, base, views
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(parser, "evaluate", images=1024, quick_images=16)
    parser.add_argument("--workers", type=int, default=None,
                        help="loader workers of ours (default: the profile's loader.eval_workers)")
    parser.add_argument("--batch-size", type=int, default=None, help="eval batch size of ours (default: the profile's)")
    parser.add_argument("--amp", choices=["bf16", "fp16", "off"], default="bf16", help="autocast of ours (CUDA only)")
    parser.add_argument("--reference-amp", choices=["bf16", "fp16", "off"], default="off",
                        help="autocast of the official loop (default off: the official scripts run fp32)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model (CUDA only)")
    parser.add_argument("--samples", type=int, default=None,
                        help="images evaluated by ours and the loader pass, the files cycled (default 8192; --images "
                             "with --quick); the official loop reads each file once")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes per path, best kept (default 1)")
    parser.add_argument("--iters", type=int, default=None, help="timed forward calls (default 20; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up forward calls (default 3; 1 with --quick)")
    parser.add_argument("--no-official", action="store_true", help="skip the official-loop reference")
    parser.add_argument("--no-loader", action="store_true", help="skip the loader-only pass")
    args = C.finish_args(parser.parse_args())
    args.repeats = args.repeats or 1
    args.samples = args.samples or (args.images if args.quick else 8192)
    args.iters = args.iters or (2 if args.quick else 20)
    args.warmup = args.warmup or (1 if args.quick else 3)

    paths = C.image_set(args)  # before CUDA is initialised (the writer forks)
    device = C.pick_device(args.device)
    specs = C.load_specs(args.params, args.profile, args.detectors)
    C.header(f"Evaluation path, {args.repeats} repeat(s), best kept; ours: amp {C.amp_for(device, args.amp)}, "
             f"channels_last {bool(args.channels_last and device.type == 'cuda')}", args, device, paths)

    results = {}
    for name, spec in specs.items():
        t0 = time.perf_counter()
        results[name] = r = bench_detector(name, spec, paths, args, device)
        print(f"\n  {name}: batch {r['batch_size']}, workers {r['workers']}, {r['samples']} samples from "
              f"{r['files']} files ({time.perf_counter() - t0:.0f} s)")
        print(f"    forward (pre-built batch)  {r['forward_images_per_s']:9.1f} img/s")
        print(f"    ours (run_inference)       {r['ours_images_per_s']:9.1f} img/s   "
              f"(whole run {r['ours_whole_run_images_per_s']}, "
              f"first batch {r['ours_first_batch_s']} s)  = {r['ours_vs_forward']:.0%} of forward, overhead "
              f"{r['forward_overhead']:+.0%} (goal <= {GOAL_FORWARD_OVERHEAD:.0%} on GPU"
              f"{': ' + ('met' if r['goal_forward_met'] else 'missed') if r['goal_forward_met'] is not None else ''})")
        if "loader_images_per_s" in r:
            print(f"    loader only (no model)     {r['loader_images_per_s']:9.1f} img/s   "
                  f"(whole run {r['loader_whole_run_images_per_s']})")
        if "official_images_per_s" in r:
            s = r["official_settings"]
            print(f"    official loop              {r['official_images_per_s']:9.1f} img/s   (whole run "
                  f"{r['official_whole_run_images_per_s']}; batch {s['batch_size']}, {s['workers']} workers, "
                  f"amp {s['amp']})")
            print(f"    speed-up vs official       x{r['speedup_vs_official']:.2f}  (goal >= x{GOAL_VS_OFFICIAL:.0f}: "
                  f"{'met' if r['goal_official_met'] else 'missed'})")
    print("\n  img/s: steady rate, the slope over the batches after the first quarter (worker start-up excluded)")

    C.write_report(args.out, "evaluate", args, device, {
        "reference": "forward: model on a pre-built device batch (upper bound); official: the official evaluation "
                     "loop's structure re-implemented here (same model, files, sizes); all in the same run",
        "profile": args.profile,
        "images": C.describe_images(paths),
        "goals": {"forward_overhead_max": GOAL_FORWARD_OVERHEAD, "speedup_vs_official_min": GOAL_VS_OFFICIAL},
        "results": results,
    })


if __name__ == "__main__":
    main()
