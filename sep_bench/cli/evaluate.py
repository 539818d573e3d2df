"""`sep-bench evaluate` and `sep-bench released ...`: the pipeline's evaluation stages (jobs:
`sep_bench.engine.jobs`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sep_bench.cli.common import (
    NoTrackOpt,
    ParamsOpt,
    ProfileOpt,
    SetOpt,
    SeedOpt,
    TrackingOpt,
    console,
    load,
    progress,
    tracking,
    user_errors,
)

__all__ = ["register", "metrics_table", "rate_text", "efficiency_line"]


def register(app: typer.Typer, argv=None) -> None:
    app.command("evaluate")(evaluate)
    released_app = typer.Typer(help="Evaluation-only entries (params.yaml released:): the authors' weights.",
                               no_args_is_help=True)
    released_app.command("resolve")(released_resolve)
    app.add_typer(released_app, name="released")


def evaluate(
    detector: Optional[str] = typer.Option(None, "--detector", "-d", help="Registered detector name."),
    released: Optional[str] = typer.Option(None, "--released", help="Evaluate params.yaml's evaluation-only entry released.<NAME> (the authors' weights; no training)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint (default: the training stage's best)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Evaluate the authors' released weights file (official format) with --detector, as an ad-hoc entry."),
    name: Optional[str] = typer.Option(None, "--name", help="Row name of an ad-hoc --weights evaluation (default: <detector>-released)."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    sets: Optional[list[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Evaluate a training run, or released weights, on every test generator, clean and under the profile's
    perturbations; write predictions and metrics (results/metrics/<profile>/<row>/seed<s>.json)."""
    with user_errors():
        p, prof_name = load(params, profile, sets)  # first: may set environment variables torch reads when it loads
        from sep_bench.engine.jobs.evaluate import eval_target, evaluate_job

        target = eval_target(p, prof_name, detector=detector, released=released, weights=weights, name=name,
                             checkpoint=checkpoint, seed=seed)
        with progress() as update:
            m = evaluate_job(target, tracking(p, tracking_uri, no_track), update)
        Console().print(metrics_table(m, f"{target.row} on {prof_name}"))
        console.print(efficiency_line(target.row, m["efficiency"]), highlight=False, markup=False)


def metrics_table(m: dict, title: str) -> Table:
    """The evaluation's console table: one row per test generator, Mean, then Mean under each extra evaluation.
    Cells are plain text (`Text`), so a row name such as ``Mean [jpeg95]`` is never read as rich markup."""
    rows = [(g, r) for g, r in m["generators"].items()] + [("Mean", m["mean"])]
    rows += [(f"Mean [{name}]", v["mean"]) for name, v in m["perturbed"].items()]  # what was evaluated
    table = Table(title=Text(title))
    for col in ("generator", "ACC", "real ACC", "fake ACC", "AP", "AUC"):
        table.add_column(col, justify="right" if col != "generator" else "left")
    fmt = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    for g, r in rows:
        table.add_row(Text(g), *(Text(fmt(r.get(k))) for k in ("acc", "real_acc", "fake_acc", "ap", "auc")))
    return table


def rate_text(value: float | None) -> str:
    """A throughput as the tables show it: whole from 10 up (1,234), 2 significant digits below (5.3, 0.50,
    0.012), never rounded to 0."""
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 10:
        return f"{value:,.0f}"
    return f"{value:.{max(0, 1 - math.floor(math.log10(abs(value))))}f}"


def efficiency_line(row: str, eff: dict) -> str:
    gflops = "-" if eff["flops_per_image"] is None else f"{eff['flops_per_image'] / 1e9:.3g}"
    return (f"{row}: {eff['params_total'] / 1e6:.2f} M parameters ({eff['params_trainable'] / 1e6:.2f} M "
            f"trainable), {gflops} GFLOPs/image, {rate_text(eff['images_per_s'])} images/s on {eff['device']}")


def released_resolve(
    name: str = typer.Argument(..., help="An entry of params.yaml's released:."),
    params: Path = ParamsOpt,
) -> None:
    """Find the entry's weights (downloading a hub reference when online), check its sha256 pin and write
    runs/released/<name>.json (the DVC stage released@<name>)."""
    from sep_bench.released import resolve_weights, write_record

    with user_errors():
        p, _ = load(params, None)
        resolved = resolve_weights(name, p.released_entry(name))
        out = write_record(resolved)
        console.print(f"{name}: {resolved.detector} weights {resolved.path} sha256 {resolved.sha256} -> {out}",
                      highlight=False)


