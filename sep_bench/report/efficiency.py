"""Accuracy against cost: the efficiency table and the accuracy-versus-cost scatter plot of one profile.

Inputs are the clean evaluations' ``efficiency`` records (engine.efficiency, via `tables.efficiency_frame`) and
the Mean ACC / AP of the main tables. Outputs:

``results/tables/<p>_efficiency.{md,csv,tex}``  Mean ACC, Mean AP, total and trainable parameters, GFLOPs per
                                               image, evaluation images/s, peak memory, device
``results/plots/<p>_acc_vs_cost.{png,svg}``     Mean ACC against GFLOPs and against images/s (one point per row)
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from sep_bench.io import write_text
from sep_bench.report import plots, tables

__all__ = ["efficiency_table", "write_efficiency"]


def efficiency_table(eff: pd.DataFrame, acc: pd.DataFrame, ap: pd.DataFrame) -> pd.DataFrame:
    """One row per table row (the main tables' order): accuracy and cost in display units."""
    rows = [r for r in acc.index if r in eff.index]
    return pd.DataFrame({
        "Mean ACC": acc.loc[rows, "Mean"],
        "Mean AP": ap.loc[rows, "Mean"],
        "Params": eff.loc[rows, "params_total"].astype(float),
        "Trainable": eff.loc[rows, "params_trainable"].astype(float),
        "GFLOPs": eff.loc[rows, "gflops"],
        "img/s": eff.loc[rows, "images_per_s"],
        "Mem (MiB)": eff.loc[rows, "peak_memory_mib"],
    }, index=pd.Index(rows, name="detector"))


def _text(table: pd.DataFrame) -> pd.DataFrame:
    return table.apply(lambda c: c.map(lambda v, t=c.name: tables.cost_text(t, v)))


def _scatter(table: pd.DataFrame, out_stem: Path, title: str) -> list[Path]:
    import seaborn as sns

    palette = sns.color_palette("colorblind", len(table))
    with plots.figure((10.0, 4.0 + 0.1 * max(0, len(table) - 8)), ncols=2, sharey=True) as (fig, axes):
        shown = []
        for ax, col, label in ((axes[0], "GFLOPs", "forward GFLOPs per image (log)"),
                               (axes[1], "img/s", "evaluation images/s (log)")):
            points = [(row, r) for row, r in table.iterrows() if not math.isnan(r[col]) and r[col] > 0]
            for (row, r), color in zip(table.iterrows(), palette):
                if math.isnan(r[col]) or r[col] <= 0:
                    continue
                size = 30 + 170 * math.sqrt(r["Params"] / max(table["Params"].max(), 1.0))
                ax.scatter(r[col], r["Mean ACC"], s=size, color=color, label=str(row), alpha=0.85,
                           edgecolors="black", linewidths=0.5)
            shown.append((ax, points, col))
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.grid(alpha=0.3, which="both")
            if points:  # room for the labels beside the outermost points
                lo, hi = min(r[col] for _, r in points), max(r[col] for _, r in points)
                ax.set_xlim(lo / 2.5, hi * 2.5)
        axes[0].set_ylabel("Mean ACC (%)")
        axes[0].set_ylim(max(0.0, table["Mean ACC"].min() - 10), min(100.0, table["Mean ACC"].max() + 5))
        fig.suptitle(title + " — marker area ~ parameters")
        fig.tight_layout()
        for ax, points, col in shown:  # after the layout: labels placed where they overlap no other label
            plots.place_labels(ax, [r[col] for _, r in points], [r["Mean ACC"] for _, r in points],
                               [str(row) for row, _ in points])
        return plots.save_figure(fig, out_stem)


def write_efficiency(metrics: list[dict], acc: pd.DataFrame, ap: pd.DataFrame, profile: str, table_stem: Path,
                     plot_stem: Path) -> list[Path]:
    """Write the efficiency table (md, csv, tex) and the scatter plot; return the files written."""
    eff = tables.efficiency_frame(metrics)
    table_stem, plot_stem = Path(table_stem), Path(plot_stem)
    if eff.empty:
        write_text(table_stem.with_suffix(".md"), "No efficiency records in the metrics (rerun `dvc repro`).\n")
        write_text(table_stem.with_suffix(".csv"), "detector\n")
        write_text(table_stem.with_suffix(".tex"), "% no efficiency records\n")
        return [table_stem.with_suffix(s) for s in (".md", ".csv", ".tex")] + plots.placeholder(
            plot_stem, f"Accuracy vs cost — profile {profile}", "no efficiency records")
    table = efficiency_table(eff, acc, ap)
    caption = tables.cost_caption(eff)
    text = _text(table)
    write_text(table_stem.with_suffix(".csv"), table.join(eff[["peak_memory_kind", "device"]]).to_csv(float_format="%.6g"))
    from tabulate import tabulate

    md = tabulate(text.reset_index().values.tolist(), headers=["detector", *text.columns], tablefmt="pipe",
                  disable_numparse=True, colalign=["left"] + ["right"] * len(text.columns))
    title = (f"Accuracy and cost, profile `{profile}`: Mean over test generators (%, seed mean), total and trainable "
             "parameters (millions; trainable as this harness trains the detector).")
    write_text(table_stem.with_suffix(".md"), md + "\n\n" + title + " " + caption + "\n")
    tex = tables.render_latex(table[["Mean ACC", "Mean AP"]], marks=tables.rank_marks(table[["Mean ACC", "Mean AP"]]),
                              caption=[title], label=f"tab:{profile}-efficiency".replace("_", "-"), notes=[caption],
                              extra=table.drop(columns=["Mean ACC", "Mean AP"]))
    write_text(table_stem.with_suffix(".tex"), tex)
    files = [table_stem.with_suffix(s) for s in (".md", ".csv", ".tex")]
    return files + _scatter(table, plot_stem, f"Accuracy vs cost — profile {profile}")
