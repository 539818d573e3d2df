"""This machine's CPU, read once: model name and instruction-set flags (Linux /proc/cpuinfo; empty elsewhere), and
the cores this process may use.

Used where results or speed depend on the CPU: the deterministic switch (engine.determinism), numba's compile
target (layers.eps) and the reproduced-vs-committed record (report.reproduced)."""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

__all__ = ["cpu_model", "cpu_vendor", "cpu_flags", "usable_cores"]


@cache
def _cpuinfo() -> tuple[str, str, frozenset[str]]:
    model, vendor, flags = "", "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("vendor_id", "CPU implementer") and not vendor:  # x86 / ARM
                vendor = value.strip()
            elif key in ("flags", "Features"):  # x86 / ARM
                flags |= set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), vendor, frozenset(flags)


def cpu_model() -> str:
    return _cpuinfo()[0]


def cpu_vendor() -> str:
    """``AuthenticAMD``, ``GenuineIntel``, an ARM implementer code, or "" where /proc/cpuinfo does not say."""
    return _cpuinfo()[1]


def cpu_flags() -> frozenset[str]:
    return _cpuinfo()[2]


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask on Linux, else every core the OS reports)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
