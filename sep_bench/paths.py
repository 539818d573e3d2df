"""Where each pipeline output lives, in one place (the CLI, dvc.yaml and the tests agree on these)."""

from __future__ import annotations

from pathlib import Path

from sep_bench.protocol import DataSpec

__all__ = ["data_root", "prepared_dir", "train_dir", "metrics_dir", "metrics_path", "predictions_path", "robustness_dir", "TABLES_DIR", "PLOTS_DIR"]

TABLES_DIR = Path("results/tables")
PLOTS_DIR = Path("results/plots")


def prepared_dir(profile: str) -> Path:
    """The data stage's output: the built benchmark (minigen) or the verification manifest (external data)."""
    return Path("data/prepared") / profile


def data_root(profile: str, data: DataSpec) -> Path:
    return prepared_dir(profile) if data.source == "minigen" else Path(data.root)


def train_dir(profile: str, detector: str, seed: int) -> Path:
    return Path("runs") / profile / detector / f"seed{seed}" / "train"


def metrics_dir(profile: str) -> Path:
    return Path("results/metrics") / profile


def metrics_path(profile: str, detector: str, seed: int) -> Path:
    return metrics_dir(profile) / detector / f"seed{seed}.json"


def predictions_path(profile: str, detector: str, seed: int) -> Path:
    return Path("results/predictions") / profile / detector / f"seed{seed}.parquet"


def robustness_dir(profile: str, detector: str, seed: int) -> Path:
    """Metrics and predictions of the perturbed evaluations: ``<perturbation>.json`` / ``.parquet``."""
    return Path("results/robustness") / profile / detector / f"seed{seed}"
