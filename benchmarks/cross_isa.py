"""Does mini training give the same bits on another CPU? Train and evaluate under capped instruction sets.

    python benchmarks/cross_isa.py [--detectors npr cnnspot] [--caps native avx2 sse41] [--modes off on]

Another CPU is emulated on this one by capping the instruction sets the math libraries may use, with their
documented environment variables: oneDNN ``ONEDNN_MAX_CPU_ISA``, MKL ``MKL_ENABLE_INSTRUCTIONS`` and ATen
``ATEN_CPU_CAPABILITY`` (``native`` = no cap; ``avx2`` = an AVX2 machine without AVX-512; ``sse41`` = an old
x86 machine, ATen's ``default`` kernels). Each (cap, deterministic mode) trains every detector from scratch with
the mini profile in its own working folder (the prepared data are linked from this checkout; the clean test set
only: no perturbations or protocol axes, so a run is just training plus one evaluation) and records the training
seconds, the sha256 of the selected weights and of the fake logits, and the Mean ACC.

``--modes``: ``off`` = the mini profile as it is (``deterministic: false``); ``on`` = ``deterministic: true``
(oneDNN off, ``MKL_CBWR=COMPATIBLE``, ATen AVX2 kernels where the cap allows, see sep_bench.engine.determinism).

Writes ``results/benchmarks/cross_isa.json``: per detector and mode, whether the weights are bit-identical across
the caps, the spread of the Mean ACC (max - min, points) and the cost of the mode (training seconds against
``off`` at the same cap, measured in the same run). Needs the prepared mini data (``sep-bench data prepare``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mini import ROOT, train_and_evaluate, workdir  # noqa: E402

CAPS = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"},
}


def summarise(cases: dict) -> dict:
    out = {}
    for detector, by_mode in cases.items():
        out[detector] = {}
        for mode, by_cap in by_mode.items():
            accs = [c["mean_acc"] for c in by_cap.values()]
            out[detector][mode] = {
                "weights_bit_identical": len({c["weights_sha256"] for c in by_cap.values()}) == 1,
                "logits_bit_identical": len({c["logits_sha256"] for c in by_cap.values()}) == 1,
                "mean_acc_spread_points": round(100 * (max(accs) - min(accs)), 2),
            }
            if mode == "on" and "off" in by_mode:
                out[detector][mode]["train_seconds_ratio_vs_off"] = {
                    cap: round(c["train_seconds"] / by_mode["off"][cap]["train_seconds"], 2)
                    for cap, c in by_cap.items() if cap in by_mode["off"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=["npr", "cnnspot"])
    parser.add_argument("--caps", nargs="+", default=list(CAPS), choices=list(CAPS))
    parser.add_argument("--modes", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/cross_isa.json")
    args = parser.parse_args()
    from sep_bench.hostinfo import cpu_flags, cpu_model

    cases: dict = {d: {} for d in args.detectors}
    with tempfile.TemporaryDirectory(prefix="sep-bench-isa-") as tmp:
        for mode in args.modes:
            work = workdir(Path(tmp) / f"det-{mode}", args.detectors,
                           {"profiles.mini.deterministic": mode == "on"})
            for cap in args.caps:
                for detector in args.detectors:
                    case = train_and_evaluate(work, detector, CAPS[cap])
                    cases[detector].setdefault(mode, {})[cap] = {k: v for k, v in case.items() if k != "history"}
                    print(f"{detector:10s} deterministic {mode:3s} {cap:7s} {case['train_seconds']:7.1f} s  "
                          f"Mean {100 * case['mean_acc']:6.2f}  weights {case['weights_sha256'][:12]}  "
                          f"logits {case['logits_sha256'][:12]}", flush=True)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(),
                          "avx512": any(f.startswith("avx512") for f in cpu_flags()), "loadavg": os.getloadavg()},
              "caps": {c: CAPS[c] for c in args.caps}, "cases": cases, "summary": summarise(cases)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
