"""Evaluation: one pass over every test generator, clean and under each perturbation of the robustness suite
(each image decoded once); per-image predictions and per-generator metrics per variant.

Outputs (both written atomically):
- predictions parquet: path, generator, label, fake_logit (skipped images are absent, and counted);
- metrics JSON: per-generator acc / real_acc / fake_acc / ap / auc, the unweighted Mean, skip counts (``skipped``:
  count and by_reason; ``skipped_files``: path, generator and reason of each), what produced them (detector,
  protocol hash, weights source, checkpoint sha256; for an evaluation-only entry ``entry`` and ``released``: its
  name, source and sha256), and, for the clean pass, ``efficiency`` (see engine.efficiency).

No metric is computed on a silently shrunken set: more than ``data.max_skip_fraction`` skipped images, over the
whole test set or within any one test generator, is a `SkipBudgetError` (nothing is written). The MLflow run gets
the ``skipped`` metric, one ``skipped.<reason>`` metric per reason, and the ``sep_bench.skipped`` and
``sep_bench.skip_reasons`` tags.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Sequence

import pandas as pd

from sep_bench.data.perturb import parse_perturbation
from sep_bench.data.splits import evaluation_samples
from sep_bench.detectors import get_detector
from sep_bench.engine import efficiency
from sep_bench.engine.checkpoint import load_detector
from sep_bench.engine.inference import InferenceResult, check_skips, infer, infer_variants, inference_loader
from sep_bench.engine.metrics import summarize_predictions
from sep_bench.engine.protocol_axes import axis_variants
from sep_bench.engine.runtime import pick_device
from sep_bench.recon.samples import apply as recon_samples
from sep_bench.recon.samples import source_path
from sep_bench.io import atomic_path, write_json
from sep_bench.paths import data_root
from sep_bench.protocol import RunSpec
from sep_bench.weights import sha256_file

__all__ = ["evaluate", "METRICS_SCHEMA"]

log = logging.getLogger(__name__)
METRICS_SCHEMA = 1


def evaluate(
    spec: RunSpec,
    checkpoint: Path,
    metrics_out: Path,
    predictions_out: Path,
    *,
    tracker=None,
    progress: Callable[[str, int, int], None] | None = None,
    perturbations: Sequence[str] = (),
    robustness_dir: Path | None = None,
    child_tracker: Callable[[str], ContextManager] | None = None,
    model=None,
    released: dict | None = None,
) -> dict:
    """Evaluate the checkpoint under `spec`'s evaluation protocol, clean and under each of `perturbations`, in
    ONE pass over the test images (decoded once; see engine.inference), and write predictions and metrics.

    The clean pass goes to `metrics_out` / `predictions_out` and `tracker`; perturbation ``p`` (see
    data.perturb) to ``robustness_dir/<p>.{json,parquet}`` and to the tracker ``child_tracker(p)`` opens.
    `model`: evaluate this model (e.g. the authors' released weights) instead of loading `checkpoint`.
    `released`: the evaluation-only entry's record (`sep_bench.released.ResolvedWeights.record`); its name becomes
    the metrics' ``entry`` (the table row). Returns the clean metrics, with ``perturbed``: {p: metrics}.

    ``eval.align`` and ``eval.preprocess`` add the variants ``aligned`` and ``preprocess-<rule>`` (see
    engine.protocol_axes), written and tracked like the perturbations.
    """
    started = time.perf_counter()
    data = spec.profile.data
    model_given = model is not None
    if model is None:
        model, meta = load_detector(checkpoint, expect=spec.detector)
    else:  # released weights already loaded into `model` (see engine.predict.load_model); `checkpoint` is their file
        meta = {"model_config": spec.recipe.model}
    det = get_detector(spec.detector)
    cfg = det.make_config(meta.get("model_config", {}))
    device = pick_device(spec.profile.device)
    model.to(device)
    samples = evaluation_samples(data_root(spec.profile_name, data), data)
    samples = recon_samples(spec.detector, cfg, samples, "test", spec.profile_name)  # DIRE reads its maps
    row = released["name"] if released else spec.detector
    # eval.align / eval.preprocess (engine.protocol_axes): more variants of the same pass; `native` needs a view of
    # its own, hence its own pass
    axes = axis_variants(spec, det, cfg, samples)
    # an alignment that equals a listed perturbation (e.g. jpeg95) is that variant's result, not a second one
    alias = {a.name: a.info["align"]["applied"] for a in axes
             if a.name == "aligned" and a.info["align"]["applied"] in perturbations}
    joint = [a for a in axes if a.supported and a.config is None and a.name not in alias]
    separate = [a for a in axes if a.config is not None or not a.supported]
    variants = ["none", *perturbations, *(a.name for a in joint)]
    if len(variants) + len(separate) > 1 and robustness_dir is None:
        raise ValueError("perturbations and protocol axes need a robustness_dir for their outputs")
    subset = variant_subset(samples, spec.recipe.eval.variant_subset)
    extra = [parse_perturbation(v) for v in perturbations] + [a.post for a in joint]
    sub_samples = samples if subset is None else [samples[i] for i in subset]
    total = len(samples) + (len(sub_samples) if subset is not None and (extra or separate) else 0)
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            suffix = f" (+{len(variants) - 1} variants)" if len(variants) > 1 else ""
            progress(f"evaluate {row}{suffix}", done, total)

    efficiency.reset_peak_memory(device)
    inference_started = time.perf_counter()
    view = det.views(cfg, False, False)
    ev = spec.recipe.eval

    def loader_for(view_, variants_=None, on_subset=False):
        return inference_loader(
            sub_samples if on_subset else samples, view_, seed=spec.seed, batch_size=ev.batch_size,
            num_workers=ev.num_workers, device=device, max_pixels=data.max_image_pixels,
            bucket_by_size=ev.bucket_by_size, loader_settings=spec.profile.loader, variants=variants_,
            index_offset=subset if on_subset else None,
        )

    if subset is None:  # one pass: the clean image and every variant from one decode
        results = infer_variants(model, loader_for(view, [None, *extra]), len(samples), len(variants),
                                 device=device, amp=spec.profile.amp, on_batch=on_batch)
    else:  # the clean pass over every image, then the variants over the fixed subset (one decode each)
        results = [infer(model, loader_for(view), len(samples), device=device, amp=spec.profile.amp,
                         on_batch=on_batch)]
        if extra:
            results += infer_variants(model, loader_for(view, extra, on_subset=True), len(samples), len(extra),
                                      device=device, amp=spec.profile.amp, on_batch=on_batch)
    for a in (a for a in separate if a.supported):
        view_a = det.views(det.make_config({**cfg.model_dump(mode="json"), **a.config}), False, False)
        results.append(infer(model, loader_for(view_a, on_subset=subset is not None), len(samples),
                             device=device, amp=spec.profile.amp))
        variants.append(a.name)
    n_views = len(samples) + len(sub_samples) * (len(variants) - 1)
    for name, same in alias.items():
        results.append(results[variants.index(same)])
        variants.append(name)
    inference_seconds = time.perf_counter() - inference_started
    common = {
        "weights": model.weights.describe(),
        "pretrained": model.weights.pretrained,
        "intended_pretrained": det.default_weights is not None,
        "provenance": det.provenance,
        **_pairing(spec),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "released_weights": model_given,  # the authors' weights, evaluated without training here
        # a checkpoint chosen on the test generators is marked in every table (report.tables.TEST_SELECTED_MARK)
        **({"select_on": "test"} if spec.recipe.train.select_on == "test" and not model_given else {}),
        **({"entry": row, "released": released} if released else {}),
        "device": str(device),
    }
    outputs = {}
    info = {a.name: a.info for a in axes}
    if subset is not None:  # the variants' results over their subset, in subset order (the clean pass: all)
        results = results[:1] + [InferenceResult(r.logits[subset], r.skipped) for r in results[1:]]
    for name, res in zip(variants, results):  # check every variant before writing anything
        if name != "none" and subset is not None:
            outputs[name] = _variant_metrics(spec, sub_samples, res, name, common)
            outputs[name][0]["variant_subset"] = {"per_generator_and_class": ev.variant_subset,
                                                  "n_images": len(sub_samples)}
        else:
            outputs[name] = _variant_metrics(spec, samples, res, name, common)
        outputs[name][0].update(info.get(name, {}))
    seconds = round(time.perf_counter() - started, 2)
    clean, clean_preds = outputs["none"]
    clean["seconds"] = seconds
    clean["efficiency"] = _efficiency(model, view, samples, results[0].kept, spec.seed, data.max_image_pixels,
                                      device, inference_seconds, n_views)
    if perturbations:
        clean["efficiency"]["evaluation_variants"] = n_views // len(samples)
    _write(clean, clean_preds, metrics_out, predictions_out, tracker, results[0])
    clean["perturbed"] = {}
    if subset is not None and len(variants) > 1:  # the clean result on the variants' subset: their baseline
        chosen = set(subset)
        res0 = InferenceResult(results[0].logits[subset], [r for r in results[0].skipped if r["index"] in chosen])
        base, base_preds = _variant_metrics(spec, sub_samples, res0, "none", common)
        base["variant_subset"] = {"per_generator_and_class": ev.variant_subset, "n_images": len(sub_samples)}
        _write(base, base_preds, robustness_dir / "clean_subset.json", robustness_dir / "clean_subset.parquet",
               None, res0)
    for name, res in zip(variants[1:], results[1:]):
        metrics, preds = outputs[name]
        metrics["seconds"] = seconds
        ctx = child_tracker(name) if child_tracker is not None else nullcontext(None)
        with ctx as child:
            _write(metrics, preds, robustness_dir / f"{name}.json", robustness_dir / f"{name}.parquet", child, res)
        clean["perturbed"][name] = metrics
    for a in (a for a in separate if not a.supported):  # recorded, so the table can say why it is empty
        write_json(robustness_dir / f"{a.name}.json", {"perturbation": a.name, "supported": False, **a.info,
                                                       "detector": spec.detector, "row": row, "seed": spec.seed,
                                                       "reason": "the eval view takes fixed-size inputs only"})
    return clean


def _pairing(spec: RunSpec) -> dict:
    """How the test data's real images are paired with generators, when its manifest says (downloaded copies):
    ``{"data_pairing": "shared-reals"}`` marks a third-party copy whose reals carry no generator."""
    data = spec.profile.data
    if data.source != "external":
        return {}
    from sep_bench.data.acquire.verify import data_pairing

    folder_of = {shown: folder for folder, shown in (data.generator_aliases or {}).items()}
    pairing = data_pairing(data_root(spec.profile_name, data), [folder_of.get(g, g) for g in data.test_generators])
    return {"data_pairing": pairing} if pairing else {}


def variant_subset(samples, per_group: int | None) -> list[int] | None:
    """Indices of the fixed subset the extra variants are evaluated on: per (generator, label) the `per_group`
    samples whose sha1 of "<generator>/<label>/<file name>" is smallest (machine- and path-independent), in sample
    order; None when `per_group` is None or the subset would be every sample."""
    if per_group is None:
        return None
    groups: dict[tuple, list[tuple[str, int]]] = {}
    for i, s in enumerate(samples):
        key = hashlib.sha1(f"{s.generator}/{s.label}/{Path(source_path(s)).name}".encode()).hexdigest()
        groups.setdefault((s.generator, s.label), []).append((key, i))
    chosen = sorted(i for members in groups.values() for _, i in sorted(members)[:per_group])
    return None if len(chosen) == len(samples) else chosen


def _variant_metrics(spec: RunSpec, samples, res, perturbation: str, common: dict) -> tuple[dict, pd.DataFrame]:
    """Skip-budget checks (overall and per generator), predictions and the metrics record of one variant."""
    data = spec.profile.data
    what = f"evaluation of {spec.detector}" + ("" if perturbation == "none" else f" [{perturbation}]")
    for s in res.skipped:
        log.warning("skipped %s: %s", s["path"], s["detail"])
    res.check(data.max_skip_fraction, what)
    by_path = {s.path: s.generator for s in samples}
    for g in data.test_generators:  # a generator must not shrink past the budget either, even if the total does not
        skipped_g = [s for s in res.skipped if by_path.get(s["path"]) == g]
        check_skips(sum(1 for s in samples if s.generator == g), Counter(s["skip"] for s in skipped_g),
                    data.max_skip_fraction, f"{what} on {g}", skipped_g[0]["path"] if skipped_g else "")
    keep = res.kept
    preds = pd.DataFrame({
        "path": [source_path(s) for s, k in zip(samples, keep) if k],  # the image, not a reconstruction
        "generator": [s.generator for s, k in zip(samples, keep) if k],
        "label": [s.label for s, k in zip(samples, keep) if k],
        "fake_logit": res.logits[keep],
    })
    summary = summarize_predictions(preds, data.test_generators)
    metrics = {
        "schema": METRICS_SCHEMA,
        "detector": spec.detector,
        "profile": spec.profile_name,
        "protocol_hash": spec.protocol_hash(),
        "seed": spec.seed,
        "perturbation": perturbation,
        "test_generators": list(data.test_generators),
        **summary,
        "n_images": int(len(preds)),
        "skipped": {"count": len(res.skipped), "by_reason": dict(sorted(res.skip_reasons.items()))},
        "skipped_files": [
            {"path": s["path"], "generator": by_path.get(s["path"], ""), "reason": s["skip"]}
            for s in sorted(res.skipped, key=lambda s: s["index"])
        ],
        **common,
    }
    return metrics, preds


def _write(metrics: dict, preds: pd.DataFrame, metrics_out: Path, predictions_out: Path, tracker, res) -> None:
    with atomic_path(predictions_out) as tmp:
        preds.to_parquet(tmp, index=False)
    write_json(metrics_out, metrics)
    if tracker is None:
        return
    flat = {f"{g}.{k}": v for g, m in metrics["generators"].items() for k, v in m.items()}
    flat.update({f"mean.{k}": v for k, v in metrics["mean"].items()})
    flat["skipped"] = len(res.skipped)
    flat.update({f"skipped.{reason}": n for reason, n in res.skip_reasons.items()})
    flat.update({f"efficiency.{k}": v for k, v in metrics.get("efficiency", {}).items()
                 if isinstance(v, (int, float))})
    tracker.log_metrics(flat)
    tracker.set_tags({
        **({"sep_bench.data_pairing": metrics["data_pairing"]} if metrics.get("data_pairing") else {}),
        "sep_bench.skipped": len(res.skipped),
        "sep_bench.skip_reasons": ",".join(f"{r}={n}" for r, n in sorted(res.skip_reasons.items())) or "none",
    })
    tracker.log_artifact(metrics_out)
    tracker.log_artifact(predictions_out)


def _efficiency(model, view, samples, kept, seed: int, max_pixels: int, device, seconds: float, n_seen: int) -> dict:
    """Parameters, FLOPs per image (views of the first usable test image), throughput and peak memory of the pass.

    Throughput counts every evaluated view (clean and perturbed alike: `n_seen`) per second of the single pass,
    so it includes decoding, the perturbations and the views, as a user's evaluation run pays them."""
    from sep_bench.data.dataset import ViewDataset

    memory, memory_kind = efficiency.peak_memory_mib(device)
    first = next((i for i, k in enumerate(kept) if k), None)
    flops, input_shapes = None, {}
    if first is not None:
        item = ViewDataset([samples[first]], view, seed=seed, max_pixels=max_pixels, index_offset=[first])[0]
        views = {k: v.unsqueeze(0).to(device) for k, v in item["views"].items()}
        flops = efficiency.forward_flops(model, views)
        input_shapes = {k: list(v.shape[1:]) for k, v in views.items()}
    params = efficiency.parameter_counts(model)
    return {
        "params_total": params["total"],
        "params_trainable": params["trainable"],
        "flops_per_image": flops,
        "flops_input": input_shapes,
        "images_per_s": round(n_seen / seconds, 2) if seconds > 0 else None,
        "peak_memory_mib": round(memory, 1),
        "peak_memory_kind": memory_kind,
        "device": _device_name(device),
    }


def _device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
