"""Report plots (seaborn on matplotlib's Agg backend), each written as PNG and SVG with deterministic bytes.

- `heatmap`: detectors x generators ACC, the Mean column set apart;
- `grouped_bars`: ACC per generator (and Mean), one bar per detector, bootstrap 95% CI error bars;
- `reported_scatter`: reported vs reproduced ACC with the identity line (profiles with reported figures);
- `roc_curves`: ROC per test generator for one detector.

Determinism: no creation date or software version in the metadata, a fixed SVG hash salt (element ids) and
fonts drawn as paths, so unchanged inputs give byte-identical files (and DVC sees no change).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from sep_bench.io import atomic_path

__all__ = ["heatmap", "heatmap_range", "draw_heatmap", "place_labels", "grouped_bars", "reported_scatter", "roc_curves", "placeholder", "figure", "save_figure", "FORMATS"]

FORMATS = ("png", "svg")
_RC = {"svg.hashsalt": "sep-bench", "svg.fonttype": "path", "font.family": "DejaVu Sans", "figure.dpi": 100}


@contextmanager
def figure(figsize: tuple[float, float], ncols: int = 1, **subplots) -> Iterator:
    """A figure with `ncols` axes in the report's style (Agg backend, seaborn whitegrid); closed on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    with matplotlib.rc_context(_RC), sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(1, ncols, figsize=figsize, **subplots)
        try:
            yield fig, ax
        finally:
            plt.close(fig)


def _stem(out: str | Path) -> Path:
    out = Path(out)
    return out.with_suffix("") if out.suffix.lstrip(".") in FORMATS else out


def save_figure(fig, out: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write `fig` as ``<stem>.png`` and ``<stem>.svg`` (atomically; no date/version metadata)."""
    import matplotlib

    stem, written = _stem(out), []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        meta = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
        with matplotlib.rc_context(_RC), atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120, metadata=meta, bbox_inches="tight", pad_inches=0.1)
        written.append(path)
    return written


def heatmap_range(df: pd.DataFrame) -> tuple[float, float]:
    """The colour scale of a percentage heatmap: 50 (chance) to 100, extended down to the lowest value (to a
    multiple of 10) when a cell is below chance, so a 30% cell never looks like a 50% one."""
    low = float(np.nanmin(df.to_numpy(dtype=float))) if df.size and not df.isna().all().all() else 50.0
    return min(50.0, 10.0 * np.floor(low / 10.0)), 100.0


def draw_heatmap(ax, df: pd.DataFrame) -> None:
    """The heatmap on `ax`: cells annotated, the Mean column (the last) set apart, long generator names upright."""
    import seaborn as sns

    vmin, vmax = heatmap_range(df)
    sns.heatmap(df.astype(float), annot=True, fmt=".1f", vmin=vmin, vmax=vmax, cmap="viridis",
                cbar_kws={"label": "%"}, ax=ax)
    ax.axvline(len(df.columns) - 1, color="white", lw=3)
    longest = max((len(str(c)) for c in df.columns), default=0)
    if longest > 12:  # names longer than a cell is wide (12 characters fit in 1.1 in): upright, one per column
        ax.set_xticks(ax.get_xticks(), [str(c) for c in df.columns], rotation=90, ha="center")
    ax.set_xlabel("test generator")
    ax.set_ylabel("")


def heatmap(df: pd.DataFrame, out: str | Path, title: str) -> list[Path]:
    """A detectors x generators heatmap of a percentage table (the Mean column included, set apart)."""
    longest = max((len(str(c)) for c in df.columns), default=0)
    with figure((1.1 * len(df.columns) + 2.5, 0.55 * len(df) + 1.8 + 0.07 * max(0, longest - 12))) as (fig, ax):
        draw_heatmap(ax, df)
        ax.set_title(title)
        fig.tight_layout()
        return save_figure(fig, out)


#: where a point's label may go, tried in this order (offsets in points from the point; horizontal alignment)
_LABEL_SLOTS = [(6, 4, "left"), (6, -10, "left"), (-6, 4, "right"), (-6, -10, "right"), (0, 9, "center"),
                (0, -15, "center"), (12, 14, "left"), (12, -20, "left"), (-12, 14, "right"), (-12, -20, "right"),
                (0, 22, "center"), (0, -28, "center"), (20, -3, "left"), (-20, -3, "right")]


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], fontsize: float = 8) -> list:
    """Annotate each point with its label at the first slot (`_LABEL_SLOTS`) whose text overlaps no label
    placed before it and stays inside the axes; where every slot collides, the one with the least overlap.
    Call after the axes' limits and the layout are final. Returns the annotations."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed, boxes = [], []
    for x, y, text in zip(xs, ys, labels):
        best = None
        for dx, dy, ha in _LABEL_SLOTS:
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize, ha=ha)
            box = ann.get_window_extent(renderer)
            cost = sum(_overlap(box, b) for b in boxes) + (0 if _inside(box, frame) else 1e6)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, box)
            else:
                ann.remove()
            if cost == 0:
                break
        placed.append(best[1])
        boxes.append(best[2])
    return placed


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _inside(box, frame) -> bool:
    return box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1


def grouped_bars(mean: pd.DataFrame, ci: Mapping[str, Mapping] | None, out: str | Path, title: str) -> list[Path]:
    """Bars of `mean` (detectors x columns, %) grouped by column; error bars = `ci[row][col]` (fractions)."""
    import seaborn as sns

    rows, cols = list(mean.index), list(mean.columns)
    width = 0.8 / max(1, len(rows))
    palette = sns.color_palette("colorblind", len(rows))
    with figure((min(24.0, max(6.0, 0.3 * len(cols) * len(rows) + 2.5)), 4.2)) as (fig, ax):
        x = np.arange(len(cols))
        for i, (row, color) in enumerate(zip(rows, palette)):
            vals = mean.loc[row].to_numpy(dtype=float)
            yerr = None
            if ci and row in ci:
                lo = np.array([100.0 * ci[row][c].low if c in ci[row] else np.nan for c in cols])
                hi = np.array([100.0 * ci[row][c].high if c in ci[row] else np.nan for c in cols])
                yerr = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
            ax.bar(x + (i - (len(rows) - 1) / 2) * width, vals, width, label=str(row), color=color,
                   yerr=yerr, capsize=2.5, error_kw={"elinewidth": 0.9})
        ax.set_xticks(x, cols, rotation=30 if len(cols) > 6 else 0, ha="right" if len(cols) > 6 else "center")
        if len(cols) > 1 and cols[-1] == "Mean":
            ax.axvline(len(cols) - 1.5, color="0.6", lw=1, ls="--")
        ax.set_ylim(0, 100)
        ax.set_ylabel("ACC (%)")
        ax.set_title(title)
        ax.legend(loc="lower left", fontsize="small", frameon=True)
        fig.tight_layout()
        return save_figure(fig, out)


def reported_scatter(table: pd.DataFrame | None, out: str | Path, title: str, note: str = "") -> list[Path]:
    """Reproduced vs reported ACC (one point per detector and generator) with the identity line."""
    if table is None or table.empty:
        return placeholder(out, title, note or "no reported figures to compare with")
    import seaborn as sns

    with figure((6.0, 5.0)) as (fig, ax):
        lo = float(min(table["reported"].min(), table["reproduced"].min(), 50.0)) - 2
        ax.plot([lo, 100], [lo, 100], color="0.4", lw=1, ls="--", label="reproduced = reported")
        sns.scatterplot(data=table, x="reported", y="reproduced", hue="detector", style="generator", s=60, ax=ax)
        if "std" in table and table["std"].notna().any():
            ax.errorbar(table["reported"], table["reproduced"], yerr=table["std"].fillna(0), fmt="none",
                        ecolor="0.5", elinewidth=0.8, capsize=2)
        ax.set_xlim(lo, 101)
        ax.set_ylim(lo, 101)
        ax.set_aspect("equal")
        ax.set_xlabel("reported ACC (%)")
        ax.set_ylabel("reproduced ACC (%)")
        ax.set_title(title)
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.tight_layout()
        return save_figure(fig, out)


def roc_curves(preds: pd.DataFrame, generators: Sequence[str], out: str | Path, title: str) -> list[Path]:
    """ROC curve per test generator (fake = positive class) of one detector's predictions (one seed)."""
    import seaborn as sns
    from sklearn.metrics import roc_auc_score, roc_curve

    palette = sns.color_palette("colorblind", len(generators))
    with figure((5.6, 5.0)) as (fig, ax):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for g, color in zip(generators, palette):
            sub = preds[preds["generator"] == g]
            if sub["label"].nunique() < 2:
                continue
            fpr, tpr, _ = roc_curve(sub["label"], sub["fake_logit"])
            auc = roc_auc_score(sub["label"], sub["fake_logit"])
            ax.plot(fpr, tpr, color=color, lw=1.5, label=f"{g} (AUC {100 * auc:.1f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate (real called fake)")
        ax.set_ylabel("true positive rate (fake called fake)")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        return save_figure(fig, out)


def placeholder(out: str | Path, title: str, message: str) -> list[Path]:
    """A small figure that says why there is no plot (the pipeline's outputs always exist)."""
    with figure((5.6, 2.0)) as (fig, ax):
        ax.axis("off")
        ax.text(0.5, 0.6, title, ha="center", va="center", fontsize=11, weight="bold", transform=ax.transAxes)
        ax.text(0.5, 0.3, message, ha="center", va="center", fontsize=9, wrap=True, transform=ax.transAxes)
        return save_figure(fig, out)
