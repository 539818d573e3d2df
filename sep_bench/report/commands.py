"""The `sep-bench report` and `sep-bench compare` commands (registered in sep_bench/cli.py).

`report` is the pipeline's last stage: every table and plot of the active profile (see sep_bench.report.build);
inside a pipeline execution it also logs them to the execution's MLflow parent run and ends that run.

`selection --detector NAME` measures checkpoint selection on the test generators (the SEP authors' way): it
trains NAME with ``train.select_on: test`` into ``runs/<profile>/<NAME>/seed<s>/train_select_on_test`` (every
epoch evaluated on the test generators) and writes ``results/selection/<profile>/<NAME>/seed<s>.json``, which the
report's ``<profile>_selection.md`` reads (see sep_bench.engine.selection).

`ablation --detector sep` tabulates the tracked evaluations of a detector's ablation variants (see
sep_bench.report.ablation), e.g. after ``dvc exp run -S detectors.sep.model.gbcsa=false``.

`compare --detector NAME` answers "how does my detector do against SEP under exactly this protocol": it makes
sure the reference (``--against``, default sep) and NAME have current results for every seed of ``run.seeds``,
running the very `sep-bench train` / `sep-bench evaluate` commands the DVC stages run (same engine, paths and
tracking) where they do not, and reusing results whose metrics carry the current protocol hash (never
recomputing them). It then prints NAME against the reference per generator, with the difference and its
significance, beside the baselines of ``run.detectors`` that have current results, and writes the same as
``results/compare/<profile>/<NAME>_vs_<reference>.{md,csv}``.
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from sep_bench import paths
from sep_bench.cli_support import (
    NoTrackOpt,
    ParamsOpt,
    ProfileOpt,
    SeedOpt,
    TrackingOpt,
    console,
    load,
    progress,
    run_tracker,
    user_errors,
)

__all__ = ["report_cmd", "compare_cmd", "ablation_cmd", "selection_cmd", "selection_spec", "SELECTION_TRAIN_DIR"]

#: the training folder of a select_on: test run, beside the pipeline's own (runs/<p>/<detector>/seed<s>/)
SELECTION_TRAIN_DIR = "train_select_on_test"

NBootOpt = typer.Option(10_000, "--n-boot", min=100, help="Bootstrap replicates for CIs and paired tests.")


def _fmt(v: float | None, std: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2f}" + (f" ± {std:.2f}" if std is not None and not math.isnan(std) else "")


def _p(p: float, prefix: str = "") -> str:
    return f"{prefix}<0.001" if p < 0.001 else f"{prefix}{'=' if prefix else ''}{p:.3f}"


def report_cmd(
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    reference: str = typer.Option("sep", "--reference", help="Detector every other one is tested against."),
    roc_detector: Optional[str] = typer.Option(None, "--roc-detector",
                                               help="Detector of the ROC plot (default: the reference if run, else the first)."),
    n_boot: int = NBootOpt,
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Tables (md, csv, LaTeX), statistics, reported-vs-reproduced and plots of a profile from its results."""
    from sep_bench.report.build import build_report
    from sep_bench.report.stats import MEAN
    from sep_bench.report.tables import rank_marks

    with user_errors():
        p, prof_name = load(params, profile)
        rep = build_report(p, prof_name, reference=reference, roc_detector=roc_detector, n_boot=n_boot)
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
                cells.append(style[marks.loc[name, c]].format(_fmt(v, rep.acc_std.loc[name, c] if multi else None))
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
                pt.add_row(str(name), *(f"{100 * r.diff.estimate:+.2f}\n[dim]{_p(r.p, 'p')}[/]"
                                        + (" *" if r.p < 0.05 else "") for r in (res[g] for g in [*rep.generators, MEAN])))
            pt.caption = "p: McNemar mid-p per generator, paired bootstrap for Mean; * p < 0.05"
            out.print(pt)
        else:
            console.print(rep.reference_note, highlight=False)
        _print_reported(rep, out)
        for det in rep.stale:
            console.print(f"[yellow]warning:[/] the metrics of {det} were computed under another protocol than "
                          "params.yaml now gives (rerun `dvc repro`)", highlight=False)
        if rep.learning:
            console.print(rep.learning, highlight=False)
        if rep.format_leak:
            console.print(f"[yellow]warning:[/] {rep.format_leak}", highlight=False)
        console.print(f"wrote {len(rep.files)} files under {paths.TABLES_DIR} and {paths.PLOTS_DIR}", highlight=False)
        if not no_track:
            _log_report(p, prof_name, rep, tracking_uri)


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


def _log_report(p, prof_name: str, rep, tracking_uri: Optional[str]) -> None:
    """Inside a pipeline execution: the report's files and Mean ACCs go to the execution's parent run (created
    here when no train/evaluate stage ran in this execution), which then ends."""
    from sep_bench.report.stats import MEAN
    from sep_bench.tracking import TAG_PREFIX, finish_parent, pipeline_id, pipeline_parent, resolve_tracking_uri

    if pipeline_id() is None:
        return
    uri = resolve_tracking_uri(tracking_uri or p.tracking.uri)
    experiment = f"{p.tracking.experiment}/{prof_name}"
    pipeline_parent(uri, experiment, {
        f"{TAG_PREFIX}profile": prof_name,
        f"{TAG_PREFIX}detectors": ",".join(p.run.detectors),
        f"{TAG_PREFIX}seeds": ",".join(map(str, p.run.seeds)),
        f"{TAG_PREFIX}test_generators": ",".join(rep.generators),
    })
    # metric names: the row key without the table marks (†, ‡, §, provenance), which MLflow does not accept
    metrics = {f"{re.sub(r'[^A-Za-z0-9_./: -]', '', str(row))}.mean.acc": float(rep.acc.loc[row, MEAN]) / 100
               for row in rep.acc.index}
    arts = [(f, "report/plots" if f.parent == paths.PLOTS_DIR else "report/tables") for f in rep.files]
    run_id = finish_parent(uri, experiment, artifacts=arts, metrics=metrics)
    if run_id:
        console.print(f"logged the report to MLflow run {run_id}", highlight=False)


# ---- compare ------------------------------------------------------------------------------------------------


@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _current(p, prof_name: str, detector: str, seed: int) -> bool:
    """Whether (detector, seed) has metrics and predictions computed under the current protocol."""
    from sep_bench.io import read_json
    from sep_bench.protocol import resolve

    mpath = paths.metrics_path(prof_name, detector, seed)
    if not (mpath.is_file() and paths.predictions_path(prof_name, detector, seed).is_file()):
        return False
    try:
        return read_json(mpath).get("protocol_hash") == resolve(p, detector, prof_name, seed).protocol_hash()
    except ValueError:
        return False


def _trained(p, prof_name: str, detector: str, seed: int) -> bool:
    """Whether the training folder holds a finished training under the current protocol."""
    from sep_bench.io import read_json
    from sep_bench.protocol import resolve

    folder = paths.train_dir(prof_name, detector, seed)
    summary = folder / "train.json"
    if not ((folder / "best.safetensors").is_file() and summary.is_file()):
        return False
    try:
        return read_json(summary).get("protocol_hash") == resolve(p, detector, prof_name, seed).protocol_hash()
    except ValueError:
        return False


def _run_command(args: list[str]) -> None:
    """Run a `sep-bench` command in this process, exactly as its DVC stage's cmd line does."""
    from sep_bench.cli import app

    code = typer.main.get_command(app).main(args, prog_name="sep-bench", standalone_mode=False)
    if code:
        raise typer.Exit(code)


def _ensure_results(p, prof_name: str, detector: str, seed: int, common: list[str]) -> str:
    if _current(p, prof_name, detector, seed):
        return "reused"
    base = ["--detector", detector, "--seed", str(seed), *common]
    did = []
    if not _trained(p, prof_name, detector, seed):
        _run_command(["train", *base])
        did.append("trained")
    _run_command(["evaluate", *base])
    return " + ".join(did + ["evaluated"])


def compare_cmd(
    detector: str = typer.Option(..., "--detector", "-d", help="Your detector's registered name."),
    against: str = typer.Option("sep", "--against", help="The reference detector."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    n_boot: int = NBootOpt,
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Train/evaluate NAME and the reference under the active profile if needed, then compare them per generator."""
    from sep_bench.detectors import get_detector
    from sep_bench.protocol import ProtocolError, resolve
    from sep_bench.report.build import load_predictions
    from sep_bench.report.stats import paired_comparison, seed_correctness
    from sep_bench.report.tables import load_metrics, metric_frames, row_name
    from sep_bench.tracking import TAG_PREFIX, finish_parent, new_pipeline_id, resolve_tracking_uri, start_parent

    with user_errors():
        p, prof_name = load(params, profile)
        if detector == against:
            raise ProtocolError(f"--detector and --against are both {detector!r}: pick two detectors")
        for name in (against, detector):
            get_detector(name)  # a clear error for an unregistered name
            resolve(p, name, prof_name)  # ... and for a missing params.yaml block
        seeds = list(p.run.seeds)
        common = ["--params", str(params)] + (["--profile", profile] if profile else [])
        common += (["--tracking-uri", tracking_uri] if tracking_uri else []) + (["--no-track"] if no_track else [])

        pid, uri, experiment = None, None, f"{p.tracking.experiment}/{prof_name}"
        if not no_track:
            uri = resolve_tracking_uri(tracking_uri or p.tracking.uri)
            pid = new_pipeline_id("compare")
            start_parent(uri, experiment, pid, f"compare/{detector}-vs-{against}", {
                f"{TAG_PREFIX}kind": "compare", f"{TAG_PREFIX}profile": prof_name,
                f"{TAG_PREFIX}detector": detector, f"{TAG_PREFIX}reference": against,
                f"{TAG_PREFIX}seeds": ",".join(map(str, seeds)),
                f"{TAG_PREFIX}test_generators": ",".join(p.profiles[prof_name].data.test_generators),
            })
        status = "FAILED"
        try:
            with _env("SEP_BENCH_PIPELINE_ID", pid):
                done = {(d, s): _ensure_results(p, prof_name, d, s, common) for d in (against, detector) for s in seeds}
            for (d, s), how in done.items():
                console.print(f"{d} seed {s}: {how}", highlight=False)
            baselines, skipped = [], []
            for d in p.run.detectors:
                if d in (detector, against):
                    continue
                (baselines if all(_current(p, prof_name, d, s) for s in seeds) else skipped).append(d)
            if skipped:
                console.print(f"not shown (no results under the current protocol; `dvc repro` makes them): "
                              f"{', '.join(skipped)}", highlight=False)
            shown = [detector, against, *baselines]
            metrics = load_metrics(paths.metrics_dir(prof_name), shown, seeds)
            mean, std, n = metric_frames(metrics, "acc")
            rows = {m["detector"]: row_name(m) for m in metrics}
            correct = {d: seed_correctness(load_predictions(prof_name, d, seeds)) for d in shown}
            gens = list(metrics[0]["test_generators"])
            tests = {d: paired_comparison(correct[d], correct[against], gens, n_boot=n_boot)
                     for d in shown if d != against}
            md, csv = _compare_outputs(detector, against, baselines, gens, mean, std, n, rows, tests, seeds, prof_name)
            stem = Path("results/compare") / prof_name / f"{detector}_vs_{against}"
            from sep_bench.io import write_text

            write_text(stem.with_suffix(".md"), md)
            write_text(stem.with_suffix(".csv"), csv.to_csv(index=False, float_format="%.6g"))
            _print_compare(detector, against, baselines, gens, mean, std, n, rows, tests, prof_name)
            console.print(f"wrote {stem}.md and .csv", highlight=False)
            status = "FINISHED"
        finally:
            if pid is not None:
                arts = [(stem.with_suffix(s), "compare") for s in (".md", ".csv")] if status == "FINISHED" else []
                finish_parent(uri, experiment, pid=pid, artifacts=arts, status=status)


def _compare_outputs(detector, against, baselines, gens, mean, std, n, rows, tests, seeds, prof_name):
    import pandas as pd
    from tabulate import tabulate

    from sep_bench.report.stats import MEAN

    multi = bool((n > 1).any())
    body, long = [], []
    for g in [*gens, MEAN]:
        r = tests[detector][g]
        line = [g, _fmt(mean.loc[rows[detector], g], std.loc[rows[detector], g] if multi else None),
                _fmt(mean.loc[rows[against], g], std.loc[rows[against], g] if multi else None),
                f"{100 * r.diff.estimate:+.2f} [{100 * r.diff.low:+.2f}, {100 * r.diff.high:+.2f}]",
                _p(r.p) + (" \\*" if r.p < 0.05 else "")]
        for b in baselines:
            rb = tests[b][g]
            line.append(_fmt(mean.loc[rows[b], g]) + f" ({100 * rb.diff.estimate:+.2f}"
                        + (" \\*" if rb.p < 0.05 else "") + ")")
        body.append(line)
        for d in [detector, *baselines]:
            t = tests[d][g]
            long.append({"generator": g, "detector": d, "reference": against, "acc": mean.loc[rows[d], g],
                         "acc_reference": mean.loc[rows[against], g], "diff": 100 * t.diff.estimate,
                         "ci_low": 100 * t.diff.low, "ci_high": 100 * t.diff.high, "p": t.p,
                         "p_mcnemar_mid": t.p_mcnemar_mid, "p_bootstrap": t.p_bootstrap, "significant": t.p < 0.05})
    headers = ["generator", rows[detector], rows[against], "diff (95% CI)", "p", *(rows[b] for b in baselines)]
    md = tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True,
                  colalign=["left"] + ["right"] * (len(headers) - 1))
    seeds_txt = ", ".join(map(str, seeds))
    md += (f"\n\nACC (%) on profile `{prof_name}`, seed{'s' if len(seeds) > 1 else ''} {seeds_txt}; diff = "
           f"`{detector}` - `{against}` in percentage points on the same images, paired-bootstrap 95% CI; "
           "p: McNemar mid-p per generator, paired bootstrap for Mean; \\* p < 0.05. "
           + (f"Baselines: ACC (diff to `{against}`)." if baselines else "") + "\n")
    return md, pd.DataFrame(long)


def _print_compare(detector, against, baselines, gens, mean, std, n, rows, tests, prof_name) -> None:
    from sep_bench.report.stats import MEAN

    multi = bool((n > 1).any())
    t = Table(title=f"{detector} vs {against} — ACC (%), profile {prof_name}")
    for col in ("generator", rows[detector], rows[against], "diff", "95% CI", "p"):
        t.add_column(col, justify="left" if col == "generator" else "right")
    for b in baselines:
        t.add_column(f"{rows[b]} (diff)", justify="right")
    for g in [*gens, MEAN]:
        r = tests[detector][g]
        sig = r.p < 0.05
        color = "green" if r.diff.estimate > 0 else "red"
        diff = f"[{color}]{100 * r.diff.estimate:+.2f}[/]" if sig else f"{100 * r.diff.estimate:+.2f}"
        cells = [
            g,
            _fmt(mean.loc[rows[detector], g], std.loc[rows[detector], g] if multi else None),
            _fmt(mean.loc[rows[against], g], std.loc[rows[against], g] if multi else None),
            diff,
            f"[{100 * r.diff.low:+.2f}, {100 * r.diff.high:+.2f}]",
            _p(r.p) + (" *" if sig else ""),
        ]
        for b in baselines:
            rb = tests[b][g]
            cells.append(f"{_fmt(mean.loc[rows[b], g])} ({100 * rb.diff.estimate:+.2f}{' *' if rb.p < 0.05 else ''})")
        t.add_row(*cells, end_section=(g == gens[-1]))
    t.caption = (f"diff: {detector} - {against} on the same images; p: McNemar mid-p per generator, "
                 "paired bootstrap for Mean; * p < 0.05")
    Console().print(t)


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
            table.add_row(str(name), *(_fmt(v) if c != "Δ Mean" else f"{v:+.2f}" for c, v in row.items()))
        Console().print(table)
        console.print(f"wrote {', '.join(map(str, files))}", highlight=False)


# ---- selection ----------------------------------------------------------------------------------------------


def selection_spec(spec):
    """`spec` with ``train.select_on: test`` (everything else, hence the training trajectory, unchanged)."""
    train = spec.recipe.train.model_copy(update={"select_on": "test"})
    return spec.model_copy(update={"recipe": spec.recipe.model_copy(update={"train": train})})


def selection_cmd(
    detector: str = typer.Option(..., "--detector", "-d", help="Registered detector name."),
    params: Path = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    seed: Optional[int] = SeedOpt,
    tracking_uri: Optional[str] = TrackingOpt,
    no_track: bool = NoTrackOpt,
) -> None:
    """Train with checkpoint selection on the test generators (train.select_on: test) and record, per epoch, the
    validation and test metrics and the epoch each selection keeps (results/selection/<profile>/<NAME>/seed<s>.json)."""
    from sep_bench.engine.selection import selection_record
    from sep_bench.engine.train import train as run_train
    from sep_bench.io import read_json, write_json
    from sep_bench.protocol import resolve
    from sep_bench.report.protocol_tables import selection_path

    with user_errors():
        p, prof_name = load(params, profile)
        spec = selection_spec(resolve(p, detector, prof_name, seed))
        out = paths.train_dir(prof_name, detector, spec.seed).parent / SELECTION_TRAIN_DIR
        with run_tracker(p, spec, "train-select-on-test", tracking_uri, no_track) as tracker, progress() as update:
            result = run_train(spec, out, tracker=tracker, progress=update)
            if tracker is not None:
                tracker.log_artifact(out / "train.json")
        if os.environ.get("RANK", "0") != "0":
            return
        record = selection_record(read_json(out / "train.json"))
        target = selection_path(prof_name, detector, spec.seed)
        write_json(target, record)
        v, t = record["val_selected"], record["test_selected"]
        console.print(
            f"[green]{detector}[/] seed {spec.seed}: validation keeps epoch {v['epoch'] + 1 if v else '-'} "
            f"(Mean test ACC {100 * v['mean']['acc']:.2f}%), test selection keeps epoch {t['epoch'] + 1} "
            f"({100 * t['mean']['acc']:.2f}%) of {result.epochs}; {target}" if v else
            f"[green]{detector}[/]: test selection keeps epoch {t['epoch'] + 1}; {target}", highlight=False)
