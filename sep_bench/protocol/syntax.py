"""The grammars params.yaml's strings follow, checked when the protocol is loaded (the lowest layer: no numpy).

- alignment (``train.align``, ``eval.align``): ``none``, ``jpeg`` (the real images' quality) or ``jpeg<quality>``,
  optionally after resampling steps (``down<scale>``, ``blur<sigma>``, joined by ``+``: ``down0.5+jpeg95``);
  applied by `sep_bench.engine.align`.
- preprocessing rules (``eval.preprocess``): `PREPROCESS_RULES`; applied by `sep_bench.engine.protocol_axes`.
- perturbations (``eval.perturbations``): ``jpeg<quality>``, ``blur<sigma>``, ``down<scale>`` joined by ``+``;
  applied by `sep_bench.data.perturb`.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["check_alignment", "split_alignment", "check_preprocess", "PREPROCESS_RULES", "perturbation_steps",
           "ALIGNMENT"]

ALIGNMENT = re.compile(r"^(none|jpeg)(\d+)?$")
_STEP = re.compile(r"^(jpeg|blur|down)(\d+(?:\.\d+)?)$")

PREPROCESS_RULES = ("official", "center_crop", "resize", "native")


def split_alignment(name: str) -> tuple[str, str]:
    """(resampling steps, final step) of an alignment name: ``down0.5+jpeg95`` -> (``down0.5``, ``jpeg95``)."""
    pre, _, last = name.strip().rpartition("+")
    return pre, last


def check_alignment(name: str) -> str:
    """`name` if it is a valid alignment, else a ValueError with the syntax."""
    pre, last = split_alignment(name)
    m = ALIGNMENT.match(last)
    syntax = ("use none, jpeg (the real images' quality), jpeg<quality>, or resampling steps before the JPEG "
              "(down<scale>, blur<sigma>, joined by '+'), e.g. jpeg96 or down0.5+jpeg96")
    if not m or (m.group(1) == "none" and (m.group(2) or pre)):
        raise ValueError(f"unknown alignment {name!r}; {syntax}")
    if pre:
        steps = perturbation_steps(pre)  # the steps' own range checks (e.g. a downscale factor in (0, 1))
        if any(kind == "jpeg" for kind, _ in steps):
            raise ValueError(f"alignment {name!r}: only down<scale> and blur<sigma> may come before the JPEG; {syntax}")
    if m.group(2) is not None and not 1 <= int(m.group(2)) <= 100:
        raise ValueError(f"alignment {name!r}: JPEG quality must be an integer in 1..100")
    return name.strip()


def check_preprocess(rules: Sequence[str]) -> list[str]:
    unknown = [r for r in rules if r not in PREPROCESS_RULES]
    if unknown or len(set(rules)) != len(rules):
        raise ValueError(f"eval.preprocess {list(rules)}: distinct rules out of {', '.join(PREPROCESS_RULES)}")
    return list(rules)


def perturbation_steps(name: str) -> list[tuple[str, float]]:
    """The (kind, value) steps of a perturbation name, left to right ([] for ``none``); unknown names and values
    out of range raise with the syntax."""
    name = name.strip()
    if name in ("", "none"):
        return []
    steps: list[tuple[str, float]] = []
    for part in name.split("+"):
        m = _STEP.match(part)
        if not m:
            raise ValueError(f"unknown perturbation {part!r} in {name!r}; use jpeg<quality>, blur<sigma>, "
                             "down<scale>, joined by '+', e.g. 'blur1+jpeg75'")
        kind, value = m.group(1), float(m.group(2))
        if kind == "jpeg" and not (1 <= value <= 100 and value == int(value)):
            raise ValueError(f"{part!r}: JPEG quality must be an integer in 1..100")
        if kind == "blur" and value <= 0:
            raise ValueError(f"{part!r}: sigma must be > 0")
        if kind == "down" and not (0 < value < 1):
            raise ValueError(f"{part!r}: downscale factor must be in (0, 1)")
        steps.append((kind, value))
    return steps
