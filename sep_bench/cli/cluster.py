"""`sep-bench cluster submit | status | cancel`: the pipeline's out-of-date stages as SLURM jobs (docs/cluster.md)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console

__all__ = ["register"]

app = typer.Typer(help="Run the pipeline's out-of-date stages as SLURM jobs (docs/cluster.md).",
                  no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def register(root: typer.Typer, argv=None) -> None:
    root.add_typer(app, name="cluster")


@contextmanager
def _errors() -> Iterator[None]:
    """A user-fixable error as one red line and exit code 2."""
    from sep_bench.cluster.plan import DvcError
    from sep_bench.cluster.submit import ClusterError
    from sep_bench.protocol import ProtocolError

    try:
        yield
    except (ClusterError, DvcError, ProtocolError, ValueError) as e:
        err.print("[bold red]error:[/] ", end="", highlight=False)
        err.print(str(e), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _root() -> Path:
    from sep_bench.tracking import project_root

    return project_root()


@app.command()
def submit(
    params: Path = typer.Option(Path("params.yaml"), "--params", help="The protocol file."),
    no_track: bool = typer.Option(False, "--no-track", help="No MLflow parent run (the jobs still track)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the jobs that would be submitted; submit nothing."),
) -> None:
    """Submit every stage DVC says is out of date (and what depends on it) as SLURM jobs, then return."""
    from sep_bench.cluster.status import render, stage_states
    from sep_bench.cluster.submit import submit as do_submit
    from sep_bench.protocol import load_params

    with _errors():
        p = load_params(params)
        if dry_run:
            _print_plan(p)
            return
        sub = do_submit(_root(), p, track=not no_track)
        if sub is None:
            out.print("Data and pipelines are up to date: nothing to submit.")
            return
        for g in sub.groups:
            dep = f"  ({g['dependency'].removeprefix('--dependency=')})" if g["dependency"] else ""
            out.print(f"job {g['job']}: {g['kind']} x{len(g['stages'])}{dep}", highlight=False)
        out.print(render(sub, stage_states(sub)))
        out.print(f"{len(sub.stages)} stage(s) in {len(sub.groups)} job(s); MLflow parent run {sub.parent_run_id}; "
                  f"logs in {sub.folder / 'logs'}", highlight=False)
        out.print("watch: sep-bench cluster status   (--wait to block until every job has ended)", highlight=False)


def _print_plan(p) -> None:
    from sep_bench.cluster.plan import plan
    from sep_bench.cluster.submit import resources_of

    scheduled, groups = plan(_root(), shape=lambda s: resources_of(p.cluster, p.launcher, s))
    for i, g in enumerate(groups):
        res = resources_of(p.cluster, p.launcher, g.stages[0]).model_dump(exclude_none=True)
        wait = f"after task i of {g.after[0].split('@')[0]}" if g.paired else f"after {', '.join(g.after) or '-'}"
        out.print(f"job {i}: {g.kind} x{len(g.stages)} ({wait}) {res}: {', '.join(g.stages)}", highlight=False)
    out.print(f"{len(scheduled)} stage(s) in {len(groups)} job(s) would be submitted", highlight=False)


@app.command()
def status(
    submission: Optional[str] = typer.Option(None, help="A submission id (default: the latest)."),
    wait: bool = typer.Option(False, "--wait", help="Poll until every job has ended; exit 1 if any did not complete."),
    timeout: float = typer.Option(24 * 3600, help="With --wait: give up after this many seconds."),
) -> None:
    """Each submitted stage's job state (a table); with --wait, until all have ended."""
    from sep_bench.cluster.status import render, stage_states
    from sep_bench.cluster.status import wait as wait_for
    from sep_bench.cluster.submit import load_submission

    with _errors():
        sub = load_submission(_root(), submission)
        states = wait_for(sub, timeout_s=timeout) if wait else stage_states(sub)
        out.print(render(sub, states))
        if wait and any(s.state != "COMPLETED" for s in states.values()):
            raise typer.Exit(1)


@app.command("end-parent")
def end_parent(run_id: str = typer.Argument(..., help="The submission's parent run (SEP_BENCH_PARENT_RUN_ID).")) -> None:
    """End a submission's MLflow parent run as FINISHED (the report job runs this after the report stage)."""
    from sep_bench.tracking import end_run, resolve_tracking_uri

    with _errors():
        end_run(resolve_tracking_uri(), run_id)


@app.command()
def cancel(submission: Optional[str] = typer.Option(None, help="A submission id (default: the latest).")) -> None:
    """Cancel the submission's jobs that are still in the queue."""
    import subprocess

    from sep_bench.cluster.status import active_jobs
    from sep_bench.cluster.submit import load_submission

    with _errors():
        sub = load_submission(_root(), submission)
        live = sorted({j.split("_")[0] for j in active_jobs(sub)}, key=int)
        if live:
            subprocess.run(["scancel", *live], check=False, timeout=120)
        out.print(f"cancelled {len(live)} job(s) of submission {sub.id}", highlight=False)
