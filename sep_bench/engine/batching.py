"""Global batch, gradient accumulation and learning-rate scaling: one plan per training run.

Official recipes fix a *global* batch on a number of GPUs (AIDE: 32 per GPU x 8 GPUs = 256). To run them on
fewer GPUs with the same effective batch and learning rate, an optimiser step accumulates gradients over
several forward/backward passes:

- without ``train.global_batch``: a pass holds ``train.batch_size`` images summed over processes (under DDP each
  of W processes holds batch_size / W, so the effective batch does not depend on W) and ``train.accumulate``
  passes make one step: effective batch = batch_size x accumulate;
- with ``train.global_batch``: ``train.batch_size`` is per process, and accumulate = global_batch /
  (batch_size x W) (it must divide exactly): 8 GPUs x 32 run 1 pass per step, 1 GPU x 32 runs 8.

Passes of one step are consecutive chunks of the epoch's order, so a step of k passes sees exactly the images of
one k-times-larger batch; each pass's loss (a mean over its images) is weighted by its planned share of the
step's images, so the accumulated gradient is the larger batch's mean-loss gradient (exactly, up to float
rounding, for losses that are means over images). Caveat: BatchNorm normalises each pass with that pass's own
statistics (and updates its running statistics once per pass), so a detector with BatchNorm in training mode is
close to, not equal to, the larger batch, as under DDP without SyncBatchNorm.

Learning-rate scaling (``optim.lr_scale``): recipes that scale the lr with the batch (AIDE, SAFE:
lr = blr x batch / 256) give the base lr as ``optim.lr`` and ``lr_scale: linear`` (``sqrt``: square-root
scaling); the lr is computed here, once, from the effective batch, and recorded (train.json, MLflow).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from sep_bench.protocol import OptimSpec, ProtocolError, TrainSpec

__all__ = ["BatchPlan", "plan_batches", "scaled_lr", "step_weights"]


@dataclass(frozen=True)
class BatchPlan:
    pass_batch: int  # images per forward/backward pass, summed over processes
    rank_batch: int  # images per pass on one process
    accumulate: int  # passes per optimiser step
    effective_batch: int  # images per optimiser step (all processes, all passes)
    lr: float  # the optimiser's base lr after lr_scale
    lr_rule: str  # how `lr` was obtained, e.g. "1e-3 x 256/256 (linear)"

    def record(self) -> dict:
        return asdict(self)


def scaled_lr(optim: OptimSpec, effective_batch: int) -> tuple[float, str]:
    """(lr, rule) of the recipe at `effective_batch`: `optim.lr` scaled by `optim.lr_scale`."""
    if optim.lr_scale == "none":
        return optim.lr, f"{optim.lr:g} (no scaling)"
    ratio = effective_batch / optim.lr_base_batch
    factor = ratio if optim.lr_scale == "linear" else math.sqrt(ratio)
    rule = (f"{optim.lr:g} x {effective_batch}/{optim.lr_base_batch}" if optim.lr_scale == "linear"
            else f"{optim.lr:g} x sqrt({effective_batch}/{optim.lr_base_batch})")
    return optim.lr * factor, f"{rule} ({optim.lr_scale})"


def plan_batches(train: TrainSpec, optim: OptimSpec, world: int = 1) -> BatchPlan:
    """The batch plan of a run on `world` processes (see the module docstring)."""
    if train.global_batch is None:
        pass_batch, accumulate = train.batch_size, train.accumulate
        if pass_batch % world:
            raise ProtocolError(f"train.batch_size {pass_batch} is not divisible by the {world} processes "
                                "(without train.global_batch, batch_size is summed over processes)")
    else:
        pass_batch = train.batch_size * world
        if train.global_batch % pass_batch:
            raise ProtocolError(
                f"train.global_batch {train.global_batch} is not a multiple of train.batch_size {train.batch_size} "
                f"x {world} process{'es' if world > 1 else ''}: choose a batch_size that divides "
                f"{train.global_batch // world if train.global_batch % world == 0 else train.global_batch}")
        accumulate = train.global_batch // pass_batch
    effective = pass_batch * accumulate
    lr, rule = scaled_lr(optim, effective)
    return BatchPlan(pass_batch, pass_batch // world, accumulate, effective, lr, rule)


def step_weights(step: int, accumulate: int, pass_sizes: list[int]) -> list[float]:
    """Weights of the passes of optimiser step `step`: each pass's planned image count over the step's.

    `pass_sizes` are the epoch's planned pass sizes (summed over processes); the step holds passes
    ``step * accumulate`` .. ``(step + 1) * accumulate - 1`` (fewer at the end of an epoch).
    """
    sizes = pass_sizes[step * accumulate : (step + 1) * accumulate]
    total = sum(sizes)
    return [n / total for n in sizes]
