"""Training: seeded, resumable, with model selection on the held-out validation slice (never on test data).

Per epoch: the visiting order and every sample's augmentation are pure functions of (seed, epoch, index), so a
run that is interrupted and resumed from ``last.safetensors`` (model, optimiser, RNG, position) ends with the
same weights as an uninterrupted run on CPU. ``last`` is written at the end of every epoch (and every
``checkpoint_every_steps``); ``best`` whenever the validation metric improves. A checkpoint from a different
protocol (hash mismatch) is never resumed, and neither is a finished run (being asked to train it again means
code or data changed): training starts over and says so.

The function `train` strings together its concerns, each in its own piece: what a training is made of
(`_build_run`: device, samples, alignment, seeded model, optimiser, epoch geometry), resume (`_resume`,
`_save_last`), the loaders and the feature cache (`_loaders`), the epochs (`_fit`): the optimisation steps of one
epoch with gradient accumulation (`_Steps`, engine.batching), then validation with checkpoint selection
(`_end_epoch`, `_Evaluator`, engine.selection; ``train.select_on: test`` adds a test pass per epoch), and the
summary (`_summary`).
``train.align`` re-encodes every training and validation image before the views (engine.align).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from sep_bench.data.dataset import EpochSampler, ViewDataset, epoch_order
from sep_bench.data.splits import evaluation_samples, training_samples
from sep_bench.recon.samples import apply as recon_samples
from sep_bench.detectors import Detector, get_detector
from sep_bench.engine.align import Alignment, resolve_alignment
from sep_bench.engine.batching import BatchPlan, plan_batches, step_weights
from sep_bench.engine.checkpoint import load_checkpoint, model_state, optimizer_state, rng_state, save_checkpoint
from sep_bench.engine.distributed import broadcast_flag, init_distributed, shard_order
from sep_bench.engine.feature_cache import cached_features, preprocessing_key
from sep_bench.engine.inference import check_skips, infer, inference_loader
from sep_bench.engine.metrics import binary_metrics, summarize_predictions
from sep_bench.engine.selection import Selection, val_better
from sep_bench.engine.runtime import autocast, make_loader, pick_device, to_device
from sep_bench.io import write_json
from sep_bench.paths import data_root, feature_cache_dir, timing_path
from sep_bench.protocol import OptimSpec, ProtocolError, RunSpec, ScheduleSpec
from sep_bench.weights import parse_pretrained

__all__ = ["train", "TrainResult", "make_optimizer", "lr_factor"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (task, completed, total)


@dataclass
class TrainResult:
    best_checkpoint: Path
    best_epoch: int
    best_val: dict
    epochs: int
    seconds: float
    skipped: dict


class _TrainForward(torch.nn.Module):
    """Routes the wrapper's forward to `Detector.train_forward`, so DDP (which hooks ``forward``) sees it."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, views):
        return self.model.train_forward(views)


def make_optimizer(params: list[torch.nn.Parameter], spec: OptimSpec) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("the detector has no trainable parameters")
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def lr_factor(step: int, steps_per_epoch: int, epochs: int, spec: ScheduleSpec) -> float:
    """Multiplier of the base lr at a global step: linear warm-up, then constant / step decay / cosine."""
    epoch_f = step / steps_per_epoch
    warm = spec.warmup_epochs
    if warm > 0 and epoch_f < warm:
        return (step + 1) / (warm * steps_per_epoch)
    if spec.name == "step":
        return spec.gamma ** int(epoch_f // spec.step_epochs)
    if spec.name == "cosine":
        span = max(epochs - warm, 1e-9)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (epoch_f - warm) / span)))
    if spec.name == "poly":
        return (1.0 - int(epoch_f) / epochs) ** spec.power
    return 1.0  # constant; plateau scales this by its own state (see train)


def _rng_snapshot() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _rng_restore(state: dict[str, torch.Tensor]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


_better = val_better  # kept for callers of the old name


def _plateau_step(state: dict, improved: bool, recipe, base_lr: float) -> bool:
    """Update the plateau state after a validation; True when training should stop."""
    if improved:
        state["bad_epochs"] = 0
        return False
    state["bad_epochs"] += 1
    if state["bad_epochs"] >= recipe.schedule.patience:
        state["scale"] *= recipe.schedule.gamma
        state["bad_epochs"] = 0
    return base_lr * state["scale"] < recipe.schedule.min_lr


def _cache(model, det, cfg, weights, spec: RunSpec, train_set, val_set, train_view, eval_view, device, progress,
           align: Alignment | None = None):
    """Backbone features of the training (epoch-0 view) and validation samples, from or into the disk cache."""
    common = dict(detector=spec.detector, model=cfg.model_dump(mode="json"), weights=weights.describe(),
                  seed=spec.seed)
    if align is not None and align.quality is not None:  # (absent when off: existing cache entries stay valid)
        common["align"] = align.label
    cache_dir = feature_cache_dir(spec.detector)
    kwargs = dict(seed=spec.seed, batch_size=spec.recipe.eval.batch_size, num_workers=spec.profile.loader.eval_workers,
                  device=device, amp=spec.profile.amp, max_pixels=spec.profile.data.max_image_pixels,
                  progress=progress)
    train_feats, n_new = cached_features(model, train_set, train_view, cache_dir,
                                         preprocessing_key(view="train", hflip=spec.recipe.train.hflip, **common),
                                         **kwargs)
    val_feats, v_new = cached_features(model, val_set, eval_view, cache_dir, preprocessing_key(view="eval", **common),
                                       **kwargs)
    log.info("feature cache: %d train + %d validation features computed, %d + %d reused",
             n_new, v_new, len(train_feats) - n_new, len(val_feats) - v_new)
    return train_feats, val_feats


def _validate(model: Detector, samples, loader, spec: RunSpec, device) -> dict:
    """Metrics on the validation slice, read through `loader` (an `inference_loader` kept for every epoch)."""
    res = infer(model, loader, len(samples), device=device, amp=spec.profile.amp)
    for s in res.skipped:
        log.warning("skipped %s: %s", s["path"], s["detail"])
    res.check(spec.profile.data.max_skip_fraction, "validation")  # never select a model on a shrunken slice
    keep = res.kept
    labels = np.array([s.label for s in samples])[keep]
    logits = res.logits[keep]
    m = binary_metrics(labels, logits)
    loss = float(torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(labels).double()
    ))
    return {"acc": m["acc"], "ap": m["ap"], "auc": m["auc"], "loss": loss, "n": m["n"], "skipped": len(res.skipped)}


def _test_metrics(model: Detector, samples, loader, spec: RunSpec, device) -> dict:
    """Per-generator and Mean metrics on the test generators (``select_on: test`` only), as the clean evaluation
    computes them. The global RNG is restored afterwards: a DataLoader draws its base seed from it, and the
    training that follows (dropout) must not depend on whether the test set was evaluated, so that a
    ``select_on: test`` run follows the trajectory of the ``select_on: val`` run exactly."""
    with torch.random.fork_rng(devices=[]):
        res = infer(model, loader, len(samples), device=device, amp=spec.profile.amp)
    res.check(spec.profile.data.max_skip_fraction, "test-set selection")
    keep = res.kept
    preds = pd.DataFrame({"generator": [s.generator for s, k in zip(samples, keep) if k],
                          "label": [s.label for s, k in zip(samples, keep) if k], "fake_logit": res.logits[keep]})
    return summarize_predictions(preds, spec.profile.data.test_generators)


def _aligned(view, align: Alignment):
    """`view` applied to the aligned image (the alignment travels inside the view: loaders, caches, workers)."""
    fn = align.function()
    if fn is None:
        return view
    return lambda img, rng: view(fn(img), rng)


# ---- resume ----------------------------------------------------------------------------------------------------


@dataclass
class _State:
    """Everything ``last.safetensors`` carries besides the tensors: where training is and what it has seen."""

    epoch: int = 0
    step: int = 0  # optimiser steps done in `epoch`
    history: list = field(default_factory=list)
    selection: Selection = field(default_factory=Selection)
    plateau: dict = field(default_factory=lambda: {"scale": 1.0, "bad_epochs": 0})  # plateau schedule state
    skips: Counter = field(default_factory=Counter)
    seen: int = 0
    epoch_losses: list = field(default_factory=list)  # losses of the interrupted epoch's finished steps

    def meta(self, epoch: int, step: int, losses: list[float]) -> dict:
        sel = self.selection
        return {"position": {"epoch": epoch, "step": step}, "best_val": sel.selected_val, "best_epoch": sel.epoch,
                "history": self.history, "skipped": dict(self.skips), "seen": self.seen, "plateau": self.plateau,
                "epoch_losses": list(losses) if step else [], "selection": sel.state()}


def _resume(last: Path, model, optimizer, phash: str, epochs: int, selection: Selection, detector: str) -> _State:
    """The state to continue from: `last`'s when it is an unfinished run of this protocol, else a fresh one."""
    state = _State(selection=selection)
    if not last.is_file():
        return state
    try:
        tensors, meta = load_checkpoint(last)
    except Exception as err:  # an unreadable checkpoint is not worth dying for: start over, loudly
        log.warning("cannot resume from %s (%s); training from scratch", last, err)
        return state
    if meta.get("position", {}).get("epoch", 0) >= epochs:
        # A complete run is never reused: being asked to train again means something outside the protocol
        # changed (code, data, a DVC dependency), so its weights may be stale.
        log.info("%s holds a finished run; training again from scratch", last)
        return state
    if meta.get("protocol_hash") != phash:
        log.warning("%s belongs to another protocol (hash %s != %s); training from scratch",
                    last, meta.get("protocol_hash"), phash)
        return state
    model.load_state_dict(model_state(tensors))
    optimizer.load_state_dict(optimizer_state(tensors, meta))
    _rng_restore(rng_state(tensors))
    if "selection" in meta:
        selection = Selection.from_state(meta["selection"])
    else:  # a checkpoint written before select_on existed: validation selection
        selection.val_best = selection.selected_val = meta.get("best_val")
        selection.val_epoch = meta.get("best_epoch", -1)
    state = _State(meta["position"]["epoch"], meta["position"]["step"], meta.get("history", []), selection,
                   meta.get("plateau", state.plateau), Counter(meta.get("skipped", {})), meta.get("seen", 0),
                   list(meta.get("epoch_losses", [])))
    log.info("resuming %s at epoch %d step %d", detector, state.epoch, state.step)
    return state


# ---- optimisation steps ----------------------------------------------------------------------------------------


@dataclass
class _Steps:
    """One epoch's optimisation: `plan.accumulate` forward/backward passes per optimiser step (see engine.batching);
    with one pass per step, exactly the plain loop (no loss weighting)."""

    model: Detector
    forward: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: object
    plan: BatchPlan
    steps_per_epoch: int  # optimiser steps
    passes_per_epoch: int
    n_epoch: int  # images one epoch visits (all processes)
    spec: RunSpec
    device: torch.device
    channels_last: bool
    base_lrs: list[float]
    progress: Progress | None = None

    def pass_sizes(self) -> list[int]:
        b = self.plan.pass_batch
        return [min(b, self.n_epoch - i * b) for i in range(self.passes_per_epoch)]

    def run(self, epoch: int, first: int, state: _State, on_step) -> list[float]:
        """Steps `first`.. of `epoch` (the loader is positioned at step `first`); ``on_step(step, global_step,
        losses)`` after each optimiser step. Returns the losses of the epoch's steps."""
        recipe, k = self.spec.recipe, self.plan.accumulate
        epochs, total = recipe.train.epochs, recipe.train.epochs * self.steps_per_epoch
        sizes = self.pass_sizes() if k > 1 else []
        losses = list(state.epoch_losses) if first else []
        step, j, weights, step_loss, stepped = first, 0, [1.0], 0.0, False
        n_passes = self.passes_per_epoch
        for i, batch in enumerate(self.loader):
            for s in batch.skipped:
                state.skips[s["skip"]] += 1
                log.warning("skipped %s: %s", s["path"], s["detail"])
            global_step = epoch * self.steps_per_epoch + step
            if j == 0:  # the step's first pass
                factor = lr_factor(global_step, self.steps_per_epoch, epochs, recipe.schedule) * state.plateau["scale"]
                for g, base in zip(self.optimizer.param_groups, self.base_lrs):
                    g["lr"] = base * factor
                if k > 1:
                    weights = step_weights(step, k, sizes)
                    self.optimizer.zero_grad(set_to_none=True)
                step_loss, stepped = 0.0, False
            last_pass = j == len(weights) - 1 or first * k + i == n_passes - 1
            if len(batch):
                views = to_device(batch.views, self.device, self.channels_last)
                labels = batch.labels.to(self.device)
                sync = nullcontext() if last_pass or not hasattr(self.forward, "no_sync") else self.forward.no_sync()
                with sync:
                    with autocast(self.device, self.spec.profile.amp):
                        outputs = self.forward(views)
                    loss = self.model.train_loss(outputs, labels)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite training loss at epoch {epoch} step {step}")
                    if k == 1:
                        self.optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                    else:
                        (loss * weights[j]).backward()
                step_loss += float(loss.detach()) * weights[j] if k > 1 else float(loss.detach())
                stepped = True
            if not last_pass:
                j += 1
                continue
            if stepped:
                if recipe.train.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.trainable_parameters(), recipe.train.grad_clip)
                self.optimizer.step()
                losses.append(step_loss)
            j = 0
            step += 1
            if self.progress:
                self.progress(f"train {self.spec.detector}", global_step + 1, total)
            on_step(step, global_step, losses)
        return losses


# ---- validation and selection ----------------------------------------------------------------------------------


@dataclass
class _Evaluator:
    """After each epoch: validation metrics and, with ``select_on: test``, test metrics (rank 0 only)."""

    model: Detector
    spec: RunSpec
    device: torch.device
    val_set: list
    val_loader: object | None
    test_set: list
    test_loader: object | None

    def epoch_metrics(self) -> tuple[dict | None, dict | None]:
        val = _validate(self.model, self.val_set, self.val_loader, self.spec, self.device) \
            if self.val_loader is not None else None
        test = _test_metrics(self.model, self.test_set, self.test_loader, self.spec, self.device) \
            if self.test_loader is not None else None
        return val, test


def _record(epoch: int, losses: list[float], lr: float, val: dict | None, test: dict | None) -> dict:
    record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None, "lr": lr,
              **({f"val_{k}": v for k, v in val.items()} if val else {})}
    if test is not None:
        record["test_mean_acc"] = test["mean"]["acc"]
        record["test"] = test
    return record


def _loggable(record: dict) -> dict[str, float]:
    """The MLflow metrics of an epoch record (the test block flattened: test.mean.acc, test.<generator>.acc)."""
    out = {k: v for k, v in record.items() if k not in ("epoch", "test") and isinstance(v, (int, float))}
    test = record.get("test")
    if test:
        out.update({f"test.mean.{k}": v for k, v in test["mean"].items() if isinstance(v, (int, float))})
        out.update({f"test.{g}.{k}": v for g, m in test["generators"].items() for k, v in m.items()
                    if k in ("acc", "ap", "auc") and isinstance(v, (int, float))})
    return out


# ---- the run ---------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What one training is made of, built once by `_build_run`: the detector, its data, model and batch plan."""

    spec: RunSpec
    out_dir: Path
    det: object
    cfg: object
    weights: object
    device: torch.device
    dinfo: object
    channels_last: bool
    plan: BatchPlan
    train_set: list
    val_set: list
    test_set: list
    align: Alignment
    model: Detector
    optimizer: torch.optim.Optimizer
    forward: torch.nn.Module
    passes_per_epoch: int
    steps_per_epoch: int
    n_epoch: int  # images one epoch visits
    train_view: object
    eval_view: object
    meta_base: dict

    @property
    def step_images(self) -> int:
        """Images of one full optimiser step."""
        return self.plan.accumulate * self.plan.pass_batch


def _device(spec: RunSpec):
    """(device, distributed info): this process's device, under torchrun its local rank's GPU."""
    device = pick_device(spec.profile.device)
    dinfo = init_distributed(device.type)
    if dinfo.enabled and device.type == "cuda":
        device = torch.device("cuda", dinfo.local_rank)
        torch.cuda.set_device(device)
    return device, dinfo


def _samples(spec: RunSpec, cfg) -> tuple[list, list, list]:
    """Training, validation and (``select_on: test``) test samples, with diffusion reconstructions where the
    detector reads them (DIRE: instead of the image; DRCT: added to training)."""
    data, recipe = spec.profile.data, spec.recipe
    root = data_root(spec.profile_name, data)
    train_set, val_set = training_samples(root, data)
    test_set = evaluation_samples(root, data) if recipe.train.select_on == "test" else []
    train_set, val_set, test_set = (recon_samples(spec.detector, cfg, s, role, spec.profile_name)
                                    for s, role in ((train_set, "train"), (val_set, "val"), (test_set, "test")))
    log.info("train %s: %d training, %d validation images%s", spec.detector, len(train_set), len(val_set),
             f", {len(test_set)} test images (select_on: test)" if test_set else "")
    return train_set, val_set, test_set


def _build_run(spec: RunSpec, out_dir: Path) -> _Run:
    """Device, samples, alignment, model (seeded), optimiser, the compiled/distributed forward and the epoch
    geometry of `spec`."""
    recipe = spec.recipe
    det = get_detector(spec.detector)
    cfg = det.config_for(spec)
    weights = parse_pretrained(recipe.pretrained, det.default_weights)
    device, dinfo = _device(spec)
    channels_last = spec.profile.channels_last and device.type == "cuda"
    plan = plan_batches(recipe.train, recipe.optim, dinfo.world)
    train_set, val_set, test_set = _samples(spec, cfg)
    align = resolve_alignment(recipe.train.align, [s.path for s in (*train_set, *val_set) if s.label == 0])

    torch.manual_seed(spec.seed)
    model = det.build(cfg, weights).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.trainable_parameters(), recipe.optim)
    forward: torch.nn.Module = _TrainForward(model)
    if dinfo.enabled:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    if spec.profile.compile:
        forward = torch.compile(forward)
    passes_per_epoch = math.ceil(len(train_set) / plan.pass_batch)
    steps_per_epoch = math.ceil(passes_per_epoch / plan.accumulate)
    if recipe.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, recipe.train.max_steps_per_epoch)
    passes_per_epoch = min(passes_per_epoch, steps_per_epoch * plan.accumulate)
    meta_base = {
        "detector": spec.detector,
        "model_config": cfg.model_dump(mode="json"),
        "weights": {"kind": weights.kind, "ref": weights.ref, "sha256": weights.sha256},
        "protocol_hash": spec.training_hash(),
        "profile": spec.profile_name,
        "seed": spec.seed,
        **({"select_on": "test"} if recipe.train.select_on == "test" else {}),
    }
    return _Run(spec, out_dir, det, cfg, weights, device, dinfo, channels_last, plan, train_set, val_set, test_set,
                align, model, optimizer, forward, passes_per_epoch, steps_per_epoch,
                min(len(train_set), passes_per_epoch * plan.pass_batch),
                _aligned(det.views(cfg, True, recipe.train.hflip), align),
                _aligned(det.views(cfg, False, False), align),
                meta_base)


def _loaders(run: _Run, state: _State, progress: Progress | None) -> tuple[EpochSampler, object, _Evaluator]:
    """The training loader (with its epoch sampler) and the per-epoch evaluator, built once so that (persistent)
    workers start once for all epochs; a frozen backbone's features come from the disk cache."""
    spec, recipe, data, plan, dinfo = run.spec, run.spec.recipe, run.spec.profile.data, run.plan, run.dinfo
    train_feats: dict | None = None
    val_feats: dict | None = None
    if recipe.train.feature_cache:
        if not run.model.frozen_features:
            raise ProtocolError(f"train.feature_cache: {spec.detector} has no frozen backbone (frozen_features is "
                                "False); set train.feature_cache: false")
        train_feats, val_feats = _cache(run.model, run.det, run.cfg, run.weights, spec, run.train_set, run.val_set,
                                        run.train_view, run.eval_view, run.device, progress, run.align)

    def rank_order(epoch: int) -> np.ndarray:
        """This rank's share of the epoch's order, cut after the epoch's last pass (no batch prepared in vain)."""
        order, _ = shard_order(epoch_order(len(run.train_set), spec.seed, epoch, shuffle=True), plan.pass_batch, dinfo)
        return order[: run.passes_per_epoch * plan.rank_batch]

    sampler = EpochSampler(rank_order, state.epoch)
    dataset = ViewDataset(run.train_set, run.train_view, seed=spec.seed, max_pixels=data.max_image_pixels,
                          features=train_feats)
    loader = make_loader(dataset, plan.rank_batch, spec.profile.loader.train_workers, run.device, sampler,
                         settings=spec.profile.loader)

    def eval_loader(samples, view, features=None):
        return inference_loader(
            samples, view, seed=spec.seed, batch_size=recipe.eval.batch_size, num_workers=spec.profile.loader.eval_workers,
            device=run.device, max_pixels=data.max_image_pixels, features=features,
            bucket_by_size=recipe.eval.bucket_by_size, loader_settings=spec.profile.loader,
        )

    evaluator = _Evaluator(
        run.model, spec, run.device, run.val_set,
        eval_loader(run.val_set, run.eval_view, val_feats) if run.val_set and dinfo.is_main else None,
        # the test pass sees the test images as the clean evaluation does (no training alignment)
        run.test_set,
        eval_loader(run.test_set, run.det.views(run.cfg, False, False)) if run.test_set and dinfo.is_main else None,
    )
    return sampler, loader, evaluator


def _save_last(run: _Run, state: _State, epoch: int, step: int, losses: list[float]) -> None:
    if run.dinfo.is_main:
        meta = {**run.meta_base, **state.meta(epoch, step, losses)}
        # a mid-epoch checkpoint counts the images of its finished steps (the epoch's end adds the rest): a run
        # resumed there records the same `seen` as an uninterrupted one
        meta["seen"] = state.seen + step * run.step_images
        save_checkpoint(run.out_dir / "last.safetensors", run.model, meta, optimizer=run.optimizer,
                        rng_state=_rng_snapshot())


def _end_epoch(run: _Run, state: _State, epoch: int, losses: list[float], evaluator: _Evaluator, tracker,
               base_lr: float) -> bool:
    """Validation (and test) metrics, the epoch record, checkpoint selection and ``last``; True to stop early
    (plateau schedule)."""
    recipe, dinfo = run.spec.recipe, run.dinfo
    val, test = evaluator.epoch_metrics()
    record = _record(epoch, losses, run.optimizer.param_groups[0]["lr"], val, test)
    state.history.append(record)
    if tracker is not None and dinfo.is_main:
        tracker.log_metrics(_loggable(record), step=epoch)
    val_improved = broadcast_flag(val is None or val_better(val, state.selection.val_best,
                                                            recipe.train.select_metric), dinfo)
    keep, _ = state.selection.update(epoch, val, test["mean"]["acc"] if test else None, val_improved)
    if broadcast_flag(keep, dinfo) and dinfo.is_main:
        save_checkpoint(run.out_dir / "best.safetensors", run.model, {**run.meta_base, "epoch": epoch, "val": val,
                                                                      **({"test_mean_acc": test["mean"]["acc"]}
                                                                         if test else {})})
    stop = recipe.schedule.name == "plateau" and _plateau_step(state.plateau, val_improved, recipe, base_lr)
    _save_last(run, state, recipe.train.epochs if stop else epoch + 1, 0, losses)
    log.info("epoch %d/%d: %s", epoch + 1, recipe.train.epochs, "  ".join(
        f"{k} {v:.4g}" for k, v in record.items() if k != "epoch" and isinstance(v, float)))
    if stop:
        log.info("plateau schedule: lr below %g after epoch %d, stopping", recipe.schedule.min_lr, epoch + 1)
    return stop


def _fit(run: _Run, state: _State, progress: Progress | None, tracker) -> None:
    """The epochs from `state`'s position to the recipe's last (or an early plateau stop)."""
    recipe, plan = run.spec.recipe, run.plan
    sampler, loader, evaluator = _loaders(run, state, progress)
    # the recipe's lr (scaled by the batch plan), not the optimiser's: a resumed optimiser state holds the
    # scheduled lr of its last step
    base_lrs = [plan.lr] * len(run.optimizer.param_groups)
    steps = _Steps(run.model, run.forward, run.optimizer, loader, plan, run.steps_per_epoch, run.passes_per_epoch,
                   run.n_epoch, run.spec, run.device, run.channels_last, base_lrs, progress)
    every = recipe.train.checkpoint_every_steps
    for epoch in range(state.epoch, recipe.train.epochs):
        run.model.train()
        first = state.step if epoch == state.epoch else 0
        sampler.set_epoch(epoch, first * plan.accumulate * plan.rank_batch)

        def on_step(step: int, global_step: int, losses: list[float], epoch: int = epoch) -> None:
            if every and (global_step + 1) % every == 0 and step < run.steps_per_epoch:
                _save_last(run, state, epoch, step, losses)

        losses = steps.run(epoch, first, state, on_step)
        state.step, state.epoch_losses = 0, []
        state.seen += run.n_epoch - first * run.step_images
        check_skips(state.seen, state.skips, run.spec.profile.data.max_skip_fraction, "training")
        if _end_epoch(run, state, epoch, losses, evaluator, tracker, base_lrs[0]):
            break


def _summary(run: _Run, state: _State) -> dict:
    """``train.json``: what was trained, on what, and each epoch's record (no wall-clock time: `timing_path`)."""
    spec, recipe, sel = run.spec, run.spec.recipe, state.selection
    summary = {
        "detector": spec.detector, "profile": spec.profile_name, "protocol_hash": run.meta_base["protocol_hash"],
        "weights": run.weights.describe(), "pretrained": run.weights.pretrained,
        "n_train": len(run.train_set), "n_val": len(run.val_set), "epochs": recipe.train.epochs,
        "steps_per_epoch": run.steps_per_epoch, "best_epoch": sel.epoch, "best_val": sel.selected_val,
        "history": state.history, "skipped": {"count": sum(state.skips.values()), "by_reason": dict(state.skips)},
        "device": str(run.device), "processes": run.dinfo.world,
    }
    if run.plan.accumulate > 1 or recipe.optim.lr_scale != "none" or recipe.train.global_batch is not None:
        summary["batch"] = run.plan.record()
    if run.align.quality is not None:
        summary["align"] = run.align.describe()
    if recipe.train.select_on == "test":
        summary.update({"seed": spec.seed, "select_on": "test", "select_metric": recipe.train.select_metric,
                        "n_test": len(run.test_set), "val_best_epoch": sel.val_epoch})
    return summary


def train(
    spec: RunSpec,
    out_dir: Path,
    *,
    tracker=None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train `spec.detector` under `spec`; write best/last checkpoints and ``train.json`` into `out_dir`."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recipe = spec.recipe
    run = _build_run(spec, out_dir)
    main = run.dinfo.is_main
    if tracker is not None and main:
        tracker.log_params({f"derived.{k}": v for k, v in {**run.plan.record(), "align": run.align.label,
                                                            "align_source": run.align.source}.items()})
    state = _resume(out_dir / "last.safetensors", run.model, run.optimizer, run.meta_base["protocol_hash"],
                    recipe.train.epochs, Selection(on=recipe.train.select_on, metric=recipe.train.select_metric),
                    spec.detector)
    _fit(run, state, progress, tracker)
    seconds = time.perf_counter() - started
    summary = _summary(run, state)
    if main:
        write_json(out_dir / "train.json", summary)
        write_json(timing_path(out_dir), {"seconds": round(seconds, 2), "device": str(run.device)})
    if tracker is not None and main:  # skip events summed over epochs (each epoch decodes again)
        skips = state.skips
        tracker.log_metrics({"skipped": sum(skips.values()), "train_seconds": round(seconds, 2),
                             **{f"skipped.{r}": n for r, n in skips.items()}})
        tracker.set_tags({"sep_bench.skipped": sum(skips.values()),
                          "sep_bench.skip_reasons": ",".join(f"{r}={n}" for r, n in sorted(skips.items())) or "none",
                          "sep_bench.select_on": recipe.train.select_on})
    if run.dinfo.enabled:
        torch.distributed.barrier()
    sel = state.selection
    return TrainResult(out_dir / "best.safetensors", sel.epoch, sel.selected_val or {}, recipe.train.epochs, seconds,
                       summary["skipped"])
