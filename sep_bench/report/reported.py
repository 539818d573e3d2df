"""The paper's reported figures as package data, and the reported-vs-reproduced comparison.

``genimage_sdv14_reported.csv`` is the SEP paper's GenImage cross-generator table: ACC (%) of every detector
trained on SD v1.4 and tested on the 8 GenImage generators (columns named as the `genimage` profile names its
test generators), Mean = the paper's printed average over the 8 columns. Detectors newer than that table (LOTA)
take their row, under the same protocol, from their own paper: ``genimage_sdv14_reported_other_papers.csv``,
whose ``source`` column says where each row comes from; the comparison names it. Rows are the papers' method
names (NPR, UnivFD, SEP, ...); `reported_name` maps a registry key (npr, univfd, sep, ...) to them by comparing names without case and
punctuation (``fconv`` -> ``F-ConV``), unless the detector's spec sets ``extra["reported_name"]``.

Only profiles listed in `REPORTED_TABLES` have reported figures; for the others (e.g. `mini`) there is nothing
to compare, which the report says instead of failing.

A reproduced value is flagged when the reported one lies outside the run-to-run spread:
``|reproduced - reported| > SPREAD_K * std`` over seeds. With one seed the spread is unknown and nothing is
flagged; the table says so.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from typing import Mapping

import pandas as pd

from sep_bench.report.tables import strip_marks

__all__ = ["REPORTED_TABLES", "OTHER_PAPERS", "SPREAD_K", "NOT_REPRODUCIBLE", "load_reported", "other_paper_sources",
           "reported_name", "reported_vs_reproduced", "render_reported", "not_reproducible"]

REPORTED_TABLES = {"genimage": "genimage_sdv14_reported.csv"}
#: Rows from the detectors' own papers, same protocol, for methods the paper's table lacks (with a source column).
OTHER_PAPERS = {"genimage": "genimage_sdv14_reported_other_papers.csv"}
SPREAD_K = 2.0
_PAPER = {"genimage": "SEP paper, GenImage table (train SD v1.4)"}

#: Reported rows that no run can reproduce from public material (method name -> what is missing). They stay in
#: the reported table and are marked "not reproducible from public material" wherever it is rendered.
NOT_REPRODUCIBLE = {
    "GenDet": "no official code, weights or training recipe (arXiv 2312.08880; GenImage links only the paper); the "
              "frozen encoder, the teacher/student/augmenter architectures and sizes, the adversarial and "
              "discrepancy losses and their weights are not published; the public notebooks "
              "(e.g. amartya-kotla/GenDet-AI-Image-Detection) are unofficial CLIP-based guesses",
}


def not_reproducible(profile: str) -> dict[str, str]:
    """Methods of `profile`'s reported table that are marked not reproducible from public material."""
    reported = load_reported(profile)
    return {} if reported is None else {m: why for m, why in NOT_REPRODUCIBLE.items() if m in reported.index}


def _not_reproducible_note(profile: str) -> str:
    marked = not_reproducible(profile)
    return "".join(f"\n- {m}: reported only, **not reproducible from public material** ({why}).\n"
                   for m, why in marked.items())


def _read_csv(name: str) -> pd.DataFrame:
    with resources.files("sep_bench.report").joinpath(name).open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh).set_index("method")


def load_reported(profile: str) -> pd.DataFrame | None:
    """The reported ACC (%) table of `profile` (index: method, columns: generators + Mean), or None: the paper's
    rows, then the rows taken from other papers (`other_paper_sources`)."""
    name = REPORTED_TABLES.get(profile)
    if name is None:
        return None
    frames = [_read_csv(name)]
    if profile in OTHER_PAPERS:
        frames.append(_read_csv(OTHER_PAPERS[profile]))
    df = pd.concat(frames)
    if dup := sorted(df.index[df.index.duplicated()]):
        raise ValueError(f"reported rows {dup} are both in the paper's table and in {OTHER_PAPERS[profile]}")
    return df.drop(columns=["venue", "source"], errors="ignore").astype(float)


def other_paper_sources(profile: str) -> dict[str, str]:
    """{method: where its reported row comes from} for the rows that are not the paper's own."""
    if profile not in OTHER_PAPERS:
        return {}
    return _read_csv(OTHER_PAPERS[profile])["source"].to_dict()


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def reported_name(detector: str, methods: list[str]) -> str | None:
    """The reported table's method name for a registry key (see the module docstring), or None."""
    explicit = None
    try:
        from sep_bench.detectors import get_detector

        explicit = get_detector(detector).extra.get("reported_name")
    except Exception:  # an unknown or broken detector simply has no explicit name
        pass
    if explicit in methods:
        return explicit
    key = _norm(detector)
    for m in methods:
        if _norm(m) == key:
            return m
    return None


def reported_vs_reproduced(
    profile: str,
    mean: pd.DataFrame,
    std: pd.DataFrame,
    n_seeds: Mapping[str, int],
    detectors: Mapping[str, str] | None = None,
) -> pd.DataFrame | None:
    """One row per (detector, generator) present in both: reported, reproduced, diff (percentage points).

    `mean`/`std`/`n_seeds` are the ACC frames of `tables.metric_frames` (index: row names); `detectors` maps
    a row name to its registry key (the row name without its mark by default). Returns None when the
    profile has no reported figures, an empty frame when nothing overlaps.
    """
    reported = load_reported(profile)
    if reported is None:
        return None
    rows = []
    methods = list(reported.index)
    for row in mean.index:
        key = (detectors or {}).get(row, strip_marks(row))
        method = reported_name(key, methods)
        if method is None:
            continue
        for g in mean.columns:
            if g not in reported.columns or math.isnan(mean.loc[row, g]):
                continue
            rep, got = float(reported.loc[method, g]), float(mean.loc[row, g])
            sd = float(std.loc[row, g]) if int(n_seeds[row]) > 1 else math.nan
            diff = got - rep
            rows.append({
                "detector": row, "method": method, "generator": g, "reported": rep, "reproduced": got,
                "std": sd, "n_seeds": int(n_seeds[row]), "diff": diff,
                "outside_spread": (abs(diff) > SPREAD_K * sd) if not math.isnan(sd) else None,
            })
    cols = ["detector", "method", "generator", "reported", "reproduced", "std", "n_seeds", "diff", "outside_spread"]
    return pd.DataFrame(rows, columns=cols)


def render_reported(profile: str, table: pd.DataFrame | None) -> str:
    """Markdown of the comparison (or of why there is none)."""
    if table is None:
        have = ", ".join(f"`{p}`" for p in REPORTED_TABLES)
        return (f"Profile `{profile}` has no reported figures (the paper's tables exist for {have}): "
                "nothing to compare.\n")
    if table.empty:
        return (f"No detector of this run appears in the reported table of profile `{profile}` "
                f"({_PAPER.get(profile, '')}): nothing to compare.\n") + _not_reproducible_note(profile)
    from tabulate import tabulate

    body = []
    for r in table.itertuples():
        spread = "unknown (1 seed)" if r.n_seeds < 2 else f"± {r.std:.2f} ({r.n_seeds} seeds)"
        flag = "" if r.outside_spread is None else ("**outside**" if r.outside_spread else "within")
        body.append([r.detector, r.method, r.generator, f"{r.reported:.2f}", f"{r.reproduced:.2f}",
                     f"{r.diff:+.2f}", spread, flag or "-"])
    headers = ["detector", "reported as", "generator", "reported", "reproduced", "diff", "run-to-run spread", "flag"]
    md = tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True,
                  colalign=["left"] * 3 + ["right"] * 4 + ["left"])
    single = bool((table["n_seeds"] < 2).any())
    notes = [
        f"ACC (%), reported: {_PAPER.get(profile, profile)}; reproduced: this run (seed mean); "
        "diff = reproduced - reported.",
        f"Flag: `outside` when |diff| > {SPREAD_K:g} x the std over seeds."
        + (" With one seed the run-to-run spread is unknown and nothing is flagged; run several seeds "
           "(`run.seeds`) to know whether a difference exceeds it." if single else ""),
    ]
    others = other_paper_sources(profile)
    notes += [f"{m}: reported by its own paper, not in the {_PAPER.get(profile, profile)}: {src}"
              for m, src in others.items() if m in set(table["method"])]
    return md + "\n\n" + "\n".join(notes) + "\n" + _not_reproducible_note(profile)
