"""MLflow tracking: the one place that knows run names, tags, params, metrics and artifacts.

- Store: ``sqlite:///<project root>/mlflow.db`` by default, where the project root is ``$DVC_ROOT`` when DVC runs
  the stage (queued experiments run in a temporary copy but still log to the main repository's DB), else the
  git top level, else the current folder. ``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` point to a shared server.
- The sqlite DB is created and migrated under a file lock before first use, so parallel stages never race
  through the schema migration.
- One experiment per profile (``sep-bench/<profile>``) with artifacts under ``<root>/mlartifacts``, tagged so
  the MLflow UI opens it in its model-training view; one run per train and per evaluation; a run that raises
  (or is stopped by SIGTERM/Ctrl-C) ends as FAILED.
- Grouping: every run of one *pipeline execution* is nested under one parent run (``sep_bench.kind=pipeline``),
  which `sep-bench pipeline` creates before it starts DVC and ends when DVC returns (or is interrupted). Its id
  reaches the stage commands as ``$SEP_BENCH_PARENT_RUN_ID``; the CLI reads it once and passes it down as an
  argument (`Tracking.parent_run_id`). A stage that fails ends the parent as FAILED. The report stage logs the
  tables and plots to the parent. ``dvc repro`` run directly (no parent id) logs un-nested runs.
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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator, Sequence

__all__ = [
    "project_root", "resolve_tracking_uri", "ensure_store", "Tracker", "Tracking", "git_state", "TAG_PREFIX",
    "open_run", "start_parent", "log_to_run", "end_run", "get_experiment",
]

TAG_PREFIX = "sep_bench."
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


# ---- where runs go, and the parent run of a pipeline execution ------------------------------------------------


@dataclass(frozen=True)
class Tracking:
    """Where a command's MLflow runs go: the store `uri`, the experiment prefix (params.yaml ``tracking.experiment``;
    one experiment per profile) and the run they nest under (None: not nested)."""

    uri: str
    experiment: str
    parent_run_id: str | None = None


def open_run(tracking: Tracking | None, spec, kind: str, extra_tags: dict | None = None, row: str | None = None):
    """The MLflow run of one job on `spec` (a `sep_bench.protocol.RunSpec`; a null context without `tracking`),
    named ``<kind>/<row>/seed<s>``. `row`: the table row the run produces when it is not the detector's (an
    evaluation-only entry's name). Nested under `tracking.parent_run_id`, whose run a failure also fails."""
    if tracking is None:
        return nullcontext(None)
    tags = {
        f"{TAG_PREFIX}kind": kind,
        f"{TAG_PREFIX}profile": spec.profile_name,
        f"{TAG_PREFIX}detector": spec.detector,
        f"{TAG_PREFIX}protocol_hash": spec.protocol_hash(),
        f"{TAG_PREFIX}test_generators": ",".join(spec.profile.data.test_generators),
        f"{TAG_PREFIX}seed": str(spec.seed),
        **(extra_tags or {}),
    }
    return Tracker(
        uri=tracking.uri,
        experiment=f"{tracking.experiment}/{spec.profile_name}",
        run_name=f"{kind}/{row or spec.detector}/seed{spec.seed}",
        tags=tags,
        params={"kind": kind, **spec.flat_params()},
        parent_run_id=tracking.parent_run_id,
        fail_parent=tracking.parent_run_id is not None,
    )


def _process_alive(pid: int, created_ms: int) -> bool:
    """Whether process `pid` on this host, started at `created_ms`, still exists."""
    try:
        import psutil

        return int(psutil.Process(pid).create_time() * 1000) == created_ms
    except Exception:
        return False


def start_parent(uri: str, experiment: str, run_name: str, tags: dict[str, str],
                 parent_run_id: str | None = None) -> str:
    """Create the RUNNING parent run of a pipeline execution or comparison in `experiment`; returns its id. The
    caller passes the id to every run it starts (`Tracking.parent_run_id`) and ends it with `end_run`."""
    from mlflow.tracking import MlflowClient

    ensure_store(uri)
    client = MlflowClient(tracking_uri=uri)
    exp_id = get_experiment(client, uri, experiment)
    all_tags = {**_context_tags(), **tags, "dvc.stage": ""}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id


def log_to_run(uri: str, run_id: str, *, artifacts: Sequence[tuple[Path, str | None]] = (),
               metrics: dict[str, float] | None = None) -> None:
    """Log `artifacts` ((path, artifact subdir) pairs) and `metrics` to run `run_id` (e.g. the report to the
    pipeline's parent run)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for path, subdir in artifacts:
        client.log_artifact(run_id, str(path), artifact_path=subdir)
    ts = int(time.time() * 1000)
    items = [Metric(k, float(v), ts, 0) for k, v in (metrics or {}).items() if v is not None and v == v]
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000])


def end_run(uri: str, run_id: str, *, artifacts: Sequence[tuple[Path, str | None]] = (),
            status: str = "FINISHED") -> None:
    """Log `artifacts` to run `run_id` and end it with `status` (a run a stage already ended as FAILED stays so)."""
    from mlflow.tracking import MlflowClient

    log_to_run(uri, run_id, artifacts=artifacts)
    client = MlflowClient(tracking_uri=uri)
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status=status)


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
        # a stopped stage (SIGTERM or Ctrl-C: a preempted job that SLURM requeues, a pipeline interrupted by its
        # user) ends its own run only; whoever runs the stages ends the parent (sep-bench pipeline, the report job)
        stopped = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        if exc_type is not None and self.fail_parent and self.parent_run_id and not stopped:
            self.client.set_tag(self.parent_run_id, f"{TAG_PREFIX}error",
                                f"{self.run.info.run_name}: {exc_type.__name__}: {exc}"[:5000])
            self.client.set_terminated(self.parent_run_id, status=status)

