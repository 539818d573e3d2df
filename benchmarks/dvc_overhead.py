"""Where DVC's own time goes in the default pipeline: `dvc status` of a finished clone with the stages as declared,
and with each kind of declaration removed, plus the cost of one stage's lock update.

    python benchmarks/dvc_overhead.py CLONE [--repeats 3] [--out results/benchmarks/dvc_overhead.json]

CLONE is a finished run of the pipeline (e.g. the clone of ``python benchmarks/pipeline.py --keep DIR``). Each
variant rewrites CLONE's ``dvc.yaml`` (restored afterwards, also on error or Ctrl-C) and times ``dvc status`` (the
fastest of ``--repeats`` runs; DVC's hash cache is warm after the first):

- ``as declared``: the committed dvc.yaml;
- ``no params``: without the ``params:`` sections of the per-detector stages (DVC then parses params.yaml and
  looks up each stage's keys no more);
- ``no code deps``: without the ``sep_bench/...`` and ``baselines/...`` dependencies of those stages;
- ``neither``: without both.

Removing a declaration changes what DVC compares, so these variants report "changed" stages: only their time is
measured, never their verdict. ``lock update``: ``dvc commit --force`` of one stage whose outputs are unchanged
(DVC re-reads and rewrites the whole ``dvc.lock``, as after every stage of ``dvc repro``). The figures say how much
of a stage's overhead a smaller lock or fewer declared inputs per stage would save; nothing here changes the
pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PER_DETECTOR = ("reconstruct", "train", "evaluate")
CODE_ROOTS = ("sep_bench", "baselines")


def _dvc(clone: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(ROOT / ".venv/bin/dvc"), *args], cwd=clone, capture_output=True, text=True)
    return time.perf_counter() - start


def _variant(pipeline: dict, drop_params: bool, drop_code: bool) -> dict:
    out = json.loads(json.dumps(pipeline))
    for name, stage in out["stages"].items():
        if name not in PER_DETECTOR:
            continue
        if drop_params:
            stage.pop("params", None)
        if drop_code:
            stage["deps"] = [d for d in stage.get("deps", []) if not str(d).startswith(CODE_ROOTS)]
    return out


def _lock_facts(clone: Path) -> dict:
    from sep_bench.report.verdict import recorded_stages

    stages = recorded_stages(clone / "dvc.lock")
    deps = [d for s in stages.values() for d in s.get("deps", [])]
    return {"bytes": (clone / "dvc.lock").stat().st_size, "stages": len(stages), "deps": len(deps),
            "code_deps": sum(str(d.get("path", "")).startswith(CODE_ROOTS) for d in deps)}


def measure(clone: Path, repeats: int, stage: str) -> dict:
    dvc_yaml = clone / "dvc.yaml"
    original = dvc_yaml.read_text()
    pipeline = yaml.safe_load(original)
    variants = {"as declared": (False, False), "no params": (True, False), "no code deps": (False, True),
                "neither": (True, True)}
    status = {}
    try:
        for name, (params, code) in variants.items():
            dvc_yaml.write_text(yaml.safe_dump(_variant(pipeline, params, code), sort_keys=False))
            status[name] = round(min(_dvc(clone, "status") for _ in range(repeats)), 2)
            print(f"dvc status, {name}: {status[name]} s", flush=True)
    finally:
        dvc_yaml.write_text(original)
    lock = round(min(_dvc(clone, "commit", "--force", stage) for _ in range(repeats)), 2)
    print(f"lock update ({stage}): {lock} s", flush=True)
    return {"dvc_status_seconds": status, "lock_update_seconds": lock, "lock_update_stage": stage,
            "lock": _lock_facts(clone)}


def doc_sentence(result: dict) -> str:
    """docs/performance.md's sentence on DVC's own time, from results/benchmarks/dvc_overhead.json."""
    st, lock, m = result["dvc_status_seconds"], result["lock"], result["machine"]
    return (f"DVC's own time in a finished clone ({m['cpus']} CPU cores, {m['cpu']}; `python "
            f"benchmarks/dvc_overhead.py` at commit {result['commit'][:7]}, {result['date'][:10]}): `dvc status` "
            f"takes {st['as declared']:.1f} s with the stages as declared, {st['no params']:.1f} s without the "
            f"per-detector stages' `params:`, {st['no code deps']:.1f} s without their code dependencies and "
            f"{st['neither']:.1f} s without both; rewriting one stage's entry of `dvc.lock` "
            f"({lock['bytes'] / 1024:.0f} KiB, {lock['deps']} dependency entries, {lock['code_deps']} of them code "
            f"files) takes {result['lock_update_seconds']:.1f} s, which `dvc repro` pays after each of the "
            f"{lock['stages']} stages.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clone", type=Path, help="a finished run of the pipeline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stage", default="reconstruct@npr", help="the stage whose lock entry is rewritten")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/dvc_overhead.json")
    args = parser.parse_args()
    if not (args.clone / "dvc.lock").is_file():
        raise SystemExit(f"{args.clone} has no dvc.lock: give a finished run of the pipeline")
    sys.path.insert(0, str(ROOT))
    from sep_bench.hostinfo import cpu_model

    load = os.getloadavg()
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg": list(load)},
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.clone, capture_output=True,
                                       text=True).stdout.strip(),
              "repeats": args.repeats, **measure(args.clone, args.repeats, args.stage)}
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
