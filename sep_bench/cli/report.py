"""`sep-bench report` (the pipeline's last stage), `reproduced`, `compare` and `ablation`: tables from results.

`report`: every table and plot of the active profile (see sep_bench.report.build); inside a pipeline execution
(``$SEP_BENCH_PARENT_RUN_ID``) it also logs them to the execution's MLflow parent run.

`reproduced`: this run's results against the committed reference (sep_bench.report.reproduced).

`compare --detector NAME`: NAME against SEP under exactly this protocol (sep_bench.report.compare), training and
evaluating with the pipeline's jobs where results are missing.

`ablation --detector sep` tabulates the tracked evaluations of a detector's ablation variants (see
sep_bench.report.ablation), e.g. after ``dvc exp run -S detectors.sep.model.gbcsa=false``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sep_bench import paths
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

NBootOpt = typer.Option(10_000, "--n-boot", min=100, help="Bootstrap replicates for CIs and paired tests.")


def register(app: typer.Typer, argv=None) -> None:
    app.command("report")(report_cmd)
    app.command("reproduced")(reproduced)
    app.command("compare")(compare_cmd)
    app.command("ablation")(ablation_cmd)


def report_cmd(
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    sets: Optional[list[str]] = SetOpt,
    reference: str = typer.Option("sep", "--reference", help="Detector every other one is tested against."),
    roc_detector: Optional[str] = typer.Option(None, "--roc-detector",
                                               help="Detector of the ROC plot (default: the reference if run, else the first)."),
    n_boot: int = NBootOpt,
    strict: bool = typer.Option(False, "--strict", help="Refuse unless every detector of run.detectors (and every "
                                "released entry) has results for every seed (the pipeline's report stage)."),
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Tables (md, csv, LaTeX), statistics, reported-vs-reproduced and plots of a profile from its results: every
    detector that has results (the others are listed; --strict refuses instead)."""
    from sep_bench.report.build import build_report
    from sep_bench.report.stats import MEAN
    from sep_bench.report.tables import fmt, fmt_p, rank_marks

    with user_errors():
        p, prof_name = load(params, profile, sets)
        rep = build_report(p, prof_name, reference=reference, roc_detector=roc_detector, n_boot=n_boot,
                           strict=strict)
        out = Console()
        seeds = ", ".join(map(str, rep.seeds))
        table = Table(title=f"ACC (%) — profile {prof_name}, seed{'s' if len(rep.seeds) > 1 else ''} {seeds}")
        table.add_column("detector")
        for c in rep.acc.columns:
            table.add_column(str(c), justify="right")
        multi = bool((rep.n_seeds > 1).any())
        marks = rank_marks(rep.acc)
        style = {"best": "[bold]{}[/]", "second": "[underline]{}[/]", "": "{}"}
        for name, row in rep.acc.iterrows():
            cells = []
            for c, v in row.items():
                ci = rep.ci[name][c]
                cells.append(style[marks.loc[name, c]].format(fmt(v, rep.acc_std.loc[name, c] if multi else None))
                             + f"\n[dim][{100 * ci.low:.1f}, {100 * ci.high:.1f}][/]")
            table.add_row(str(name), *cells)
        table.caption = "95% bootstrap CI over images under each value; best per column in bold, second underlined"
        out.print(table)

        if rep.paired:
            pt = Table(title=f"ACC difference vs {rep.reference} (pp), same images")
            pt.add_column("detector")
            for g in [*rep.generators, MEAN]:
                pt.add_column(g, justify="right")
            for name, res in rep.paired.items():
                pt.add_row(str(name), *(f"{100 * r.diff.estimate:+.2f}\n[dim]{fmt_p(r.p, 'p')}[/]"
                                        + (" *" if r.p < 0.05 else "") for r in (res[g] for g in [*rep.generators, MEAN])))
            pt.caption = "p: McNemar mid-p per generator, paired bootstrap for Mean; * p < 0.05"
            out.print(pt)
        else:
            console.print(rep.reference_note, highlight=False)
        _print_reported(rep, out)
        if p.budget != "full":
            console.print(f"[yellow]run budget {p.budget}[/] ({p.run_budget().describe()}): a check that the path "
                          "runs, not the protocol's numbers", highlight=False, soft_wrap=True)
        if rep.missing:
            console.print(f"[yellow]not in the tables[/] (no results for every seed yet): {', '.join(rep.missing)}; "
                          "`dvc exp run` (or `sep-bench train` / `evaluate`) makes them, `--strict` refuses instead",
                          highlight=False, soft_wrap=True)
        for det in rep.stale:
            console.print(f"[yellow]warning:[/] the metrics of {det} were computed under another protocol than "
                          "params.yaml now gives (rerun `dvc repro`)", highlight=False)
        if rep.learning:
            console.print(rep.learning, highlight=False)
        if rep.format_leak:
            console.print(f"[yellow]warning:[/] {rep.format_leak}", highlight=False)
        console.print(f"wrote {len(rep.files)} files under {paths.TABLES_DIR} and {paths.PLOTS_DIR}", highlight=False)
        _log_report(rep, tracking(p, tracking_uri, no_track))


def _print_reported(rep, out: Console) -> None:
    """Reported vs reproduced as a detectors x generators table: diff (reproduced - reported) per cell."""
    from sep_bench.report.reported import SPREAD_K

    from sep_bench.report.tables import strip_marks

    t = rep.reported
    if t is None or t.empty:
        console.print(rep.reported_md.strip(), highlight=False, markup=False)
        return
    gens = list(dict.fromkeys(t["generator"]))
    dets = list(dict.fromkeys(zip(t["detector"], t["method"])))
    table = Table(title=f"Reported vs reproduced ACC (%) — profile {rep.profile}")
    table.add_column("generator")
    for det, method in dets:
        table.add_column(det if strip_marks(det).lower() == method.lower() else f"{det} ({method})", justify="right")
    cells = {}
    for r in t.itertuples():
        color = {True: "red", False: "green", None: "default"}[r.outside_spread]
        cells[(r.generator, r.detector)] = f"[{color}]{r.diff:+.2f}[/]\n[dim]{r.reported:.1f}→{r.reproduced:.1f}[/]"
    for g in gens:
        table.add_row(g, *(cells.get((g, det), "-") for det, _ in dets))
    single = bool((t["n_seeds"] < 2).any())
    table.caption = ("diff = reproduced - reported (reported→reproduced under it); "
                     + ("one seed: the run-to-run spread is unknown, nothing flagged" if single
                        else f"red: |diff| > {SPREAD_K:g} x std over seeds"))
    out.print(table)


def _log_report(rep, where) -> None:
    """Inside a pipeline execution (a parent run given): the report's files and Mean ACCs go to the execution's
    parent run (`sep-bench pipeline` ends it)."""
    if where is None or where.parent_run_id is None:
        return
    from sep_bench.report.stats import MEAN
    from sep_bench.tracking import log_to_run

    # metric names: the row key without the table marks (†, ‡, §, provenance), which MLflow does not accept
    metrics = {f"{re.sub(r'[^A-Za-z0-9_./: -]', '', str(row))}.mean.acc": float(rep.acc.loc[row, MEAN]) / 100
               for row in rep.acc.index}
    arts = [(f, "report/plots" if f.parent == paths.PLOTS_DIR else "report/tables") for f in rep.files]
    log_to_run(where.uri, where.parent_run_id, artifacts=arts, metrics=metrics)
    console.print(f"logged the report to MLflow run {where.parent_run_id}", highlight=False)


# ---- compare ------------------------------------------------------------------------------------------------


def compare_cmd(
    detector: str = typer.Option(..., "--detector", "-d", help="Your detector's registered name."),
    against: str = typer.Option("sep", "--against", help="The reference detector."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    sets: Optional[list[str]] = SetOpt,
    n_boot: int = NBootOpt,
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Train/evaluate NAME and the reference under the active profile if needed, then compare them per generator
    (results/compare/<profile>/<NAME>_vs_<reference>.{md,csv}); its runs nest under one `compare` run."""
    with user_errors():
        p, prof_name = load(params, profile, sets)  # first: may set environment variables torch reads when it loads
        from sep_bench.report.compare import check_pair, compare, write_comparison
        from sep_bench.tracking import TAG_PREFIX, end_run, start_parent

        check_pair(p, prof_name, detector, against)
        where = tracking(p, tracking_uri, no_track)
        if where is not None:
            parent = start_parent(where.uri, f"{where.experiment}/{prof_name}", f"compare/{detector}-vs-{against}", {
                f"{TAG_PREFIX}kind": "compare", f"{TAG_PREFIX}profile": prof_name,
                f"{TAG_PREFIX}detector": detector, f"{TAG_PREFIX}reference": against,
                f"{TAG_PREFIX}seeds": ",".join(map(str, p.run.seeds)),
                f"{TAG_PREFIX}test_generators": ",".join(p.profiles[prof_name].data.test_generators),
            }, parent_run_id=where.parent_run_id)
            where = replace(where, parent_run_id=parent)
        status, stem = "FAILED", None
        try:
            with progress() as update:
                c = compare(p, prof_name, detector, against, where, n_boot, update)
            for (d, s), how in c.done.items():
                console.print(f"{d} seed {s}: {how}", highlight=False)
            if c.skipped:
                console.print(f"not shown (no results under the current protocol; `dvc repro` makes them): "
                              f"{', '.join(c.skipped)}", highlight=False)
            stem = write_comparison(c, prof_name)
            _print_compare(c, prof_name)
            console.print(f"wrote {stem}.md and .csv", highlight=False)
            status = "FINISHED"
        finally:
            if where is not None:
                arts = [(stem.with_suffix(s), "compare") for s in (".md", ".csv")] if stem is not None else []
                end_run(where.uri, where.parent_run_id, artifacts=arts, status=status)


def _print_compare(c, prof_name: str) -> None:
    for table in compare_tables(c, prof_name):
        Console().print(table)


def compare_tables(c, prof_name: str) -> list[Table]:
    """The console view of a comparison, narrow whatever the number of baselines: NAME against the reference per
    generator, then one row per other detector (Mean ACC, NAME minus it with its 95% CI and p). Every generator
    of every baseline is in the written files."""
    from sep_bench.report.stats import MEAN
    from sep_bench.report.tables import fmt

    detector, against, gens, mean, std, rows = c.detector, c.against, c.generators, c.mean, c.std, c.rows
    multi = bool((c.n > 1).any())
    cell = lambda d, g: fmt(mean.loc[rows[d], g], std.loc[rows[d], g] if multi else None)  # noqa: E731
    t = Table(title=Text(f"{detector} vs {against} — ACC (%), profile {prof_name}"))
    for col in ("generator", rows[detector], rows[against], "diff", "95% CI", "p"):
        t.add_column(Text(col), justify="left" if col == "generator" else "right")
    for g in [*gens, MEAN]:
        t.add_row(Text(g), cell(detector, g), cell(against, g), *_diff_cells(c.tests[detector][g]),
                  end_section=(g == gens[-1]))
    t.caption = (f"diff: {detector} - {against} on the same images; p: McNemar mid-p per generator, "
                 "paired bootstrap for Mean; * p < 0.05")
    tables = [t]
    if c.versus:
        v = Table(title=Text(f"{detector} against each detector — Mean ACC (%), profile {prof_name}"))
        for col in ("detector", "Mean ACC", f"{detector} - it", "95% CI", "p"):
            v.add_column(Text(col), justify="left" if col == "detector" else "right")
        v.add_row(Text(rows[detector]), cell(detector, MEAN), "", "", "", end_section=True)
        for d, r in c.versus.items():
            v.add_row(Text(rows[d]), cell(d, MEAN), *_diff_cells(r))
        v.caption = (f"same images; p: paired bootstrap of the Mean; * p < 0.05. Per generator: the written "
                     f"{prof_name} comparison files (.md, .csv)")
        tables.append(v)
    return tables


def _diff_cells(r) -> list[Text]:
    """diff (green/red when significant), its 95% CI and p of a PairedResult."""
    from sep_bench.report.tables import fmt_p

    sig = r.p < 0.05
    diff = Text(f"{100 * r.diff.estimate:+.2f}", style=("green" if r.diff.estimate > 0 else "red") if sig else "")
    return [diff, Text(f"[{100 * r.diff.low:+.2f}, {100 * r.diff.high:+.2f}]"), Text(fmt_p(r.p) + (" *" if sig else ""))]


# ---- ablation -----------------------------------------------------------------------------------------------


def ablation_cmd(
    detector: str = typer.Option("sep", "--detector", "-d", help="Detector whose ablation switches to tabulate."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    tracking_uri: Optional[str] = TrackingOpt,
) -> None:
    """Ablation table of a detector from its tracked evaluations (one row per setting of its ablation switches).

    Produce the variants with e.g. `dvc exp run -S detectors.sep.model.gbcsa=false` (one experiment per switch:
    eps, gbcsa, fpm, srm_guide); only runs of the current protocol, switches aside, are used.
    """
    from mlflow.tracking import MlflowClient

    from sep_bench.protocol import resolve
    from sep_bench.report.ablation import collect_ablation, write_ablation
    from sep_bench.report.tables import fmt
    from sep_bench.tracking import resolve_tracking_uri

    with user_errors():
        p, prof_name = load(params, profile)
        spec = resolve(p, detector, prof_name)
        uri = resolve_tracking_uri(tracking_uri or p.tracking.uri)
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(f"{p.tracking.experiment}/{prof_name}")
        if exp is None:
            raise FileNotFoundError(f"no MLflow experiment {p.tracking.experiment}/{prof_name} at {uri}: run the "
                                    "pipeline first")
        try:
            frame, counts = collect_ablation(client, exp.experiment_id, spec, list(p.run.seeds))
        except ValueError as err:
            from sep_bench.protocol import ProtocolError

            raise ProtocolError(str(err)) from None
        files = write_ablation(frame, counts, spec, paths.TABLES_DIR / f"{prof_name}_{detector}_ablation")
        table = Table(title=f"Ablation of {detector} — ACC (%), profile {prof_name}")
        table.add_column("variant")
        for c in frame.columns:
            table.add_column(str(c), justify="right")
        for name, row in frame.iterrows():
            table.add_row(str(name), *(fmt(v) if c != "Δ Mean" else f"{v:+.2f}" for c, v in row.items()))
        Console().print(table)
        console.print(f"wrote {', '.join(map(str, files))}", highlight=False)


# ---- reproduced ---------------------------------------------------------------------------------------------


def reproduced(
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    update_reference: bool = typer.Option(False, "--update-reference",
                                          help="Make this run's results the committed reference (maintainers)."),
    spread: Optional[list[str]] = typer.Option(
        None, "--spread", help="With --update-reference: the stated cross-machine spread in ACC points, of every "
        "row (X) or of one row (ROW=X, repeatable); rows not named keep the reference's (0 = bit-identical)."),
    note: str = typer.Option("", "--note", help="With --update-reference: how the spread was measured."),
) -> None:
    """Compare this run's results with the committed reference of the profile (results/reference/<profile>.json):
    per row the reference and reproduced Mean, the difference, bit-identical / within / outside the stated spread
    and the likely cause; writes results/tables/<profile>_reproduced.{md,csv} and prints the one-line verdict."""
    from sep_bench.report.reproduced import snapshot, write_reference, write_tables

    with user_errors():
        p, prof_name = load(params, profile)
        deterministic = p.profiles[prof_name].deterministic
        if update_reference:
            spreads = _spreads(spread or [], list(snapshot(prof_name)["rows"]))
            written = write_reference(prof_name, spreads, note, deterministic)
            console.print(f"reference written: {written}", highlight=False)
        line, _ = write_tables(prof_name, deterministic)
        console.print(line, highlight=False, soft_wrap=True)


def _spreads(values: list[str], rows: list[str]) -> dict[str, float] | None:
    """``--spread`` values: ``X`` for every row, ``ROW=X`` for one (later values win)."""
    out: dict[str, float] = {}
    for value in values:
        row, _, number = value.rpartition("=")
        try:
            x = float(number)
        except ValueError:
            raise typer.BadParameter(f"--spread {value!r}: expected X or ROW=X (ACC points)") from None
        if row and row not in rows:
            raise typer.BadParameter(f"--spread {value!r}: no row {row!r} in this run ({', '.join(rows)})")
        out.update({r: x for r in ([row] if row else rows)})
    return out or None
