"""MLflow tracking: the one place that knows run names, tags, params, metrics and artifacts.

- Store: ``sqlite:///<project root>/mlflow.db`` by default, where the project root is ``$DVC_ROOT`` when DVC runs
  the stage (queued experiments run in a temporary copy but still log to the main repository's DB), else the
  git top level, else the current folder. ``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` point to a shared server.
- The sqlite DB is created and migrated under a file lock before first use, so parallel stages never race
  through the schema migration.
- One experiment per profile (``sep-bench/<profile>``) with artifacts under ``<root>/mlartifacts``; one run per
  train and per evaluation; a run that raises (or is stopped by SIGTERM/Ctrl-C) ends as FAILED.
"""

from __future__ import annotations

import fcntl
import os
import platform
import subprocess
import time
from contextlib import contextmanager, nullcontext
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

__all__ = ["project_root", "resolve_tracking_uri", "ensure_store", "Tracker", "git_state", "TAG_PREFIX"]

TAG_PREFIX = "sep_bench."


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


def ensure_store(uri: str) -> None:
    """Create/migrate the tracking DB once, under a lock (parallel first use crashes in alembic otherwise)."""
    db = _sqlite_path(uri)
    if db is None:
        return
    with _file_lock(db.with_name(db.name + ".lock")):
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit or "unknown", "git.dirty": str(bool(dirty)).lower()}


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("sep-bench", "torch", "torchvision", "timm", "open-clip-torch", "numpy", "mlflow", "dvc"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class Tracker:
    """One MLflow run. Use as a context manager; failures end the run as FAILED."""

    def __init__(
        self,
        *,
        uri: str,
        experiment: str,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
        parent_run_id: str | None = None,
    ) -> None:
        from mlflow.tracking import MlflowClient

        ensure_store(uri)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self._experiment(experiment)
        root = project_root()
        all_tags = {
            **git_state(root),
            "dvc.stage": os.environ.get("DVC_STAGE", ""),
            "dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
            "host": platform.node(),
            **{f"version.{k}": v for k, v in _versions().items()},
            **tags,
        }
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = self.run.info.run_id
        self._log_params(params)

    def _experiment(self, name: str) -> str:
        db = _sqlite_path(self.uri)
        lock = _file_lock(db.with_name(db.name + ".lock")) if db else nullcontext()
        with lock:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            artifacts = (project_root() / "mlartifacts").as_uri() if db else None
            return self.client.create_experiment(name, artifact_location=artifacts)

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float | None], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=subdir)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED")
        if exc is not None:
            self.client.set_tag(self.run_id, f"{TAG_PREFIX}error", f"{exc_type.__name__}: {exc}"[:5000])
        self.client.set_terminated(self.run_id, status=status)

