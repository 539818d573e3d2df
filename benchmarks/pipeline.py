"""The default run's time budget: `dvc repro` of the default profile in a fresh clone, then a second no-op run.

    python benchmarks/pipeline.py [--env] [--out results/benchmarks/pipeline.json]

Steps, each timed with a wall clock:
1. ``git clone`` of this repository's HEAD into a temporary folder (the working tree's uncommitted changes are
   NOT included: commit first). The clone reuses this checkout's ``.venv`` (a symbolic link), so step 2 measures
   the pipeline, not the installation; ``--env`` measures the installation separately (step 4). PYTHONPATH puts
   the clone's sources before the editable install's (which points at this checkout).
2. ``sep-bench pipeline`` (``dvc repro`` with per-stage timing) in the clone: every stage's seconds, the total,
   and the budget check (goal: at most 600 s on 2 CPU cores, data stage included).
3. the same command again with nothing changed: DVC must find every stage up to date (goal: under 5 s).
4. with ``--env``: ``scripts/setup-env.sh`` into a fresh ``.venv`` of another clone, once with uv (the default)
   and once with ``SEP_BENCH_INSTALLER=pip``, from the same lock (both with warm package caches if this machine
   has them; say so when you quote them), and whether each environment equals the lock exactly.

Writes ``results/benchmarks/pipeline.json`` (per-stage seconds, totals, goals, machine) and prints a summary.
The README's timing sentence is generated from that file by ``python benchmarks/pipeline.py --readme``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"cold_seconds": 600.0, "noop_seconds": 5.0}
README_MARK = ("<!-- pipeline-timing:start -->", "<!-- pipeline-timing:end -->")


def _run(cmd: list[str], cwd: Path, env: dict | None = None, log: Path | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(text)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-4000:]}")
    return seconds, text


def _stage_times(clone: Path) -> dict[str, float]:
    return json.loads((clone / ".dvc/tmp/sep-bench-stage-times.json").read_text())


def _clone(dest: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True)
    return dest


def pipeline_times(workdir: Path) -> dict:
    clone = _clone(workdir / "clone")
    (clone / ".venv").symlink_to(ROOT / ".venv")
    sep_bench = str(ROOT / ".venv/bin/sep-bench")
    env = {"PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}", "PYTHONPATH": str(clone)}
    cold, text = _run([sep_bench, "pipeline"], clone, env, workdir / "cold.log")
    stages = _stage_times(clone)
    verdict = next((ln for ln in reversed(text.splitlines()) if "reproduced" in ln), "")
    warm = next((ln for ln in reversed(text.splitlines()) if ln.startswith("warm start:")), "")
    noop, noop_text = _run([sep_bench, "pipeline"], clone, env, workdir / "noop.log")
    groups: dict[str, float] = {}
    for name, secs in stages.items():
        kind = name.split("@")[0]
        groups[kind] = round(groups.get(kind, 0.0) + secs, 2)
    return {
        "cold_seconds": round(cold, 1),
        "noop_seconds": round(noop, 2),
        "noop_all_up_to_date": "0 stage(s) run" in noop_text,
        "stages": stages,
        "by_kind": groups,
        "n_stages": len(stages),
        "verdict": verdict,
        "warm_start": warm,
    }


def _lock_matches(venv: Path) -> bool:
    out = subprocess.run([str(venv / "bin/python"), "-m", "pip", "freeze", "--exclude-editable"],
                         capture_output=True, text=True).stdout
    norm = lambda s: re.sub(r"[-_.]+", "-", s.strip().lower())  # noqa: E731
    have = {norm(line) for line in out.splitlines() if "==" in line}
    want = {norm(line) for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    return want <= have and not {h for h in have if h.split("==")[0] not in {w.split("==")[0] for w in want}
                                 and not h.startswith(("pip==", "sep-bench=="))}


def env_times(workdir: Path) -> dict:
    out = {}
    for installer in ("uv", "pip"):
        clone = _clone(workdir / f"env-{installer}")
        seconds, _ = _run(["bash", "scripts/setup-env.sh"], clone, {"SEP_BENCH_INSTALLER": installer})
        out[installer] = {"seconds": round(seconds, 1), "lock_exact": _lock_matches(clone / ".venv")}
        shutil.rmtree(clone, ignore_errors=True)
    return out


def machine() -> dict:
    from sep_bench.hostinfo import cpu_model

    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(), "loadavg": os.getloadavg()}


def readme_sentence(result: dict) -> str:
    p = result["pipeline"]
    kinds = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(p["by_kind"].items(), key=lambda kv: -kv[1]))
    env = result.get("env")
    env_txt = (f"Setting up `.venv` took {env['uv']['seconds']:.0f} s with uv ({env['pip']['seconds']:.0f} s with "
               "pip, the same lock). ") if env else ""
    return (f"{env_txt}On {result['machine']['cpus']} CPU cores ({result['machine']['cpu']}) the pipeline took "
            f"{p['cold_seconds'] / 60:.1f} minutes from a fresh clone ({p['n_stages']} stages: {kinds}; goal "
            f"{GOALS['cold_seconds'] / 60:.0f} minutes) and a second run with nothing changed "
            f"{p['noop_seconds']:.1f} s (measured by `python benchmarks/pipeline.py`, "
            f"{result['date'][:10]}).")


def write_readme(result: dict, readme: Path = ROOT / "README.md") -> bool:
    text = readme.read_text()
    start, end = README_MARK
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{readme_sentence(result)}\n{end}{tail}")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="store_true", help="also time the environment set-up (uv vs pip)")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/pipeline.json")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the clone (results/, dvc.lock, logs) in this folder instead of deleting it")
    parser.add_argument("--readme", action="store_true", help="only regenerate the README sentence from --out")
    args = parser.parse_args()
    if args.readme:
        ok = write_readme(json.loads(args.out.read_text()))
        print("README updated" if ok else f"README has no {README_MARK[0]} marker")
        return
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
    with (nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory(prefix="sep-bench-pipeline-")) as tmp:
        result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "goals": GOALS,
                  "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True).stdout.strip(),
                  "pipeline": pipeline_times(Path(tmp))}
        if args.env:
            result["env"] = env_times(Path(tmp))
    p = result["pipeline"]
    result["met"] = {"cold": p["cold_seconds"] <= GOALS["cold_seconds"], "noop": p["noop_seconds"] < GOALS["noop_seconds"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in p.items() if k != "stages"}, indent=2))
    for name, secs in sorted(p["stages"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:40s} {secs:8.1f} s")
    if "env" in result:
        print("env:", result["env"])
    print("goals met:", result["met"])
    print(readme_sentence(result))


if __name__ == "__main__":
    sys.exit(main())
