"""GPU acceptance: a smoke of every full recipe of a profile on one GPU, and the predicted cost of the whole table.

    python benchmarks/gpu_acceptance.py [--detectors sep,npr,...] [--budget-s 540] [--train-steps 8]
                                        [--eval-batches 4] [--predict] [--device auto|cpu|cuda]
                                        [--out results/benchmarks/gpu_acceptance.json]

Every detector runs its FULL recipe of ``--profile`` (default genimage: full-size models, the recipe's batch
sizes and views) with random weights (the profile switch ``pretrained: false``: no download; DIRE's and DRCT's
diffusion models random at full size too).

**Measured** (CUDA): per detector, the engine's training step (autocast ``profile.amp``, channels-last, the
recipe's optimiser) fed by the engine's training loader with the profile's ``loader.train_workers``
(``--train-steps`` steps after one warm-up step), then ``run_inference`` (what ``sep-bench evaluate`` runs) over
``--eval-batches`` batches with ``loader.eval_workers``: training and evaluation images/s and the peak GPU memory of
each. DIRE and DRCT also time their reconstruction stage (`sep_bench.recon.stage.run_reconstruction`) on one
batch of images.

**Predicted** (no CUDA, or ``--predict``): FLOPs instead of seconds. Per detector,
``torch.utils.flop_counter.FlopCounterMode`` counts one training step (forward + backward, batch 2, divided by 2)
and one evaluation forward on the views of one full-size image, on the meta device (shapes only: no memory, no
arithmetic); the diffusion reconstructors count one UNet forward (times the UNet evaluations per image) plus the
VAE. Images/s = ``ASSUMED_SUSTAINED_FLOPS`` / FLOPs per image, capped by the data loader: the training and
evaluation views of a few images, single-threaded on this CPU, times the profile's loader workers. Marked
``"measured": false`` throughout.

**Cost of the table** (both modes), per detector, with the arithmetic written out in the JSON::

    GPU-hours = (epochs x train_images / train_rate + epochs x val_images / eval_rate
                 + (test_images + variant_images x (eval_passes - 1)) / eval_rate
                 + recon_images x recon_seconds_per_image) / 3600

Image counts come from ``profiles.<profile>.full_size`` in params.yaml (training generators' counts less the
validation fraction, the test generators' counts), the epochs from each recipe; ``eval_passes`` is the clean pass
plus one per perturbation and protocol axis (an upper bound: the engine evaluates an alignment equal to a listed
perturbation once), the extra passes over ``eval.variant_subset`` images per generator and class when set. The
goal: all detectors within one GPU-day (``--goal-gpu-hours``, default 24).

Robust for a lent GPU: one detector failing is recorded (its error string) and the others continue; a detector not
started within ``--budget-s`` seconds is recorded as skipped; the JSON is rewritten after every detector.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

#: H100 SXM dense BF16 tensor-core peak (NVIDIA H100 datasheet: 989.4 TFLOPS without sparsity) times an assumed
#: sustained fraction (model FLOPs utilisation) for these vision models: 35%, an assumption, not a measurement
#: (stated in the JSON; a GPU run replaces the whole prediction).
H100_BF16_PEAK_FLOPS = 989.4e12
ASSUMED_FRACTION_OF_PEAK = 0.35
ASSUMED_SUSTAINED_FLOPS = H100_BF16_PEAK_FLOPS * ASSUMED_FRACTION_OF_PEAK
GOAL_GPU_HOURS = 24.0
LOADER_PROBE_IMAGES = 12


# ---- data sizes and the cost arithmetic (pure; tested with a fake spec) ------------------------------------------


def data_sizes(spec) -> dict:
    """Training, validation and test image counts of the full data set under `spec`'s profile (params.yaml)."""
    full = spec.profile.full_size
    if full is None:
        raise ValueError(f"profiles.{spec.profile_name}.full_size is not set in params.yaml: no data sizes to "
                         "predict the cost from")
    data = spec.profile.data
    missing = [g for g in data.train_generators if g not in full.train] + [
        g for g in data.test_generators if g not in full.test]
    if missing:
        raise ValueError(f"profiles.{spec.profile_name}.full_size has no count for {missing}")
    pool = sum(full.train[g] for g in data.train_generators)
    fraction = data.val.fraction if data.val.groups is None else 0.0
    val = round(pool * fraction)
    train = pool - val
    if data.max_train_images is not None:
        train = min(train, data.max_train_images)
    per_gen = {g: full.test[g] for g in data.test_generators}
    if data.max_test_images_per_generator is not None:
        per_gen = {g: min(n, data.max_test_images_per_generator) for g, n in per_gen.items()}
    test = sum(per_gen.values())
    ev = spec.recipe.eval  # the extra evaluations: variant_subset images per generator and class, of the first
    variant_gens = list(per_gen)[:ev.variant_generators]  # variant_generators generators (None: all)
    variant = sum(per_gen[g] if ev.variant_subset is None else min(per_gen[g], ev.variant_subset * 2)
                  for g in variant_gens)
    return {"train_images": train, "val_images": val, "test_images": test, "variant_images": variant,
            "source": f"profiles.{spec.profile_name}.full_size ({full.source.strip()})"}


def eval_passes(spec) -> int:
    """Forward passes per test image of the evaluation stage: clean, each perturbation, each protocol axis."""
    ev = spec.recipe.eval
    axes = (0 if ev.align in ("none", None) else 1) + len(ev.preprocess)
    return 1 + len(ev.perturbations) + axes


def recon_images(recon, sizes: dict) -> int:
    """Images the reconstruction stage computes: every split for DIRE (use: replace), the training images for
    DRCT (use: augment); 0 without a reconstructor."""
    if recon is None:
        return 0
    if recon.use == "replace":
        return sizes["train_images"] + sizes["val_images"] + sizes["test_images"]
    return sizes["train_images"]


def table_cost(sizes: dict, epochs: int, passes: int, train_rate: float, eval_rate: float,
               recon_count: int = 0, recon_s_per_image: float = 0.0) -> dict:
    """GPU-hours of one detector's full run (training with per-epoch validation, evaluation, reconstruction)."""
    train_s = epochs * sizes["train_images"] / train_rate
    val_s = epochs * sizes["val_images"] / eval_rate
    test_s = (sizes["test_images"] + sizes["variant_images"] * (passes - 1)) / eval_rate
    recon_s = recon_count * recon_s_per_image
    hours = (train_s + val_s + test_s + recon_s) / 3600
    arithmetic = (f"({epochs} x {sizes['train_images']} / {train_rate:.4g} + {epochs} x {sizes['val_images']} / "
                  f"{eval_rate:.4g} + ({sizes['test_images']} + {sizes['variant_images']} x {passes - 1}) / "
                  f"{eval_rate:.4g} + {recon_count} x {recon_s_per_image:.4g}) / 3600 = {hours:.4g} GPU-hours")
    return {"gpu_hours": round(hours, 4), "arithmetic": arithmetic,
            "seconds": {"train": round(train_s, 1), "validation": round(val_s, 1), "evaluation": round(test_s, 1),
                        "reconstruction": round(recon_s, 1)}}


def summarise(results: dict, goal_hours: float) -> dict:
    """Total GPU-hours over the detectors with a cost, against the goal; failed and skipped ones named."""
    costed = {n: r["cost"]["gpu_hours"] for n, r in results.items() if "cost" in r}
    total = sum(costed.values())
    return {
        "gpu_hours_total": round(total, 2),
        "goal_gpu_hours": goal_hours,
        "within_goal": bool(costed) and total <= goal_hours and len(costed) == len(results),
        "detectors_costed": len(costed),
        "detectors_failed": sorted(n for n, r in results.items() if "error" in r),
        "detectors_skipped": sorted(n for n, r in results.items() if "skipped" in r),
        "largest": sorted(costed, key=costed.get, reverse=True)[:5],
        "arithmetic": " + ".join(f"{costed[n]:.3g} ({n})" for n in costed) + f" = {total:.4g} GPU-hours",
    }


def train_plan(spec, recon, sizes: dict) -> tuple[dict, int]:
    """(sizes as trained, epochs of full-rate training): DRCT (use: augment) trains on its images plus their
    reconstructions; a detector with ``train.feature_cache`` pays one feature pass (its head's epochs on cached
    features are negligible)."""
    sizes = dict(sizes)
    if recon is not None and recon.use == "augment":
        sizes["train_images"] += recon_images(recon, sizes)
    return sizes, 1 if spec.recipe.train.feature_cache else spec.recipe.train.epochs


# ---- shared: specs, models, batches ------------------------------------------------------------------------------


def load_offline_specs(params_path: Path, profile: str, detectors: list[str]) -> dict:
    """detector -> RunSpec of `profile` under the profile switch ``pretrained: false`` (random init everywhere)."""
    from sep_bench.protocol import load_params, resolve

    params = load_params(params_path, {f"profiles.{profile}.pretrained": False})
    unknown = [d for d in detectors if d not in params.detectors]
    if unknown:
        raise SystemExit(f"--detectors: {unknown} have no block in {params_path}; "
                         f"defined: {', '.join(params.detectors)}")
    return {d: resolve(params, d, profile) for d in detectors}


def build_on(det, cfg, device, seed: int):
    """The detector with random weights, its parameters created directly on `device` (meta: shapes only)."""
    import torch

    from sep_bench.weights import WeightsSource

    torch.manual_seed(seed)
    with torch.device(device):
        return det.build(cfg, WeightsSource.none())


def train_step_fn(model, optimizer, device, amp: str, grad_clip: float | None):
    """The engine's step: autocast `train_forward`, `train_loss`, zero_grad, backward, clip, step; loss read back."""
    import torch

    from sep_bench.engine.runtime import autocast

    params = model.trainable_parameters()

    def step(views: dict, labels) -> float:
        with autocast(device, amp):
            outputs = model.train_forward(views)
        loss = model.train_loss(outputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        return float(loss.detach())

    return step


def recon_config_of(det, cfg):
    from sep_bench.recon.samples import recon_config

    return recon_config(cfg)


# ---- measured (CUDA) ---------------------------------------------------------------------------------------------


def _rate_after_first(marks: list[tuple[float, int]]) -> float:
    """Images/s over the batches after the first (worker start-up, cuDNN autotuning and allocation excluded)."""
    if len(marks) < 2:
        raise RuntimeError("need at least two batches to time")
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return round((n1 - n0) / (t1 - t0), 2)


def measure_train(model, spec, det, cfg, paths, device, steps: int) -> dict:
    """Training images/s through the engine's loader (the profile's train workers) and the peak GPU memory."""
    import torch

    from sep_bench.data.dataset import OrderSampler, ViewDataset, epoch_order
    from sep_bench.engine.efficiency import peak_memory_mib, reset_peak_memory
    from sep_bench.engine.runtime import make_loader
    from sep_bench.engine.train import make_optimizer

    recipe, prof = spec.recipe, spec.profile
    bs, workers = recipe.train.batch_size, prof.loader.train_workers
    cl = prof.channels_last and device.type == "cuda"
    model.train()
    step = train_step_fn(model, make_optimizer(model.trainable_parameters(), recipe.optim), device, prof.amp,
                         recipe.train.grad_clip)
    samples = C.samples_of(paths, bs * (steps + 1))
    dataset = ViewDataset(samples, det.views(cfg, True, recipe.train.hflip), seed=spec.seed,
                          max_pixels=prof.data.max_image_pixels, epoch=0)
    sampler = OrderSampler(epoch_order(len(samples), spec.seed, 0, shuffle=True))
    reset_peak_memory(device)
    marks, done, t0 = [], 0, time.perf_counter()
    for batch in make_loader(dataset, bs, workers, device, sampler, settings=prof.loader):
        step(C.to_device(batch.views, device, cl), batch.labels.to(device, non_blocking=True))
        C.sync(device)
        done += len(batch)
        marks.append((time.perf_counter() - t0, done))
    peak, what = peak_memory_mib(device)
    return {"images_per_s": _rate_after_first(marks), "batch_size": bs, "workers": workers, "steps": len(marks),
            "first_step_s": round(marks[0][0], 2), "peak_memory_mib": round(peak, 1), "peak_memory_kind": what}


def measure_eval(model, spec, det, cfg, paths, device, batches: int) -> dict:
    """Evaluation images/s of `run_inference` (the profile's eval batch size and workers) and the peak memory."""
    from sep_bench.engine.efficiency import peak_memory_mib, reset_peak_memory
    from sep_bench.engine.inference import run_inference

    ev, prof = spec.recipe.eval, spec.profile
    samples = C.samples_of(paths, ev.batch_size * (batches + 1))
    model.eval()
    reset_peak_memory(device)
    marks, t0 = [], time.perf_counter()

    def on_batch(n: int) -> None:
        C.sync(device)
        marks.append((time.perf_counter() - t0, (marks[-1][1] if marks else 0) + n))

    run_inference(model, samples, det.views(cfg, False, False), seed=spec.seed, batch_size=ev.batch_size,
                  num_workers=prof.loader.eval_workers, device=device, amp=prof.amp,
                  max_pixels=prof.data.max_image_pixels, on_batch=on_batch, bucket_by_size=ev.bucket_by_size,
                  loader_settings=prof.loader)
    peak, what = peak_memory_mib(device)
    return {"images_per_s": _rate_after_first(marks), "batch_size": ev.batch_size,
            "workers": prof.loader.eval_workers, "batches": len(marks), "peak_memory_mib": round(peak, 1),
            "peak_memory_kind": what}


def measure_recon(recon, paths, device) -> dict:
    """Seconds per image of the reconstruction stage (random full-size model) on one batch, on `device`."""
    import tempfile

    from sep_bench.recon.stage import run_reconstruction

    n = min(recon.batch_size, len(paths))
    with tempfile.TemporaryDirectory(prefix="gpu-acceptance-recon-") as tmp:
        stats = run_reconstruction(recon, [str(p) for p in paths[:n]], Path(tmp), device=device)
    return {"seconds_per_image": stats["seconds_per_image"], "images": n, "arch": recon.arch,
            "steps": recon.steps, "random_init": recon.random_weights}


def measure_detector(name: str, spec, paths, args, device) -> dict:
    import torch

    det, cfg = C.detector_config(spec)
    t0 = time.perf_counter()
    model = build_on(det, cfg, device, spec.seed)
    if spec.profile.channels_last and device.type == "cuda":  # as the engine: CUDA only
        model = model.to(memory_format=torch.channels_last)
    out = {"build_s": round(time.perf_counter() - t0, 1)}
    out["train"] = measure_train(model, spec, det, cfg, paths, device, args.train_steps)
    out["eval"] = measure_eval(model, spec, det, cfg, paths, device, args.eval_batches)
    del model
    torch.cuda.empty_cache()
    recon = recon_config_of(det, cfg)
    if recon is not None:
        out["reconstruction"] = measure_recon(recon, paths, device)
    return out


# ---- predicted (no CUDA): FLOPs on the meta device, the loader's ceiling on this CPU ------------------------------


def _views_on(view, paths, n: int, spec, device: str) -> dict:
    """`n` images' views (built on the CPU from real files, as a loader worker does), moved to `device`."""
    return {k: v.to(device) for k, v in C.prebuilt_views(paths, view, n, spec.seed,
                                                        spec.profile.data.max_image_pixels).items()}


def count_flops(det, cfg, spec, paths, device: str) -> dict:
    """FLOPs per image of one training step (forward + backward, batch 2) and one evaluation forward (batch 1) of
    the randomly initialised model built on `device` (meta: shapes only; cpu: real arithmetic, for the detectors
    whose code reads values, e.g. ``.item()`` or data-dependent indexing)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = build_on(det, cfg, device, spec.seed).train()
    views = _views_on(det.views(cfg, True, spec.recipe.train.hflip), paths, 2, spec, device)
    with FlopCounterMode(display=False) as counter:
        model.train_loss(model.train_forward(views), torch.tensor([0.0, 1.0], device=device)).backward()
    train = counter.get_total_flops() / 2
    model.eval()
    views = _views_on(det.views(cfg, False, False), paths, 1, spec, device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(views)
    return {"train_flops_per_image": int(train), "eval_flops_per_image": int(counter.get_total_flops()),
            "input_shapes": {k: list(v.shape[1:]) for k, v in views.items()}, "counted_on": device}


def loader_rate(view, paths, spec, n: int = LOADER_PROBE_IMAGES) -> float:
    """Images/s of decoding + `view` in one thread on this CPU (what one loader worker can deliver)."""
    import torch

    from sep_bench.data.images import decode_image
    from sep_bench.data.transforms import sample_rng

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    try:
        view(decode_image(paths[0], spec.profile.data.max_image_pixels), sample_rng(spec.seed, 0, 0))  # warm-up
        t0 = time.perf_counter()
        for i in range(n):
            view(decode_image(paths[i % len(paths)], spec.profile.data.max_image_pixels), sample_rng(spec.seed, i, 0))
        return n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


def recon_flops(recon, seed: int) -> dict:
    """FLOPs per image of the reconstruction: one UNet forward (batch 1, on meta) x the UNet evaluations per image
    (DDIM inversion + reconstruction: 2 x steps; inpainting: steps x 2 with classifier-free guidance) + the VAE's
    encode and decode for latent models."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sep_bench.recon.models import build_model

    with torch.device("meta"):
        dm = build_model(recon.randomised())
    unet = dm.unet if dm.pipe is None else dm.pipe.unet
    vae = dm.vae if dm.pipe is None else dm.pipe.vae
    side = recon.image_size if recon.method == "ddim-inversion" else min(recon.max_size, 512)
    latent = vae is not None
    x = torch.empty(1, unet.config.in_channels, *(2 * [side // 8 if latent else side]), device="meta")
    kwargs = {"encoder_hidden_states": torch.empty(1, 77, unet.config.cross_attention_dim, device="meta")} \
        if getattr(unet.config, "cross_attention_dim", None) else {}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([10], device="meta"), **kwargs)
    unet_flops = counter.get_total_flops()
    vae_flops = 0
    if latent:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            vae.decode(vae.encode(torch.empty(1, 3, side, side, device="meta")).latent_dist.mean)
        vae_flops = counter.get_total_flops()
    cfg_passes = 2 if recon.guidance_scale > 1 else 1
    evals = 2 * recon.steps if recon.method == "ddim-inversion" else recon.steps * cfg_passes
    return {"flops_per_image": int(unet_flops * evals + vae_flops), "unet_flops": int(unet_flops),
            "unet_evaluations_per_image": evals, "vae_flops": int(vae_flops), "image_side": side}


def predict_detector(name: str, spec, paths, args, device) -> dict:
    det, cfg = C.detector_config(spec)
    try:
        flops = count_flops(det, cfg, spec, paths, "meta")
    except Exception as err:  # the detector's code needs values (not only shapes): count on the CPU
        flops = {**count_flops(det, cfg, spec, paths, "cpu"), "meta_failed": f"{type(err).__name__}: {err}"[:300]}
    prof = spec.profile
    ceilings = {"train": loader_rate(det.views(cfg, True, spec.recipe.train.hflip), paths, spec)
                * max(1, prof.loader.train_workers),
                "eval": loader_rate(det.views(cfg, False, False), paths, spec) * max(1, prof.loader.eval_workers)}
    out = {"flops": flops}
    for part, key in (("train", "train_flops_per_image"), ("eval", "eval_flops_per_image")):
        compute = ASSUMED_SUSTAINED_FLOPS / max(flops[key], 1)
        out[part] = {"images_per_s": round(min(compute, ceilings[part]), 2), "compute_bound_images_per_s":
                     round(compute, 2), "loader_bound_images_per_s": round(ceilings[part], 2),
                     "bound": "compute" if compute <= ceilings[part] else "loader"}
    recon = recon_config_of(det, cfg)
    if recon is not None:
        rf = recon_flops(recon, spec.seed)
        out["reconstruction"] = {**rf, "seconds_per_image": round(rf["flops_per_image"] / ASSUMED_SUSTAINED_FLOPS, 4),
                                 "arch": recon.arch, "steps": recon.steps}
    return out


# ---- the run -----------------------------------------------------------------------------------------------------


def cost_of(spec, result: dict, recon) -> dict:
    """The table cost of one detector from its (measured or predicted) rates."""
    sizes, epochs = train_plan(spec, recon, data_sizes(spec))
    rec = result.get("reconstruction", {})
    return table_cost(sizes, epochs, eval_passes(spec), result["train"]["images_per_s"],
                      result["eval"]["images_per_s"], recon_images(recon, data_sizes(spec)),
                      rec.get("seconds_per_image", 0.0))


def run_one(name: str, spec, paths, args, device, measured: bool) -> dict:
    """One detector's smoke (or prediction) and cost; any failure becomes ``{"error": ...}``."""
    t0 = time.perf_counter()
    try:
        fn = measure_detector if measured else predict_detector
        result = fn(name, spec, paths, args, device)
        det, cfg = C.detector_config(spec)
        result["cost"] = cost_of(spec, result, recon_config_of(det, cfg))
        result["recipe"] = {"epochs": spec.recipe.train.epochs, "train_batch_size": spec.recipe.train.batch_size,
                            "feature_cache": spec.recipe.train.feature_cache, "eval_passes": eval_passes(spec),
                            "pretrained": spec.recipe.pretrained,
                            # plateau early stopping may end training before `epochs`: the cost is then an upper bound
                            "early_stopping": spec.recipe.schedule.name == "plateau"}
    except Exception as err:  # recorded; the other detectors continue
        result = {"error": f"{type(err).__name__}: {err}"[:2000],
                  "traceback_tail": traceback.format_exc().splitlines()[-6:]}
    finally:
        if measured:
            import torch

            torch.cuda.empty_cache()
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def assumptions(measured: bool) -> dict:
    if measured:
        return {"rates": "measured on this GPU (smoke: few steps; steady state after the first batch)"}
    return {
        "sustained_flops": ASSUMED_SUSTAINED_FLOPS,
        "source": f"H100 SXM dense BF16 peak {H100_BF16_PEAK_FLOPS / 1e12:.1f} TFLOPS (NVIDIA H100 datasheet) x an "
                  f"assumed {ASSUMED_FRACTION_OF_PEAK:.0%} sustained (model FLOPs utilisation)",
        "loader": f"decode + view of {LOADER_PROBE_IMAGES} images in one thread on this CPU x the profile's loader "
                  "workers (a GPU host's cores may be faster or slower)",
        "flops": "torch.utils.flop_counter.FlopCounterMode on the meta device (matmuls and convolutions, 2 FLOPs per "
                 "multiply-add; elementwise ops, FFTs and data-side work not counted)",
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="genimage")
    parser.add_argument("--detectors", default=None, help="comma-separated (default: run.detectors of params.yaml)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--predict", action="store_true", help="FLOP-based prediction even when CUDA is present")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="start no detector after this many seconds (default 540: within 10 minutes)")
    parser.add_argument("--train-steps", type=int, default=6, help="timed training steps per detector")
    parser.add_argument("--eval-batches", type=int, default=3, help="timed evaluation batches per detector")
    parser.add_argument("--images", type=int, default=256, help="image files cycled through (generated once)")
    parser.add_argument("--size", type=int, default=512, help="side of the generated images (GenImage: 512)")
    parser.add_argument("--goal-gpu-hours", type=float, default=GOAL_GPU_HOURS)
    parser.add_argument("--params", type=Path, default=C.REPO_ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=C.REPO_ROOT / "results" / "benchmarks" / "gpu_acceptance.json")
    parser.add_argument("--doc", action=argparse.BooleanOptionalAction, default=None,
                        help="rewrite the figures block of docs/weights-and-gpu.md (default: when --out is the "
                             "committed file and every detector ran)")
    args = parser.parse_args()
    default_out = args.out.resolve() == (C.REPO_ROOT / "results" / "benchmarks" / "gpu_acceptance.json").resolve()
    if args.doc is None:
        args.doc = default_out and not args.detectors
    return args


def main() -> None:
    args = parse_args()
    t_start = time.perf_counter()
    from sep_bench.protocol import load_params

    names = ([d.strip() for d in args.detectors.split(",") if d.strip()] if args.detectors
             else list(load_params(args.params).run.detectors))
    specs = load_offline_specs(args.params, args.profile, names)
    paths = C.make_image_set(args.images, args.size)  # before CUDA is initialised (the writer forks)
    device = C.pick_device(args.device)
    measured = device.type == "cuda" and not args.predict
    print(f"{'measured on ' + str(device) if measured else 'PREDICTED (FLOPs; no GPU measurement)'}: "
          f"{len(specs)} detectors, profile {args.profile}, budget {args.budget_s:.0f} s")
    results: dict = {}
    for name, spec in specs.items():
        if time.perf_counter() - t_start > args.budget_s:
            results[name] = {"skipped": f"--budget-s {args.budget_s:.0f} s reached before it started"}
        else:
            results[name] = run_one(name, spec, paths, args, device, measured)
        print_row(name, results[name])
        write(args, device, measured, results, specs)
    summary = write(args, device, measured, results, specs)
    if args.doc:
        import json

        write_doc(json.loads(args.out.read_text()))
        print(f"updated {DOC.relative_to(C.REPO_ROOT)}")
    print(f"\ntotal {summary['gpu_hours_total']} GPU-hours for {summary['detectors_costed']} detectors "
          f"(goal {summary['goal_gpu_hours']}: {'within' if summary['within_goal'] else 'NOT within'}); "
          f"{'measured' if measured else 'predicted'}; {time.perf_counter() - t_start:.0f} s")


DOC = C.REPO_ROOT / "docs" / "weights-and-gpu.md"
DOC_MARK = ("<!-- gpu-acceptance:start -->", "<!-- gpu-acceptance:end -->")


def doc_block(report: dict) -> str:
    """The table of docs/weights-and-gpu.md, from a results/benchmarks/gpu_acceptance.json report."""
    s, measured = report["summary"], report["measured"]
    where = (report["machine"]["gpu"] or {}).get("name", "GPU") if measured else "no GPU (FLOP-based prediction)"
    rows = ["| detector | train img/s | eval img/s | bound | GPU-hours | epochs |", "|---|---:|---:|---|---:|---:|"]
    for name, r in report["results"].items():
        if "cost" not in r:
            rows.append(f"| {name} | - | - | {'failed' if 'error' in r else 'skipped'} | - | - |")
            continue
        bound = "measured" if measured else f"{r['train']['bound']} / {r['eval']['bound']}"
        early = " (early stopping: at most)" if r["recipe"].get("early_stopping") else ""
        rows.append(f"| {name} | {r['train']['images_per_s']:.1f} | {r['eval']['images_per_s']:.1f} | {bound} | "
                    f"{r['cost']['gpu_hours']:.2f} | {r['recipe']['epochs']}{early} |")
    verdict = "within" if s["within_goal"] else "NOT within"
    head = (f"**{report['kind']}** ({where}; {report['date'][:10]}, commit "
            f"{(report['machine']['git']['commit'] or 'unknown')[:7]}): the GenImage table costs "
            f"**{s['gpu_hours_total']:.1f} GPU-hours** for {s['detectors_costed']} detectors, {verdict} the goal of "
            f"{s['goal_gpu_hours']:.0f}; largest: {', '.join(s['largest'])}.")
    if s["detectors_failed"] or s["detectors_skipped"]:
        failed, skipped = ", ".join(s["detectors_failed"]) or "none", ", ".join(s["detectors_skipped"]) or "none"
        head += f" Failed: {failed}; skipped: {skipped}."
    return head + "\n\n" + "\n".join(rows)


def write_doc(report: dict) -> None:
    text = DOC.read_text()
    head, rest = text.split(DOC_MARK[0], 1)
    _, tail = rest.split(DOC_MARK[1], 1)
    DOC.write_text(f"{head}{DOC_MARK[0]}\n{doc_block(report)}\n{DOC_MARK[1]}{tail}")


def print_row(name: str, r: dict) -> None:
    if "cost" in r:
        print(f"  {name:11s} train {r['train']['images_per_s']:9.1f} img/s  eval {r['eval']['images_per_s']:9.1f} img/s"
              f"  {r['cost']['gpu_hours']:8.2f} GPU-h  ({r['wall_s']} s)")
    else:
        print(f"  {name:11s} {r.get('error') or r.get('skipped')}")


def write(args, device, measured: bool, results: dict, specs: dict) -> dict:
    summary = summarise(results, args.goal_gpu_hours)
    first = next(iter(specs.values()))
    C.write_report(args.out, "gpu_acceptance", args, device, {
        "measured": measured,
        "kind": "measured" if measured else "predicted",
        "profile": args.profile,
        "pretrained": False,
        "assumptions": assumptions(measured),
        "data_sizes": data_sizes(first),
        "formula": "GPU-hours = (epochs x train_images / train_rate + epochs x val_images / eval_rate + "
                   "(test_images + variant_images x (eval_passes - 1)) / eval_rate + recon_images x "
                   "recon_seconds_per_image) / 3600",
        "summary": summary,
        "results": results,
    })
    return summary


if __name__ == "__main__":
    main()
