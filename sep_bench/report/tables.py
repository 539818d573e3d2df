"""Cross-generator tables from metrics JSON files: rows = detectors, columns = test generators + Mean.

Values are percentages with two decimals, as in the paper. A row trained without the pretrained weights its
recipe intends is marked with a dagger and a footnote, so such numbers are never mistaken for the real thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from sep_bench.io import read_json, write_text

__all__ = ["load_metrics", "metric_table", "write_table", "NOT_PRETRAINED_MARK"]

NOT_PRETRAINED_MARK = "†"


def load_metrics(folder: str | Path, detectors: Iterable[str] | None = None) -> list[dict]:
    """Metrics JSON files in `folder` (only `detectors`, in that order, when given)."""
    folder = Path(folder)
    if detectors is None:
        files = sorted(folder.glob("*.json"))
    else:
        files = [folder / f"{d}.json" for d in detectors]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"metrics not found: {', '.join(missing)} (run the evaluate stage first)")
    return [read_json(f) for f in files]


def _row_name(m: dict) -> str:
    untrained = m.get("intended_pretrained") and not m.get("pretrained")
    return m["detector"] + (NOT_PRETRAINED_MARK if untrained else "")


def metric_table(metrics: list[dict], metric: str = "acc") -> pd.DataFrame:
    """A detectors x (generators + Mean) frame of `metric` in percent."""
    if not metrics:
        raise ValueError("no metrics to tabulate")
    generators = metrics[0]["test_generators"]
    rows = {}
    for m in metrics:
        if m["test_generators"] != generators:
            raise ValueError(f"{m['detector']} was tested on {m['test_generators']}, others on {generators}")
        vals = {g: m["generators"][g][metric] for g in generators}
        vals["Mean"] = m["mean"][metric]
        rows[_row_name(m)] = {k: None if v is None else round(100.0 * v, 2) for k, v in vals.items()}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "detector"
    return df


def _caption(metrics: list[dict], metric: str) -> str:
    m0 = metrics[0]
    lines = [
        f"{metric.upper()} (%) per test generator, profile `{m0['profile']}`, seed {m0['seed']}; "
        "Mean = unweighted mean over generators; threshold 0.5, fake = positive class.",
        "Weights: " + "; ".join(f"{m['detector']}: {m['weights']}" for m in metrics) + ".",
    ]
    if any(NOT_PRETRAINED_MARK in _row_name(m) for m in metrics):
        lines.append(f"{NOT_PRETRAINED_MARK} trained without the pretrained weights its recipe intends "
                     "(pretrained: false): not comparable to the paper's numbers.")
    return "\n".join(lines)


def write_table(metrics: list[dict], out_stem: str | Path, metric: str = "acc") -> pd.DataFrame:
    """Write ``<out_stem>.md`` and ``.csv``; return the frame."""
    df = metric_table(metrics, metric)
    out_stem = Path(out_stem)
    write_text(out_stem.with_suffix(".csv"), df.to_csv(float_format="%.2f"))
    md = df.to_markdown(floatfmt=".2f")
    write_text(out_stem.with_suffix(".md"), md + "\n\n" + _caption(metrics, metric) + "\n")
    return df

