"""Submit the out-of-date stages of the workspace as SLURM jobs and return.

Order: plan (sep_bench.cluster.plan), then the MLflow experiment and the pipeline's parent run (created here,
before any job starts, so concurrent jobs never race to create them; its id reaches every job as
``$SEP_BENCH_PARENT_RUN_ID``), then one ``sbatch`` per job group in dependency order. A submission is recorded in
``runs/cluster/<id>/submission.json`` (stage -> job id, the parent run) next to its job scripts and logs;
``runs/cluster/latest`` names the newest. A submission refuses to start while the previous one still has jobs in
the queue (two jobs of one stage would both run it), or while DVC's lock table is damaged (every job would fail
on it); resubmitting afterwards runs only what is still out of date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sep_bench.cluster.plan import JobGroup, kind_of, plan
from sep_bench.cluster.sbatch import JobEnv, dependency_option, render_script, sbatch_options
from sep_bench.io import read_json
from sep_bench.protocol.cluster import ClusterSettings, Resources, check_launcher

__all__ = ["ClusterError", "Submission", "submit", "load_submission", "check_dvc_lock_table", "CLUSTER_DIR"]

CLUSTER_DIR = Path("runs") / "cluster"
_JOB_ID = re.compile(r"^\d+(_\d+)?$")


class ClusterError(RuntimeError):
    pass


@dataclass
class Submission:
    id: str
    root: str
    created: str
    parent_run_id: str | None
    tracking_uri: str
    experiment: str
    stages: list[str]
    jobs: dict[str, str] = field(default_factory=dict)   # stage -> "id" or "id_task"
    groups: list[dict] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return Path(self.root) / CLUSTER_DIR / self.id


def detector_of(stage: str) -> str | None:
    """train@npr-0 -> npr; evaluate_released@<entry>-0 -> <entry>; data -> None."""
    if "@" not in stage:
        return None
    item = stage.split("@", 1)[1]
    return item.rsplit("-", 1)[0] if kind_of(stage) != "released" else item


def resources_of(settings: ClusterSettings, launcher: str, stage: str) -> Resources:
    kind = kind_of(stage)
    res = settings.resources(kind, detector_of(stage))
    if kind in ("train", "selection"):
        try:
            check_launcher(launcher, res.gpus, stage)
        except ValueError as err:
            raise ClusterError(str(err)) from None
    return res


def _sbatch(args: list[str], script: Path, sbatch: str) -> str:
    try:
        res = subprocess.run([sbatch, "--parsable", *args, str(script)], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        raise ClusterError(f"sbatch could not run: {err}") from None
    job = res.stdout.strip().split(";")[0]
    if res.returncode != 0 or not job.isdigit():
        raise ClusterError(f"sbatch {script.name} failed: {(res.stderr or res.stdout).strip()[:500]}")
    return job


def _cancel(job_ids: list[str], scancel: str = "scancel") -> None:
    if job_ids:
        subprocess.run([scancel, *job_ids], capture_output=True, text=True, timeout=120)


def _submit_groups(groups: list[JobGroup], settings: ClusterSettings, launcher: str, env: JobEnv,
                   folder: Path, sbatch: str) -> tuple[dict[str, str], list[dict]]:
    job_of: dict[str, str] = {}
    records: list[dict] = []
    submitted: list[str] = []
    try:
        for i, group in enumerate(groups):
            res = resources_of(settings, launcher, group.stages[0])
            options = sbatch_options(group, res, settings, env)
            script = folder / f"{i:02d}-{group.kind}.sbatch"
            script.write_text(render_script(group, options, env))
            dep = dependency_option(group, job_of)
            job = _sbatch([dep] if dep else [], script, sbatch)
            submitted.append(job)
            for task, stage in enumerate(group.stages):
                job_of[stage] = f"{job}_{task}" if group.is_array else job
            records.append({"job": job, "kind": group.kind, "stages": group.stages, "dependency": dep,
                            "array": group.is_array, "script": script.name})
    except Exception:
        _cancel(submitted)  # all or nothing: a half-submitted DAG would leave orphans waiting forever
        raise
    return job_of, records


def _create_parent(uri: str, experiment: str, sub_id: str, tags: dict[str, str]) -> str:
    from sep_bench.tracking import TAG_PREFIX, start_parent

    return start_parent(uri, experiment, f"pipeline/slurm {sub_id}",
                        {f"{TAG_PREFIX}kind": "pipeline", f"{TAG_PREFIX}executor": "slurm",
                         f"{TAG_PREFIX}submission": f"{platform.node()}:{sub_id}", **tags})


DVC_LOCK_TABLE = Path(".dvc") / "tmp" / "rwlock"


def check_dvc_lock_table(root: Path, reads: int = 5, pause_s: float = 0.2) -> None:
    """Refuse, with the remedy, when DVC's lock table (``.dvc/tmp/rwlock``) is not a JSON object: DVC rewrites it in
    place, so a DVC process killed during a rewrite (a node crash, the OOM killer) leaves it empty or cut, and every
    DVC command in the workspace, every job's included, then fails with "Unable to read RWLock-file". It is read
    `reads` times, `pause_s` apart, so that a `dvc` command rewriting it at that moment is not taken for damage."""
    path = root / DVC_LOCK_TABLE
    for attempt in range(reads):
        try:
            table = read_json(path)
        except FileNotFoundError:
            return
        except (OSError, ValueError):  # ValueError: JSON or UTF-8 decoding
            table = None
        if isinstance(table, dict):
            return
        if attempt < reads - 1:
            time.sleep(pause_s)
    size = path.stat().st_size if path.exists() else 0
    raise ClusterError(f"DVC's lock table {path} is damaged ({size} bytes, not a JSON object): a DVC process was "
                       f"killed while rewriting it, and every job would fail on it. No job of a submission is in the "
                       f"queue; if no other `dvc` command runs in this workspace, remove it (rm {DVC_LOCK_TABLE}) and "
                       f"submit again")


def submit(root: Path, params, *, dvc: str = "dvc", sbatch: str = "sbatch", squeue: str = "squeue",
           track: bool = True) -> Submission | None:
    """Submit every out-of-date stage; None when everything is up to date."""
    from sep_bench.cluster.status import active_jobs

    root = root.resolve()
    if any(c.isspace() for c in str(root)):
        raise ClusterError(f"the workspace path {str(root)!r} contains white space, which #SBATCH lines cannot carry")
    previous = latest_submission(root)
    if previous is not None and (live := active_jobs(previous, squeue)):
        raise ClusterError(f"submission {previous.id} still has {len(live)} job(s) in the queue "
                           f"({', '.join(live[:5])}); wait for it or cancel it (`sep-bench cluster cancel`)")
    check_dvc_lock_table(root)
    settings: ClusterSettings = params.cluster
    scheduled, groups = plan(root, dvc, shape=lambda s: resources_of(settings, params.launcher, s))
    if not scheduled:
        return None
    sub_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    folder = root / CLUSTER_DIR / sub_id
    (folder / "logs").mkdir(parents=True)
    uri = params.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    experiment = f"{params.tracking.experiment}/{params.profile}"
    parent = _create_parent(uri, experiment, sub_id, {
        "sep_bench.profile": params.profile, "sep_bench.detectors": ",".join([*params.run.detectors,
                                                                              *params.released]),
        "sep_bench.seeds": ",".join(map(str, params.run.seeds))}) if track else None
    env = JobEnv(root=root, bin_dir=Path(_bin_dir(dvc)), log_dir=folder / "logs", parent_run_id=parent,
                 tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri)
    job_of, records = _submit_groups(groups, settings, params.launcher, env, folder, sbatch)
    sub = Submission(sub_id, str(root), dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), parent,
                     uri, experiment, scheduled, job_of, records)
    (folder / "submission.json").write_text(json.dumps(asdict(sub), indent=1) + "\n")
    (root / CLUSTER_DIR / "latest").write_text(sub_id + "\n")
    return sub


def _bin_dir(dvc: str) -> str:
    """The folder of the `dvc` (and `sep-bench`) executables the jobs run."""
    import shutil
    import sys

    found = shutil.which(dvc) if os.sep not in dvc else dvc
    return str(Path(found).resolve().parent if found else Path(sys.executable).parent)


def load_submission(root: Path, sub_id: str | None = None) -> Submission:
    root = root.resolve()
    base = root / CLUSTER_DIR
    if sub_id is None:
        latest = base / "latest"
        if not latest.is_file():
            raise ClusterError(f"no cluster submission in {base} (run `sep-bench cluster submit` first)")
        sub_id = latest.read_text().strip()
    path = base / sub_id / "submission.json"
    try:
        sub = Submission(**json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise ClusterError(f"{path}: not a readable submission record ({err})") from None
    jobs_ok = isinstance(sub.jobs, dict) and all(isinstance(s, str) and isinstance(j, str) and _JOB_ID.match(j)
                                                 for s, j in sub.jobs.items())
    if not jobs_ok or not isinstance(sub.stages, list) or set(sub.stages) != set(sub.jobs):
        raise ClusterError(f"{path}: not a readable submission record (its stages and job ids do not match)")
    return sub


def latest_submission(root: Path) -> Submission | None:
    return load_submission(root) if (root / CLUSTER_DIR / "latest").is_file() else None
