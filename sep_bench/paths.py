"""Where each pipeline output lives, in one place (the CLI, dvc.yaml and the tests agree on these)."""

from __future__ import annotations

from pathlib import Path

from sep_bench.protocol import DataSpec

__all__ = ["data_root", "prepared_dir", "train_dir", "metrics_dir", "metrics_path", "predictions_path", "TABLES_DIR", "PLOTS_DIR"]

TABLES_DIR = Path("results/tables")
PLOTS_DIR = Path("results/plots")


def prepared_dir(profile: str) -> Path:
    """The data stage's output: the built benchmark (minigen) or the verification manifest (external data)."""
    return Path("data/prepared") / profile


def data_root(profile: str, data: DataSpec) -> Path:
    return prepared_dir(profile) if data.source == "minigen" else Path(data.root)


def train_dir(profile: str, detector: str) -> Path:
    return Path("runs") / profile / detector / "train"


def metrics_dir(profile: str) -> Path:
    return Path("results/metrics") / profile


def metrics_path(profile: str, detector: str) -> Path:
    return metrics_dir(profile) / f"{detector}.json"


def predictions_path(profile: str, detector: str) -> Path:
    return Path("results/predictions") / profile / f"{detector}.parquet"
