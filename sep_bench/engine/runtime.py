"""Device, precision and data-loader settings shared by training, evaluation and prediction."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Sampler

from sep_bench.data.dataset import ViewDataset, collate
from sep_bench.protocol import LoaderSpec, ProtocolError

__all__ = ["pick_device", "autocast", "make_loader", "to_device"]


def pick_device(name: str = "auto") -> torch.device:
    """`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`; anything else is a protocol error."""
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
    sampler: Sampler | None = None,
    *,
    settings: LoaderSpec | None = None,
    batch_sampler: Sampler[list[int]] | None = None,
    collate_fn: Callable = collate,
) -> DataLoader:
    """The engine's DataLoader: `settings` (``profiles.<p>.loader``) pin, keep workers and prefetch.

    `batch_sampler` forms the batches itself (then `batch_size` and `sampler` are unused). Persistent workers
    pay off only when the returned loader is iterated again (training epochs, repeated validation).
    """
    settings = LoaderSpec() if settings is None else settings
    workers = num_workers > 0
    return DataLoader(
        dataset,
        batch_size=1 if batch_sampler is not None else batch_size,
        sampler=sampler,
        batch_sampler=batch_sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=settings.pin(device.type),
        persistent_workers=settings.persistent_workers and workers,
        prefetch_factor=settings.prefetch_factor if workers else None,
    )


def to_device(views: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    """Move a batch of views to `device` (pinned memory -> async copy), 4-D tensors channels-last on CUDA."""
    fmt = torch.channels_last if channels_last and device.type == "cuda" else torch.contiguous_format
    return {k: v.to(device, non_blocking=True, memory_format=fmt if v.dim() == 4 else torch.preserve_format)
            for k, v in views.items()}
