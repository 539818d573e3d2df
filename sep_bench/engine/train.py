"""Training: seeded, resumable, with model selection on the held-out validation slice (never on test data).

Per epoch: the visiting order and every sample's augmentation are pure functions of (seed, epoch, index), so a
run that is interrupted and resumed from ``last.safetensors`` (model, optimiser, RNG, position) ends with the
same weights as an uninterrupted run on CPU. ``last`` is written at the end of every epoch (and every
``checkpoint_every_steps``); ``best`` whenever the validation metric improves. A checkpoint from a different
protocol (hash mismatch) is never resumed, and neither is a finished run (being asked to train it again means
code or data changed): training starts over and says so.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from sep_bench.data.dataset import EpochSampler, ViewDataset, epoch_order
from sep_bench.data.splits import training_samples
from sep_bench.detectors import Detector, get_detector
from sep_bench.engine.checkpoint import load_checkpoint, model_state, optimizer_state, rng_state, save_checkpoint
from sep_bench.engine.distributed import broadcast_flag, init_distributed, shard_order
from sep_bench.engine.feature_cache import cached_features, preprocessing_key
from sep_bench.engine.inference import check_skips, infer, inference_loader
from sep_bench.engine.metrics import binary_metrics
from sep_bench.engine.runtime import autocast, make_loader, pick_device, to_device
from sep_bench.io import write_json
from sep_bench.paths import data_root
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


def _better(new: dict, old: dict | None, metric: str) -> bool:
    if old is None:
        return True
    if metric == "loss":
        return new["loss"] < old["loss"]
    a, b = new.get(metric), old.get(metric)
    if a is None or b is None:
        return new["loss"] < old["loss"]
    return a > b or (a == b and new["loss"] < old["loss"])


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


def _cache(model, det, cfg, weights, spec: RunSpec, train_set, val_set, train_view, eval_view, device, progress):
    """Backbone features of the training (epoch-0 view) and validation samples, from or into the disk cache."""
    common = dict(detector=spec.detector, model=cfg.model_dump(mode="json"), weights=weights.describe(),
                  seed=spec.seed)
    cache_dir = Path("runs") / ".feature_cache" / spec.detector
    kwargs = dict(seed=spec.seed, batch_size=spec.recipe.eval.batch_size, num_workers=spec.recipe.eval.num_workers,
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
    recipe, data = spec.recipe, spec.profile.data
    det = get_detector(spec.detector)
    cfg = det.make_config(recipe.model)
    weights = parse_pretrained(recipe.pretrained, det.default_weights)
    device = pick_device(spec.profile.device)
    dinfo = init_distributed(device.type)
    if dinfo.enabled and device.type == "cuda":
        device = torch.device("cuda", dinfo.local_rank)
        torch.cuda.set_device(device)
    channels_last = spec.profile.channels_last and device.type == "cuda"

    train_set, val_set = training_samples(data_root(spec.profile_name, data), data)
    log.info("train %s: %d training, %d validation images", spec.detector, len(train_set), len(val_set))

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
    bs = recipe.train.batch_size
    steps_per_epoch = math.ceil(len(train_set) / bs)
    if recipe.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, recipe.train.max_steps_per_epoch)
    train_view = det.views(cfg, True, recipe.train.hflip)
    eval_view = det.views(cfg, False, False)
    phash = spec.training_hash()
    meta_base = {
        "detector": spec.detector,
        "model_config": cfg.model_dump(mode="json"),
        "weights": {"kind": weights.kind, "ref": weights.ref, "sha256": weights.sha256},
        "protocol_hash": phash,
        "profile": spec.profile_name,
        "seed": spec.seed,
    }

    # ---- resume --------------------------------------------------------------------------------------------
    start_epoch, start_step, best_val, best_epoch, history = 0, 0, None, -1, []
    plateau = {"scale": 1.0, "bad_epochs": 0}  # plateau schedule state (see ScheduleSpec)
    skips: Counter = Counter()
    seen = 0
    epoch_losses: list[float] = []  # losses of the interrupted epoch's finished steps (so train_loss is the same)
    last = out_dir / "last.safetensors"
    if last.is_file():
        try:
            tensors, meta = load_checkpoint(last)
        except Exception as err:  # an unreadable checkpoint is not worth dying for: start over, loudly
            log.warning("cannot resume from %s (%s); training from scratch", last, err)
            meta = None
        finished = meta is not None and meta.get("position", {}).get("epoch", 0) >= recipe.train.epochs
        if finished:
            # A complete run is never reused: being asked to train again means something outside the protocol
            # changed (code, data, a DVC dependency), so its weights may be stale.
            log.info("%s holds a finished run; training again from scratch", last)
            meta = None
        if meta is not None and meta.get("protocol_hash") == phash:
            model.load_state_dict(model_state(tensors))
            optimizer.load_state_dict(optimizer_state(tensors, meta))
            _rng_restore(rng_state(tensors))
            start_epoch, start_step = meta["position"]["epoch"], meta["position"]["step"]
            best_val, best_epoch, history = meta.get("best_val"), meta.get("best_epoch", -1), meta.get("history", [])
            skips = Counter(meta.get("skipped", {}))
            seen = meta.get("seen", 0)
            plateau = meta.get("plateau", plateau)
            epoch_losses = list(meta.get("epoch_losses", []))
            log.info("resuming %s at epoch %d step %d", spec.detector, start_epoch, start_step)
        elif meta is not None:
            log.warning("%s belongs to another protocol (hash %s != %s); training from scratch",
                        last, meta.get("protocol_hash"), phash)

    def save_last(epoch: int, step: int) -> None:
        if not dinfo.is_main:
            return
        save_checkpoint(last, model, {
            **meta_base, "position": {"epoch": epoch, "step": step}, "best_val": best_val,
            "best_epoch": best_epoch, "history": history, "skipped": dict(skips), "seen": seen, "plateau": plateau,
            "epoch_losses": list(losses) if step else [],
        }, optimizer=optimizer, rng_state=_rng_snapshot())

    # ---- frozen-backbone feature cache -----------------------------------------------------------------------
    train_feats: dict | None = None
    val_feats: dict | None = None
    if recipe.train.feature_cache:
        if not model.frozen_features:
            raise ProtocolError(f"train.feature_cache: {spec.detector} has no frozen backbone (frozen_features is "
                                "False); set train.feature_cache: false")
        train_feats, val_feats = _cache(model, det, cfg, weights, spec, train_set, val_set, train_view, eval_view,
                                        device, progress)

    # ---- loaders: built once, so (persistent) workers start once for all epochs ------------------------------
    rank_bs = bs // dinfo.world if dinfo.enabled else bs  # shard_order's per-rank batch size

    def rank_order(epoch: int) -> np.ndarray:
        """This rank's share of the epoch's order, cut after the epoch's last step (no batch prepared in vain)."""
        order, _ = shard_order(epoch_order(len(train_set), spec.seed, epoch, shuffle=True), bs, dinfo)
        return order[: steps_per_epoch * rank_bs]

    sampler = EpochSampler(rank_order, start_epoch)
    dataset = ViewDataset(train_set, train_view, seed=spec.seed, max_pixels=data.max_image_pixels,
                          features=train_feats)
    loader = make_loader(dataset, rank_bs, recipe.train.num_workers, device, sampler, settings=spec.profile.loader)
    val_loader = None
    if val_set and dinfo.is_main:
        val_loader = inference_loader(
            val_set, eval_view, seed=spec.seed, batch_size=recipe.eval.batch_size,
            num_workers=recipe.eval.num_workers, device=device, max_pixels=data.max_image_pixels, features=val_feats,
            bucket_by_size=recipe.eval.bucket_by_size, loader_settings=spec.profile.loader,
        )

    # ---- epochs --------------------------------------------------------------------------------------------
    # the recipe's lr, not the optimiser's: a resumed optimiser state holds the scheduled lr of its last step
    base_lrs = [recipe.optim.lr] * len(optimizer.param_groups)
    epochs = recipe.train.epochs
    total_steps = epochs * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        model.train()
        first = start_step if epoch == start_epoch else 0
        sampler.set_epoch(epoch, first * rank_bs)
        losses = list(epoch_losses) if first else []
        step = first
        for batch in loader:
            for s in batch.skipped:
                skips[s["skip"]] += 1
                log.warning("skipped %s: %s", s["path"], s["detail"])
            global_step = epoch * steps_per_epoch + step
            factor = lr_factor(global_step, steps_per_epoch, epochs, recipe.schedule) * plateau["scale"]
            for g, base in zip(optimizer.param_groups, base_lrs):
                g["lr"] = base * factor
            if len(batch):
                views = to_device(batch.views, device, channels_last)
                labels = batch.labels.to(device)
                with autocast(device, spec.profile.amp):
                    outputs = forward(views)
                loss = model.train_loss(outputs, labels)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite training loss at epoch {epoch} step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.train.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), recipe.train.grad_clip)
                optimizer.step()
                losses.append(float(loss.detach()))
            step += 1
            if progress:
                progress(f"train {spec.detector}", global_step + 1, total_steps)
            every = recipe.train.checkpoint_every_steps
            if every and (global_step + 1) % every == 0 and step < steps_per_epoch:
                save_last(epoch, step)
        start_step = 0
        seen += min(len(train_set), steps_per_epoch * bs) - first * bs
        check_skips(seen, skips, data.max_skip_fraction, "training")

        val = None
        if val_loader is not None:
            val = _validate(model, val_set, val_loader, spec, device)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                  "lr": optimizer.param_groups[0]["lr"], **({f"val_{k}": v for k, v in val.items()} if val else {})}
        history.append(record)
        if tracker is not None and dinfo.is_main:
            tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
        improved = broadcast_flag(val is None or _better(val, best_val, recipe.train.select_metric), dinfo)
        if improved:
            best_val, best_epoch = val, epoch
            if dinfo.is_main:
                save_checkpoint(out_dir / "best.safetensors", model, {**meta_base, "epoch": epoch, "val": val})
        stop = recipe.schedule.name == "plateau" and _plateau_step(plateau, improved, recipe, base_lrs[0])
        save_last(epochs if stop else epoch + 1, 0)
        log.info("epoch %d/%d: %s", epoch + 1, epochs, "  ".join(
            f"{k} {v:.4g}" for k, v in record.items() if k != "epoch" and isinstance(v, float)))
        if stop:
            log.info("plateau schedule: lr below %g after epoch %d, stopping", recipe.schedule.min_lr, epoch + 1)
            break

    seconds = time.perf_counter() - started
    summary = {
        "detector": spec.detector, "profile": spec.profile_name, "protocol_hash": phash,
        "weights": weights.describe(), "pretrained": weights.pretrained,
        "n_train": len(train_set), "n_val": len(val_set), "epochs": epochs, "steps_per_epoch": steps_per_epoch,
        "best_epoch": best_epoch, "best_val": best_val, "history": history,
        "skipped": {"count": sum(skips.values()), "by_reason": dict(skips)}, "seconds": round(seconds, 2),
        "device": str(device), "processes": dinfo.world,
    }
    if dinfo.is_main:
        write_json(out_dir / "train.json", summary)
    if tracker is not None and dinfo.is_main:  # skip events summed over epochs (each epoch decodes again)
        tracker.log_metrics({"skipped": sum(skips.values()), **{f"skipped.{r}": n for r, n in skips.items()}})
        tracker.set_tags({"sep_bench.skipped": sum(skips.values()),
                          "sep_bench.skip_reasons": ",".join(f"{r}={n}" for r, n in sorted(skips.items())) or "none"})
    if dinfo.enabled:
        torch.distributed.barrier()
    return TrainResult(out_dir / "best.safetensors", best_epoch, best_val or {}, epochs, seconds, summary["skipped"])
