"""CPU reproducibility across machines: the profile's ``deterministic`` and ``threads`` settings.

Float results on a CPU depend on which kernels run: oneDNN and MKL pick code paths per instruction set, ATen
dispatches its vectorised kernels (reductions, transcendental functions) per CPU capability (AVX-512, AVX2,
plain), and the intra-op thread count changes how reductions are split. ``deterministic: true``:

- sets ``MKL_CBWR=COMPATIBLE`` (MKL's conditional numerical reproducibility) and, on x86 CPUs with AVX2,
  ``ATEN_CPU_CAPABILITY=avx2`` (ATen's AVX2 kernels even on AVX-512 machines). Both are read when torch loads,
  so `apply_env` must run before ``import torch`` (the CLI does this right after reading params.yaml); a
  variable the user set is left alone;
- turns oneDNN off (``torch.backends.mkldnn.enabled = False``), so convolutions use ATen's own kernels;
- `threads` pins torch's intra-op thread count.

What it does not cover: ARM CPUs (no MKL, other kernels), other torch versions, GPUs. What it costs and what it
buys were measured on the mini profile (README, "Reproducibility").
"""

from __future__ import annotations

import logging
import os
import platform
import sys

from sep_bench.hostinfo import cpu_flags

__all__ = ["deterministic_env", "apply_env", "apply_torch"]

log = logging.getLogger(__name__)


def deterministic_env() -> dict[str, str]:
    """The environment variables `deterministic: true` sets (before torch loads)."""
    env = {"MKL_CBWR": "COMPATIBLE"}
    if platform.machine().lower() in ("x86_64", "amd64") and "avx2" in cpu_flags():
        env["ATEN_CPU_CAPABILITY"] = "avx2"
    return env


def apply_env(deterministic: bool) -> dict[str, str]:
    """Set `deterministic_env` (unless already set); warn when torch was imported before (too late)."""
    if not deterministic:
        return {}
    applied = {}
    for key, value in deterministic_env().items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    if applied and "torch" in sys.modules:
        log.warning("deterministic: torch was imported before %s were set; they take effect in new processes only",
                    ", ".join(applied))
    return applied


def apply_torch(deterministic: bool, threads: int | None) -> None:
    """oneDNN off (deterministic) and the intra-op thread count, in this process."""
    import torch

    if deterministic:
        torch.backends.mkldnn.enabled = False
    if threads:
        torch.set_num_threads(threads)
