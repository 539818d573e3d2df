"""MLflow tracking: the one place that knows run names, tags, params, metrics and artifacts.

- Store: ``sqlite:///<project root>/mlflow.db`` by default, where the project root is ``$DVC_ROOT`` when DVC runs
  the stage (queued experiments run in a temporary copy but still log to the main repository's DB), else the
  git top level, else the current folder. ``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` point to a shared server.
- The sqlite DB is created and migrated under a file lock before first use, so parallel stages never race
  through the schema migration.
- One experiment per profile (``sep-bench/<profile>``) with artifacts under ``<root>/mlartifacts``, tagged so
  the MLflow UI opens it in its model-training view; one run per train and per evaluation; a run that raises
  (or is stopped by SIGTERM/Ctrl-C) ends as FAILED.
- Grouping: every train/evaluate run of one *pipeline execution* is nested under one parent run
  (``sep_bench.kind=pipeline``). DVC runs each stage in its own process and skips cached stages, so no stage
  can be relied on to create the parent; instead every tracked command looks the parent up by the execution's
  id (tag ``sep_bench.pipeline_id``) and creates it if it is the first. The id is ``$SEP_BENCH_PIPELINE_ID``
  when set (a wrapper or CI job exporting one id for several commands), else, inside a DVC stage
  (``$DVC_STAGE`` is set), the pid and start time of the ``dvc`` process that runs the stages, which is the same
  for every stage of one ``dvc repro`` / ``dvc exp run`` and differs between invocations. Outside both, runs are
  not nested. A submitter that creates the parent itself (`sep-bench cluster submit`, whose jobs each run under
  their own ``dvc`` process) hands its run id to every command in ``$SEP_BENCH_PARENT_RUN_ID``, which wins over
  both. The report stage logs the tables and plots to the parent and ends it; a stage that fails ends it
  as FAILED; a parent left RUNNING by a DVC process that no longer exists (e.g. the report was cached) is ended
  when the next pipeline execution on this host starts.
- The experiment's get-or-create is race-safe across processes and hosts: the sqlite store is covered by a file
  lock, and with a server (whose store no file lock covers) a ``RESOURCE_ALREADY_EXISTS`` from a concurrent
  creator is caught and the experiment re-read.
- A SIGKILLed (or OOM-killed) command cannot end its run, which stays RUNNING; every run records its process
  (tag ``sep_bench.process``: host, pid, start time) and the next run of the same name (kind/detector/seed)
  ends such a run as FAILED, with the reason in ``sep_bench.error``, if that process no longer exists.
"""

from __future__ import annotations

import fcntl
import functools
import os
import platform
import subprocess
import time
import uuid
from contextlib import contextmanager, nullcontext
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "project_root", "resolve_tracking_uri", "ensure_store", "Tracker", "git_state", "TAG_PREFIX", "PIPELINE_ENV",
    "pipeline_id", "pipeline_parent", "start_parent", "finish_parent", "new_pipeline_id", "get_experiment",
    "PARENT_ENV",
]

TAG_PREFIX = "sep_bench."
PIPELINE_ENV = "SEP_BENCH_PIPELINE_ID"
PIPELINE_ID_TAG = f"{TAG_PREFIX}pipeline_id"
PARENT_ENV = "SEP_BENCH_PARENT_RUN_ID"  # a parent run created before the commands start (a cluster submission)
_PARENT_PREFIX = "parent:"
# The MLflow 3 UI opens an experiment in its GenAI view unless the experiment says what kind it is.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")


def project_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        if top:
            return Path(top).resolve()
    except (OSError, subprocess.SubprocessError):
        pass
    return Path.cwd().resolve()


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """Explicit value > $MLFLOW_TRACKING_URI > sqlite DB at the project root."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{project_root() / 'mlflow.db'}"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


_ENSURED: set[str] = set()  # stores this process has created/checked (an evaluation opens a run per variant)


def ensure_store(uri: str) -> None:
    """Create/migrate the tracking DB once per process, under a lock (parallel first use crashes in alembic)."""
    db = _sqlite_path(uri)
    if db is None or (uri in _ENSURED and db.is_file()):
        return
    with _file_lock(db.with_name(db.name + ".lock")):
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    _ENSURED.add(uri)


@functools.lru_cache(maxsize=1)
def _git_state_of_process() -> dict[str, str]:
    """The checkout's commit and dirty flag, read once per process (two git calls per tracked run otherwise)."""
    return git_state(project_root())


def git_state(root: Path, paths: tuple[str, ...] = ()) -> dict[str, str]:
    """``git.commit`` and ``git.dirty`` (uncommitted changes to tracked files, only under `paths` if given)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", *(("--", *paths) if paths else ()))
    return {"git.commit": commit or "unknown", "git.dirty": str(bool(dirty)).lower()}


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("sep-bench", "torch", "torchvision", "timm", "open-clip-torch", "numpy", "mlflow", "dvc"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _store_lock(uri: str):
    db = _sqlite_path(uri)
    return _file_lock(db.with_name(db.name + ".lock")) if db else nullcontext()


def get_experiment(client, uri: str, name: str) -> str:
    """The id of experiment `name`, created (artifacts under ``<root>/mlartifacts``) if missing."""
    with _store_lock(uri):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.tags.get(EXPERIMENT_KIND_TAG[0]) is None:
                client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND_TAG)
            return exp.experiment_id
        artifacts = (project_root() / "mlartifacts").as_uri() if _sqlite_path(uri) else None
        try:
            return client.create_experiment(name, artifact_location=artifacts, tags=dict([EXPERIMENT_KIND_TAG]))
        except Exception as err:  # another process created it between our read and our create: use theirs
            if getattr(err, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id


def _context_tags() -> dict[str, str]:
    return {
        **_git_state_of_process(),
        "dvc.stage": os.environ.get("DVC_STAGE", ""),
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "host": platform.node(),
        **{f"version.{k}": v for k, v in _versions().items()},
    }


# ---- pipeline grouping --------------------------------------------------------------------------------------


def _dvc_process():
    """The nearest ancestor process that is DVC (``dvc ...``, ``python -m dvc ...`` or `sep-bench pipeline`'s
    ``python -m sep_bench.dvc_lockfile ...``), or None. A warm-started command (sep_bench.warm) is a child of the
    warm server: its ancestors are its caller's."""
    try:
        import psutil

        from sep_bench.warm import CALLER_ENV

        caller = os.environ.get(CALLER_ENV, "")
        start = psutil.Process(int(caller)) if caller.isdigit() else psutil.Process()
        for proc in ([start] if caller.isdigit() else []) + start.parents():
            try:
                args = proc.cmdline()
            except (psutil.Error, OSError):
                continue
            head = [Path(a).name for a in args[:3]]
            module = " ".join(args[1:3])
            if (head and head[0] == "dvc") or (len(head) > 1 and head[1] == "dvc") or module in (
                    "-m dvc", "-m sep_bench.dvc_lockfile"):
                return proc
    except Exception:  # psutil missing or /proc unreadable: no grouping, never a failure
        return None
    return None


def _process_alive(pid: int, created_ms: int) -> bool:
    try:
        import psutil

        return int(psutil.Process(pid).create_time() * 1000) == created_ms
    except Exception:
        return False


def new_pipeline_id(kind: str = "run") -> str:
    return f"{kind}:{platform.node()}:{uuid.uuid4().hex[:12]}"


def pipeline_id() -> str | None:
    """The id of the current pipeline execution (see the module docstring), or None outside one."""
    parent = os.environ.get(PARENT_ENV, "").strip()
    if parent:
        return _PARENT_PREFIX + parent
    explicit = os.environ.get(PIPELINE_ENV, "").strip()
    if explicit:
        return explicit.replace("'", "_")
    if not os.environ.get("DVC_STAGE"):
        return None
    proc = _dvc_process()
    if proc is None:
        return None
    return f"dvc:{platform.node()}:{proc.pid}:{int(proc.create_time() * 1000)}"


def _find_parent(client, experiment_id: str, pid: str):
    if pid.startswith(_PARENT_PREFIX):  # handed over by the submitter: it exists, or the hand-over is wrong
        run = client.get_run(pid[len(_PARENT_PREFIX):])
        if run.info.experiment_id != experiment_id:
            raise ValueError(f"${PARENT_ENV}={run.info.run_id} is a run of experiment {run.info.experiment_id}, "
                             f"not of this command's experiment {experiment_id}")
        return run
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{PIPELINE_ID_TAG}` = '{pid}'", max_results=1)
    return runs[0] if runs else None


def _close_stale_parents(client, experiment_id: str) -> None:
    """End RUNNING pipeline parents of DVC processes on this host that no longer exist."""
    host = platform.node()
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_PREFIX}kind` = 'pipeline' and attributes.status = 'RUNNING'",
        max_results=200,
    )
    for run in runs:
        parts = run.data.tags.get(PIPELINE_ID_TAG, "").split(":")
        if len(parts) == 4 and parts[0] == "dvc" and parts[1] == host and parts[2].isdigit() and parts[3].isdigit():
            if not _process_alive(int(parts[2]), int(parts[3])):
                client.set_tag(run.info.run_id, f"{TAG_PREFIX}note", "ended by the next pipeline execution "
                               "(its DVC process had exited without running the report stage)")
                client.set_terminated(run.info.run_id, status="FINISHED")


def start_parent(uri: str, experiment: str, pid: str, run_name: str, tags: dict[str, str]) -> str:
    """The parent run tagged with pipeline id `pid` in `experiment`: found, or created (RUNNING)."""
    from mlflow.tracking import MlflowClient

    ensure_store(uri)
    client = MlflowClient(tracking_uri=uri)
    exp_id = get_experiment(client, uri, experiment)
    with _store_lock(uri):
        run = _find_parent(client, exp_id, pid)
        if run is not None:
            if run.info.status != "RUNNING":
                client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
        _close_stale_parents(client, exp_id)
        all_tags = {**_context_tags(), **tags, PIPELINE_ID_TAG: pid, "dvc.stage": ""}
        return client.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id


def pipeline_parent(uri: str, experiment: str, tags: dict[str, str]) -> str | None:
    """The current pipeline execution's parent run id (created by its first tracked command), or None."""
    pid = pipeline_id()
    if pid is None:
        return None
    name = f"pipeline/{os.environ.get('DVC_EXP_NAME') or time.strftime('%Y-%m-%d %H:%M:%S')}"
    return start_parent(uri, experiment, pid, name, {f"{TAG_PREFIX}kind": "pipeline", **tags})


def finish_parent(
    uri: str,
    experiment: str,
    *,
    pid: str | None = None,
    artifacts: list[tuple[Path, str | None]] = (),
    metrics: dict[str, float] | None = None,
    status: str = "FINISHED",
) -> str | None:
    """Log `artifacts` ((path, artifact subdir) pairs) and `metrics` to the parent of pipeline `pid` (default:
    the current one) and end it. Returns its run id, or None when there is no such parent."""
    from mlflow.tracking import MlflowClient

    pid = pid or pipeline_id()
    if pid is None:
        return None
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    run = _find_parent(client, exp.experiment_id, pid) if exp is not None else None
    if run is None:
        return None
    run_id = run.info.run_id
    for path, subdir in artifacts:
        client.log_artifact(run_id, str(path), artifact_path=subdir)
    if metrics:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, 0) for k, v in metrics.items() if v is not None and v == v]
        for i in range(0, len(items), 1000):
            client.log_batch(run_id, metrics=items[i : i + 1000])
    client.set_terminated(run_id, status=status)
    return run_id


PROCESS_TAG = f"{TAG_PREFIX}process"


def _process_tag() -> str:
    """``host:pid:start-time-ms`` of this process, so a later run can tell whether it still exists."""
    try:
        import psutil

        created = int(psutil.Process().create_time() * 1000)
    except Exception:
        created = 0
    return f"{platform.node()}:{os.getpid()}:{created}"


def _close_stale_runs(client, uri: str, experiment_id: str, run_name: str) -> None:
    """End as FAILED the RUNNING runs named `run_name` whose process on this host no longer exists.

    A process killed by SIGKILL, the OOM killer or a power loss cannot end its own run; the next run of the same
    stage (same run name: kind/detector/seed) does it. Runs of other hosts, and of live processes, are left alone.
    """
    host = platform.node()
    try:
        with _store_lock(uri):
            runs = client.search_runs(
                [experiment_id],
                filter_string=f"attributes.run_name = '{run_name}' and attributes.status = 'RUNNING'",
                max_results=100,
            )
            for run in runs:
                parts = run.data.tags.get(PROCESS_TAG, "").rsplit(":", 2)
                if len(parts) != 3 or parts[0] != host or not parts[1].isdigit() or not parts[2].isdigit():
                    continue
                pid, created = int(parts[1]), int(parts[2])
                if pid == os.getpid() or created == 0 or _process_alive(pid, created):
                    continue
                client.set_tag(run.info.run_id, f"{TAG_PREFIX}error",
                               f"stale: its process {pid} on {host} no longer exists (killed by SIGKILL, the OOM "
                               f"killer or a power loss before it could end the run); marked FAILED when the next "
                               f"{run_name} run started")
                client.set_terminated(run.info.run_id, status="FAILED")
    except Exception:  # housekeeping must never stop a run from starting
        return


class Tracker:
    """One MLflow run. Use as a context manager; failures end the run as FAILED.

    With `parent_run_id` the run is nested under that run; with `fail_parent` a failure also ends the parent
    as FAILED (a pipeline execution fails with its first failing stage).
    """

    def __init__(
        self,
        *,
        uri: str,
        experiment: str | None = None,
        experiment_id: str | None = None,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
        parent_run_id: str | None = None,
        fail_parent: bool = False,
    ) -> None:
        from mlflow.tracking import MlflowClient

        ensure_store(uri)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = experiment_id or get_experiment(self.client, uri, experiment)
        self.parent_run_id = parent_run_id
        self.fail_parent = fail_parent
        all_tags = {**_context_tags(), **tags, PROCESS_TAG: _process_tag()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        _close_stale_runs(self.client, uri, self.experiment_id, run_name)
        self.run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = self.run.info.run_id
        self._log_params(params)

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_params(self, params: dict[str, Any]) -> None:
        """More params after the start, e.g. values derived at run time (effective batch, scaled lr)."""
        self._log_params(params)

    def log_metrics(self, metrics: dict[str, float | None], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        # None (undefined, e.g. AUC of a one-class subset) and labels (one_class: "fake") are not metrics
        items = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()
                 if v is not None and not isinstance(v, str)]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=subdir)

    def child(self, run_name: str, tags: dict[str, str], params: dict[str, str]) -> "Tracker":
        """A run nested under this one (e.g. one perturbed evaluation under its evaluation run); its failure
        also fails this run."""
        inherited = {k: v for k, v in self.run.data.tags.items() if k.startswith(TAG_PREFIX)}
        return Tracker(uri=self.uri, experiment_id=self.experiment_id, run_name=run_name,
                       tags={**inherited, **tags}, params=params, parent_run_id=self.run_id, fail_parent=True)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED")
        if exc is not None:
            self.client.set_tag(self.run_id, f"{TAG_PREFIX}error", f"{exc_type.__name__}: {exc}"[:5000])
        self.client.set_terminated(self.run_id, status=status)
        if exc_type is not None and self.fail_parent and self.parent_run_id:
            self.client.set_tag(self.parent_run_id, f"{TAG_PREFIX}error",
                                f"{self.run.info.run_name}: {exc_type.__name__}: {exc}"[:5000])
            self.client.set_terminated(self.parent_run_id, status=status)

