"""The batch script and sbatch options of one job group (sep_bench.cluster.plan.JobGroup).

Every job runs its stage through DVC in the shared workspace: ``dvc --wait-for-lock repro --single-item <stage>``
(DVC's lock file and run cache stay DVC's own; `--wait-for-lock` waits for the workspace lock another job holds
instead of failing). Jobs are requeueable (``--requeue``: a preempted or requeued job starts again, and the
training resumes from its ``last.safetensors``), a job whose dependency failed is cancelled by SLURM
(``--kill-on-invalid-dep=yes``), and a requeued job appends to its log (``--open-mode=append``), so the log shows
every attempt. The environment hands the MLflow parent run to the stage (``SEP_BENCH_PARENT_RUN_ID``).

DVC ignores SIGTERM in a job (``trap '' TERM``, inherited through ``exec``). SLURM sends SIGTERM to every process
of a job it requeues, cancels or times out, and SIGKILL after ``KillWait``. DVC rewrites its lock table
(``.dvc/tmp/rwlock``) in place several times as a stage starts and ends; a DVC killed during one of those writes
leaves the table empty, and every later DVC command in the workspace, in every job, then fails with "Unable to
read RWLock-file". Ignoring SIGTERM, DVC outlives the stage command instead: ``sep-bench`` installs its own
SIGTERM handler (its MLflow run ends FAILED, temporaries are removed), exits, and DVC records the failure and
releases its lock entries before it exits.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from sep_bench.cluster.plan import JobGroup
from sep_bench.protocol.cluster import ClusterSettings, Resources

__all__ = ["JobEnv", "sbatch_options", "render_script", "dependency_option", "MARK"]

MARK = "[sep-bench cluster]"  # the line every attempt of a job prints first (tests and `status` read it)


@dataclass(frozen=True)
class JobEnv:
    root: Path              # the shared workspace (the DVC repository)
    bin_dir: Path           # the folder holding `dvc` and `sep-bench` (the submitter's environment)
    log_dir: Path
    parent_run_id: str | None
    tracking_uri: str | None


def sbatch_options(group: JobGroup, res: Resources, settings: ClusterSettings, env: JobEnv) -> list[str]:
    name = f"{settings.job_name_prefix}:{group.kind}"
    log = env.log_dir / (f"{group.kind}-%A_%a.out" if group.is_array else f"{group.kind}-%j.out")
    opts = [f"--job-name={name}", f"--output={log}", f"--chdir={env.root}", "--requeue",
            "--kill-on-invalid-dep=yes", "--open-mode=append", "--nodes=1", "--ntasks=1"]
    partition = res.partition or settings.partition
    for flag, value in (("--partition", partition), ("--account", settings.account), ("--qos", settings.qos),
                        ("--cpus-per-task", res.cpus), ("--mem", res.mem), ("--time", res.time)):
        if value is not None:
            opts.append(f"{flag}={value}")
    if res.gpus:
        opts.append(f"--gpus-per-node={res.gpus}")
    if group.is_array:
        throttle = f"%{settings.array_throttle}" if settings.array_throttle else ""
        opts.append(f"--array=0-{len(group.stages) - 1}{throttle}")
    return opts + list(settings.extra_sbatch) + list(res.extra or [])


def dependency_option(group: JobGroup, job_of: dict[str, str]) -> str | None:
    """``--dependency=...`` from the job ids of the stages `group` waits for (`job_of`: stage -> ``id`` or
    ``id_task``); None when it waits for nothing."""
    if not group.after:
        return None
    if group.paired:
        owner = {job_of[s].split("_")[0] for s in group.after}
        if len(owner) != 1:
            raise ValueError(f"paired array {group.kind} waits for stages of several jobs: {sorted(owner)}")
        return f"--dependency=aftercorr:{owner.pop()}"
    ids = sorted({job_of[s] for s in group.after}, key=lambda j: [int(p) for p in j.split("_")])
    return "--dependency=afterok:" + ":".join(ids)


def render_script(group: JobGroup, options: list[str], env: JobEnv) -> str:
    lines = ["#!/bin/bash", f"# sep-bench cluster job: {group.kind} ({len(group.stages)} stage(s))"]
    lines += [f"#SBATCH {o}" for o in options]
    exports = {"PATH": f"{env.bin_dir}:$PATH", "SEP_BENCH_PARENT_RUN_ID": env.parent_run_id or "",
               "MLFLOW_TRACKING_URI": env.tracking_uri or ""}
    lines += ["set -euo pipefail",
              "STAGES=(" + " ".join(shlex.quote(s) for s in group.stages) + ")",
              'STAGE="${STAGES[${SLURM_ARRAY_TASK_ID:-0}]}"']
    for key, value in exports.items():
        if key == "PATH":
            lines.append(f'export PATH={shlex.quote(str(env.bin_dir))}:"$PATH"')
        elif value:
            lines.append(f"export {key}={shlex.quote(value)}")
        else:
            lines.append(f"unset {key}")
    lines += ["unset DVC_ROOT DVC_STAGE SEP_BENCH_PIPELINE_ID",
              "trap '' TERM  # DVC outlives a SIGTERM and releases its locks (see the module docstring)",
              'JOB="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"',  # 16_0, as squeue shows
              f'echo "{MARK} $(date -u +%Y-%m-%dT%H:%M:%SZ) job ${{JOB:-$SLURM_JOB_ID}} stage ${{STAGE}} '
              f'attempt $(( ${{SLURM_RESTART_COUNT:-0}} + 1 )) on $(hostname)"']
    run = 'dvc --wait-for-lock repro --single-item "$STAGE"'
    if group.kind == "report" and env.parent_run_id:  # the last stage ends the submission's parent run
        lines += [run, f"sep-bench cluster end-parent {shlex.quote(env.parent_run_id)}", ""]
    else:
        lines += [f"exec {run}", ""]
    return "\n".join(lines)
