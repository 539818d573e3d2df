"""Device, precision and data-loader settings shared by training, evaluation and prediction."""

from __future__ import annotations

import contextlib

import torch
from torch.utils.data import DataLoader, Sampler

from sep_bench.data.dataset import ViewDataset, collate

__all__ = ["pick_device", "autocast", "make_loader", "to_device"]


def pick_device(name: str = "auto") -> torch.device:
    """`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`; anything else is a protocol error."""
    from sep_bench.protocol import ProtocolError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ProtocolError(f"device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ProtocolError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProtocolError(f"device {name!r} requested but CUDA is not available here; set device: auto or cpu")
    return dev


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; a no-op on CPU (CPU runs stay in fp32 so they are bit-reproducible)."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def make_loader(
    dataset: ViewDataset,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    sampler: Sampler[int] | None = None,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def to_device(views: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    """Move a batch of views to `device` (pinned memory -> async copy), 4-D tensors channels-last on CUDA."""
    fmt = torch.channels_last if channels_last and device.type == "cuda" else torch.contiguous_format
    return {k: v.to(device, non_blocking=True, memory_format=fmt if v.dim() == 4 else torch.preserve_format)
            for k, v in views.items()}
