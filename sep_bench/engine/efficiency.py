"""The cost of a detector: parameters, forward FLOPs per image, evaluation throughput and peak memory.

- Parameters: total, and trainable as this harness trains the detector (`Detector.trainable_parameters`: e.g. only
  UnivFD's linear head).
- FLOPs: counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward of batch size 1 on the views of a
  real test image (so at the profile's input size, whatever the detector's preprocessing makes of it). The counter
  reports multiply-adds as 2 FLOPs for convolutions and matrix products (bias additions, activations, pooling
  and normalisation are not counted), so the figures compare with "GFLOPs" columns that count 2 x MACs.
- Throughput: images per second of the clean evaluation pass (decode + the detector's views + forward, the
  profile's batch size and workers), on the device named beside it.
- Peak memory: on CUDA, the peak of memory allocated by torch during the pass; on CPU, the evaluating process's
  peak resident set size (model, data and interpreter together), so CPU figures are upper bounds.
"""

from __future__ import annotations

import resource
import sys
from typing import Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["parameter_counts", "forward_flops", "peak_memory_mib", "reset_peak_memory"]


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"total": ..., "trainable": ...}``; trainable follows the model's own notion when it has one."""
    trainable_params = model.trainable_parameters() if hasattr(model, "trainable_parameters") else [
        p for p in model.parameters() if p.requires_grad]
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in trainable_params),
    }


@torch.no_grad()
def forward_flops(model: nn.Module, views: Mapping[str, torch.Tensor]) -> int:
    """FLOPs of ``model(views)`` (one forward, as given; add the batch dimension before calling)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(dict(views))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """(MiB, what was measured): CUDA peak allocated by torch, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_peak_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "cpu_peak_rss"
