"""`sep-bench reconstruct`: the pipeline's reconstruction stage (DIRE maps, DRCT reconstructions)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from sep_bench.cli.common import (
    NoTrackOpt,
    ParamsOpt,
    ProfileOpt,
    SetOpt,
    TrackingOpt,
    console,
    load,
    progress,
    tracking,
    user_errors,
)

__all__ = ["register"]


def register(app: typer.Typer, argv=None) -> None:
    app.command("reconstruct")(reconstruct)


def reconstruct(
    detector: Optional[list[str]] = typer.Option(
        None, "--detector", "-d", help="Detector whose diffusion reconstructions to build (repeatable; default: "
        "every detector of run.detectors, as the DVC stage runs it)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    sets: Optional[list[str]] = SetOpt,
    device: Optional[str] = typer.Option(None, help="torch device (default: cuda if available, else cpu)."),
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """The reconstruction stage (DIRE maps, DRCT reconstructions): once per image content, cached and resumable,
    in data/recon/<profile>/<detector>; detectors without `model.reconstruct` get a 'not needed' manifest."""
    with user_errors():
        p, prof_name = load(params, profile, sets)  # first: may set environment variables torch reads when it loads
        from sep_bench.recon.command import reconstruct_detector
        from sep_bench.tracking import open_run

        names = detector or list(p.run.detectors)
        where = tracking(p, tracking_uri, no_track)

        def tracker(spec):
            return open_run(where, spec, "reconstruct")

        for name in names:
            with progress() as update:
                m = reconstruct_detector(p, prof_name, name, device=device, progress=update, tracker_factory=tracker)
            if not m.get("needed"):
                console.print(f"{name}: no reconstruction needed", highlight=False)
                continue
            r = m["this_run"]
            console.print(f"[green]reconstruct {name}[/]: {r['unique']} images, {r['computed']} computed, "
                          f"{r['cached']} cached ({r['seconds']:.1f}s; {m['pipeline']})", highlight=False)


