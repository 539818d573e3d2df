"""Does every detector learn? ``<profile>_learning.{md,csv}``: ACC on its own training generators against the
profile's ``learning_check.min_acc``.

A smoke benchmark is only useful if a broken training path shows up as a failing row rather than as a plausible
55%. Every trained row (evaluation-only rows are not trained here) gets ``pass`` or ``FAIL``; a detector that
cannot learn in the profile (e.g. a frozen, randomly initialised backbone when no pretrained weights can be
loaded) is ``exempt`` with the reason params.yaml gives, printed in the caption.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from sep_bench.io import write_text
from sep_bench.report.protocol_tables import markdown
from sep_bench.report.tables import run_key

__all__ = ["learning_rows", "write_learning", "summary_line"]


def learning_rows(metrics: Sequence[dict], row_of: Mapping[str, str], train_generators: Sequence[str],
                  min_acc: float | None, exempt: Mapping[str, str]) -> list[dict]:
    """One dict per trained row: its mean ACC (over seeds and training generators) and the verdict."""
    rows = []
    for key, row in row_of.items():
        ms = [m for m in metrics if run_key(m) == key and not m.get("released")]
        accs = [m["generators"][g]["acc"] for m in ms for g in train_generators if g in m.get("generators", {})]
        if not ms:
            continue
        acc = float(np.mean(accs)) if accs else math.nan
        if min_acc is None:
            verdict = "n/a"
        elif key in exempt:
            verdict = "exempt"
        elif math.isnan(acc):
            verdict = "no result"
        else:
            verdict = "pass" if acc >= min_acc else "FAIL"
        rows.append({"detector": row, "key": key, "acc": acc, "verdict": verdict, "reason": exempt.get(key, "")})
    return rows


def summary_line(rows: Sequence[dict], profile: str) -> str:
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("pass", "FAIL", "exempt", "no result")}
    failing = [r["key"] for r in rows if r["verdict"] == "FAIL"]
    return (f"learning check ({profile}): {counts['pass']} pass, {counts['FAIL']} fail"
            + (f" ({', '.join(failing)})" if failing else "") + f", {counts['exempt']} exempt"
            + (f", {counts['no result']} without a training-generator result" if counts["no result"] else "")
            + f"; results/tables/{profile}_learning.md")


def write_learning(metrics: Sequence[dict], row_of: Mapping[str, str], train_generators: Sequence[str],
                   min_acc: float | None, exempt: Mapping[str, str], profile: str, stem: Path
                   ) -> tuple[list[Path], str]:
    """Write the table and return (files, the one-line summary; "" without a check, `min_acc` None)."""
    rows = learning_rows(metrics, row_of, train_generators, min_acc, exempt)
    gens = ", ".join(train_generators)
    table = pd.DataFrame([[r["detector"], "n/a" if math.isnan(r["acc"]) else f"{100 * r['acc']:.2f}",
                           r["verdict"]] for r in rows], columns=["detector", f"ACC on {gens} (%)", "verdict"])
    if min_acc is None:
        notes = [f"Each trained detector's ACC on its own training generator(s) ({gens}), mean over seeds. Profile "
                 f"`{profile}` sets no `learning_check`, so no row passes or fails."]
    else:
        notes = [f"Learning check, profile `{profile}`: each trained detector's ACC on its own training generator(s) "
                 f"({gens}), mean over seeds, must reach {100 * min_acc:.0f}% (params.yaml "
                 f"`profiles.{profile}.learning_check`), so that a broken training path shows up as FAIL."]
    exempted = [r for r in rows if r["verdict"] == "exempt"]
    if exempted:
        notes.append("Exempt, and why: " + "; ".join(f"`{r['key']}`: {r['reason']}" for r in exempted) + ".")
    write_text(stem.with_suffix(".md"), markdown(table) + "\n\n" + "\n\n".join(notes) + "\n")
    frame = pd.DataFrame([{k: r[k] for k in ("detector", "acc", "verdict", "reason")} for r in rows])
    write_text(stem.with_suffix(".csv"), frame.to_csv(index=False, float_format="%.4f"))
    return [stem.with_suffix(".md"), stem.with_suffix(".csv")], (summary_line(rows, profile) if min_acc else "")
