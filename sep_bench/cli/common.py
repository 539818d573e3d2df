"""What every `sep-bench` command shares: the console, user-facing errors, progress bars, params and tracking.

The command modules of `sep_bench.cli` use these so every command behaves the same: a fixable error is one line
naming the fix (exit code 2), long loops show a rich progress bar, and every run is tracked the same way.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["console", "user_errors", "progress", "load", "tracking", "is_rank0", "PARENT_RUN_ENV", "ParamsOpt", "ProfileOpt", "SeedOpt",
           "TrackingOpt", "NoTrackOpt", "SetOpt", "parse_sets"]

console = Console(stderr=True)

ParamsOpt = typer.Option(Path("params.yaml"), "--params", help="The protocol file.")
ProfileOpt = typer.Option(None, "--profile", help="Profile to use instead of params.yaml's `profile`.")
SeedOpt = typer.Option(None, "--seed", help="Seed (default: the first of params.yaml's run.seeds).")
TrackingOpt = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: sqlite DB at the repo root).")
NoTrackOpt = typer.Option(False, "--no-track", help="Do not log to MLflow.")
SetOpt = typer.Option(None, "--set", "-S", help="Override a params.yaml value for this command only, as `dvc exp run "
                      "-S` does: KEY=VALUE with a dotted key and a YAML value (repeatable), e.g. budget=smoke, "
                      "'run.detectors=[npr,sep]', profiles.genimage.train.batch_size=16.")


#: Errors a user can fix, as module:class. Looked up only in modules already imported (an error can only come from
#: one), so entering `user_errors` imports nothing: torch must not load before `load` has applied the profile's
#: deterministic environment.
USER_ERRORS = ("sep_bench.data.layouts:LayoutError", "sep_bench.detectors:UnknownDetectorError",
               "sep_bench.engine.checkpoint:CheckpointError", "sep_bench.engine.inference:SkipBudgetError",
               "sep_bench.protocol:ProtocolError", "sep_bench.weights:WeightsFileError",
               "sep_bench.weights:PretrainedUnavailableError")  # WeightsFileError includes UnsafeCheckpointError


def _user_error_types() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [FileNotFoundError]
    for ref in USER_ERRORS:
        module, name = ref.split(":")
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn errors a user can fix into one red line and exit code 2."""
    try:
        yield
    except Exception as err:
        if not isinstance(err, _user_error_types()):
            raise
        # soft_wrap: the message stays one line (rich would otherwise break it at the console width), and
        # markup=False: file names and keys with [brackets] are printed as they are.
        console.print("[bold red]error:[/] ", end="", highlight=False)
        console.print(str(err), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None


@contextmanager
def progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display; yields ``update(task, completed, total)``."""
    prog = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )
    tasks: dict[str, int] = {}

    def update(name: str, completed: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = prog.add_task(name, total=total)
        prog.update(tasks[name], completed=completed, total=total)

    with prog:
        yield update


def parse_sets(sets: Optional[list[str]]) -> dict:
    """``--set KEY=VALUE`` options -> {dotted key: value}, each value read as YAML (``2`` is a number, ``[a,b]`` a
    list, ``null`` None); a malformed option is a ProtocolError naming it."""
    import yaml

    from sep_bench.protocol import ProtocolError

    out: dict = {}
    for item in sets or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise ProtocolError(f"--set {item!r}: expected KEY=VALUE with a dotted params.yaml key, e.g. "
                                "budget=smoke or profiles.genimage.train.epochs=2")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ProtocolError(f"--set {item!r}: the value is not valid YAML ({err.problem})") from None
    return out


def load(params: Path, profile: Optional[str], sets: Optional[list[str]] = None):
    """(Params, active profile name); `sets`: ``--set KEY=VALUE`` overrides (`parse_sets`)."""
    from sep_bench.protocol import load_params

    p = load_params(params, parse_sets(sets))
    name = profile or p.profile
    if name in p.profiles:  # before anything imports torch (see engine.determinism)
        from sep_bench.engine.determinism import apply_env

        apply_env(p.profiles[name].deterministic)
    return p, name


#: the MLflow run every tracked run of one pipeline execution is nested under: set by `sep-bench pipeline` (and by a
#: cluster submitter) for the stage commands it starts; read here, once, and passed down as an argument
PARENT_RUN_ENV = "SEP_BENCH_PARENT_RUN_ID"


def tracking(p, tracking_uri: Optional[str], no_track: bool):
    """Where a command's MLflow runs go (`sep_bench.tracking.Tracking`), or None with --no-track and on the
    ranks other than 0 of a torchrun launch (only rank 0 logs)."""
    if no_track or os.environ.get("RANK", "0") != "0":
        return None
    from sep_bench.tracking import Tracking, resolve_tracking_uri

    return Tracking(uri=resolve_tracking_uri(tracking_uri or p.tracking.uri), experiment=p.tracking.experiment,
                    parent_run_id=os.environ.get(PARENT_RUN_ENV, "").strip() or None)


def is_rank0() -> bool:
    """Under torchrun, rank 0 reports."""
    return os.environ.get("RANK", "0") == "0"
