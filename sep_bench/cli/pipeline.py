"""`sep-bench pipeline` (the DVC pipeline with progress and the verdict) and `sep-bench ui` (the MLflow UI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
from sep_bench.cli.common import (
    PARENT_RUN_ENV,
    NoTrackOpt,
    ParamsOpt,
    TrackingOpt,
    console,
    load,
    tracking,
    user_errors,
)

__all__ = ["register"]


def register(app: typer.Typer, argv=None) -> None:
    app.command("pipeline", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(pipeline)
    app.command("ui")(ui)


def pipeline(
    ctx: typer.Context,
    params: Path = ParamsOpt,
    cold: bool = typer.Option(False, "--cold", help="Start every stage command normally, without the warm "
                                                    "server (sep_bench.warm) that imports torch & co. once."),
    no_track: bool = NoTrackOpt,
) -> None:
    """Run the DVC pipeline (`dvc repro`, extra arguments are passed on) with a progress line per stage (k of N,
    elapsed, estimated time left), then print the reproduced-vs-committed verdict. `make pipeline` runs this.
    The stages' MLflow runs nest under one parent run of this execution (ended here, also on Ctrl-C)."""
    from sep_bench.report.reproduced import write_tables
    from sep_bench.runner import run_pipeline

    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    with user_errors():
        p, prof_name = load(params, None)  # also the profile's deterministic environment, for dvc and the warm server
    where = tracking(p, None, no_track)
    parent: list[str] = []

    def start_parent_run() -> dict[str, str]:
        """Called only when DVC starts (a no-op run opens no MLflow store)."""
        if where is None:
            return {}
        parent.append(_start_parent(p, prof_name, where))
        return {PARENT_RUN_ENV: parent[0]}

    status = "FAILED"
    try:
        result = run_pipeline(ctx.args, dvc=dvc, warm=not cold, before_dvc=start_parent_run)
        status = "FINISHED" if result.returncode == 0 else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if parent:
            from sep_bench.tracking import end_run

            end_run(where.uri, parent[0], status=status)
    if result.returncode != 0:
        raise typer.Exit(result.returncode)
    with user_errors():
        line, _ = write_tables(prof_name, p.profiles[prof_name].deterministic)
    console.print("tables: results/tables/  plots: results/plots/  runs: sep-bench ui", highlight=False)
    console.print(line, highlight=False, soft_wrap=True)  # the last line: the reproduced-vs-committed verdict


def _start_parent(p, prof_name: str, where) -> str:
    """The execution's parent run (``sep_bench.kind=pipeline``), RUNNING until `pipeline` ends it."""
    import os
    import time

    from sep_bench.tracking import TAG_PREFIX, start_parent

    name = f"pipeline/{os.environ.get('DVC_EXP_NAME') or time.strftime('%Y-%m-%d %H:%M:%S')}"
    return start_parent(where.uri, f"{where.experiment}/{prof_name}", name, {
        f"{TAG_PREFIX}kind": "pipeline",
        f"{TAG_PREFIX}profile": prof_name,
        f"{TAG_PREFIX}detectors": ",".join([*p.run.detectors, *p.released]),
        f"{TAG_PREFIX}seeds": ",".join(map(str, p.run.seeds)),
        f"{TAG_PREFIX}test_generators": ",".join(p.profiles[prof_name].data.test_generators),
    }, parent_run_id=where.parent_run_id)


def ui(
    port: int = typer.Option(5000, help="Port on 127.0.0.1."),
    tracking_uri: Optional[str] = TrackingOpt,
    params: Path = ParamsOpt,
) -> None:
    """Start the MLflow UI on 127.0.0.1 for this project's runs."""
    from sep_bench.protocol import load_params
    from sep_bench.tracking import ensure_store, project_root, resolve_tracking_uri

    uri = tracking_uri
    if uri is None and params.is_file():
        uri = load_params(params).tracking.uri
    uri = resolve_tracking_uri(uri)
    ensure_store(uri)
    console.print(f"MLflow UI for {uri} at http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(port), "--default-artifact-root", (project_root() / "mlartifacts").as_uri()]
    raise typer.Exit(subprocess.call(cmd))


