"""Cross-generator tables from metrics JSON files: rows = detectors, columns = test generators + Mean.

Values are percentages with two decimals, as in the paper; with several seeds a cell is ``mean ± std`` over
seeds (sample std). In every column the best value is in bold and the second best underlined, as in the
paper (ties share the mark; the comparison uses the printed, rounded values). Each table is written as
markdown (caption below it), CSV (seed means, machine-readable) and LaTeX (booktabs; needs
``\\usepackage{booktabs}``).

A row trained without the pretrained weights its recipe intends is marked with a dagger and a footnote, so
such numbers are never mistaken for the real thing; a row of released weights (an evaluation-only entry, not
trained here) is marked with a double dagger and its caption line gives the file's sha256. A row whose metrics
were computed under another protocol than the current params.yaml (protocol hash mismatch) is marked stale in the
caption.

The cost of each detector (`efficiency_frame`: parameters, GFLOPs per image, evaluation images/s, peak memory;
see engine.efficiency) can be shown beside Mean (`write_table(..., cost=...)`); cost columns are not ranked.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from tabulate import tabulate

from sep_bench.io import read_json, write_text

__all__ = [
    "fmt", "fmt_p",
    "load_metrics",
    "run_key",
    "row_name",
    "efficiency_frame",
    "cost_columns",
    "cost_text",
    "column_decimals",
    "common_generators",
    "metric_frames",
    "metric_table",
    "rank_marks",
    "format_value",
    "render_markdown",
    "render_latex",
    "latex_escape",
    "caption_lines",
    "budget_note",
    "write_table",
    "write_breakdown",
    "write_summary_csv",
    "NOT_PRETRAINED_MARK",
    "RELEASED_MARK",
    "TEST_SELECTED_MARK",
    "PROVENANCE_MARKS",
    "strip_marks",
    "METRIC_TITLES",
]

NOT_PRETRAINED_MARK = "†"
RELEASED_MARK = "‡"
TEST_SELECTED_MARK = "§"
#: Provenance marks (DetectorSpec.provenance): the official model code with a reconstructed training recipe, and a
#: re-implementation from the paper alone. Rows built from the official training code carry none.
PROVENANCE_MARKS = {"official-inference": "°", "paper": "¶"}
PROVENANCE_NOTE = {
    "official-inference": "° the authors' model/inference code, training recipe reconstructed (see the detector's "
                          "module docstring).",
    "paper": "¶ no usable official code: re-implemented from the paper; guessed hyperparameters listed in the "
             "detector's module docstring.",
}
DECIMALS = 2
METRIC_TITLES = {"acc": "ACC", "ap": "AP", "auc": "AUC", "real_acc": "real ACC", "fake_acc": "fake ACC"}
NOT_PRETRAINED_NOTE = (f"{NOT_PRETRAINED_MARK} trained without the pretrained weights its recipe intends "
                       "(pretrained: false): not comparable to the paper's numbers.")
TEST_SELECTED_NOTE = (f"{TEST_SELECTED_MARK} checkpoint selected on the test generators (train.select_on: test, the "
                      "best Mean test ACC over epochs): an optimistic number, not a protocol result; "
                      "see the selection table.")
RELEASED_NOTE = (f"{RELEASED_MARK} released weights (an evaluation-only entry of params.yaml `released:`), "
                 "evaluated under this protocol without training here; the file's sha256 is in its caption line.")


def load_metrics(folder: str | Path, detectors: Iterable[str], seeds: Iterable[int]) -> list[dict]:
    """Metrics of every (row key, seed) under `folder` (``<key>/seed<s>.json``), in that order; a key is a
    detector name or an evaluation-only entry's name."""
    folder = Path(folder)
    seeds = list(seeds)
    files = [folder / d / f"seed{s}.json" for d in detectors for s in seeds]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"metrics not found: {', '.join(missing)} (run the evaluate stage first)")
    return [read_json(f) for f in files]


def run_key(m: dict) -> str:
    """Which row a metrics file belongs to: the evaluation-only entry's name, else the detector's."""
    return m.get("entry") or m["detector"]


ALL_MARKS = NOT_PRETRAINED_MARK + RELEASED_MARK + TEST_SELECTED_MARK + "".join(PROVENANCE_MARKS.values())


def strip_marks(row: str) -> str:
    """A table row's key without its marks (†, ‡, §, °, ¶)."""
    return str(row).rstrip(ALL_MARKS)


def provenance(m: dict) -> str:
    """What a row's detector is built from: recorded in the metrics, else the registry's (older metrics files)."""
    if m.get("provenance"):
        return m["provenance"]
    from sep_bench.detectors import UnknownDetectorError, get_detector

    try:
        return get_detector(m["detector"]).provenance
    except (UnknownDetectorError, ImportError):
        return "official"


def row_name(m: dict) -> str:
    """A table row's name: its key, with the double dagger for released weights and the dagger when it lacks its
    intended pretrained weights."""
    untrained = m.get("intended_pretrained") and not m.get("pretrained")
    return (run_key(m) + PROVENANCE_MARKS.get(provenance(m), "")
            + (RELEASED_MARK if m.get("released") else "") + (NOT_PRETRAINED_MARK if untrained else "")
            + (TEST_SELECTED_MARK if m.get("select_on") == "test" else ""))


def common_generators(metrics: list[dict]) -> list[str]:
    """The test generators all `metrics` share (a ProtocolError naming the fix when they differ)."""
    from sep_bench.protocol import ProtocolError

    if not metrics:
        raise ValueError("no metrics to tabulate")
    generators = metrics[0]["test_generators"]
    for m in metrics:
        if m["test_generators"] != generators:
            raise ProtocolError(
                f"{run_key(m)} (seed {m['seed']}) was tested on {', '.join(m['test_generators'])}, "
                f"{run_key(metrics[0])} (seed {metrics[0]['seed']}) on {', '.join(generators)}: results of "
                "different protocols cannot share a table (rerun `dvc repro`)")
    return list(generators)


def metric_frames(metrics: list[dict], metric: str = "acc") -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(mean, std, number of seeds) of `metric` in percent: detectors x (generators + Mean), unrounded.

    std is the sample standard deviation over seeds (NaN with one seed). Rows keep the detectors' first
    appearance order; a detector with several runs of the same seed counts each once.
    """
    generators = common_generators(metrics)
    per_seed = {}
    for m in metrics:
        vals = {g: m["generators"][g][metric] for g in generators}
        vals["Mean"] = m["mean"][metric]
        per_seed[(row_name(m), m["seed"])] = {k: np.nan if v is None else 100.0 * v for k, v in vals.items()}
    df = pd.DataFrame.from_dict(per_seed, orient="index").astype(float)
    groups = df.groupby(level=0, sort=False)
    mean, std, n = groups.mean(), groups.std(ddof=1), groups.size()
    for f in (mean, std):
        f.index.name = "detector"
        f.columns = [*generators, "Mean"]
    n.index.name = "detector"
    return mean, std, n


def efficiency_frame(metrics: list[dict]) -> pd.DataFrame:
    """Cost per row (seed mean; peak memory: max): params_total, params_trainable, gflops, images_per_s,
    peak_memory_mib, peak_memory_kind, device. Rows without an ``efficiency`` block (older metrics) are absent."""
    by_row: dict[str, list[dict]] = {}
    for m in metrics:
        if m.get("efficiency"):
            by_row.setdefault(row_name(m), []).append(m["efficiency"])

    def avg(es: list[dict], key: str) -> float:
        vals = [e[key] for e in es if e.get(key) is not None]
        return float(np.mean(vals)) if vals else math.nan

    rows = {
        row: {
            "params_total": es[0]["params_total"],
            "params_trainable": es[0]["params_trainable"],
            "gflops": avg(es, "flops_per_image") / 1e9,
            "images_per_s": avg(es, "images_per_s"),
            "peak_memory_mib": max(e["peak_memory_mib"] for e in es),
            "peak_memory_kind": es[0]["peak_memory_kind"],
            "device": ", ".join(sorted({e["device"] for e in es})),
        }
        for row, es in by_row.items()
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[
        "params_total", "params_trainable", "gflops", "images_per_s", "peak_memory_mib", "peak_memory_kind", "device"])
    frame.index.name = "detector"
    return frame


#: The cost columns of the main tables: column title -> (efficiency_frame column, scale, decimals); decimals None:
#: whole numbers from 10 up, `SIGNIFICANT` significant digits below (a throughput of 0.5 img/s is 0.50, not 0)
COST_COLUMNS = {"Params (M)": ("params_total", 1e-6, 2), "GFLOPs": ("gflops", 1.0, 3),
                "img/s": ("images_per_s", 1.0, None), "Mem (MiB)": ("peak_memory_mib", 1.0, 0)}
SIGNIFICANT = 2


_EXTRA_DECIMALS = {"Params": 0, "Trainable": 0, **{t: d for t, (_, _, d) in COST_COLUMNS.items()}}


def column_decimals(title: str, value: float | None = None) -> int:
    """Decimals shown for a column: the cost columns have their own, metrics `DECIMALS`; a column of significant
    digits (img/s) as many as `value` needs for `SIGNIFICANT` digits (none from 10 up)."""
    decimals = _EXTRA_DECIMALS.get(title, DECIMALS)
    if decimals is not None:
        return decimals
    if value is None or not math.isfinite(value) or value == 0:
        return 0
    return max(0, SIGNIFICANT - 1 - math.floor(math.log10(abs(value))))


def cost_text(title: str, value: float, *, thousands: bool = True, missing: str = "-") -> str:
    """A cost cell as text with its column's precision (`column_decimals`)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    d = column_decimals(title, value)
    return f"{value:,.{d}f}" if thousands else f"{value:.{d}f}"


def cost_columns(eff: pd.DataFrame, index: Sequence[str]) -> pd.DataFrame:
    """The cost columns as numbers (rows `index`; NaN where a row has no efficiency record)."""
    out = pd.DataFrame(index=pd.Index(list(index), name="detector"))
    for title, (col, scale, _) in COST_COLUMNS.items():
        values = eff[col].reindex(out.index).astype(float) * scale
        out[title] = values.map(lambda v, t=title: v if math.isnan(v) else round(v, column_decimals(t, v)))
    return out


def cost_caption(eff: pd.DataFrame) -> str:
    kinds = set(eff["peak_memory_kind"].dropna())
    memory = " and ".join(
        {"cpu_peak_rss": "the evaluating process's peak RSS (CPU)", "cuda_peak_allocated": "peak CUDA memory allocated"}
        .get(k, k) for k in sorted(kinds))
    devices = ", ".join(sorted(set(eff["device"].dropna())))
    return ("Cost beside Mean (not ranked): Params = total parameters (millions); GFLOPs = forward FLOPs per image "
            "(torch FlopCounterMode, 2 per multiply-add, batch 1, at the view sizes of the profile's first test "
            f"image); img/s = the clean evaluation pass (decode + views + forward) and Mem = {memory or 'n/a'}, "
            f"measured on {devices or 'n/a'}.")


def metric_table(metrics: list[dict], metric: str = "acc") -> pd.DataFrame:
    """A detectors x (generators + Mean) frame of `metric` in percent, averaged over seeds, rounded."""
    return metric_frames(metrics, metric)[0].round(DECIMALS)


def rank_marks(values: pd.DataFrame, decimals: int = DECIMALS) -> pd.DataFrame:
    """"best" / "second" / "" per cell: per column, the highest printed value and the next lower one.

    Ties share the mark (two rows with the same best value are both bold; the second mark then goes to the
    next distinct value). NaN cells get no mark; a column with one distinct value has no second, and a column
    with a single value (one detector) no mark at all: there is nothing to rank.
    """
    marks = pd.DataFrame("", index=values.index, columns=values.columns)
    for col in values.columns:
        v = values[col].round(decimals)
        levels = sorted(set(v.dropna()), reverse=True)
        if v.notna().sum() > 1:
            marks.loc[(v == levels[0]).to_numpy(), col] = "best"
        if len(levels) > 1:
            marks.loc[(v == levels[1]).to_numpy(), col] = "second"
    return marks


def format_value(mean: float, std: float | None = None, decimals: int = DECIMALS, *, latex: bool = False) -> str:
    """``12.34`` or ``12.34 ± 0.56`` (LaTeX: ``12.34\\,{\\scriptsize$\\pm$0.56}``); ``-`` for a missing value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean:.{decimals}f}"
    if std is not None and not math.isnan(std):
        text += f"\\,{{\\scriptsize$\\pm${std:.{decimals}f}}}" if latex else f" ± {std:.{decimals}f}"
    return text


_MD_MARK = {"best": "**{}**", "second": "<u>{}</u>", "": "{}"}
_TEX_MARK = {"best": "\\textbf{{{}}}", "second": "\\underline{{{}}}", "": "{}"}


def _cells(mean: pd.DataFrame, std: pd.DataFrame | None, marks: pd.DataFrame, latex: bool) -> list[list[str]]:
    wrap = _TEX_MARK if latex else _MD_MARK
    rows = []
    for idx in mean.index:
        row = []
        for col in mean.columns:
            s = None if std is None else std.loc[idx, col]
            text = format_value(mean.loc[idx, col], s, latex=latex)
            mark = marks.loc[idx, col] if text != "-" else ""
            row.append(wrap[mark].format(text))
        rows.append(row)
    return rows


def _index_columns(mean: pd.DataFrame) -> tuple[list[str], list[tuple]]:
    names = [str(n) if n is not None else "" for n in mean.index.names]
    keys = [k if isinstance(k, tuple) else (k,) for k in mean.index]
    return names, keys


def _extra_cells(extra: pd.DataFrame | None, index) -> tuple[list[str], list[list[str]]]:
    """Unranked columns (e.g. cost) as text, one list per row of `index`."""
    if extra is None:
        return [], [[] for _ in index]
    texts = []
    for idx in index:
        row = []
        for col in extra.columns:
            v = extra.loc[idx, col]
            if isinstance(v, str):  # a text column (the seed spread with its mark) as it is
                row.append(v)
                continue
            sign = "+" if str(col).startswith("Δ") else ""  # differences carry their sign
            row.append("-" if v is None or (isinstance(v, float) and math.isnan(v))
                       else f"{v:{sign},.{column_decimals(col, v)}f}")
        texts.append(row)
    return list(map(str, extra.columns)), texts


def render_markdown(mean: pd.DataFrame, std: pd.DataFrame | None = None, marks: pd.DataFrame | None = None,
                    extra: pd.DataFrame | None = None) -> str:
    """A GitHub markdown (pipe) table; bold best, underlined (``<u>``) second; `extra` columns unranked."""
    marks = rank_marks(mean) if marks is None else marks
    names, keys = _index_columns(mean)
    extra_cols, extra_cells = _extra_cells(extra, mean.index)
    body = [[*map(str, k), *cells, *more]
            for k, cells, more in zip(keys, _cells(mean, std, marks, latex=False), extra_cells)]
    headers = [*names, *map(str, mean.columns), *extra_cols]
    align = ["left"] * len(names) + ["right"] * (len(mean.columns) + len(extra_cols))
    return tabulate(body, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True)


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", NOT_PRETRAINED_MARK: r"\textsuperscript{\dag}", TEST_SELECTED_MARK: r"\textsuperscript{\S}", "°": r"\textsuperscript{o}", "¶": r"\textsuperscript{\P}",
    "±": r"$\pm$", "≈": r"$\approx$", "—": "---", "–": "--", "<": r"\textless{}", ">": r"\textgreater{}", "Δ": r"$\Delta$",
}
_TEX_RX = re.compile("|".join(re.escape(k) for k in _TEX_SPECIAL))


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (``_ % & # $ { } ~ ^ \\``) and map †, ±, dashes to LaTeX."""
    return _TEX_RX.sub(lambda m: _TEX_SPECIAL[m.group(0)], str(text))


def _latex_inline(text: str) -> str:
    """Escape prose; `code` spans become \\texttt{...}."""
    parts = text.split("`")
    return "".join(f"\\texttt{{{latex_escape(p)}}}" if i % 2 else latex_escape(p) for i, p in enumerate(parts))


def render_latex(
    mean: pd.DataFrame,
    std: pd.DataFrame | None = None,
    marks: pd.DataFrame | None = None,
    *,
    caption: Sequence[str] = (),
    label: str = "",
    notes: Sequence[str] = (),
    extra: pd.DataFrame | None = None,
) -> str:
    """A booktabs ``table`` environment: bold best, underlined second; `notes` go under the tabular; `extra`
    columns (unranked) after a vertical gap."""
    marks = rank_marks(mean) if marks is None else marks
    names, keys = _index_columns(mean)
    extra_cols, extra_cells = _extra_cells(extra, mean.index)
    cells = [[*c, *map(latex_escape, more)] for c, more in zip(_cells(mean, std, marks, latex=True), extra_cells)]
    spec = "l" * len(names) + "r" * len(mean.columns) + ("@{\\hspace{1.5em}}" + "r" * len(extra_cols) if extra_cols else "")
    lines = [
        "% Generated by `sep-bench report`; needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
    ]
    if caption:
        lines.append("\\caption{" + " ".join(_latex_inline(c) for c in caption) + "}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines += [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in [*names, *map(str, mean.columns), *extra_cols]) + " \\\\",
        "\\midrule",
    ]
    prev = None
    for k, row in zip(keys, cells):
        if prev is not None and len(k) > 1 and k[0] != prev:
            lines.append("\\midrule")
        prev = k[0]
        lines.append(" & ".join([*(latex_escape(x) for x in k), *row]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if notes:
        lines.append("\\par\\smallskip{\\footnotesize " + " \\\\ ".join(_latex_inline(n) for n in notes) + "}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def budget_note(budgets: Sequence[str]) -> str:
    """The caption line of results computed under a capped run budget (params.yaml `budget`)."""
    return (f"RUN BUDGET {', '.join(f'`{b}`' for b in budgets)} (params.yaml `budget`): steps, images and "
            "evaluation variants capped for a check that the whole path runs; NOT the protocol's numbers.")


def caption_lines(metrics: list[dict], title: str, facts: Mapping[str, str] | None = None,
                  current_hashes: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(caption lines, footnotes) of a table of `metrics`: the first caption line says what the table shows,
    one line per detector follows (weights, recipe, protocol hash); LaTeX puts all but the first under the table.

    `facts` maps a detector to its recipe facts (optimiser, budget, model options), as the report builds them
    from params.yaml; `current_hashes` maps a detector to the current protocol hash, to flag stale metrics.
    """
    m0 = metrics[0]
    seeds = sorted({m["seed"] for m in metrics})
    multi = len(seeds) > 1
    lines = [
        f"{title} (%) per test generator, profile `{m0['profile']}`, "
        + (f"mean ± std over seeds {', '.join(map(str, seeds))}" if multi else f"seed {seeds[0]}")
        + "; Mean = unweighted mean over generators; threshold 0.5, fake = positive class; "
        "best per column in bold, second underlined."
    ]
    if budgets := sorted({m["budget"] for m in metrics if m.get("budget")}):
        lines.append(budget_note(budgets))
    by_det: dict[str, list[dict]] = {}
    for m in metrics:
        by_det.setdefault(run_key(m), []).append(m)
    for det, ms in by_det.items():
        weights = ", ".join(sorted({str(m.get("weights", "?")) for m in ms}))
        hashes = sorted({m.get("protocol_hash", "?") for m in ms})
        released = ms[0].get("released")
        if released:
            fact = (f"`{det}`: released weights of `{ms[0]['detector']}`, {released['source']} "
                    f"(sha256 {released['sha256']})" + (f", {released['note']}" if released.get("note") else "")
                    + f"; model weights {weights}")
        else:
            fact = f"`{det}`: weights {weights}"
        if facts and facts.get(det):
            fact += f"; {facts[det]}"
        fact += f"; protocol {', '.join(hashes)}"
        if current_hashes and det in current_hashes and any(h != current_hashes[det] for h in hashes):
            fact += f" (STALE: params.yaml now gives {current_hashes[det]}; rerun `dvc repro`)"
        lines.append(fact + ".")
    notes = [NOT_PRETRAINED_NOTE] if any(NOT_PRETRAINED_MARK in row_name(m) for m in metrics) else []
    if any(m.get("released") for m in metrics):
        notes.append(RELEASED_NOTE)
    if any(m.get("select_on") == "test" for m in metrics):
        notes.append(TEST_SELECTED_NOTE)
    if any(m.get("data_pairing") == "shared-reals" for m in metrics):
        from sep_bench.data.pairing import SHARED_REALS_CAPTION

        notes.append(SHARED_REALS_CAPTION)
    for kind, note in PROVENANCE_NOTE.items():
        if any(provenance(m) == kind for m in metrics):
            notes.append(note)
    notes.append(f"Protocol card of `{m0['profile']}`: docs/protocols.md#{m0['profile']}.")
    return lines, notes


def _write_all(out_stem: Path, mean: pd.DataFrame, std: pd.DataFrame | None, marks: pd.DataFrame,
               caption: list[str], notes: list[str], label: str, extra_md: str = "",
               cost: pd.DataFrame | None = None, spread: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> None:
    """`spread`: the seed-spread column (text for md/LaTeX, numbers for the CSV), placed between Mean and cost."""
    if cost is None and spread is None:
        csv = mean.round(DECIMALS).to_csv(float_format=f"%.{DECIMALS}f")
    else:  # each cost column with its own precision
        text = mean.round(DECIMALS).map(lambda v: "" if math.isnan(v) else f"{v:.{DECIMALS}f}")
        if spread is not None:
            text = text.join(spread[1].map(lambda v: v if isinstance(v, str) else
                                           "" if math.isnan(v) else f"{v:.{DECIMALS}f}"))
        if cost is not None:
            text = text.join(cost.apply(lambda c: c.map(lambda v, t=c.name: cost_text(t, v, thousands=False,
                                                                                      missing=""))))
        csv = text.to_csv()
    write_text(out_stem.with_suffix(".csv"), csv)
    extra = cost if spread is None else spread[0] if cost is None else spread[0].join(cost)
    md = render_markdown(mean, std, marks, extra) + "\n\n" + "\n".join(caption + notes) + "\n" + extra_md
    write_text(out_stem.with_suffix(".md"), md)
    tex = render_latex(mean, std, marks, caption=caption[:1], label=label, notes=[*caption[1:], *notes], extra=extra)
    write_text(out_stem.with_suffix(".tex"), tex)


def write_table(
    metrics: list[dict],
    out_stem: str | Path,
    metric: str = "acc",
    *,
    facts: Mapping[str, str] | None = None,
    current_hashes: Mapping[str, str] | None = None,
    extra_md: str = "",
    cost: bool = False,
    spread=None,
) -> pd.DataFrame:
    """Write ``<out_stem>.md``, ``.csv`` and ``.tex`` of `metric`; return the (rounded) seed-mean frame.

    `cost`: add the cost columns (`COST_COLUMNS`) after Mean, when the metrics carry efficiency records.
    `spread`: the measured seed spread of the rows (`sep_bench.report.spread.SeedSpread`, or None): its column
    after Mean, its caption lines, and only the best/second marks it supports."""
    out_stem = Path(out_stem)
    mean, std, n = metric_frames(metrics, metric)
    show_std = std if (n > 1).any() else None
    marks = rank_marks(mean)
    caption, notes = caption_lines(metrics, METRIC_TITLES.get(metric, metric.upper()), facts, current_hashes)
    spread_cols = None
    if spread is not None:
        marks, spread_text, spread_numbers, spread_notes = spread.apply(mean, marks)
        spread_cols = None if spread_text is None else (spread_text, spread_numbers)
        notes = [*notes, *spread_notes]
    label = f"tab:{metrics[0]['profile']}-{metric}".replace("_", "-")
    eff = efficiency_frame(metrics) if cost else None
    cost_frame = None
    if eff is not None and len(eff):
        cost_frame = cost_columns(eff, mean.index)
        notes = [*notes, cost_caption(eff)]
    _write_all(out_stem, mean, show_std, marks, caption, notes, label, extra_md, cost_frame, spread_cols)
    return mean.round(DECIMALS)


def write_breakdown(
    metrics: list[dict],
    out_stem: str | Path,
    *,
    facts: Mapping[str, str] | None = None,
    current_hashes: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The real-ACC / fake-ACC breakdown: one block per class, marks within each block. Returns (mean, std)."""
    means, stds, marks = [], [], []
    multi = False
    for metric, cls in (("real_acc", "real"), ("fake_acc", "fake")):
        mean, std, n = metric_frames(metrics, metric)
        multi |= bool((n > 1).any())
        marks.append(rank_marks(mean))
        for f, bucket in ((mean, means), (std, stds)):
            f = f.copy()
            f.index = pd.MultiIndex.from_product([[cls], f.index], names=["class", "detector"])
            bucket.append(f)
    for mk, mean in zip(marks, means):
        mk.index = mean.index
    mean, std, mark = pd.concat(means), pd.concat(stds), pd.concat(marks)
    caption, notes = caption_lines(metrics, "Real ACC and fake ACC", facts, current_hashes)
    caption[0] = caption[0].replace("best per column", "best per column and class")
    _write_all(Path(out_stem), mean, std if multi else None, mark, caption, notes,
               f"tab:{metrics[0]['profile']}-real-fake".replace("_", "-"))
    return mean, std if multi else None


def write_summary_csv(metrics: list[dict], out: str | Path, ci: Mapping[str, Mapping] | None = None) -> pd.DataFrame:
    """Long format, one row per (detector, generator, metric): mean, std, seeds, and the ACC bootstrap CI.

    `ci` maps a row name (detector, with its mark) to ``{generator or "Mean": Interval}`` in fractions.
    """
    rows = []
    for metric in METRIC_TITLES:
        mean, std, n = metric_frames(metrics, metric)
        for det in mean.index:
            for g in mean.columns:
                iv = (ci or {}).get(det, {}).get(g) if metric == "acc" else None
                rows.append({
                    "detector": det, "generator": g, "metric": metric,
                    "mean": mean.loc[det, g], "std": std.loc[det, g], "n_seeds": int(n[det]),
                    "ci_low": None if iv is None else 100.0 * iv.low,
                    "ci_high": None if iv is None else 100.0 * iv.high,
                })
    df = pd.DataFrame(rows)
    write_text(out, df.to_csv(index=False, float_format="%.4f"))
    return df


def fmt(v: float | None, std: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2f}" + (f" ± {std:.2f}" if std is not None and not math.isnan(std) else "")


def fmt_p(p: float, prefix: str = "") -> str:
    return f"{prefix}<0.001" if p < 0.001 else f"{prefix}{'=' if prefix else ''}{p:.3f}"
