"""Ablation tables from tracked runs: one row per setting of a detector's ablation switches.

A detector's ablation switches are the boolean fields of its model config described as "(ablation)" (SEP:
``eps``, ``gbcsa``, ``fpm``, ``srm_guide``). Run the variants any way that is tracked, typically

    dvc exp run -S detectors.sep.model.gbcsa=false      (one experiment per switch)

and `sep-bench ablation --detector sep` collects the clean evaluations from MLflow. Every evaluate run carries two
tags (set by `sep-bench evaluate`): ``sep_bench.model_config`` (the full model config, defaults included) and
``sep_bench.ablation_base``, a hash of the run's protocol with the switches taken out. Only runs whose base equals
the current params.yaml's are used, so runs of another budget, profile or code-independent setting never mix into
the table; per (variant, seed) the latest finished run counts, and seeds are averaged.

Output: ``results/tables/<profile>_<detector>_ablation.{md,csv,tex}``: ACC per test generator and Mean for each
variant, with the Mean's difference to the full model (all switches on).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from sep_bench.detectors.ablation import ablation_base_hash, ablation_switches, ablation_tags
from sep_bench.io import write_text
from sep_bench.report import tables

__all__ = ["ablation_switches", "ablation_base_hash", "ablation_tags", "collect_ablation", "write_ablation"]


def _label(detector: str, off: list[str]) -> str:
    return f"{detector} (full)" if not off else "w/o " + ", ".join(off)


def collect_ablation(client, experiment_id: str, spec, seeds: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ACC % per variant x [generators, Mean], run counts) from the clean evaluate runs matching `spec`'s base."""
    switches = ablation_switches(spec.detector)
    if not switches:
        raise ValueError(f"detector {spec.detector!r} has no ablation switches (boolean model fields marked "
                         "'(ablation)' in their description)")
    base = ablation_base_hash(spec)
    runs = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`sep_bench.kind` = 'evaluate' and tags.`sep_bench.detector` = '{spec.detector}' "
                       f"and tags.`sep_bench.ablation_base` = '{base}' and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    generators = list(spec.profile.data.test_generators)
    latest: dict[tuple[tuple[str, ...], int], dict[str, Any]] = {}
    for run in runs:
        tags = run.data.tags
        if tags.get("sep_bench.perturbation", "none") != "none" or "sep_bench.released" in tags:
            continue
        seed = int(tags.get("sep_bench.seed", "-1"))
        if seed not in seeds:
            continue
        cfg = json.loads(tags["sep_bench.model_config"])
        off = tuple(s for s in switches if cfg.get(s) is False)
        latest.setdefault((off, seed), run.data.metrics)  # newest first
    if not latest:
        raise FileNotFoundError(
            f"no finished evaluate runs of {spec.detector} with the current protocol (base {base}) in MLflow; run "
            f"the variants first, e.g. dvc exp run -S detectors.{spec.detector}.model.{switches[0]}=false")
    rows: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    order = sorted({off for off, _ in latest}, key=lambda off: (len(off), [switches.index(s) for s in off]))
    for off in order:
        per_seed = [m for (o, _), m in latest.items() if o == off]
        label = _label(spec.detector, list(off))
        rows[label] = {g: _mean([m.get(f"{g}.acc") for m in per_seed]) for g in [*generators, "mean"]}
        counts[label] = len(per_seed)
    frame = pd.DataFrame.from_dict(rows, orient="index").rename(columns={"mean": "Mean"}) * 100.0
    frame.index.name = "variant"
    full = _label(spec.detector, [])
    frame["Δ Mean"] = frame["Mean"] - frame.loc[full, "Mean"] if full in frame.index else math.nan
    return frame, pd.Series(counts, name="seeds")


def _mean(values: list[float | None]) -> float:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else math.nan


def write_ablation(frame: pd.DataFrame, counts: pd.Series, spec, out_stem: Path) -> list[Path]:
    """Write ``<out_stem>.md``, ``.csv`` and ``.tex``; return the files."""
    out_stem = Path(out_stem)
    ranked = frame.drop(columns=["Δ Mean"])
    delta = frame[["Δ Mean"]]
    seeds = sorted(set(counts))
    caption = [
        f"Ablation of `{spec.detector}`: ACC (%) per test generator, profile `{spec.profile_name}`, from the latest "
        f"finished clean evaluation per variant and seed in MLflow (seed-averaged; seeds per variant: "
        f"{', '.join(f'{k} {v}' for k, v in counts.items())}); Δ Mean against the full model; "
        "best per column in bold, second underlined.",
    ]
    if len(seeds) > 1:
        caption.append("Variants were evaluated on different numbers of seeds.")
    md = (tables.render_markdown(ranked, marks=tables.rank_marks(ranked), extra=delta) + "\n\n"
          + "\n".join(caption) + "\n")
    write_text(out_stem.with_suffix(".md"), md)
    write_text(out_stem.with_suffix(".csv"), frame.join(counts).round(4).to_csv())
    tex = tables.render_latex(ranked, caption=caption[:1], notes=caption[1:], extra=delta,
                              label=f"tab:{spec.profile_name}-{spec.detector}-ablation".replace("_", "-"))
    write_text(out_stem.with_suffix(".tex"), tex)
    return [out_stem.with_suffix(s) for s in (".md", ".csv", ".tex")]
