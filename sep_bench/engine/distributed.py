"""Multi-process training under ``torchrun`` (DDP): process group, sharded batches, rank-0-only side effects.

Each global batch (the recipe's batch size, in the same deterministic order as a single process) is split
across ranks, so one step of N processes sees the same images as one step of a single process and DDP averages
the gradients over them. BatchNorm statistics are per rank (no SyncBatchNorm on CPU), so results match the
single-process run within a tolerance, not bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "shard_order", "broadcast_flag"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def shard_order(order: np.ndarray, batch_size: int, info: DistInfo) -> tuple[np.ndarray, int]:
    """This rank's visiting order and per-rank batch size: rank r takes every world-th image of each global batch.

    A short last batch is padded by repeating its own images up to a multiple of the world size, so every rank
    runs the same number of steps (a rank with one step fewer would hang the others).
    """
    if not info.enabled:
        return order, batch_size
    if batch_size % info.world:
        raise ValueError(f"train.batch_size {batch_size} is not divisible by the {info.world} processes")
    parts = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        if len(batch) % info.world:
            batch = np.resize(batch, len(batch) + info.world - len(batch) % info.world)
        parts.append(batch[info.rank :: info.world])
    return (np.concatenate(parts) if parts else order[:0]), batch_size // info.world


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's decision, on every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return bool(t.item())
