"""Plots from report tables (seaborn, Agg backend, deterministic PNG metadata)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sep_bench.io import atomic_path

__all__ = ["heatmap"]


def heatmap(df: pd.DataFrame, out: str | Path, title: str) -> None:
    """A detectors x generators heatmap of a percentage table (the Mean column included, set apart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(1.1 * len(df.columns) + 2.5, 0.55 * len(df) + 1.8))
    sns.heatmap(df.astype(float), annot=True, fmt=".1f", vmin=50, vmax=100, cmap="viridis",
                cbar_kws={"label": "%"}, ax=ax)
    ax.axvline(len(df.columns) - 1, color="white", lw=3)
    ax.set_title(title)
    ax.set_xlabel("test generator")
    ax.set_ylabel("")
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip("."), dpi=120, metadata={"Software": None})
    plt.close(fig)
