"""`sep-bench pipeline`: ``dvc repro`` with a progress line a person can read and per-stage timings.

DVC runs as a child process with its output passed straight to the terminal; this module reads none of it. The
progress comes from a record we own (`sep_bench.stage_log`): every stage command appends its start to a file
named in the environment, and a watcher prints, for each new start,
``[stage k/N] <name> · <elapsed> elapsed · ~<remaining> left``, where k is the stage's place in ``dvc stage list``
(public CLI, read while DVC starts) and the estimate sums the previous durations on this machine
(``.dvc/tmp/sep-bench-stage-times.json``) of the stages after it that have not run yet (the mean of this run's
stages where unknown). A stage lasts until the next one starts or DVC exits. After a successful run every stage
in the list either ran or was up to date, which gives the skipped ones. Per-stage seconds are written back (and
returned), so `benchmarks/pipeline.py` can report them.

When nothing DVC tracks changed since the last complete run (`sep_bench.fingerprint`), DVC is not started at all.
Stage commands start warm (`sep_bench.warm`): a server started with the first stage imports the scientific stack
once and each stage's ``sep-bench`` runs in a fork of it; ``warm=False`` (``sep-bench pipeline --cold``) starts
each normally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO

from sep_bench import fingerprint as fp
from sep_bench import stage_log
from sep_bench.warm import WarmServer, summary

__all__ = ["PipelineRun", "run_pipeline", "TIMES_FILE", "WARM_LOG"]

TIMES_FILE = Path(".dvc/tmp/sep-bench-stage-times.json")
WARM_LOG = Path(".dvc/tmp/sep-bench-warm.log")
POLL_SECONDS = 0.2


@dataclass
class PipelineRun:
    returncode: int
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds (run stages only)
    skipped: list[str] = field(default_factory=list)
    warm: dict = field(default_factory=dict)  # sep_bench.warm.summary, when a warm server ran


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _load_times(path: Path) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


class _Progress:
    """Turns the stage log's start records into stage durations and progress lines."""

    def __init__(self, out: TextIO, started: float, history: dict[str, float], names: Callable[[], list[str]],
                 on_first: Callable[[], None] | None) -> None:
        self.out, self.started, self.history, self.names, self.on_first = out, started, history, names, on_first
        self.stages: dict[str, float] = {}
        self.current: tuple[str, float] | None = None

    def finish_current(self, now: float) -> None:
        if self.current is not None:
            self.stages[self.current[0]] = round(max(0.0, now - self.current[1]), 2)
            self.current = None

    def start(self, name: str, at: float) -> None:
        if self.on_first is not None:
            self.on_first()  # idempotent: the warm server starts with the first stage DVC runs, not before
        self.finish_current(at)
        self.current = (name, at)
        names = self.names()
        k = names.index(name) + 1 if name in names else len(self.stages) + 1
        after = [n for n in names[k:] if n not in self.stages]
        known = [self.history[n] for n in after if n in self.history]
        mean = (sum(self.stages.values()) / len(self.stages)) if self.stages else 0.0
        left = sum(known) + mean * (len(after) - len(known))
        self.out.write(f"[stage {k}/{max(len(names), k)}] {name} · {_fmt(at - self.started)} elapsed"
                       f"{f' · ~{_fmt(left)} left' if left else ''}\n")
        self.out.flush()


def run_pipeline(
    dvc_args: Sequence[str] = (),
    *,
    dvc: str = "dvc",
    out: TextIO = sys.stdout,
    clock: Callable[[], float] = time.time,
    times_file: Path = TIMES_FILE,
    warm: bool = True,
    before_dvc: Callable[[], dict[str, str]] | None = None,
) -> PipelineRun:
    """Run ``dvc repro *dvc_args`` with progress lines; return its exit code and per-stage seconds.

    Without `dvc_args`, a run whose `sep_bench.fingerprint` equals the last complete run's does not start DVC.
    `before_dvc`: called once just before DVC starts (never on the no-op path); the variables it returns are
    added to the environment of DVC and its stages (e.g. the MLflow parent run's id). `clock`: wall time (the
    stage records carry ``time.time()``).
    """
    started = clock()
    before = fp.fingerprint() if not dvc_args else None
    if before is not None and before == fp.recorded():
        out.write("pipeline: 0 stage(s) run: nothing DVC tracks changed since the last complete run (same sizes, "
                  "modification times and inodes: sep_bench/fingerprint.py; `dvc repro` asks DVC itself)\n")
        return PipelineRun(returncode=0, seconds=round(clock() - started, 2))
    with tempfile.TemporaryDirectory(prefix="sep-bench-stages-") as folder:
        log = Path(folder) / "stages.jsonl"
        log.touch()
        # the stage log's variable is in the warm server's environment too, so the stages' environments match it
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(before_dvc() if before_dvc else {}), stage_log.ENV: str(log)}
        server = WarmServer(env, WARM_LOG) if warm else None
        try:
            run = _run_dvc([dvc, "repro", *dvc_args], dvc=dvc, out=out, clock=clock, times_file=times_file,
                           env=server.env if server else env, log=log,
                           first_stage=server.start if server else None)
        finally:
            if server:
                server.stop()
    fp.record(fp.fingerprint() if run.returncode == 0 and not dvc_args else None)
    if server and server.proc is not None:
        run.warm = summary(WARM_LOG)
        if run.warm["warm"] is not None:
            once = f"imports {run.warm['import_seconds']:.1f} s once; " if run.warm["import_seconds"] else ""
            out.write(f"warm start: {run.warm['warm']} of {len(run.stages)} stage command(s) ({once}"
                      f"{run.warm['declined']} declined, see {WARM_LOG})\n")
    return run


def _run_dvc(repro: Sequence[str], *, dvc: str, out: TextIO, clock: Callable[[], float], times_file: Path,
             env: dict[str, str], log: Path, first_stage: Callable[[], None] | None) -> PipelineRun:
    # the stage list (for "k of N") is read while dvc repro starts, not before: a run with nothing to do costs
    # one DVC start-up, not two
    lister = subprocess.Popen([dvc, "stage", "list", "--name-only"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)
    listed: list[str] = []

    def names() -> list[str]:
        if lister.returncode is None:
            text = lister.communicate()[0] or ""
            listed.extend(line.strip() for line in text.splitlines() if line.strip())
        return listed

    history = _load_times(times_file)
    started = clock()
    progress = _Progress(out, started, history, names, first_stage)
    proc = subprocess.Popen(list(repro), env=env)  # env names the stage log (`stage_log.ENV`)
    offset = 0
    while True:
        exited = proc.poll() is not None  # read the log once more after DVC exits: its last records
        events, offset = stage_log.read_new(log, offset)
        for event in events:
            progress.start(event["stage"], float(event["t"]))
        if exited:
            break
        time.sleep(POLL_SECONDS)
    returncode = proc.returncode
    now = clock()
    run = PipelineRun(returncode=returncode, seconds=round(now - started, 2), stages=progress.stages)
    if returncode == 0:
        progress.finish_current(now)
        run.skipped = [n for n in names() if n not in run.stages]  # every other stage was up to date
    if lister.poll() is None:
        lister.kill()
    lister.wait()
    if run.stages:
        times_file.parent.mkdir(parents=True, exist_ok=True)
        times_file.write_text(json.dumps({**history, **run.stages}, indent=1, sort_keys=True) + "\n")
    out.write(f"pipeline: {len(run.stages)} stage(s) run, {len(run.skipped)} up to date, {_fmt(run.seconds)}\n")
    return run
