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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

import pandas as pd

from sep_bench.data.pairing import data_pairing
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


@dataclass
class _Variant:
    """One evaluation of the checkpoint: the clean images (``none``), a perturbation, or a protocol-axis variant."""

    name: str
    post: Callable | None = None  # applied to the decoded image in the shared pass (None: the clean image)
    info: dict = field(default_factory=dict)  # recorded in the variant's metrics (protocol axes)
    config: dict | None = None  # model-config overrides: a view of its own, hence a pass of its own
    same_as: str | None = None  # the result of another variant (an alignment equal to a listed perturbation)
    supported: bool = True  # False: recorded as unsupported, not evaluated
    result: InferenceResult | None = None

    @property
    def shared_pass(self) -> bool:
        return self.supported and self.config is None and self.same_as is None


def _plan(spec: RunSpec, det, cfg, samples) -> list[_Variant]:
    """Every variant of the evaluation, in output order: clean, perturbations, the protocol axes of the shared pass
    (`engine.protocol_axes`: ``aligned``, ``preprocess-<rule>``), those with their own view, aliases, unsupported."""
    perturbations = list(spec.recipe.eval.perturbations)
    axes = axis_variants(spec, det, cfg, samples)
    # an alignment that equals a listed perturbation (e.g. jpeg95) is that variant's result, not a second one
    alias = {a.name: a.info["align"]["applied"] for a in axes
             if a.name == "aligned" and a.info["align"]["applied"] in perturbations}
    separate = [a for a in axes if a.config is not None or not a.supported]
    info = {a.name: a.info for a in axes}
    return [
        _Variant("none"),
        *(_Variant(p, parse_perturbation(p)) for p in perturbations),
        *(_Variant(a.name, a.post, a.info) for a in axes if a.supported and a.config is None and a.name not in alias),
        *(_Variant(a.name, info=a.info, config=a.config) for a in separate if a.supported),
        *(_Variant(name, info=info[name], same_as=same) for name, same in alias.items()),
        *(_Variant(a.name, info=a.info, config=a.config, supported=False) for a in separate if not a.supported),
    ]


def _infer(model, plan: list[_Variant], det, cfg, view, n: int, subset, loader_for, spec: RunSpec, device,
           on_batch) -> int:
    """Fill each variant's result: the clean image and every shared-pass variant from one decode (the variants
    over `subset` when given), the variants with a view of their own in a pass each, aliases from their twin.
    Returns the number of views evaluated."""
    amp = spec.profile.amp
    shared = [v for v in plan if v.shared_pass]  # the clean variant first
    posts = [v.post for v in shared[1:]]
    if subset is None:  # one pass: the clean image and every variant from one decode
        results = infer_variants(model, loader_for(view, [None, *posts]), n, len(shared), device=device, amp=amp,
                                 on_batch=on_batch)
    else:  # the clean pass over every image, then the variants over the fixed subset (one decode each)
        results = [infer(model, loader_for(view), n, device=device, amp=amp, on_batch=on_batch)]
        if posts:
            results += infer_variants(model, loader_for(view, posts, on_subset=True), n, len(posts), device=device,
                                      amp=amp, on_batch=on_batch)
    for v, res in zip(shared, results):
        v.result = res
    for v in (v for v in plan if v.supported and v.config is not None):
        view_v = det.views(det.make_config({**cfg.model_dump(mode="json"), **v.config}), False, False)
        v.result = infer(model, loader_for(view_v, on_subset=subset is not None), n, device=device, amp=amp)
    evaluated = [v for v in plan if v.result is not None]
    by_name = {v.name: v for v in evaluated}
    for v in plan:
        if v.same_as is not None:
            v.result = by_name[v.same_as].result
    return n + (len(subset) if subset is not None else n) * (len(evaluated) - 1)


def evaluate(
    spec: RunSpec,
    checkpoint: Path,
    metrics_out: Path,
    predictions_out: Path,
    *,
    tracker=None,
    progress: Callable[[str, int, int], None] | None = None,
    robustness_dir: Path | None = None,
    child_tracker: Callable[[str], ContextManager] | None = None,
    model=None,
    released: dict | None = None,
) -> dict:
    """Evaluate the checkpoint under `spec`'s evaluation protocol, clean and under each of its
    ``eval.perturbations``, in ONE pass over the test images (decoded once; see engine.inference), and write
    predictions and metrics.

    The clean pass goes to `metrics_out` / `predictions_out` and `tracker`; perturbation ``p`` (see
    data.perturb) to ``robustness_dir/<p>.{json,parquet}`` and to the tracker ``child_tracker(p)`` opens.
    `model`: evaluate this model (e.g. the authors' released weights) instead of loading `checkpoint`.
    `released`: the evaluation-only entry's record (`sep_bench.released.ResolvedWeights.record`); its name becomes
    the metrics' ``entry`` (the table row). Returns the clean metrics, with ``perturbed``: {p: metrics}.

    ``eval.align`` and ``eval.preprocess`` add the variants ``aligned`` and ``preprocess-<rule>`` (see
    engine.protocol_axes), written and tracked like the perturbations. Steps: plan the variants (`_plan`), run
    them (`_infer`), compute every variant's metrics before writing any (`_metrics`), write (`_write_all`).
    """
    started = time.perf_counter()
    data, ev = spec.profile.data, spec.recipe.eval
    model_given = model is not None
    model, det, cfg, device = _model(spec, checkpoint, model)
    samples = evaluation_samples(data_root(spec.profile_name, data), data)
    samples = recon_samples(spec.detector, cfg, samples, "test", spec.profile_name)  # DIRE reads its maps
    row = released["name"] if released else spec.detector
    plan = _plan(spec, det, cfg, samples)
    if sum(v.same_as is None for v in plan) > 1 and robustness_dir is None:
        raise ValueError("perturbations and protocol axes need a robustness_dir for their outputs")
    subset = variant_subset(samples, ev.variant_subset, _variant_generators(data.test_generators, ev))
    sub_samples = samples if subset is None else [samples[i] for i in subset]
    n_shared = sum(v.shared_pass for v in plan)
    total = len(samples) + (len(sub_samples) if subset is not None and len(plan) > 1 else 0)
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            suffix = f" (+{n_shared - 1} variants)" if n_shared > 1 else ""
            progress(f"evaluate {row}{suffix}", done, total)

    efficiency.reset_peak_memory(device)
    inference_started = time.perf_counter()
    view = det.views(cfg, False, False)

    def loader_for(view_, variants_=None, on_subset=False):
        return inference_loader(
            sub_samples if on_subset else samples, view_, seed=spec.seed, batch_size=ev.batch_size,
            num_workers=spec.profile.loader.eval_workers, device=device, max_pixels=data.max_image_pixels,
            bucket_by_size=ev.bucket_by_size, loader_settings=spec.profile.loader, variants=variants_,
            index_offset=subset if on_subset else None,
        )

    n_views = _infer(model, plan, det, cfg, view, len(samples), subset, loader_for, spec, device, on_batch)
    inference_seconds = time.perf_counter() - inference_started
    common = _common(spec, model, det, checkpoint, model_given, released, row, device)
    outputs = _metrics(spec, plan, samples, sub_samples, subset, common)
    clean, clean_preds = outputs["none"]
    clean["seconds"] = round(time.perf_counter() - started, 2)
    clean["efficiency"] = _efficiency(model, view, samples, plan[0].result.kept, spec.seed, data.max_image_pixels,
                                      device, inference_seconds, n_views)
    if ev.perturbations:
        clean["efficiency"]["evaluation_variants"] = n_views // len(samples)
    _write(clean, clean_preds, metrics_out, predictions_out, tracker, plan[0].result)
    _write_variants(spec, plan, outputs, clean, sub_samples, subset, robustness_dir, child_tracker, common, row)
    return clean


def _model(spec: RunSpec, checkpoint: Path, model):
    """(model on its device, detector, model config, device): the checkpoint's, or `model` (released weights
    already loaded, see engine.predict.load_model; `checkpoint` is then their file) with the recipe's config."""
    if model is None:
        model, meta = load_detector(checkpoint, expect=spec.detector)
    else:
        meta = {"model_config": spec.recipe.model}
    det = get_detector(spec.detector)
    cfg = det.make_config(meta.get("model_config", {}))
    device = pick_device(spec.profile.device)
    model.to(device)
    return model, det, cfg, device


def _common(spec: RunSpec, model, det, checkpoint: Path, model_given: bool, released: dict | None, row: str,
            device) -> dict:
    """What every variant's metrics record says about the weights, the checkpoint and the data."""
    return {
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


def _metrics(spec: RunSpec, plan: list[_Variant], samples, sub_samples, subset, common: dict) -> dict:
    """{variant: (metrics, predictions)} of every evaluated variant, checked against the skip budget before anything
    is written. The variants' results are cut to their subset (in subset order; the clean pass: all images)."""
    outputs = {}
    for v in plan:
        if v.result is None:
            continue
        if v.name != "none" and subset is not None:
            v.result = InferenceResult(v.result.logits[subset], v.result.skipped)
            outputs[v.name] = _variant_metrics(spec, sub_samples, v.result, v.name, common, _subset_generators(spec))
            outputs[v.name][0]["variant_subset"] = _subset_record(spec, sub_samples)
        else:
            outputs[v.name] = _variant_metrics(spec, samples, v.result, v.name, common)
        outputs[v.name][0].update(v.info)
    return outputs


def _write_variants(spec: RunSpec, plan: list[_Variant], outputs: dict, clean: dict, sub_samples, subset,
                    robustness_dir: Path | None, child_tracker, common: dict, row: str) -> None:
    """The robustness folder: the clean result on the variants' subset (their baseline), each variant's metrics
    and predictions (tracked in a child run each), and a record for each unsupported variant."""
    clean["perturbed"] = {}
    evaluated = [v for v in plan[1:] if v.result is not None]
    if subset is not None and evaluated:  # the clean result on the variants' subset: their baseline
        chosen = set(subset)
        res0 = plan[0].result
        res0 = InferenceResult(res0.logits[subset], [r for r in res0.skipped if r["index"] in chosen])
        base, base_preds = _variant_metrics(spec, sub_samples, res0, "none", common, _subset_generators(spec))
        base["variant_subset"] = _subset_record(spec, sub_samples)
        _write(base, base_preds, robustness_dir / "clean_subset.json", robustness_dir / "clean_subset.parquet",
               None, res0)
    for v in evaluated:
        metrics, preds = outputs[v.name]
        metrics["seconds"] = clean["seconds"]
        ctx = child_tracker(v.name) if child_tracker is not None else nullcontext(None)
        with ctx as child:
            _write(metrics, preds, robustness_dir / f"{v.name}.json", robustness_dir / f"{v.name}.parquet", child,
                   v.result)
        clean["perturbed"][v.name] = metrics
    for v in (v for v in plan if not v.supported):  # recorded, so the table can say why it is empty
        write_json(robustness_dir / f"{v.name}.json", {"perturbation": v.name, "supported": False, **v.info,
                                                       "detector": spec.detector, "row": row, "seed": spec.seed,
                                                       "reason": "the eval view takes fixed-size inputs only"})


def _pairing(spec: RunSpec) -> dict:
    """How the test data's real images are paired with generators, when its manifest says (downloaded copies):
    ``{"data_pairing": "shared-reals"}`` marks a third-party copy whose reals carry no generator."""
    data = spec.profile.data
    if data.source != "external":
        return {}
    folder_of = {shown: folder for folder, shown in (data.generator_aliases or {}).items()}
    pairing = data_pairing(data_root(spec.profile_name, data), [folder_of.get(g, g) for g in data.test_generators])
    return {"data_pairing": pairing} if pairing else {}


def _variant_generators(test_generators, ev) -> list[str] | None:
    """The generators of the extra evaluations: the first ``eval.variant_generators`` of `test_generators`, or
    None (every one)."""
    n = ev.variant_generators
    return None if n is None or n >= len(test_generators) else list(test_generators[:n])


def variant_subset(samples, per_group: int | None, generators: list[str] | None = None) -> list[int] | None:
    """Indices of the fixed subset the extra variants are evaluated on: per (generator, label) of `generators`
    (None: every generator) the `per_group` samples (None: all of them) whose sha1 of
    "<generator>/<label>/<file name>" is smallest (machine- and path-independent), in sample order; None when the
    subset would be every sample."""
    if per_group is None and generators is None:
        return None
    groups: dict[tuple, list[tuple[str, int]]] = {}
    for i, s in enumerate(samples):
        if generators is not None and s.generator not in generators:
            continue
        key = hashlib.sha1(f"{s.generator}/{s.label}/{Path(source_path(s)).name}".encode()).hexdigest()
        groups.setdefault((s.generator, s.label), []).append((key, i))
    chosen = sorted(i for members in groups.values() for _, i in sorted(members)[:per_group])
    return None if len(chosen) == len(samples) else chosen


def _subset_generators(spec: RunSpec) -> list[str]:
    """The test generators of the variants' subset (every one unless ``eval.variant_generators`` is set)."""
    generators = spec.profile.data.test_generators
    return _variant_generators(generators, spec.recipe.eval) or list(generators)


def _subset_record(spec: RunSpec, sub_samples) -> dict:
    """What a variant's metrics say about its subset: images per generator and class, images, generators."""
    ev = spec.recipe.eval
    return {"per_generator_and_class": ev.variant_subset, "n_images": len(sub_samples),
            **({"generators": _subset_generators(spec)} if ev.variant_generators is not None else {})}


def _variant_metrics(spec: RunSpec, samples, res, perturbation: str, common: dict,
                     generators: list[str] | None = None) -> tuple[dict, pd.DataFrame]:
    """Skip-budget checks (overall and per generator), predictions and the metrics record of one variant over
    `generators` (default: every test generator)."""
    data = spec.profile.data
    generators = list(data.test_generators) if generators is None else generators
    what = f"evaluation of {spec.detector}" + ("" if perturbation == "none" else f" [{perturbation}]")
    for s in res.skipped:
        log.warning("skipped %s: %s", s["path"], s["detail"])
    res.check(data.max_skip_fraction, what)
    by_path = {s.path: s.generator for s in samples}
    for g in generators:  # a generator must not shrink past the budget either, even if the total does not
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
    summary = summarize_predictions(preds, generators)
    metrics = {
        "schema": METRICS_SCHEMA,
        "detector": spec.detector,
        "profile": spec.profile_name,
        "protocol_hash": spec.protocol_hash(),
        # a capped run (params.yaml budget): its name, so every table says so (absent for the full protocol)
        **({"budget": spec.budget} if spec.budget != "full" else {}),
        "seed": spec.seed,
        "perturbation": perturbation,
        "test_generators": generators,
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
