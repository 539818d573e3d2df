"""The evaluation job: `eval_target` (what to evaluate: a training run's checkpoint, a released entry, ad-hoc
weights) and `evaluate_job` (the pipeline's evaluate stages). See `sep_bench.engine.jobs`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sep_bench import paths
from sep_bench.detectors.ablation import ablation_tags
from sep_bench.engine.determinism import apply_torch
from sep_bench.engine.evaluate import evaluate
from sep_bench.engine.predict import load_model
from sep_bench.protocol import Params, ProtocolError, ReleasedEntry, RunSpec, resolve, resolve_released
from sep_bench.released import resolve_weights
from sep_bench.tracking import Tracking, open_run

__all__ = ["EvalTarget", "eval_target", "evaluate_job"]

Progress = Callable[[str, int, int], None] | None


@dataclass
class EvalTarget:
    """What one evaluation evaluates: a run spec with a sep-bench checkpoint, or released weights (`released`:
    their record; `model`: loaded from the authors' file)."""

    spec: RunSpec
    checkpoint: Path
    model: object | None = None
    released: dict | None = None

    @property
    def row(self) -> str:
        """The row of the tables: the detector, or the released entry's name."""
        return self.released["name"] if self.released else self.spec.detector


def eval_target(p: Params, profile: str, *, detector: str | None = None, released: str | None = None,
                weights: Path | None = None, name: str | None = None, checkpoint: Path | None = None,
                seed: int | None = None) -> EvalTarget:
    """The `EvalTarget` of `sep-bench evaluate`'s options: ``detector`` (its training stage's best checkpoint, or
    `checkpoint`), ``released`` (params.yaml's ``released.<NAME>``), or ``detector`` with ad-hoc ``weights``."""
    if (detector is None) == (released is None):
        raise ProtocolError("give exactly one of --detector NAME (with --weights FILE for released weights) "
                            "or --released NAME (an entry of params.yaml's released:)")
    if weights is None and name is not None:
        raise ProtocolError("--name names an ad-hoc --weights evaluation; give --weights FILE too")
    if released is None and weights is None:
        spec = resolve(p, detector, profile, seed)
        return EvalTarget(spec, checkpoint or paths.train_dir(profile, detector, spec.seed) / "best.safetensors")
    if released is not None:
        spec = resolve_released(p, released, profile, seed)
        resolved = resolve_weights(released, p.released_entry(released))  # checks the sha256 pin too
    else:
        spec = resolve(p, detector, profile, seed)
        row = name or f"{detector}-released"
        if row in p.detectors:
            raise ProtocolError(f"--name {row!r} is a detector's row; choose another name")
        resolved = resolve_weights(row, ReleasedEntry(detector=detector, weights=str(weights)))
    model = load_model(spec.detector, resolved.path, official=True, recipe=spec.recipe)
    return EvalTarget(spec, resolved.path, model=model, released=resolved.record())


def evaluate_job(target: EvalTarget, tracking: Tracking | None, progress: Progress = None) -> dict:
    """Evaluate `target` clean and under its profile's perturbations; write metrics, predictions and the
    robustness folder; returns the clean metrics (see `sep_bench.engine.evaluate.evaluate`)."""
    spec, row = target.spec, target.row
    apply_torch(spec.profile.deterministic, spec.profile.threads)
    tags = {**ablation_tags(spec), **({"sep_bench.released": target.released["sha256"]} if target.released else {})}
    with open_run(tracking, spec, "evaluate", tags, row=row) as tracker:

        def child(pert: str):
            if tracker is None:
                return nullcontext(None)
            return tracker.child(f"evaluate/{row}/seed{spec.seed}/{pert}", {"sep_bench.perturbation": pert},
                                 {"perturbation": pert, **spec.flat_params()})

        m = evaluate(spec, target.checkpoint, paths.metrics_path(spec.profile_name, row, spec.seed),
                     paths.predictions_path(spec.profile_name, row, spec.seed), tracker=tracker, progress=progress,
                     robustness_dir=paths.robustness_dir(spec.profile_name, row, spec.seed), child_tracker=child,
                     model=target.model, released=target.released)
        if tracker is not None:
            tracker.set_tags({"sep_bench.pretrained": str(m["pretrained"]).lower(),
                              "sep_bench.weights": m["weights"], "sep_bench.checkpoint": str(target.checkpoint),
                              "sep_bench.perturbation": "none"})
    return m
