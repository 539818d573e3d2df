"""`sep-bench train` and `sep-bench selection`: the pipeline's training stages (jobs: `sep_bench.engine.jobs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sep_bench import paths
from sep_bench.cli.common import (
    NoTrackOpt,
    ParamsOpt,
    ProfileOpt,
    SetOpt,
    SeedOpt,
    TrackingOpt,
    console,
    is_rank0,
    load,
    progress,
    tracking,
    user_errors,
)

__all__ = ["register"]


def register(app: typer.Typer, argv=None) -> None:
    app.command("train")(train)
    app.command("selection")(selection)


def train(
    detector: str = typer.Option(..., "--detector", "-d", help="Registered detector name (see `sep-bench list`)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    sets: Optional[list[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = typer.Option(None, help="Checkpoint folder (default: runs/<profile>/<detector>/seed<s>/train)."),
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Train a detector under the active profile; resumes from the folder's last checkpoint if it matches."""
    with user_errors():
        p, prof_name = load(params, profile, sets)  # first: may set environment variables torch reads when it loads
        from sep_bench.engine.jobs.train import train_job
        from sep_bench.protocol import resolve

        spec = resolve(p, detector, prof_name, seed)
        with progress() as update:
            result = train_job(spec, out or paths.train_dir(prof_name, detector, spec.seed),
                               tracking(p, tracking_uri, no_track), update)
        if not is_rank0():
            return
        val = ", ".join(f"{k} {v:.4f}" for k, v in result.best_val.items() if isinstance(v, float))
        console.print(f"[green]trained {detector}[/] in {result.seconds:.1f}s; best epoch {result.best_epoch + 1}"
                      f"/{result.epochs} (validation: {val or 'none'}); {result.best_checkpoint}", highlight=False)


def selection(
    detector: str = typer.Option(..., "--detector", "-d", help="Registered detector name."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    sets: Optional[list[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Train with checkpoint selection on the test generators (train.select_on: test) and record, per epoch, the
    validation and test metrics and the epoch each selection keeps (results/selection/<profile>/<NAME>/seed<s>.json)."""
    with user_errors():
        p, prof_name = load(params, profile, sets)
        if (why := p.skipped_selection(detector)) is not None:
            _record_skipped_selection(prof_name, detector, p.run.seeds[0] if seed is None else seed, why)
            return
        from sep_bench.engine.jobs.train import selection_job
        from sep_bench.protocol import resolve

        spec = resolve(p, detector, prof_name, seed)
        with progress() as update:
            result, record, target = selection_job(spec, tracking(p, tracking_uri, no_track), update,
                                                   write=is_rank0())
        if record is None:
            return
        v, t = record["val_selected"], record["test_selected"]
        console.print(
            f"[green]{detector}[/] seed {spec.seed}: validation keeps epoch {v['epoch'] + 1 if v else '-'} "
            f"(Mean test ACC {100 * v['mean']['acc']:.2f}%), test selection keeps epoch {t['epoch'] + 1} "
            f"({100 * t['mean']['acc']:.2f}%) of {result.epochs}; {target}" if v else
            f"[green]{detector}[/]: test selection keeps epoch {t['epoch'] + 1}; {target}", highlight=False)


def _record_skipped_selection(profile: str, detector: str, seed: int, why: str) -> None:
    """A selection stage of a detector outside run.detectors: its outputs say it was skipped and why (the report's
    selection table leaves it out), so a narrowed run.detectors needs no edit of run.selection."""
    from sep_bench.io import write_json

    paths.selection_train_dir(profile, detector, seed).mkdir(parents=True, exist_ok=True)
    write_json(paths.selection_path(profile, detector, seed),
               {"detector": detector, "profile": profile, "seed": seed, "skipped": why})
    console.print(f"[yellow]note:[/] {why}", highlight=False, soft_wrap=True)
