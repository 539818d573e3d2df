"""The whole report of one profile: tables, statistics, reported-vs-reproduced and plots, from result files.

Inputs are the evaluate stages' outputs only (metrics JSON and predictions parquet of every detector in
``run.detectors`` and every evaluation-only entry of ``released:``, for each seed in ``run.seeds``) plus
params.yaml for the caption facts. Outputs (paths relative to the working directory; ``<p>`` = profile):

``results/tables/<p>_acc.{md,csv,tex}``        ACC, bold best / underlined second, cost columns beside Mean,
                                              bootstrap CIs under it (md); the measured seed spread of each
                                              row when results/benchmarks/seed_spread.json has it (report.spread)
``results/tables/<p>_{ap,auc}.{md,csv,tex}``   AP and AUC, same layout
``results/tables/<p>_real_fake.{md,csv,tex}``  real-ACC / fake-ACC breakdown
``results/tables/<p>_summary.csv``             long format: every metric's mean, std, seeds, ACC CI
``results/tables/<p>_paired.{md,csv}``         every detector against the reference (SEP) on the same images
``results/tables/<p>_reported.{md,csv}``       reported vs reproduced (profiles with reported figures)
``results/tables/<p>_robustness.{md,csv}``     Mean ACC/AP under each perturbation (report.robustness)
``results/tables/<p>_efficiency.{md,csv,tex}`` accuracy and cost (report.efficiency)
``results/tables/<p>_{selection,format,preprocess}.{md,csv}`` how much is protocol (report.protocol_tables)
``results/tables/<p>_learning.{md,csv}``       ACC on the training generator: the learning check (report.learning)
``results/plots/<p>_robustness``, ``_acc_vs_cost`` (.png and .svg)
``results/plots/<p>_acc_heatmap``, ``_acc_bars``, ``_roc``, ``_reported_vs_reproduced`` (.png and .svg), and
``results/plots/<p>_acc_bars.csv`` (the bars' data, a DVC plot).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sep_bench import paths
from sep_bench.io import write_text
from sep_bench.report import (efficiency, learning, plots, protocol_tables, reported, robustness, spread, stats,
                               tables)

__all__ = ["Report", "build_report", "recipe_facts", "DEFAULT_REFERENCE"]

DEFAULT_REFERENCE = "sep"
SIGNIFICANCE = 0.05


@dataclass
class Report:
    profile: str
    generators: list[str]
    seeds: list[int]
    acc: pd.DataFrame  # seed mean, % (rows: table row names)
    acc_std: pd.DataFrame
    n_seeds: pd.Series
    ci: dict[str, dict[str, stats.Interval]]  # row name -> generator/Mean -> fraction interval
    paired: dict[str, dict[str, stats.PairedResult]]  # row name -> generator/Mean -> result vs reference
    reference: str
    reference_note: str
    reported: pd.DataFrame | None
    reported_md: str
    roc_detector: str
    stale: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    learning: str = ""  # the learning check's one-line summary ("" for a profile without learning_check)
    missing: list[str] = field(default_factory=list)  # row keys left out for want of results (not strict)
    format_leak: str = ""  # "format still leaks: ..." when the aligned format control beats its bar (protocol_tables)


def recipe_facts(spec) -> str:
    """One line of a detector's recipe (a RunSpec's), for table captions."""
    r = spec.recipe
    parts = [
        f"{r.optim.name} lr {r.optim.lr:g}" + (f" wd {r.optim.weight_decay:g}" if r.optim.weight_decay else ""),
        f"{r.train.epochs} epoch{'s' if r.train.epochs != 1 else ''}, batch {r.train.batch_size}",
    ]
    if r.schedule.name != "constant":
        parts.append(f"{r.schedule.name} schedule")
    if r.model:
        parts.append("model " + json.dumps(r.model, sort_keys=True, separators=(", ", ": ")).replace('"', ""))
    parts.append(f"pretrained: {str(r.pretrained).lower() if isinstance(r.pretrained, bool) else r.pretrained}")
    return "; ".join(parts)


def load_predictions(profile: str, detector: str, seeds: list[int]) -> dict[int, pd.DataFrame]:
    files = {s: paths.predictions_path(profile, detector, s) for s in seeds}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"predictions not found: {', '.join(missing)} (run the evaluate stage first)")
    return {s: pd.read_parquet(f, columns=["path", "generator", "label", "fake_logit"]) for s, f in files.items()}


def with_results(profile: str, keys: list[str], seeds: list[int], strict: bool) -> tuple[list[str], list[str]]:
    """(row keys to tabulate, row keys left out): a key needs its metrics and predictions for every seed. Strict:
    every key (a missing file raises FileNotFoundError naming it); otherwise the keys with results, and at least
    one of them."""
    if strict:
        return list(keys), []
    have = [k for k in keys if all(paths.metrics_path(profile, k, s).is_file()
                                   and paths.predictions_path(profile, k, s).is_file() for s in seeds)]
    if not have:
        raise FileNotFoundError(f"no results of profile {profile!r} for any of {', '.join(keys)} (seeds "
                                f"{', '.join(map(str, seeds))}): run `dvc exp run -S profile={profile}` or "
                                "`sep-bench train` and `sep-bench evaluate` first")
    return have, [k for k in keys if k not in have]


def _missing_md(rep: Report) -> str:
    if not rep.missing:
        return ""
    return (f"\nNot in this table (no results for seed(s) {', '.join(map(str, rep.seeds))} yet): "
            f"{', '.join(rep.missing)}.\n")


def _paired_md(rep: Report) -> tuple[str, pd.DataFrame]:
    from tabulate import tabulate

    cols = [*rep.generators, stats.MEAN]
    rows, long = [], []
    for row, res in rep.paired.items():
        cells = []
        for g in cols:
            r = res[g]
            p = r.p
            ptxt = "p<0.001" if p < 0.001 else f"p={p:.3f}"
            cells.append(f"{100 * r.diff.estimate:+.2f} ({ptxt})" + (" \\*" if p < SIGNIFICANCE else ""))
            long.append({
                "detector": row, "reference": rep.reference, "generator": g, "diff": 100 * r.diff.estimate,
                "ci_low": 100 * r.diff.low, "ci_high": 100 * r.diff.high, "p_bootstrap": r.p_bootstrap,
                "n_detector_only": r.n_a_only, "n_reference_only": r.n_b_only, "p_mcnemar_exact": r.p_mcnemar,
                "p_mcnemar_mid": r.p_mcnemar_mid, "significant": p < SIGNIFICANCE, "n_images": r.diff.n,
            })
        rows.append([row, *cells])
    long_df = pd.DataFrame(long, columns=[
        "detector", "reference", "generator", "diff", "ci_low", "ci_high", "p_bootstrap", "n_detector_only",
        "n_reference_only", "p_mcnemar_exact", "p_mcnemar_mid", "significant", "n_images"])
    if not rows:
        return rep.reference_note + "\n", long_df
    md = tabulate(rows, headers=["detector", *cols], tablefmt="pipe", disable_numparse=True,
                  colalign=["left"] + ["right"] * len(cols))
    seeds = rep.seeds
    notes = [
        f"ACC difference (percentage points) of each detector minus `{rep.reference}` on the same images "
        f"(matched by generator and path), profile `{rep.profile}`, "
        + (f"seed-averaged over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}") + ".",
        "p per generator: McNemar's exact test, mid-p, on the images exactly one of the two classifies correctly at "
        "threshold 0.5" + (" (the largest p over seeds)" if len(seeds) > 1 else "") + "; "
        "p for Mean: paired bootstrap of the Mean difference (images resampled within each generator). "
        f"\\* p < {SIGNIFICANCE:g}. 95% CIs of every difference: `{rep.profile}_paired.csv`.",
    ]
    return md + "\n\n" + "\n".join(notes) + "\n", long_df


def _ci_md(rep: Report) -> str:
    from tabulate import tabulate

    cols = [*rep.generators, stats.MEAN]
    body = [[row, *(f"[{100 * ci[g].low:.2f}, {100 * ci[g].high:.2f}]" for g in cols)] for row, ci in rep.ci.items()]
    md = tabulate(body, headers=["detector", *cols], tablefmt="pipe", disable_numparse=True,
                  colalign=["left"] + ["right"] * len(cols))
    return ("\n### 95% bootstrap confidence intervals of ACC (%)\n\n" + md + "\n\n"
            "Percentile bootstrap over images (resampled with replacement within each generator; Mean: one "
            "replicate per generator, averaged), seeded and deterministic"
            + ("; an image counts as the fraction of seeds that classify it correctly." if len(rep.seeds) > 1
               else ".") + "\n")


def build_report(
    p,
    profile: str,
    *,
    reference: str = DEFAULT_REFERENCE,
    roc_detector: str | None = None,
    n_boot: int = 10_000,
    boot_seed: int = 0,
    tables_dir: Path = paths.TABLES_DIR,
    plots_dir: Path = paths.PLOTS_DIR,
    strict: bool = True,
) -> Report:
    """Write every table and plot of `profile` (see the module docstring) and return what they show.

    `strict`: every row key (run.detectors, released entries) must have its results for every seed (the pipeline's
    report stage); otherwise the rows with results are tabulated and the others listed in `Report.missing`."""
    from sep_bench.protocol import resolve, resolve_released

    # row keys: the trained detectors, then the evaluation-only entries (released weights)
    seeds = list(p.run.seeds)
    detectors, missing = with_results(profile, [*p.run.detectors, *p.released], seeds, strict)
    metrics = tables.load_metrics(paths.metrics_dir(profile), detectors, seeds)
    generators = tables.common_generators(metrics)
    specs = {d: resolve(p, d, profile) for d in p.run.detectors if d in detectors}
    specs.update({name: resolve_released(p, name, profile) for name in p.released if name in detectors})
    hashes = {d: s.protocol_hash() for d, s in specs.items()}
    row_of = {}
    for m in metrics:
        row_of.setdefault(tables.run_key(m), tables.row_name(m))
    stale = sorted({tables.run_key(m) for m in metrics if m.get("protocol_hash") != hashes[tables.run_key(m)]})

    ci, paired, note = _statistics(profile, detectors, seeds, generators, row_of, reference, n_boot, boot_seed)
    mean, std, n = tables.metric_frames(metrics, "acc")
    registry_key = {row: (p.released[k].detector if k in p.released else k) for k, row in row_of.items()}
    rep_table = reported.reported_vs_reproduced(profile, mean, std, n, registry_key)
    roc_det = roc_detector or (reference if reference in detectors else detectors[0])
    if roc_det not in detectors:
        raise FileNotFoundError(f"no results for --roc-detector {roc_det!r} (run.detectors: {', '.join(detectors)})")
    reported_md = reported.render_reported(profile, rep_table)
    if budgets := sorted({m["budget"] for m in metrics if m.get("budget")}):  # capped runs: never the paper's
        reported_md = tables.budget_note(budgets) + "\n\n" + reported_md
    rep = Report(profile, generators, seeds, mean, std, n, ci, paired, reference, note, rep_table, reported_md,
                 roc_det, stale, missing=missing)
    acc = _write_tables(rep, p, metrics, specs, hashes, row_of, Path(tables_dir), Path(plots_dir))
    _write_plots(rep, acc, row_of, Path(plots_dir))
    return rep


def _statistics(profile: str, detectors: list[str], seeds: list[int], generators: list[str], row_of: dict,
                reference: str, n_boot: int, boot_seed: int):
    """From the predictions: the ACC intervals per row and the paired comparisons with `reference` (and a note
    when there is none)."""
    correct = {d: stats.seed_correctness(load_predictions(profile, d, seeds)) for d in detectors}
    ci = {row_of[d]: stats.acc_intervals(correct[d], generators, n_boot=n_boot, seed=boot_seed) for d in detectors}
    paired: dict[str, dict[str, stats.PairedResult]] = {}
    if reference not in detectors:
        return ci, paired, (f"The reference detector `{reference}` is not in run.detectors "
                                     f"({', '.join(detectors)}): no paired comparison. Add it to run.detectors (or "
                                     "pass --reference).")
    for d in detectors:
        if d != reference:
            paired[row_of[d]] = stats.paired_comparison(correct[d], correct[reference], generators,
                                                        n_boot=n_boot, seed=boot_seed)
    note = "" if paired else f"`{reference}` is the only detector of this run: nothing to compare it with."
    return ci, paired, note


def _write_tables(rep: Report, p, metrics: list[dict], specs: dict, hashes: dict, row_of: dict, tables_dir: Path,
                  plots_dir: Path) -> pd.DataFrame:
    """Every table of the report (and the plots that belong to a table: robustness, accuracy against cost);
    returns the ACC table for the plots."""
    profile, seeds = rep.profile, rep.seeds
    stem = lambda name: tables_dir / f"{profile}_{name}"  # noqa: E731
    common = {"facts": {d: recipe_facts(s) for d, s in specs.items()}, "current_hashes": hashes}
    acc = tables.write_table(metrics, stem("acc"), "acc", extra_md=_ci_md(rep) + _missing_md(rep), cost=True,
                             spread=spread.load_spread(metrics, row_of), **common)
    ap = tables.write_table(metrics, stem("ap"), "ap", cost=True, **common)
    tables.write_table(metrics, stem("auc"), "auc", cost=True, **common)
    tables.write_breakdown(metrics, stem("real_fake"), **common)
    tables.write_summary_csv(metrics, stem("summary").with_suffix(".csv"), rep.ci)
    paired_md, paired_long = _paired_md(rep)
    write_text(stem("paired").with_suffix(".md"), paired_md)
    write_text(stem("paired").with_suffix(".csv"), paired_long.to_csv(index=False, float_format="%.6g"))
    write_text(stem("reported").with_suffix(".md"), rep.reported_md)
    rep_csv = rep.reported if rep.reported is not None else pd.DataFrame(columns=["detector", "method", "generator"])
    write_text(stem("reported").with_suffix(".csv"), rep_csv.to_csv(index=False, float_format="%.4f"))
    rep.files += [stem(n).with_suffix(s) for n in ("acc", "ap", "auc", "real_fake") for s in (".md", ".csv", ".tex")]
    rep.files += [stem("summary").with_suffix(".csv")]
    rep.files += [stem(n).with_suffix(s) for n in ("paired", "reported") for s in (".md", ".csv")]
    perturbations = {d: list(s.recipe.eval.perturbations) for d, s in specs.items()}
    rep.files += robustness.write_robustness(metrics, row_of, perturbations, seeds, profile, stem("robustness"),
                                             plots_dir / f"{profile}_robustness")
    rep.files += efficiency.write_efficiency(metrics, acc, ap, profile, stem("efficiency"),
                                             plots_dir / f"{profile}_acc_vs_cost")
    rep.files += protocol_tables.write_selection(profile, p.selection_detectors(), seeds, stem("selection"), metrics)
    rep.files += protocol_tables.write_format(metrics, row_of, seeds, profile, stem("format"))
    rep.format_leak = protocol_tables.format_leak(row_of, seeds, profile)
    rules = {d: list(s.recipe.eval.preprocess) for d, s in specs.items()}
    rep.files += protocol_tables.write_preprocess(metrics, row_of, rules, seeds, profile, stem("preprocess"))
    files, rep.learning = learning.write_learning(
        metrics, row_of, p.profiles[profile].data.train_generators, p.profiles[profile].learning_check, profile,
        stem("learning"))
    rep.files += files
    return acc


def _write_plots(rep: Report, acc: pd.DataFrame, row_of: dict, plots_dir: Path) -> None:
    """The heatmap, the bars with their CSV, the ROC curves of the ROC detector, reported against reproduced."""
    profile, seeds, mean = rep.profile, rep.seeds, rep.acc
    pstem = lambda name: plots_dir / f"{profile}_{name}"  # noqa: E731
    seeds_txt = f"seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}"
    rep.files += plots.heatmap(acc, pstem("acc_heatmap"), f"ACC (%) — profile {profile}, {seeds_txt}")
    rep.files += plots.grouped_bars(mean, rep.ci, pstem("acc_bars"),
                                    f"ACC (%) with 95% bootstrap CI — profile {profile}")
    bars = pd.DataFrame([{"label": f"{row} / {g}", "detector": row, "generator": g, "acc": round(mean.loc[row, g], 2)}
                         for g in mean.columns for row in mean.index])
    write_text(pstem("acc_bars").with_suffix(".csv"), bars.to_csv(index=False))
    rep.files.append(pstem("acc_bars").with_suffix(".csv"))
    preds = load_predictions(profile, rep.roc_detector, seeds[:1])[seeds[0]]
    rep.files += plots.roc_curves(preds, rep.generators, pstem("roc"),
                                  f"ROC of {row_of[rep.roc_detector]} per generator — profile {profile}, seed {seeds[0]}")
    rep.files += plots.reported_scatter(
        rep.reported, pstem("reported_vs_reproduced"), f"Reported vs reproduced ACC — profile {profile}",
        note=f"profile {profile} has no reported figures" if rep.reported is None else "no detector in the reported table",
    )
