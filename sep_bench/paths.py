"""Where each pipeline output lives, in one place (the CLI, dvc.yaml and the tests agree on these)."""

from __future__ import annotations

from pathlib import Path

from sep_bench.protocol import DataSpec

__all__ = ["data_root", "prepared_dir", "timing_path", "train_dir", "metrics_dir", "metrics_path", "predictions_path",
           "robustness_dir", "selection_train_dir", "selection_dir", "selection_path", "compare_stem", "recon_dir", "feature_cache_dir", "released_record",
           "TABLES_DIR", "PLOTS_DIR", "REFERENCE_DIR", "RECON_DIR"]

TABLES_DIR = Path("results/tables")
PLOTS_DIR = Path("results/plots")
REFERENCE_DIR = Path("results/reference")  # the committed reference results of each profile
RECON_DIR = Path("data/recon")  # the reconstruction stage's output


def prepared_dir(profile: str) -> Path:
    """The data stage's output: the built benchmark (minigen) or the verification manifest (external data)."""
    return Path("data/prepared") / profile


def data_root(profile: str, data: DataSpec) -> Path:
    return prepared_dir(profile) if data.source == "minigen" else Path(data.root)


def timing_path(out_dir: Path) -> Path:
    """Where a stage's wall-clock record goes: beside its output folder, not in it, so the output (a dependency of
    later stages) has the same bytes on every run and machine and nothing reruns because a clock moved."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}-timing.json")


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


def selection_train_dir(profile: str, detector: str, seed: int) -> Path:
    """The training folder of a ``train.select_on: test`` run (`sep-bench selection`), beside the pipeline's own."""
    return train_dir(profile, detector, seed).parent / "train_select_on_test"


def selection_dir(profile: str) -> Path:
    """The selection runs' records of a profile (a dependency of the report stage, made by the data stage so that
    it exists when run.selection is empty)."""
    return Path("results/selection") / profile


def selection_path(profile: str, row: str, seed: int) -> Path:
    """The per-epoch validation and test metrics of a selection run (read by the report's selection table)."""
    return selection_dir(profile) / row / f"seed{seed}.json"


def compare_stem(profile: str, detector: str, against: str) -> Path:
    """`sep-bench compare`'s table, without its suffix (.md, .csv)."""
    return Path("results/compare") / profile / f"{detector}_vs_{against}"


def recon_dir(profile: str, detector: str) -> Path:
    """A detector's diffusion reconstructions (DIRE maps, DRCT reconstructions), keyed by image content."""
    return RECON_DIR / profile / detector


def feature_cache_dir(detector: str) -> Path:
    """Frozen-backbone features of the training and validation images (``train.feature_cache``)."""
    return Path("runs") / ".feature_cache" / detector


def released_record(name: str) -> Path:
    """The resolved record (file, sha256) of evaluation-only entry `name` (the DVC stage released@<name>)."""
    return Path("runs/released") / f"{name}.json"
