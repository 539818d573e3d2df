"""Where do two machines' trainings part? The bits of one training step, op by op, and a comparison of two probes.

    python benchmarks/determinism_probe.py [--detectors npr sep ...] [--deterministic profile|on|off]
                                           [--params params.yaml] [--profile mini] [--out FILE]
    python benchmarks/determinism_probe.py --compare A.json B.json

For every detector of the profile's run (default: all of ``run.detectors``; a detector without trainable
parameters is skipped and counted), the probe runs the engine's own training job (`sep_bench.engine.jobs.train`,
exactly what ``sep-bench train`` runs: the same model, data, views, optimiser, seed and settings) and stops it
after its first optimiser step. Global module and optimiser hooks (torch's public ones) record, in order, the
sha256 of:

- ``input``: the decoded batch the training forward receives, and the labels;
- ``forward``: every module's output, named by its path in the model (``#k``: its k-th call), in execution order;
- ``loss``: the training loss;
- ``grad``: the gradient of every module output, in backward order; ``param_grad``: every parameter's gradient
  just before the optimiser step;
- ``weights``: every tensor of the model's state after the step.

Each file is tagged with what decides the kernels: the CPU (model, vendor, family/model/stepping, cache size,
flags), library versions, ``torch.__config__.show()`` and ``parallel_info()``, the CPU capability ATen dispatches
to, threads, oneDNN/MKL state, the environment variables that steer dispatch, and what MKL and oneDNN report in
their verbose mode on a small convolution and matrix product (`dispatch_report`).

Set an instruction-set cap with the libraries' own variables on the command line (``ATEN_CPU_CAPABILITY=default``,
``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``); ``--deterministic on|off`` overrides the profile's
``deterministic`` switch (`sep_bench.engine.determinism`). Default output:
``results/benchmarks/determinism_probe/<cpu model>-<widest vector extension>.json``.

``--compare A.json B.json`` prints, per detector, the first op whose bits differ (inputs, forward outputs, loss,
gradients, parameter gradients, weights, in that order) or "identical", then the tags that differ; exit status 0
when every detector common to both is identical, 1 when one differs or is missing from one file, 2 on unreadable
input. Needs the prepared data of the profile (``sep-bench data prepare``; DIRE and DRCT also
``sep-bench reconstruct``). Runs from the repository root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "results/benchmarks/determinism_probe"
#: environment variables that choose kernels, instruction sets, reproducibility modes or thread counts
DISPATCH_ENV_PREFIXES = ("ATEN_", "MKL_", "ONEDNN_", "DNNL_", "OMP_", "KMP_", "GOMP_", "OPENBLAS_", "XNNPACK_",
                         "NNPACK_", "SEP_BENCH_WARM")
#: the op kinds of a probe, in the order a training step produces them
KINDS = ("input", "forward", "loss", "grad", "param_grad", "weights")
_CPUINFO_KEYS = ("vendor_id", "cpu family", "model", "model name", "stepping", "microcode", "cache size", "flags")


class StepDone(Exception):
    """Raised by the optimiser's post-step hook: the probed step is over, the training job stops there."""


# ---- what decides the kernels ----------------------------------------------------------------------------------


def cpuinfo() -> dict[str, Any]:
    """The first processor's identification in /proc/cpuinfo (flags sorted); {} where there is none."""
    out: dict[str, Any] = {}
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return out
    for line in block.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key in _CPUINFO_KEYS:
            out[key] = sorted(value.split()) if key == "flags" else value
    return out


def cpu_slug(model: str, flags: list[str] | tuple[str, ...] = ()) -> str:
    """A file name from a CPU model and its widest vector extension (virtual machines often name only the family):
    ``AMD EPYC 7R13 Processor`` with AVX2 -> ``amd-epyc-7r13-processor-avx2``."""
    isa = next((name for name, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("sse4", "sse4_2"))
                if flag in flags), "")
    return "-".join(p for p in (re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "unknown-cpu", isa) if p)


_DISPATCH_SCRIPT = """
import sys, torch
if sys.argv[1] == "1":
    torch.backends.mkldnn.enabled = False
torch.set_num_threads(int(sys.argv[2]))
x = torch.randn(8, 16, 32, 32, requires_grad=True)
w = torch.randn(32, 16, 3, 3, requires_grad=True)
torch.nn.functional.conv2d(x, w, padding=1).square().sum().backward()
a = torch.randn(256, 256)
(a @ a).sum()
torch.nn.functional.linear(torch.randn(64, 512), torch.randn(256, 512)).sum()
"""
#: what changes from run to run in MKL's verbose lines: timings, thread ids, buffer addresses
_VOLATILE = re.compile(r"\s[\d.]+(?:ns|us|ms|s)\b|\bTID:\d+|0x[0-9a-fA-F]+")


def dispatch_report(deterministic: bool, threads: int) -> list[str]:
    """What MKL and oneDNN say they run (verbose mode, timings stripped) on a small convolution with its backward
    and two matrix products, in a fresh process with this process's environment and the same torch settings."""
    env = os.environ | {"MKL_VERBOSE": "1", "ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", _DISPATCH_SCRIPT, str(int(deterministic)), str(threads)],
                              env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as err:
        return [f"dispatch probe failed: {err}"]
    seen: dict[str, None] = {}
    for line in proc.stdout.splitlines() + proc.stderr.splitlines():
        if line.startswith(("onednn_verbose", "dnnl_verbose")):
            parts = line.split(",")
            seen[",".join(parts if ",info," in line else parts[:-1])] = None  # exec lines end with the time
        elif line.startswith("MKL_VERBOSE"):
            seen[" ".join(_VOLATILE.sub(" ", line).split())] = None
    return list(seen) or [f"no verbose output (exit {proc.returncode})"]


def environment(deterministic: bool, dispatch: bool = True) -> dict[str, Any]:
    """Everything this process's kernels depend on besides the code (see the module docstring); `dispatch`: with
    the libraries' verbose report (a few seconds)."""
    import numpy
    import PIL
    import torch

    info = cpuinfo()
    threads = torch.get_num_threads()
    return {
        "cpu": {"model": info.get("model name") or platform.processor() or platform.machine(), **info,
                "cpus": os.cpu_count(), "arch": platform.machine()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                     "pillow": PIL.__version__},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads, "interop_threads": torch.get_num_interop_threads(),
        "deterministic": deterministic,
        "mkldnn": {"available": torch.backends.mkldnn.is_available(), "enabled": torch.backends.mkldnn.enabled},
        "mkl_available": torch.backends.mkl.is_available(),
        "openmp_available": torch.backends.openmp.is_available(),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(DISPATCH_ENV_PREFIXES)},
        "torch_config": torch.__config__.show().splitlines(),
        "parallel_info": torch.__config__.parallel_info().splitlines(),
        "dispatch": dispatch_report(deterministic, threads) if dispatch else ["not probed (--no-dispatch)"],
    }


# ---- digests ---------------------------------------------------------------------------------------------------


def _leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, tensor or array or plain value) of every leaf of a nested output (tuples, lists, dicts, dataclasses)."""
    import numpy as np
    import torch

    if isinstance(obj, (torch.Tensor, np.ndarray)):
        yield path, obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _leaves(obj[key], f"{path}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _leaves(item, f"{path}[{i}]")
    elif is_dataclass(obj) and not isinstance(obj, type):
        for f in fields(obj):
            yield from _leaves(getattr(obj, f.name), f"{path}.{f.name}")
    else:
        yield path, repr(obj) if isinstance(obj, (int, float, str, bool, type(None))) else type(obj).__name__


def digest(obj: Any) -> tuple[str, str]:
    """(sha256 over every leaf's path, dtype, shape and raw bytes, a short shape description)."""
    import numpy as np
    import torch

    h, shapes = hashlib.sha256(), []
    for path, leaf in _leaves(obj):
        if isinstance(leaf, torch.Tensor):
            t = leaf.detach()
            t = (t.to_dense() if t.layout != torch.strided else t).cpu()
            flat = torch.empty(t.numel(), dtype=t.dtype).copy_(t.reshape(-1))  # stride 1 whatever `t`'s strides
            raw = flat.view(torch.uint8).numpy().tobytes() if t.numel() else b""
            desc = f"{str(leaf.dtype).removeprefix('torch.')}{list(leaf.shape)}"
        elif isinstance(leaf, np.ndarray):
            raw, desc = np.ascontiguousarray(leaf).tobytes(), f"{leaf.dtype}{list(leaf.shape)}"
        else:
            raw, desc = str(leaf).encode(), str(leaf)
        h.update(f"{path}|{desc}|{len(raw)}|".encode())
        h.update(raw)
        shapes.append(desc)
    return h.hexdigest(), " ".join(shapes)


# ---- one training step, hooked ---------------------------------------------------------------------------------


class StepRecorder:
    """Torch's global module and optimiser hooks around one training job: from the first training-mode forward
    (with gradients) of a module tree holding a `Detector` to the end of the first optimiser step, every op's
    digest in order (`ops`: [kind, name, sha256, shape]); the post-step hook raises `StepDone`."""

    def __init__(self) -> None:
        self.ops: list[list[str]] = []
        self.root = None
        self.detector = None
        self.names: dict[int, str] = {}
        self.calls: dict[str, int] = {}
        self.done = False

    def add(self, kind: str, name: str, obj: Any) -> None:
        self.ops.append([kind, name, *digest(obj)])

    def _label(self, module) -> str:
        name = self.names.get(id(module), f"?{type(module).__name__}")  # ?: called outside the model's tree
        k = self.calls.get(name, 0)
        self.calls[name] = k + 1
        return name if k == 0 else f"{name}#{k}"

    def _open(self, module, args) -> None:
        import torch
        from sep_bench.detectors import Detector

        if not (module.training and torch.is_grad_enabled()):
            return
        detector = next((m for m in module.modules() if isinstance(m, Detector)), None)
        if detector is None:
            return
        self.root, self.detector = module, detector
        self.names = {id(m): name or "<root>" for name, m in module.named_modules()}
        self.add("input", "batch", args)
        train_loss = detector.train_loss

        def recorded_loss(outputs, labels):  # the engine calls model.train_loss(outputs, labels)
            loss = train_loss(outputs, labels)
            self.add("input", "labels", labels)
            self.add("loss", "loss", loss)
            return loss

        detector.train_loss = recorded_loss  # this object only, for the probed step (removed in `hooks`)

    def pre_forward(self, module, args) -> None:
        if self.root is None and not self.done:
            self._open(module, args)

    def post_forward(self, module, args, output) -> None:
        import torch

        if self.root is None or self.done:
            return
        label = self._label(module)
        self.add("forward", label, output)
        for i, (_, leaf) in enumerate(_leaves(output)):
            if isinstance(leaf, torch.Tensor) and leaf.requires_grad:
                leaf.register_hook(lambda grad, name=f"{label}[{i}]": self.add("grad", name, grad))

    def pre_step(self, optimizer, args, kwargs) -> None:
        if self.root is None or self.done:
            return
        for name, p in self.detector.named_parameters():
            if p.grad is not None:
                self.add("param_grad", name, p.grad)

    def post_step(self, optimizer, args, kwargs) -> None:
        if self.root is None or self.done:
            return
        for name, tensor in self.detector.state_dict().items():
            self.add("weights", name, tensor)
        self.done = True
        raise StepDone

    @contextmanager
    def hooks(self) -> Iterator["StepRecorder"]:
        from torch.nn.modules import module as nn_module
        from torch.optim import optimizer as optim_module

        handles = [nn_module.register_module_forward_pre_hook(self.pre_forward),
                   nn_module.register_module_forward_hook(self.post_forward),
                   optim_module.register_optimizer_step_pre_hook(self.pre_step),
                   optim_module.register_optimizer_step_post_hook(self.post_step)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            if self.detector is not None:
                self.detector.__dict__.pop("train_loss", None)


def weights_digest(ops: list[list[str]]) -> str:
    """One digest of all the updated weights (their names and digests)."""
    return hashlib.sha256("\n".join(f"{o[1]} {o[2]}" for o in ops if o[0] == "weights").encode()).hexdigest()


def probe_detector(spec, out_dir: Path) -> dict[str, Any]:
    """One training step of `spec` through the engine's training job, hooked; its ops, weights digest, seconds."""
    from sep_bench.engine.jobs.train import train_job

    recorder = StepRecorder()
    started = time.perf_counter()
    with recorder.hooks():
        try:
            train_job(spec, out_dir, None)
        except StepDone:
            pass
    if not recorder.done:
        raise RuntimeError(f"{spec.detector}: the training job ended without an optimiser step")
    return {"protocol_hash": spec.training_hash(), "seconds": round(time.perf_counter() - started, 2),
            "weights_sha256": weights_digest(recorder.ops),
            "counts": {k: sum(o[0] == k for o in recorder.ops) for k in KINDS}, "ops": recorder.ops}


@contextmanager
def data_workdir(profile: str) -> Iterator[Path]:
    """A temporary working folder holding links to this checkout's prepared data and reconstructions of
    `profile` (the engine reads them relative to the working folder), so the probe writes nothing here."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="sep-bench-probe-") as tmp:
        for sub in (f"data/prepared/{profile}", f"data/recon/{profile}"):
            if (previous / sub).exists():
                (Path(tmp) / sub).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / sub).symlink_to((previous / sub).resolve())
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(previous)


def run_probe(params_path: Path, profile: str | None, detectors: list[str] | None, mode: str,
              dispatch: bool = True) -> dict[str, Any]:
    """Probe every detector (see the module docstring); `mode`: ``profile`` or an ``on``/``off`` override."""
    from sep_bench.cli.common import load
    from sep_bench.engine.determinism import apply_env

    params, name = load(params_path.resolve(), profile)  # sets the profile's deterministic env before torch loads
    deterministic = params.profiles[name].deterministic if mode == "profile" else mode == "on"
    apply_env(deterministic)
    import torch  # noqa: F401  (only now: the variables above are read when it loads)
    from sep_bench.protocol import resolve

    specs = {d: resolve(params, d, name, None) for d in detectors or list(params.run.detectors)}  # names first
    results, skipped = {}, {}
    with data_workdir(name) as work:
        for detector, spec in specs.items():
            spec = spec.model_copy(update={"profile": spec.profile.model_copy(update={"deterministic": deterministic})})
            try:
                results[detector] = probe_detector(spec, work / "runs" / detector)
            except Exception as err:  # noqa: BLE001  (one detector's failure is recorded, the others still run)
                # make_optimizer's "no trainable parameters" is a skip; anything else a failure (exit status 1)
                skipped[detector] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                print(f"{detector:10s} skipped: {skipped[detector]}", file=sys.stderr, flush=True)
                continue
            r = results[detector]
            print(f"{detector:10s} {r['seconds']:6.1f} s  {len(r['ops']):5d} ops  weights {r['weights_sha256'][:16]}",
                  flush=True)
    env = environment(deterministic, dispatch)
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "profile": name, "machine": env,
            "code": _git_commit(), "skipped": skipped, "detectors": results}


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---- comparison ------------------------------------------------------------------------------------------------


def _ordered(ops: list[list[str]]) -> list[list[str]]:
    """The ops in comparison order: by kind (`KINDS`), each kind in the order it was recorded."""
    return sorted(ops, key=lambda o: KINDS.index(o[0]) if o[0] in KINDS else len(KINDS))


def first_difference(a: list[list[str]], b: list[list[str]]) -> str | None:
    """The first op (in `KINDS` order) whose bits differ, or where the two steps ran different ops; None when all
    ops are identical."""
    a, b = _ordered(a), _ordered(b)
    for i, (x, y) in enumerate(zip(a, b)):
        if x[:2] != y[:2]:
            return f"op {i}: the steps ran different ops ({x[0]} {x[1]} vs {y[0]} {y[1]})"
        if x[2] != y[2]:
            total = sum(p[2] != q[2] for p, q in zip(a, b))
            return (f"op {i} of {len(a)}: {x[0]} {x[1]} {x[3]} ({x[2][:12]} vs {y[2][:12]}); "
                    f"{total} ops differ in all")
    if len(a) != len(b):
        return f"op {min(len(a), len(b))}: one step ran more ops ({len(a)} vs {len(b)})"
    return None


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def compare(a: dict, b: dict) -> tuple[list[str], bool]:
    """(lines to print, whether every detector is present in both and identical)."""
    lines, same = [], True
    for detector in sorted(set(a["detectors"]) | set(b["detectors"])):
        x, y = a["detectors"].get(detector), b["detectors"].get(detector)
        if x is None or y is None:
            lines.append(f"{detector}: only in {'B' if x is None else 'A'}")
            same = False
            continue
        diff = first_difference(x["ops"], y["ops"])
        same &= diff is None
        lines.append(f"{detector}: {diff or 'identical'}")
    ma, mb = _flat(a.get("machine", {})), _flat(b.get("machine", {}))
    tags = [k for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)]
    for key in tags:
        lines.append(f"  tag {key}: {_short(ma.get(key))} | {_short(mb.get(key))}")
    return lines, same


def _short(value: Any, width: int = 70) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


_OP_LINES = re.compile(r'\[\s+("(?:%s)"),\s+("[^"\n]*"),\s+("[0-9a-f]{64}"),\s+("[^"\n]*")\s+\]' % "|".join(KINDS))


def dumps(result: dict) -> str:
    """The probe file's text: indented JSON with each op on one line (diff-friendly, a third of the size)."""
    return _OP_LINES.sub(lambda m: "[" + ", ".join(m.groups()) + "]", json.dumps(result, indent=1)) + "\n"


def _read_probe(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        data["detectors"]  # noqa: B018  (a probe file has it)
        return data
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"error: {path} is not a readable probe file ({type(err).__name__}: {err})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    parser.add_argument("--detectors", nargs="+")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--profile")
    parser.add_argument("--deterministic", choices=["profile", "on", "off"], default="profile")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-dispatch", action="store_true", help="skip MKL's and oneDNN's verbose report")
    args = parser.parse_args(argv)
    if args.compare:
        try:
            a, b = (_read_probe(p) for p in args.compare)
        except ValueError as err:
            print(err, file=sys.stderr)
            return 2
        lines, same = compare(a, b)
        print("\n".join(lines))
        return 0 if same else 1
    started = time.perf_counter()
    from sep_bench.protocol import ProtocolError

    try:
        result = run_probe(args.params, args.profile, args.detectors, args.deterministic, not args.no_dispatch)
    except ProtocolError as err:  # an unknown detector or profile, an invalid params.yaml
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    result["seconds"] = round(time.perf_counter() - started, 1)
    cpu = result["machine"]["cpu"]
    out = args.out or OUT_DIR / f"{cpu_slug(cpu['model'], cpu.get('flags', ()))}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps(result))
    failed = {d: why for d, why in result["skipped"].items() if "no trainable parameters" not in why}
    print(f"{len(result['detectors'])} detectors probed in {result['seconds']} s -> {out}"
          + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
