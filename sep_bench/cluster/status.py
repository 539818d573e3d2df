"""Each submitted stage's job state, from ``scontrol show job`` (and ``sacct`` where accounting runs).

``scontrol`` knows a finished job for the controller's MinJobAge; after that, ``sacct`` (accounting) is asked,
and a job neither knows is UNKNOWN. Everything the tools print is parsed defensively: a line that does not
parse is skipped, never trusted.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

__all__ = ["JobState", "job_states", "stage_states", "active_jobs", "wait", "TERMINAL", "render"]

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
            "OUT_OF_MEMORY"}
_KV = re.compile(r"(\w+)=(\S*)")
_ID = re.compile(r"^\d+(_\d+)?$")


@dataclass
class JobState:
    job: str            # "id" or "id_task"
    state: str
    reason: str = ""
    restarts: int = 0
    elapsed: str = ""
    exit_code: str = ""


def _run(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout if res.returncode == 0 else ""


def _expand_tasks(spec: str) -> list[int]:
    """'3' -> [3]; '0-4%2' -> [0..4]; '1,3-4' -> [1, 3, 4]; anything else -> []."""
    out: list[int] = []
    for part in spec.split("%")[0].split(","):
        if m := re.fullmatch(r"(\d+)-(\d+)", part):
            out.extend(range(int(m.group(1)), int(m.group(2)) + 1))
        elif part.isdigit():
            out.append(int(part))
    return out


def parse_scontrol(text: str) -> dict[str, JobState]:
    """`scontrol show job -o` lines -> {"id" or "id_task": JobState}."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        kv = dict(_KV.findall(line))
        if not kv.get("JobId", "").isdigit() or "JobState" not in kv:
            continue
        base = kv.get("ArrayJobId") or kv["JobId"]
        keys = ([f"{base}_{t}" for t in _expand_tasks(kv["ArrayTaskId"])] if kv.get("ArrayTaskId")
                else [kv["JobId"]])
        restarts = int(kv["Restarts"]) if kv.get("Restarts", "").isdigit() else 0
        for key in keys:
            states[key] = JobState(key, kv["JobState"], kv.get("Reason", ""), restarts, kv.get("RunTime", ""),
                                   kv.get("ExitCode", ""))
    return states


def parse_sacct(text: str) -> dict[str, JobState]:
    """`sacct -n -P -X -o JobID,State,Elapsed,ExitCode` lines -> {"id" or "id_task": JobState}."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or not _ID.match(parts[0]):
            continue
        states[parts[0]] = JobState(parts[0], parts[1].split()[0] if parts[1] else "UNKNOWN", "", 0, parts[2],
                                    parts[3])
    return states


def job_states(job_ids: list[str], scontrol: str = "scontrol", sacct: str = "sacct") -> dict[str, JobState]:
    bases = sorted({j.split("_")[0] for j in job_ids if _ID.match(j)}, key=int)
    states: dict[str, JobState] = {}
    for base in bases:
        states.update(parse_scontrol(_run([scontrol, "show", "job", "-o", base])))
    missing = sorted({j.split("_")[0] for j in job_ids if j not in states}, key=int)
    if missing:
        found = parse_sacct(_run([sacct, "-n", "-P", "-X", "-o", "JobID,State,Elapsed,ExitCode",
                                  "-j", ",".join(missing)]))
        states.update({k: v for k, v in found.items() if k not in states})
    return states


def stage_states(sub, scontrol: str = "scontrol", sacct: str = "sacct") -> dict[str, JobState]:
    """stage -> JobState for every stage of submission `sub` (UNKNOWN where no tool knows the job)."""
    states = job_states(list(sub.jobs.values()), scontrol, sacct)
    return {stage: states.get(job, JobState(job, "UNKNOWN")) for stage, job in sub.jobs.items()}


def active_jobs(sub, squeue: str = "squeue") -> list[str]:
    """The job ids of `sub` still in the queue (pending, running, requeued)."""
    bases = sorted({j.split("_")[0] for j in sub.jobs.values()}, key=int)
    if not bases:
        return []
    out = _run([squeue, "-h", "-r", "-o", "%i|%T", "-j", ",".join(bases)])
    return [p[0] for line in out.splitlines() if len(p := line.split("|")) == 2 and p[1] in ACTIVE]


def wait(sub, *, timeout_s: float, poll_s: float = 2.0, on_poll=None, **tools) -> dict[str, JobState]:
    """Poll until every stage's job is in a terminal state (or `timeout_s` passes); the last states."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = stage_states(sub, **tools)
        if on_poll:
            on_poll(states)
        if all(s.state in TERMINAL for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(poll_s)


_COLOURS = {"COMPLETED": "green", "RUNNING": "cyan", "PENDING": "yellow", "FAILED": "red", "CANCELLED": "red",
            "TIMEOUT": "red", "OUT_OF_MEMORY": "red", "NODE_FAIL": "red"}


def render(sub, states: dict[str, JobState]):
    """A rich table: stage, job, state, attempts, reason, run time."""
    from rich.table import Table

    table = Table(title=f"sep-bench cluster submission {sub.id}", caption=f"MLflow parent run: {sub.parent_run_id}")
    for col in ("stage", "job", "state", "attempts", "reason", "run time", "exit"):
        table.add_column(col)
    for stage in sub.stages:
        s = states.get(stage)
        if s is None:
            continue
        colour = _COLOURS.get(s.state, "white")
        reason = "" if s.reason in ("None", "") else s.reason
        if s.state == "CANCELLED" and "Dependency" in reason:
            reason += " (a stage it waits for failed)"
        table.add_row(stage, s.job, f"[{colour}]{s.state}[/]", str(s.restarts + 1), reason, s.elapsed, s.exit_code)
    return table
