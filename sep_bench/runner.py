"""`sep-bench pipeline`: ``dvc repro`` with a progress line a person can read, per-stage timings and the verdict.

DVC prints stage names only. This runs it as a child process, passes its output through, and after every stage
DVC starts or skips prints ``[stage k/N] <name> · <elapsed> elapsed · ~<remaining> left``. The estimate of what
remains uses each stage's duration in the previous run on this machine (``.dvc/tmp/sep-bench-stage-times.json``)
where known, else the mean of the stages run so far. Per-stage seconds of this run are written back there (and
returned), so `benchmarks/pipeline.py` can report them. Finally it prints the reproduced-vs-committed verdict.

When nothing DVC tracks changed since the last complete run (`sep_bench.fingerprint`), DVC is not started at all.
Stage commands start warm (`sep_bench.warm`): a server started here imports the scientific stack once and each
stage's ``sep-bench`` runs in a fork of it; ``warm=False`` (``sep-bench pipeline --cold``) starts each normally.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO

__all__ = ["PipelineRun", "run_pipeline", "TIMES_FILE", "WARM_LOG"]

TIMES_FILE = Path(".dvc/tmp/sep-bench-stage-times.json")
WARM_LOG = Path(".dvc/tmp/sep-bench-warm.log")
_RUNNING = re.compile(r"^Running stage '([^']+)'")
_SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")


@dataclass
class PipelineRun:
    returncode: int
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds (run stages only)
    skipped: list[str] = field(default_factory=list)
    warm: dict = field(default_factory=dict)  # sep_bench.warm.summary, when a warm server ran


def _names(listing: str) -> list[str]:
    """Stage names from `dvc stage list --name-only` (matrix stages expanded)."""
    return [line.strip() for line in listing.splitlines() if line.strip()]


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _load_times(path: Path) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def run_pipeline(
    dvc_args: Sequence[str] = (),
    *,
    dvc: str = "dvc",
    out: TextIO = sys.stdout,
    clock: Callable[[], float] = time.perf_counter,
    times_file: Path = TIMES_FILE,
    warm: bool = True,
    fast_lockfile: bool = False,
) -> PipelineRun:
    """Run ``dvc repro *dvc_args`` with progress lines; return its exit code and per-stage seconds.

    Without `dvc_args`, a run whose `sep_bench.fingerprint` equals the last complete run's does not start DVC.
    `fast_lockfile`: run ``dvc repro`` through `sep_bench.dvc_lockfile` (this interpreter, DVC in-process with a
    fast lockfile update), then rewrite dvc.lock in DVC's own spelling; `dvc` then only lists the stages.
    """
    from sep_bench import fingerprint as fp
    from sep_bench.warm import WarmServer, summary

    started = clock()
    before = fp.fingerprint() if not dvc_args else None
    if before is not None and before == fp.recorded():
        out.write("pipeline: 0 stage(s) run: nothing DVC tracks changed since the last complete run (same sizes, "
                  "modification times and inodes: sep_bench/fingerprint.py; `dvc repro` asks DVC itself)\n")
        return PipelineRun(returncode=0, seconds=round(clock() - started, 2))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = WarmServer(env, WARM_LOG) if warm else None
    try:
        repro = ([sys.executable, "-m", "sep_bench.dvc_lockfile", "repro"] if fast_lockfile else [dvc, "repro"])
        run = _run_dvc([*repro, *dvc_args], dvc=dvc, out=out, clock=clock, times_file=times_file,
                       env=server.env if server else env, first_stage=server.start if server else None)
    finally:
        if server:
            server.stop()
        if fast_lockfile:
            from sep_bench.dvc_lockfile import canonicalize

            canonicalize()
    fp.record(fp.fingerprint() if run.returncode == 0 and not dvc_args else None)
    if server and server.proc is not None:
        run.warm = summary(WARM_LOG)
        if run.warm["warm"] is not None:
            once = f"imports {run.warm['import_seconds']:.1f} s once; " if run.warm["import_seconds"] else ""
            out.write(f"warm start: {run.warm['warm']} of {len(run.stages)} stage command(s) ({once}"
                      f"{run.warm['declined']} declined, see {WARM_LOG})\n")
    return run


def _run_dvc(repro: Sequence[str], *, dvc: str, out: TextIO, clock: Callable[[], float], times_file: Path,
             env: dict[str, str], first_stage: Callable[[], None] | None) -> PipelineRun:
    # the stage list (for "k of N") is read while dvc repro starts, not before: a run with nothing to do costs
    # one DVC start-up, not two
    lister = subprocess.Popen([dvc, "stage", "list", "--name-only"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)
    names: list[str] = []
    listed = False
    history = _load_times(times_file)
    started = clock()
    run = PipelineRun(returncode=0, seconds=0.0)
    current: tuple[str, float] | None = None
    done = 0

    def finish_current(now: float) -> None:
        nonlocal current
        if current is not None:
            run.stages[current[0]] = round(now - current[1], 2)
            current = None

    def progress(name: str, now: float) -> None:
        nonlocal listed
        if not listed:
            names.extend(_names(lister.communicate()[0]))
            listed = True
        total = max(len(names), done)
        remaining_names = [n for n in names if n not in run.stages and n not in run.skipped and n != name]
        known = [history[n] for n in remaining_names if n in history]
        mean = (sum(run.stages.values()) / len(run.stages)) if run.stages else 0.0
        left = sum(known) + mean * (len(remaining_names) - len(known))
        out.write(f"[stage {done}/{total}] {name} · {_fmt(now - started)} elapsed"
                  f"{f' · ~{_fmt(left)} left' if left else ''}\n")
        out.flush()

    proc = subprocess.Popen(list(repro), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        out.write(line)
        now = clock()
        if m := _RUNNING.match(line):
            if first_stage is not None:
                first_stage()  # idempotent: the warm server starts with the first stage DVC runs, not before
            finish_current(now)
            done += 1
            current = (m.group(1), now)
            progress(m.group(1), now)
        elif m := _SKIPPED.match(line):
            finish_current(now)
            done += 1
            run.skipped.append(m.group(1))
    run.returncode = proc.wait()
    if lister.poll() is None:
        lister.kill()
    lister.wait()
    now = clock()
    if run.returncode == 0:
        finish_current(now)
    run.seconds = round(now - started, 2)
    if run.stages:
        times_file.parent.mkdir(parents=True, exist_ok=True)
        times_file.write_text(json.dumps({**history, **run.stages}, indent=1, sort_keys=True) + "\n")
    out.write(f"pipeline: {len(run.stages)} stage(s) run, {len(run.skipped)} up to date, {_fmt(run.seconds)}\n")
    return run
