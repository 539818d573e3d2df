"""The protocol's splits: training samples, the held-out validation slice, and the test set per generator.

- Training: the layout's train split of the `train_generators` (GenImage: ``train``).
- Validation (model selection): groups held out of the training split (see `ValSplit`), never test data.
- Test: the layout's test split (GenImage: ``val``; AIGCBenchmark/folder: ``test``) of each `test_generators`.
Caps (`max_train_images`, `max_val_images`, `max_test_images_per_generator`) keep a deterministic, class-balanced
subset.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sep_bench.data.layouts import FAKE, REAL, Sample, read_layout
from sep_bench.protocol import DataSpec, ProtocolError, group_of

__all__ = ["training_samples", "evaluation_samples", "TEST_SPLIT", "TRAIN_SPLIT"]

TRAIN_SPLIT = {"genimage": "train", "aigcbench": "test", "folder": "test"}
TEST_SPLIT = {"genimage": "val", "aigcbench": "test", "folder": "test"}


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _read(root: Path, layout: str, data: DataSpec) -> list[Sample]:
    samples = read_layout(root, layout)
    if data.generator_aliases:
        samples = [
            Sample(s.path, s.label, data.generator_aliases.get(s.generator, s.generator), s.split) for s in samples
        ]
    return samples


def _select_generators(samples: list[Sample], wanted: list[str], split: str, what: str) -> list[Sample]:
    present = sorted({s.generator for s in samples if s.split == split})
    missing = [g for g in wanted if g not in present]
    if missing:
        raise ProtocolError(
            f"{what} generator(s) {missing} not found in split {split!r}; present: {', '.join(present) or '(none)'}"
        )
    keep = set(wanted)
    return [s for s in samples if s.split == split and s.generator in keep]


def _balanced_cap(samples: list[Sample], cap: int | None) -> list[Sample]:
    """At most `cap` samples, half per class where possible, chosen by a stable hash of the path."""
    if cap is None or len(samples) <= cap:
        return samples
    chosen: list[Sample] = []
    for label, quota in ((REAL, cap // 2), (FAKE, cap - cap // 2)):
        of_class = sorted((s for s in samples if s.label == label), key=lambda s: _stable_hash(s.path))
        chosen += of_class[:quota]
    order = {s.path: i for i, s in enumerate(samples)}
    return sorted(chosen, key=lambda s: order[s.path])


def training_samples(root: Path, data: DataSpec) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) samples of the training generators."""
    layout = data.train_layout or data.layout
    root = Path(data.train_root) if data.train_root else root
    split = TRAIN_SPLIT[layout]
    pool = _select_generators(_read(root, layout, data), data.train_generators, split, "train")
    v = data.val
    groups = {s.path: group_of(Path(s.path).name, v.group_pattern) for s in pool}
    if v.groups is not None:
        held = set(v.groups)
        unknown = held - set(groups.values())
        if unknown:
            raise ProtocolError(f"data.val.groups {sorted(unknown)} match no training file (check group_pattern)")
        is_val = {p: g in held for p, g in groups.items()}
    else:
        threshold = v.fraction * 2**64
        is_val = {p: _stable_hash(g) < threshold for p, g in groups.items()}
    train = [s for s in pool if not is_val[s.path]]
    val = [s for s in pool if is_val[s.path]]
    if not train:
        raise ProtocolError("the validation slice took every training sample; lower data.val.fraction")
    return _balanced_cap(train, data.max_train_images), _balanced_cap(val, data.max_val_images)


def evaluation_samples(root: Path, data: DataSpec) -> list[Sample]:
    """Test samples, grouped in the order of `test_generators`."""
    split = TEST_SPLIT[data.layout]
    pool = _select_generators(_read(root, data.layout, data), data.test_generators, split, "test")
    out: list[Sample] = []
    for g in data.test_generators:
        out += _balanced_cap([s for s in pool if s.generator == g], data.max_test_images_per_generator)
    return out
