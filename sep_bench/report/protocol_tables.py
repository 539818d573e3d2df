"""How much of a reported number is protocol: the selection, format and preprocessing tables of a profile.

``results/tables/<p>_selection.{md,csv}``   checkpoint selected on validation vs on the test generators (the SEP
                                           authors' way): Mean ACC of each, the inflation, its spread over seeds.
                                           Input: ``results/selection/<p>/<row>/seed<s>.json`` (`sep-bench
                                           selection`, a ``train.select_on: test`` run; see engine.selection).
``results/tables/<p>_format.{md,csv}``      clean vs format-aligned evaluation (``eval.align``), with real and
                                           fake ACC beside ACC, and what the ``formatonly`` control says about the
                                           benchmark's format leak.
``results/tables/<p>_preprocess.{md,csv}``  Mean ACC of the same checkpoint under each ``eval.preprocess`` rule.

Inputs of the last two: the ``aligned`` / ``preprocess-<rule>`` variants of the evaluation
(``results/robustness/<p>/<row>/seed<s>/``, see engine.protocol_axes). Every table is written even when its
inputs are absent, with a line saying which setting or command produces them. Each links the profile's protocol
card (docs/protocols.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from sep_bench import paths
from sep_bench.io import read_json, write_text
from sep_bench.report.tables import run_key, strip_marks

__all__ = ["write_selection", "write_format", "write_preprocess", "protocol_card_link",
           "FORMAT_CONTROL", "FORMAT_LEAK_BAR", "format_leak"]

FORMAT_CONTROL = "formatonly"
#: an aligned run of the format control above this ACC (%) means the alignment left a format difference behind
FORMAT_LEAK_BAR = 60.0
_RULES = ("official", "center_crop", "resize", "native")


def protocol_card_link(profile: str) -> str:
    return f"Protocol card of `{profile}` (data sources, splits, formats, known defects): docs/protocols.md#{profile}."


def _pct(v) -> float:
    return math.nan if v is None else 100.0 * v


def _fmt(v: float, sign: bool = False) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:{'+' if sign else ''}.2f}"


def _mean_std(vals: Sequence[float]) -> str:
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return _fmt(vals[0])
    return f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f}"


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table: first column left-aligned, the others right-aligned, cells as given."""
    from tabulate import tabulate

    return tabulate(frame.values.tolist(), headers=list(frame.columns), tablefmt="pipe", disable_numparse=True,
                    colalign=["left"] + ["right"] * (len(frame.columns) - 1))


# ---- selection ---------------------------------------------------------------------------------------------------


def write_selection(profile: str, rows: Sequence[str], seeds: Sequence[int], stem: Path,
                    clean: Sequence[dict] = ()) -> list[Path]:
    """``<stem>.md`` / ``.csv``: per row, the val-selected and test-selected Mean ACC (mean ± std over seeds), the
    difference and its range over seeds, the epochs each picked; `clean` (the pipeline's metrics) gives the
    pipeline's own Mean beside them (equal to the val-selected one: same trajectory, same checkpoint)."""
    long, body, missing = [], [], []
    pipeline = {}
    for m in clean:
        pipeline.setdefault(run_key(m), []).append(_pct(m["mean"]["acc"]))
    for row in rows:
        recs = []
        for s in seeds:
            f = paths.selection_path(profile, row, s)
            record = read_json(f) if f.is_file() else None
            if record is not None and "skipped" not in record:  # a skipped run (not in run.detectors): no row
                recs.append(record)
            else:
                missing.append(str(f))
        if not recs:
            continue
        val = [_pct(r["val_selected"]["mean"]["acc"]) if r["val_selected"] else math.nan for r in recs]
        test = [_pct(r["test_selected"]["mean"]["acc"]) for r in recs]
        diff = [t - v for t, v in zip(test, val)]
        for r, v, t, d in zip(recs, val, test, diff):
            long.append({"detector": row, "seed": r["seed"], "epochs": len(r["epochs"]),
                         "val_epoch": r["val_selected"]["epoch"] + 1 if r["val_selected"] else None,
                         "val_selected_mean_acc": v, "test_epoch": r["test_selected"]["epoch"] + 1,
                         "test_selected_mean_acc": t, "inflation_pp": d})
        spread = f"{min(diff):+.2f} .. {max(diff):+.2f}" if len(diff) > 1 else "-"
        body.append([
            row, _mean_std(val), ", ".join(str(x["val_epoch"]) for x in long[-len(recs):]),
            _mean_std(test) + " §", ", ".join(str(x["test_epoch"]) for x in long[-len(recs):]),
            (_fmt(float(np.mean(diff)), sign=True) + (f" ± {np.std(diff, ddof=1):.2f}" if len(diff) > 1 else "")),
            spread, _mean_std(pipeline.get(row, [])), str(len(recs)),
        ])
    cols = ["detector", "val-selected Mean ACC", "epoch", "test-selected Mean ACC §", "epoch ",
            "Δ (pp)", "Δ range over seeds", "pipeline Mean ACC", "seeds"]
    frame = pd.DataFrame(body, columns=cols)
    notes = [
        f"Checkpoint selection, profile `{profile}`: Mean ACC (%) over the test generators of the epoch kept by "
        "validation selection (the protocol: the held-out slice of the training generators) and of the epoch "
        "kept by test selection (§: best Mean test ACC over epochs, as the SEP authors' code did; never a "
        "protocol result). Both from one `train.select_on: test` run (`sep-bench selection`), which follows the "
        "same training trajectory as the pipeline's run: Δ = test-selected - val-selected is how much selecting on "
        "the test generators inflates the Mean; mean ± std over seeds. Epochs count from 1. `pipeline Mean ACC`: "
        "the pipeline's own (val-selected) evaluation, for comparison.",
        protocol_card_link(profile),
    ]
    if not body:
        notes.insert(0, "No selection runs yet: `sep-bench selection --detector NAME --seed S` (the DVC stage "
                        "selection@NAME-S) trains with train.select_on: test and writes results/selection/.")
    if missing:
        notes.append(f"Missing: {', '.join(missing)}.")
    write_text(stem.with_suffix(".md"), (markdown(frame) + "\n\n" if body else "") + "\n".join(notes) + "\n")
    write_text(stem.with_suffix(".csv"), pd.DataFrame(long, columns=[
        "detector", "seed", "epochs", "val_epoch", "val_selected_mean_acc", "test_epoch", "test_selected_mean_acc",
        "inflation_pp"]).to_csv(index=False, float_format="%.4f"))
    return [stem.with_suffix(".md"), stem.with_suffix(".csv")]


# ---- format ------------------------------------------------------------------------------------------------------


def _variant(profile: str, row: str, seeds: Sequence[int], name: str) -> list[dict]:
    out = []
    for s in seeds:
        f = paths.robustness_dir(profile, row, s) / f"{name}.json"
        if f.is_file():
            out.append(read_json(f))
    return out


def _seed_mean(ms: Sequence[dict], key: str) -> float:
    vals = [m["mean"].get(key) for m in ms if m.get("supported", True) and m["mean"].get(key) is not None]
    return float(np.mean([100.0 * v for v in vals])) if vals else math.nan


def format_leak(row_of: Mapping[str, str], seeds: Sequence[int], profile: str, bar: float = FORMAT_LEAK_BAR) -> str:
    """"format still leaks: ..." when an aligned run of the `formatonly` control scores above `bar` % Mean ACC (a
    control that reads compression traces only cannot beat chance on images whose format was made alike), else
    ""."""
    key = next((k for k, row in row_of.items() if strip_marks(row) == FORMAT_CONTROL), None)
    if key is None:
        return ""
    leaks = []
    for s in seeds:
        for m in _variant(profile, key, [s], "aligned"):
            acc = _seed_mean([m], "acc")
            if acc > bar:
                leaks.append(f"seed {s}: {acc:.2f}% under eval.align {m.get('align', {}).get('applied', '?')}")
    if not leaks:
        return ""
    return (f"format still leaks: the format control `{FORMAT_CONTROL}` stays above {bar:.0f}% ACC after alignment "
            f"({'; '.join(leaks)}), so the aligned accuracies may still contain a format shortcut. A JPEG "
            "re-encoding alone leaves the reals' earlier compression under the new one (double vs single "
            "compression); an alignment that resamples first (down<scale>+jpeg<q>) removes the earlier grid. "
            "Measured rules and what remains: docs/protocols.md#format-alignment.")


def write_format(clean: Sequence[dict], row_of: Mapping[str, str], seeds: Sequence[int], profile: str,
                 stem: Path) -> list[Path]:
    """``<stem>.md`` / ``.csv``: clean and aligned Mean ACC, real ACC, fake ACC per row, and the format leak the
    `formatonly` control measures (its Mean ACC - 50 pp)."""
    rows, long, aligned_desc = [], [], set()
    for key, row in row_of.items():
        ms = [m for m in clean if run_key(m) == key]
        al = _variant(profile, key, seeds, "aligned")
        aligned_desc.update(a["align"]["applied"] + (f" ({a['align']['source']})" if a["align"]["source"] != "params"
                                                     else "") for a in al if "align" in a)
        vals = {f"clean {k}": _seed_mean(ms, k) for k in ("acc", "real_acc", "fake_acc")}
        vals.update({f"aligned {k}": _seed_mean(al, k) for k in ("acc", "real_acc", "fake_acc")})
        vals["Δ ACC"] = vals["aligned acc"] - vals["clean acc"]
        long.append({"detector": row, **vals})
        rows.append([row, *(_fmt(vals[c], sign=c.startswith("Δ")) for c in vals)])
    cols = ["detector", "ACC", "real ACC", "fake ACC", "aligned ACC", "aligned real ACC", "aligned fake ACC",
            "Δ ACC (pp)"]
    notes = [f"Format bias, profile `{profile}`: Mean over test generators (%), mean over seeds; clean = the images "
             "as stored; aligned = every test image of both classes re-encoded identically before the detector "
             f"(eval.align: {', '.join(sorted(aligned_desc)) or 'not set'}; engine.align). A detector that reads "
             "format instead of generation traces loses accuracy under alignment, typically on one class."]
    ctrl = next((r for r in long if strip_marks(r["detector"]) == FORMAT_CONTROL), None)
    if ctrl is not None and not math.isnan(ctrl["clean acc"]):
        leak = ctrl["clean acc"] - 50.0
        notes.append(
            f"Format control `{FORMAT_CONTROL}` (reads JPEG quantisation traces only): Mean ACC "
            f"{ctrl['clean acc']:.2f}%, {leak:+.2f} pp from chance: "
            + ("the benchmark's real and fake images differ in compression history, so part of any detector's "
               "accuracy here can come from format alone" if leak > 10 else "no large format leak")
            + (f"; aligned {ctrl['aligned acc']:.2f}%" if not math.isnan(ctrl["aligned acc"]) else "") + ".")
    else:
        notes.append(f"Add `{FORMAT_CONTROL}` to run.detectors to measure the benchmark's format leak.")
    leak_flag = format_leak(row_of, seeds, profile)
    if leak_flag:
        notes.append(f"**{leak_flag[0].upper()}{leak_flag[1:]}**")
        for r in rows:  # the control's row carries the flag too
            if strip_marks(r[0]) == FORMAT_CONTROL:
                r[0] += " (format still leaks)"
    notes.append(protocol_card_link(profile))
    frame = pd.DataFrame(rows, columns=cols)
    write_text(stem.with_suffix(".md"), markdown(frame) + "\n\n" + "\n".join(notes) + "\n")
    write_text(stem.with_suffix(".csv"), pd.DataFrame(long).to_csv(index=False, float_format="%.4f"))
    return [stem.with_suffix(".md"), stem.with_suffix(".csv")]


# ---- preprocessing -----------------------------------------------------------------------------------------------


def write_preprocess(clean: Sequence[dict], row_of: Mapping[str, str], rules: Mapping[str, Sequence[str]],
                     seeds: Sequence[int], profile: str, stem: Path) -> list[Path]:
    """``<stem>.md`` / ``.csv``: Mean ACC and AP of each row under each ``eval.preprocess`` rule (official = the
    clean evaluation); ``n/a`` where a rule does not apply to the detector (native on a fixed-size view)."""
    cols = [r for r in _RULES if any(r in rs or r == "official" for rs in rules.values())]
    body, long, sizes = [], [], {}
    for key, row in row_of.items():
        cells = []
        for rule in cols:
            if rule == "official":
                ms = [m for m in clean if run_key(m) == key]
            elif rule in rules.get(key, ()):
                ms = _variant(profile, key, seeds, f"preprocess-{rule}")
            else:
                ms = []
            unsupported = any(m.get("supported") is False for m in ms)
            for m in ms:
                if m.get("input_size"):
                    sizes[row] = m["input_size"]
            acc, ap = _seed_mean(ms, "acc"), _seed_mean(ms, "ap")
            long.append({"detector": row, "rule": rule, "acc": acc, "ap": ap, "supported": not unsupported,
                         "evaluated": bool(ms)})
            cells.append("n/a" if unsupported else _fmt(acc))
        body.append([row + (f" (S={sizes[row]})" if row in sizes else ""), *cells])
    frame = pd.DataFrame(body, columns=["detector", *cols])
    notes = [
        f"Evaluation preprocessing, profile `{profile}`: Mean ACC (%) of the same checkpoint when each test image "
        "is brought to the detector's input size S by: official = the detector's own eval view; center_crop = the "
        "central S x S crop, no resize; resize = the whole image resized to S x S; native = the whole image at its "
        "own size (n/a: the detector takes fixed-size inputs only). Mean over seeds; - = not evaluated "
        "(eval.preprocess). Details: engine.protocol_axes; AP in the CSV.",
        protocol_card_link(profile),
    ]
    write_text(stem.with_suffix(".md"), markdown(frame) + "\n\n" + "\n".join(notes) + "\n")
    write_text(stem.with_suffix(".csv"), pd.DataFrame(long, columns=["detector", "rule", "acc", "ap", "supported",
                                                                     "evaluated"]).to_csv(index=False,
                                                                                          float_format="%.4f"))
    return [stem.with_suffix(".md"), stem.with_suffix(".csv")]
