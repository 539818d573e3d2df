"""Checkpoint selection: on the validation slice (the protocol's default) or on the test generators (a flaw, on
purpose, to measure it).

``train.select_on: val`` keeps the epoch with the best validation metric (``train.select_metric``; ties go to the
lower validation loss): the validation slice is held out of the *training* generators, so no test image ever
decides anything.

``train.select_on: test`` reproduces what the SEP authors' deleted train.py did: after every epoch the model is
evaluated on every test generator (GenImage's ``val`` folders, which are everybody's test sets) and the epoch with
the best Mean test ACC (unweighted over generators; the first of equal epochs) is kept. Every epoch's test metrics
are recorded. The validation slice is still evaluated and drives everything else exactly as with ``val`` (the
plateau schedule, early stopping), so both modes follow the same training trajectory and differ only in the epoch
they keep: `selection_record` reads both choices off one ``select_on: test`` run, and the report's
``<profile>_selection.md`` shows how much test selection inflates the Mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

__all__ = ["val_better", "Selection", "replay_selection", "selection_record", "SELECTION_SCHEMA"]

SELECTION_SCHEMA = 1


def val_better(new: dict, old: dict | None, metric: str) -> bool:
    """Whether validation metrics `new` beat `old` on `metric` (higher; loss: lower; ties: lower loss)."""
    if old is None:
        return True
    if metric == "loss":
        return new["loss"] < old["loss"]
    a, b = new.get(metric), old.get(metric)
    if a is None or b is None:
        return new["loss"] < old["loss"]
    return a > b or (a == b and new["loss"] < old["loss"])


@dataclass
class Selection:
    """The running choice of a training run: the validation-best epoch and, with ``on == "test"``, the test-best.

    `update` is called once per epoch; it returns (keep this epoch as the selected checkpoint, the validation
    metric improved). The state round-trips through `state` / `from_state` (resume).
    """

    on: str = "val"
    metric: str = "acc"
    val_best: dict | None = None  # validation metrics of the validation-best epoch
    val_epoch: int = -1
    test_best: float | None = None  # Mean test ACC of the test-best epoch
    test_epoch: int = -1
    selected_val: dict | None = None  # validation metrics of the selected epoch

    @property
    def epoch(self) -> int:
        return self.test_epoch if self.on == "test" else self.val_epoch

    def update(self, epoch: int, val: dict | None, test_mean_acc: float | None = None,
               val_improved: bool | None = None) -> tuple[bool, bool]:
        """Record `epoch`; `val_improved` overrides the validation decision (DDP: rank 0's, broadcast)."""
        if val_improved is None:
            val_improved = val is None or val_better(val, self.val_best, self.metric)
        if val_improved:
            self.val_best, self.val_epoch = val, epoch
        if self.on == "val":
            if val_improved:
                self.selected_val = val
            return val_improved, val_improved
        if test_mean_acc is None:  # a DDP rank other than 0: rank 0 decides (its choice is broadcast)
            return False, val_improved
        keep = self.test_best is None or test_mean_acc > self.test_best
        if keep:
            self.test_best, self.test_epoch, self.selected_val = test_mean_acc, epoch, val
        return keep, val_improved

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Selection":
        return cls(**state)


def replay_selection(history: Sequence[dict], select_metric: str = "acc") -> dict[str, int]:
    """{"val": epoch, "test": epoch} that a run would keep, replayed from its per-epoch history records
    (``val_<metric>`` keys and, for the test choice, ``test_mean_acc``)."""
    sel = Selection(on="test" if all("test_mean_acc" in r for r in history) else "val", metric=select_metric)
    for r in history:
        val = {k[len("val_"):]: v for k, v in r.items() if k.startswith("val_")} or None
        sel.update(r["epoch"], val, r.get("test_mean_acc"))
    return {"val": sel.val_epoch, **({"test": sel.test_epoch} if sel.on == "test" else {})}


def selection_record(summary: dict) -> dict:
    """What the selection table needs from the ``train.json`` of a ``select_on: test`` run: per epoch the
    validation metrics and the test Mean/per-generator metrics, and the two choices with their test metrics."""
    history = summary["history"]
    if not history or "test" not in history[0]:
        raise ValueError(f"{summary.get('detector')}: train.json has no per-epoch test metrics; train with "
                         "train.select_on: test (sep-bench selection)")
    chosen = replay_selection(history, summary.get("select_metric", "acc"))
    by_epoch = {r["epoch"]: r for r in history}

    def at(epoch: int) -> dict:
        r = by_epoch[epoch]
        return {"epoch": epoch, "val_acc": r.get("val_acc"), "val_loss": r.get("val_loss"),
                "mean": r["test"]["mean"], "generators": r["test"]["generators"]}

    return {
        "schema": SELECTION_SCHEMA,
        "detector": summary["detector"],
        "profile": summary["profile"],
        "seed": summary.get("seed"),
        "protocol_hash": summary["protocol_hash"],
        "select_metric": summary.get("select_metric", "acc"),
        "test_generators": list(history[0]["test"]["generators"]),
        "epochs": [{"epoch": r["epoch"], "val_acc": r.get("val_acc"), "val_loss": r.get("val_loss"),
                    "test_mean_acc": r["test_mean_acc"]} for r in history],
        "val_selected": at(chosen["val"]) if chosen["val"] >= 0 else None,
        "test_selected": at(chosen["test"]),
    }
