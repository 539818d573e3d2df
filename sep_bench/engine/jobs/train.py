"""The training jobs: `train_job` (the pipeline's train stage) and `selection_job` (its selection stage).

See `sep_bench.engine.jobs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from sep_bench import paths
from sep_bench.detectors import get_detector
from sep_bench.engine.determinism import apply_torch
from sep_bench.engine.selection import selection_record
from sep_bench.engine.train import TrainResult, train
from sep_bench.io import read_json, write_json
from sep_bench.protocol import RunSpec
from sep_bench.tracking import TAG_PREFIX, Tracking, open_run
from sep_bench.weights import parse_pretrained

__all__ = ["train_job", "selection_spec", "selection_job"]

Progress = Callable[[str, int, int], None] | None


def train_job(spec: RunSpec, out: Path, tracking: Tracking | None, progress: Progress = None,
              kind: str = "train") -> TrainResult:
    """Train `spec` into `out` (see `sep_bench.engine.train.train`), tracked as one run of `kind`."""
    apply_torch(spec.profile.deterministic, spec.profile.threads)
    weights = parse_pretrained(spec.recipe.pretrained, get_detector(spec.detector).default_weights)
    tags = {f"{TAG_PREFIX}pretrained": str(weights.pretrained).lower(), f"{TAG_PREFIX}weights": weights.describe()}
    with open_run(tracking, spec, kind, tags if kind == "train" else None) as tracker:
        result = train(spec, out, tracker=tracker, progress=progress)
        if tracker is not None:
            if kind == "train":
                tracker.set_tags({"sep_bench.checkpoint": str(result.best_checkpoint)})
            tracker.log_artifact(out / "train.json")
    return result


def selection_spec(spec: RunSpec) -> RunSpec:
    """`spec` with ``train.select_on: test`` (everything else, hence the training trajectory, unchanged)."""
    train_ = spec.recipe.train.model_copy(update={"select_on": "test"})
    return spec.model_copy(update={"recipe": spec.recipe.model_copy(update={"train": train_})})


def selection_job(spec: RunSpec, tracking: Tracking | None, progress: Progress = None,
                  write: bool = True) -> tuple[TrainResult, dict | None, Path]:
    """Train `spec` with checkpoint selection on the test generators (every epoch evaluated on them) into
    `paths.selection_train_dir` and write its per-epoch record to `paths.selection_path` (`write`: rank 0 only).
    Returns (training result, record or None, record path)."""
    spec = selection_spec(spec)
    out = paths.selection_train_dir(spec.profile_name, spec.detector, spec.seed)
    result = train_job(spec, out, tracking, progress, kind="train-select-on-test")
    target = paths.selection_path(spec.profile_name, spec.detector, spec.seed)
    if not write:
        return result, None, target
    record = selection_record(read_json(out / "train.json"))
    write_json(target, record)
    return result, record, target
