"""The measured seed-to-seed spread of each row, stated in the ACC table, and the ranking it does not support.

The default run trains one seed per row: a row's ACC is one draw. ``benchmarks/seed_spread.py`` trains and
evaluates every detector with several seeds once and writes ``results/benchmarks/seed_spread.json``; when that
file exists and was measured on the table's profile, the ACC table (`tables.write_table`) gains:

* a **Seed std** column after Mean: the sample standard deviation of the row's Mean ACC over the measured seeds
  (ACC points). A row gets it only when the protocol hash of each of its metrics files equals the hash measured for
  that seed: a row whose protocol changed since the measurement (or that was not measured) shows ``-`` and the
  caption says "spread not measured for this protocol".
* the **not-ranked** mark ``≈`` beside that std: the row's std is larger than its Mean lead over the next row
  (rows sorted by Mean; the next row is the next *lower* printed Mean, so tied rows share a place; the lowest row
  has no next row). Values are compared as printed (two decimals), so the rule holds at the boundary as read:
  a std equal to the lead is ranked.
* **marks the spread supports**: the bold (best) and underlined (second) marks follow the same rule per column,
  with the column's own measured spread (per generator, or Mean): a mark is withheld where the marked row's std in
  that column is larger than its lead over the next lower value, and the caption counts the withheld marks. A row
  without a measured spread keeps its marks (nothing measured against them; the caption names it).

Without the file (or with one measured on another profile) nothing changes: the table is the same as before.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd

from sep_bench.io import read_json
from sep_bench.report.tables import DECIMALS, run_key

__all__ = ["SPREAD_FILE", "NOT_RANKED_MARK", "STD_COLUMN", "SeedSpread", "load_spread", "not_ranked",
           "supported_marks"]

log = logging.getLogger(__name__)

SPREAD_FILE = Path("results/benchmarks/seed_spread.json")
NOT_RANKED_MARK = "≈"
STD_COLUMN = "Seed std"
NOT_RANKED_COLUMN = "Not ranked"


@dataclass(frozen=True)
class SeedSpread:
    """The measured spread of the rows of one table: row name -> column (generator or Mean) -> sample std (%)."""

    seeds: list[int]
    std: dict[str, dict[str, float]]
    unmatched: list[str] = field(default_factory=list)  # row names with no spread for their protocol
    source: str = ""  # where and when it was measured, for the caption
    note: str = ""  # a caption line when the file could not be used (unreadable)

    def frame(self, index, columns) -> pd.DataFrame:
        """The std as a frame shaped like the table (NaN where a row or column has no measured spread)."""
        return pd.DataFrame([[self.std.get(r, {}).get(c, math.nan) for c in columns] for r in index],
                            index=index, columns=columns, dtype=float)

    def apply(self, mean: pd.DataFrame, marks: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                                                       list[str]]:
        """(marks the spread supports, the Seed std column as text for md/LaTeX, as numbers for the CSV, caption
        lines) for the table `mean` (rows: row names; columns: generators + Mean)."""
        if not self.std and not self.unmatched:
            return marks, None, None, [self.note] if self.note else []
        spread = self.frame(mean.index, mean.columns)
        kept, withheld = supported_marks(marks, mean, spread)
        std = spread["Mean"].round(DECIMALS)
        unranked = not_ranked(mean["Mean"], spread["Mean"])
        text = pd.DataFrame({STD_COLUMN: [
            "-" if math.isnan(s) else f"{s:.{DECIMALS}f}" + (f" {NOT_RANKED_MARK}" if nr else "")
            for s, nr in zip(std, unranked)]}, index=mean.index)
        numbers = pd.DataFrame({STD_COLUMN: std, NOT_RANKED_COLUMN: unranked.map({True: "yes", False: ""})},
                               index=mean.index)
        return kept, text, numbers, self.caption(int(unranked.sum()), withheld)

    def caption(self, n_unranked: int, withheld: int) -> list[str]:
        seeds = ", ".join(map(str, self.seeds))
        lines = [
            f"{STD_COLUMN} = sample standard deviation of the row's Mean ACC over seeds {seeds} (ACC points), "
            f"measured once by `benchmarks/seed_spread.py` ({self.source}) under the row's protocol hash.",
            f"{NOT_RANKED_MARK} not ranked ({n_unranked} row{'s' if n_unranked != 1 else ''}): the row's {STD_COLUMN} "
            "is larger than its Mean lead over the next row (rows sorted by Mean, tied rows share a place): its "
            "place against that row is within seed noise.",
            "Bold/underline only where the spread supports it: a mark is withheld where the row's seed std in that "
            f"column (per generator, or Mean) is larger than its lead over the next lower value ({withheld} "
            f"mark{'s' if withheld != 1 else ''} withheld).",
        ]
        if self.unmatched:
            lines.append(f"{STD_COLUMN} `-`: spread not measured for this protocol ({', '.join(self.unmatched)}): "
                         "the row's protocol hash differs from the one measured, or the row was not measured.")
        if self.note:
            lines.append(self.note)
        return lines


def not_ranked(values: pd.Series, spread: pd.Series, decimals: int = DECIMALS) -> pd.Series:
    """True where a row's spread is larger than its lead over the next row below it, compared as printed.

    The next row is the next lower printed value (tied rows share a place); the lowest row has none and a row
    without a spread (NaN) is never marked."""
    v, s = values.round(decimals), spread.round(decimals)
    out = pd.Series(False, index=values.index)
    for i, (value, std) in enumerate(zip(v, s)):
        lower = v[v < value]
        if math.isnan(value) or math.isnan(std) or lower.empty:
            continue
        out.iloc[i] = std > round(value - lower.max(), decimals)
    return out


def supported_marks(marks: pd.DataFrame, values: pd.DataFrame, spread: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(`marks` without the best/second marks the spread does not support, how many were withheld)."""
    kept = marks.copy()
    withheld = 0
    for col in marks.columns:
        drop = (marks[col] != "") & not_ranked(values[col], spread[col])
        kept.loc[drop.to_numpy(), col] = ""
        withheld += int(drop.sum())
    return kept, withheld


def _stdev(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) >= 2 else math.nan


def _row_std(entry: dict, columns: list[str]) -> dict[str, float]:
    """Column -> sample std (%) of one detector's measured seeds (Mean and every generator)."""
    seeds = sorted(entry["mean_acc_per_seed"], key=int)
    out = {"Mean": _stdev([entry["mean_acc_per_seed"][s] for s in seeds])}
    for g in columns:
        out[g] = _stdev([entry["generators_per_seed"][s][g] for s in seeds])
    return out


def _matches(entry: dict | None, runs: list[dict]) -> bool:
    """The measurement covers this row: two seeds or more, and each of the row's runs under the measured hash."""
    if not entry or len(entry.get("mean_acc_per_seed", {})) < 2:
        return False
    hashes = entry.get("protocol_hash_per_seed", {})
    return all(hashes.get(str(m["seed"])) == m.get("protocol_hash") for m in runs)


def _source(data: dict, path: Path) -> str:
    machine = data.get("machine", {})
    cpu = f"{machine.get('cpu_model', '?')} x{machine.get('cpu_cores', '?')}"
    return f"{path}, {str(data.get('date', '?'))[:10]}, {cpu}"


def load_spread(metrics: list[dict], row_of: Mapping[str, str], path: Path = SPREAD_FILE) -> SeedSpread | None:
    """The measured spread of the rows of `metrics` (`row_of`: row key -> table row name), or None when there is
    no measurement of this profile. An unreadable file is a logged skip whose reason the caption states."""
    if not metrics or not Path(path).is_file():
        return None
    try:
        data = read_json(path)
        if data.get("profile") != metrics[0]["profile"]:
            return None
        generators = list(metrics[0]["test_generators"])
        by_key: dict[str, list[dict]] = {}
        for m in metrics:
            by_key.setdefault(run_key(m), []).append(m)
        std, unmatched = {}, []
        for key, runs in by_key.items():
            entry = data["detectors"].get(key)
            if _matches(entry, runs):
                std[row_of[key]] = _row_std(entry, generators)
            else:
                unmatched.append(row_of[key])
        return SeedSpread([int(s) for s in data["seeds"]], std, unmatched, _source(data, Path(path)))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        reason = f"{type(err).__name__}: {err}"
        log.warning("seed spread %s not used: %s", path, reason)
        return SeedSpread([], {}, note=f"Seed spread not shown: {path} is unreadable ({reason}).")
