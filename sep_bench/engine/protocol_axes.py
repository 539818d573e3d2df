"""Evaluation axes that measure the protocol, not the detector: format alignment and preprocessing rules.

Both run as extra *variants* of the one evaluation pass (engine.evaluate: each test image is decoded once, and
every variant post-processes it before the detector's own eval view), written beside the robustness results
(``results/robustness/<profile>/<row>/seed<s>/<variant>.json``) and tracked as nested runs.

``eval.align`` (see engine.align): ``aligned``, every test image of both classes re-encoded identically (JPEG at
the real test images' own quality with ``jpeg``, or at ``jpeg<q>``); real and fake ACC are in its metrics as in
every other. The report's ``<profile>_format.md`` puts it beside the clean result.

``eval.preprocess``: how the test image is brought to the detector's input size S (the side of its training
view, e.g. 224), since peers differ exactly there. Each rule fixes the geometry of the image handed to the
detector's eval view, which then applies its own normalisation (and any resize of its own):

- ``official``: the detector's own eval view (the clean evaluation; listed for the table);
- ``center_crop``: the central S x S crop (zero-padded when smaller), no resize;
- ``resize``: the whole image resized to S x S (bilinear, aspect ratio not kept);
- ``native``: the whole image at its own size (no resize, no crop). Only for detectors whose eval view can take
  any size (their config has ``eval_crop_size``, set to null for this rule); for the others the rule is recorded
  as unsupported and the table shows ``n/a``. It needs its own view, hence its own pass over the test images.

Variants are named ``aligned`` and ``preprocess-<rule>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sep_bench.engine.align import resolve_alignment
from sep_bench.protocol.syntax import PREPROCESS_RULES, check_preprocess

__all__ = ["PREPROCESS_RULES", "Variant", "input_size", "preprocess_function", "native_config", "axis_variants",
           "check_preprocess"]


@dataclass
class Variant:
    name: str
    post: Callable[[np.ndarray], np.ndarray] | None  # None: the clean image
    info: dict = field(default_factory=dict)  # recorded in the variant's metrics
    config: dict | None = None  # model-config overrides for the variant's view (native); None: the detector's
    supported: bool = True


def input_size(det, cfg) -> int:
    """The detector's input side S: the largest spatial side among its training view's tensors (fixed size)."""
    view = det.views(cfg, True, False)
    out = view(np.zeros((640, 720, 3), dtype=np.uint8), np.random.default_rng(0))
    sides = [max(t.shape[-2:]) for t in out.values() if t.dim() >= 2]
    if not sides:
        raise ValueError(f"{det.name}: its training view has no image tensor to read the input size from")
    return int(max(sides))


def preprocess_function(rule: str, size: int) -> Callable[[np.ndarray], np.ndarray] | None:
    # imported here: params validation imports this module (check_preprocess) before torch may load
    from sep_bench.data.transforms import center_crop, pad_to, resize

    if rule == "center_crop":
        return lambda img: np.ascontiguousarray(center_crop(pad_to(img, size), size))
    if rule == "resize":
        return lambda img: np.array(resize(img, size, size))  # writable (PIL arrays are read-only)
    return None  # official (the clean image), native (the image as it is, with the native view)


def native_config(cfg) -> dict | None:
    """The model-config overrides that make the eval view take the whole image, or None when it cannot."""
    fields = type(cfg).model_fields
    if "eval_crop_size" not in fields:
        return None
    over = {"eval_crop_size": None}
    if "eval_resize" in fields:
        over["eval_resize"] = None
    return over


def axis_variants(spec, det, cfg, samples) -> list[Variant]:
    """The extra variants of `spec`'s evaluation: ``aligned`` (eval.align) and ``preprocess-<rule>``."""
    ev = spec.recipe.eval
    out: list[Variant] = []
    if ev.align != "none":
        align = resolve_alignment(ev.align, [s.path for s in samples if s.label == 0])
        out.append(Variant("aligned", align.function(), {"align": align.describe()}))
    rules = [r for r in ev.preprocess if r != "official"]
    if rules:
        size = input_size(det, cfg)
        for rule in rules:
            info = {"preprocess": rule, "input_size": size}
            if rule == "native":
                over = native_config(cfg)
                out.append(Variant(f"preprocess-{rule}", None, info, over, over is not None))
            else:
                out.append(Variant(f"preprocess-{rule}", preprocess_function(rule, size), info))
    return out
