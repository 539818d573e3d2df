"""Does every detector learn? ``<profile>_learning.{md,csv}``: ACC on its own training generators against the
profile's ``learning_check``.

A smoke benchmark is only useful if a broken training path shows up as a failing row rather than as a plausible
55%. Every trained row (evaluation-only rows are not trained here) gets ``pass`` or ``FAIL`` against its bar:
``min_acc``, or the lower bar ``lowered`` gives a detector that plateaus below it (still above chance, so a broken
path fails), with the measured reason; a detector that cannot learn in the profile (e.g. a frozen, randomly
initialised backbone when no pretrained weights can be loaded) is ``exempt``. Reasons are printed in the caption.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from sep_bench.io import write_text
from sep_bench.protocol import LearningCheck
from sep_bench.report.protocol_tables import markdown
from sep_bench.report.tables import run_key

__all__ = ["learning_rows", "write_learning", "summary_line"]


def learning_rows(metrics: Sequence[dict], row_of: Mapping[str, str], train_generators: Sequence[str],
                  check: LearningCheck | None) -> list[dict]:
    """One dict per trained row: its mean ACC (over seeds and training generators), its bar and the verdict."""
    rows = []
    for key, row in row_of.items():
        ms = [m for m in metrics if run_key(m) == key and not m.get("released")]
        accs = [m["generators"][g]["acc"] for m in ms for g in train_generators if g in m.get("generators", {})]
        if not ms:
            continue
        acc = float(np.mean(accs)) if accs else math.nan
        bar = check.bar(key) if check else None
        if check is None:
            verdict = "n/a"
        elif bar is None:
            verdict = "exempt"
        elif math.isnan(acc):
            verdict = "no result"
        else:
            verdict = "pass" if acc >= bar else "FAIL"
        lowered = check is not None and key in check.lowered
        reason = check.lowered[key].why if lowered else check.exempt.get(key, "") if check else ""
        rows.append({"detector": row, "key": key, "acc": acc, "bar": bar, "verdict": verdict, "reason": reason,
                     "lowered": lowered})
    return rows


def summary_line(rows: Sequence[dict], profile: str) -> str:
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("pass", "FAIL", "exempt", "no result")}
    failing = [r["key"] for r in rows if r["verdict"] == "FAIL"]
    lowered = [f"{r['key']} {100 * r['bar']:.0f}%" for r in rows if r["lowered"]]
    return (f"learning check ({profile}): {counts['pass']} pass, {counts['FAIL']} fail"
            + (f" ({', '.join(failing)})" if failing else "") + f", {counts['exempt']} exempt"
            + (f", lowered bar: {', '.join(lowered)}" if lowered else "")
            + (f", {counts['no result']} without a training-generator result" if counts["no result"] else "")
            + f"; results/tables/{profile}_learning.md")


def write_learning(metrics: Sequence[dict], row_of: Mapping[str, str], train_generators: Sequence[str],
                   check: LearningCheck | None, profile: str, stem: Path) -> tuple[list[Path], str]:
    """Write the table and return (files, the one-line summary; "" for a profile without a check)."""
    rows = learning_rows(metrics, row_of, train_generators, check)
    gens = ", ".join(train_generators)
    table = pd.DataFrame([[r["detector"], "n/a" if math.isnan(r["acc"]) else f"{100 * r['acc']:.2f}",
                           "" if r["bar"] is None else f"{100 * r['bar']:.0f}",
                           r["verdict"]] for r in rows],
                         columns=["detector", f"ACC on {gens} (%)", "bar (%)", "verdict"])
    if check is None:
        table = table.drop(columns="bar (%)")
        notes = [f"Each trained detector's ACC on its own training generator(s) ({gens}), mean over seeds. Profile "
                 f"`{profile}` sets no `learning_check`, so no row passes or fails."]
    else:
        notes = [f"Learning check, profile `{profile}`: each trained detector's ACC on its own training generator(s) "
                 f"({gens}), mean over seeds, must reach {100 * check.min_acc:.0f}% (params.yaml "
                 f"`profiles.{profile}.learning_check`), so that a broken training path shows up as FAIL."]
    lowered = [r for r in rows if r["lowered"]]
    if lowered:
        notes.append("Lower bar, and why (still above chance, so a broken training path fails): " + "; ".join(
            f"`{r['key']}` {100 * r['bar']:.0f}%: {r['reason']}" for r in lowered) + ".")
    exempted = [r for r in rows if r["verdict"] == "exempt"]
    if exempted:
        notes.append("Exempt, and why: " + "; ".join(f"`{r['key']}`: {r['reason']}" for r in exempted) + ".")
    write_text(stem.with_suffix(".md"), markdown(table) + "\n\n" + "\n\n".join(notes) + "\n")
    frame = pd.DataFrame([{k: r[k] for k in ("detector", "acc", "bar", "verdict", "reason")} for r in rows])
    write_text(stem.with_suffix(".csv"), frame.to_csv(index=False, float_format="%.4f"))
    return [stem.with_suffix(".md"), stem.with_suffix(".csv")], (summary_line(rows, profile) if check else "")
