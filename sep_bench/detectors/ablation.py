"""A detector's ablation switches and the MLflow tags that group an evaluation's runs by them.

A detector's ablation switches are the boolean fields of its model config described as "(ablation)" (SEP:
``eps``, ``gbcsa``, ``fpm``, ``srm_guide``). Every evaluate run carries `ablation_tags`; the report's ablation table
(`sep_bench.report.ablation`) groups the runs by them.
"""

from __future__ import annotations

import json

from sep_bench.detectors import get_detector
from sep_bench.protocol import _hash

__all__ = ["ablation_switches", "ablation_base_hash", "ablation_tags"]


def ablation_switches(detector: str) -> list[str]:
    """The boolean model-config fields of `detector` whose description marks them as ablations."""
    fields = get_detector(detector).config.model_fields
    return [name for name, f in fields.items() if f.annotation is bool and "(ablation)" in (f.description or "")]


def ablation_base_hash(spec) -> str:
    """The protocol hash of `spec` (a RunSpec) with its detector's ablation switches removed from the model."""
    switches = set(ablation_switches(spec.detector))
    d = spec.model_dump(mode="json")
    d["recipe"]["model"] = {k: v for k, v in d["recipe"]["model"].items() if k not in switches}
    d.pop("seed")
    return _hash(d)


def ablation_tags(spec) -> dict[str, str]:
    """The tags `sep-bench evaluate` sets so that `collect_ablation` can find and group its runs."""
    cfg = get_detector(spec.detector).make_config(spec.recipe.model)
    return {"sep_bench.model_config": json.dumps(cfg.model_dump(mode="json"), sort_keys=True),
            "sep_bench.ablation_base": ablation_base_hash(spec)}
