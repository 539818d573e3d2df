"""Robustness and format-aligned evaluation: Mean ACC/AP of each detector under each evaluated perturbation.

Inputs are the perturbed evaluations that `sep-bench evaluate` writes for `eval.perturbations`
(``results/robustness/<profile>/<detector>/seed<s>/<perturbation>.json``). ``jpeg<q>`` re-encodes real and fake
images alike, so on GenImage it is also the format-aligned evaluation (the JPEG-real / PNG-fake bias removed).
Output: a detector x (clean + perturbations) table of Mean ACC and AP (mean over seeds), and a plot per
perturbation family (single-step perturbations: accuracy against strength, the clean result at strength 0).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from sep_bench import paths
from sep_bench.io import read_json, write_text
from sep_bench.report import plots, tables

__all__ = ["robustness_frame", "write_robustness"]

_SINGLE = re.compile(r"^(jpeg|blur|down)(\d+(?:\.\d+)?)$")
# strength of a single step, with the clean image at 0: JPEG 100 - quality, blur sigma, 1 - downscale factor
_STRENGTH = {"jpeg": lambda v: 100 - v, "blur": lambda v: v, "down": lambda v: 1 - v}
_AXIS = {"jpeg": "100 - JPEG quality", "blur": "Gaussian blur sigma", "down": "1 - downscale factor"}


def robustness_frame(clean: list[dict], row_of: dict[str, str], perturbations: dict[str, list[str]],
                     seeds: list[int], profile: str, metric: str) -> pd.DataFrame:
    """Rows = detectors (table names), columns = clean + every perturbation evaluated; Mean `metric` in %."""
    columns = ["clean"] + sorted({p for ps in perturbations.values() for p in ps}, key=_order)
    rows: dict[str, dict[str, float | None]] = {}
    for det, perts in perturbations.items():
        vals: dict[str, float | None] = {}
        for col in columns:
            if col == "clean":
                # with eval.variant_subset the perturbations saw a fixed subset: compare with clean on that subset
                subset_files = [paths.robustness_dir(profile, det, s) / "clean_subset.json" for s in seeds]
                if perts and all(f.exists() for f in subset_files):
                    ms = [read_json(f) for f in subset_files]
                else:
                    ms = [m for m in clean if tables.run_key(m) == det]
            elif col in perts:
                ms = [read_json(paths.robustness_dir(profile, det, s) / f"{col}.json") for s in seeds]
            else:
                vals[col] = None
                continue
            got = [m["mean"][metric] for m in ms if m["mean"].get(metric) is not None]
            vals[col] = round(100.0 * sum(got) / len(got), 2) if got else None
        rows[row_of[det]] = vals
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype(float)
    frame.index.name = "detector"
    return frame


def _order(name: str) -> tuple:
    m = _SINGLE.match(name)
    return (0, m.group(1), _STRENGTH[m.group(1)](float(m.group(2)))) if m else (1, name, 0.0)


def _plot(acc: pd.DataFrame, out_stem: Path, title: str) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    families = sorted({_SINGLE.match(c).group(1) for c in acc.columns if _SINGLE.match(c)})
    fig = Figure(figsize=(4.2 * max(1, len(families)), 3.6))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, max(1, len(families)), i + 1) for i in range(max(1, len(families)))]
    for ax, fam in zip(axes, families):
        cols = [c for c in acc.columns if (m := _SINGLE.match(c)) and m.group(1) == fam]
        xs = [0.0] + [_STRENGTH[fam](float(_SINGLE.match(c).group(2))) for c in cols]
        for det, row in acc.iterrows():
            ax.plot(xs, [row["clean"], *[row[c] for c in cols]], marker="o", label=str(det))
        ax.set_xlabel(_AXIS[fam])
        ax.set_ylabel("Mean ACC (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    if not families:
        axes[0].text(0.5, 0.5, "no single-step perturbation evaluated\n(eval.perturbations)", ha="center",
                     va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    else:
        axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return plots.save_figure(fig, out_stem)  # deterministic bytes (no dates, fixed SVG ids)


def _subset_note(perturbations: dict[str, list[str]], seeds: list[int], profile: str) -> str:
    for det, perts in perturbations.items():
        for p in perts:
            f = paths.robustness_dir(profile, det, seeds[0]) / f"{p}.json"
            sub = read_json(f).get("variant_subset") if f.exists() else None
            if sub:
                per = sub["per_generator_and_class"]
                gens = sub.get("generators")
                where = (f"{'all images' if per is None else f'{per} per generator and class'}"
                         f"{' of ' + ', '.join(gens) if gens else ''}")
                return (f"Perturbed evaluations (and the clean column beside them) use a fixed subset of the test "
                        f"images: {where} ({sub['n_images']} images; params.yaml eval.variant_subset"
                        f"{', eval.variant_generators' if gens else ''}), the same on every machine; the main tables "
                        "use every test image.")
    return ""


def write_robustness(clean: list[dict], row_of: dict[str, str], perturbations: dict[str, list[str]],
                     seeds: list[int], profile: str, table_stem: Path, plot_stem: Path) -> list[Path]:
    """Write ``<table_stem>.md`` / ``.csv`` and the plot; return the files written."""
    acc = robustness_frame(clean, row_of, perturbations, seeds, profile, "acc")
    ap = robustness_frame(clean, row_of, perturbations, seeds, profile, "ap")
    long = pd.concat({"acc": acc, "ap": ap}, names=["metric"]).reset_index()
    write_text(table_stem.with_suffix(".csv"), long.to_csv(index=False, float_format="%.2f"))
    note = ("Mean over test generators (%), mean over seeds; each perturbation is applied identically to real and "
            "fake test images before the detector's preprocessing (sep_bench.data.perturb). `jpeg<q>` is also the "
            "format-aligned evaluation. Columns left empty were not evaluated for that detector.")
    subset = _subset_note(perturbations, seeds, profile)
    if subset:
        note += " " + subset
    if len(acc.columns) == 1:
        note = "No perturbation was evaluated (params.yaml eval.perturbations is empty): clean results only. " + note
    md = ("### Mean ACC\n\n" + acc.to_markdown(floatfmt=".2f") + "\n\n### Mean AP\n\n" + ap.to_markdown(floatfmt=".2f")
          + "\n\n" + note + "\n")
    write_text(table_stem.with_suffix(".md"), md)
    files = [table_stem.with_suffix(".md"), table_stem.with_suffix(".csv")]
    files += _plot(acc, plot_stem, f"Robustness — profile {profile} (Mean ACC)")
    return files
