"""The measured seed spread in the ACC table (sep_bench.report.spread), on synthetic metrics and a synthetic
results/benchmarks/seed_spread.json: the Seed std column and its caption, the not-ranked rule at its boundary, the
marks it withholds, a stale protocol hash, and a missing file (the table exactly as without the feature)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.report.spread import NOT_RANKED_MARK, load_spread, not_ranked, supported_marks
from sep_bench.report.tables import rank_marks, write_table
from tests.test_report import write_results

GENERATORS = ["g1", "g2"]
HASH = "a" * 16


def metrics_of(means: dict[str, float], profile: str = "tiny", seed: int = 0, hashes: dict | None = None) -> list:
    """One seed's metrics per detector, every generator at the row's Mean (fractions, as evaluate writes them)."""
    return [{"detector": d, "profile": profile, "seed": seed, "protocol_hash": (hashes or {}).get(d, HASH),
             "test_generators": GENERATORS, "generators": {g: {"acc": v / 100} for g in GENERATORS},
             "mean": {"acc": v / 100}, "weights": "random-init", "pretrained": False, "provenance": "official"}
            for d, v in means.items()]


def spread_file(path: Path, per_seed: dict[str, list[float]], profile: str = "tiny", hashes: dict | None = None):
    """A seed_spread.json as benchmarks/seed_spread.py writes it (the keys the report reads)."""
    detectors = {}
    for d, values in per_seed.items():
        seeds = [str(s) for s in range(len(values))]
        detectors[d] = {
            "mean_acc_per_seed": dict(zip(seeds, values)),
            "generators_per_seed": {s: {g: v for g in GENERATORS} for s, v in zip(seeds, values)},
            "protocol_hash_per_seed": {s: (hashes or {}).get(d, HASH) for s in seeds},
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"profile": profile, "seeds": [0, 1, 2], "date": "2026-12-07T18:00:00+00:00",
                                "machine": {"cpu_model": "Test CPU", "cpu_cores": 2}, "detectors": detectors}))
    return path


def rows(md: str) -> dict[str, list[str]]:
    """The markdown table's cells by row name."""
    lines = [ln for ln in md.split("\n\n")[0].splitlines()[2:]]
    return {c[0]: c[1:] for c in ([x.strip() for x in ln.split("|")[1:-1]] for ln in lines)}


def table(tmp_path: Path, metrics: list, spread) -> tuple[str, str, str]:
    stem = tmp_path / "out" / "t_acc"
    write_table(metrics, stem, "acc", spread=spread)
    return tuple(stem.with_suffix(s).read_text() for s in (".md", ".csv", ".tex"))


def row_of(metrics: list) -> dict[str, str]:
    return {m["detector"]: m["detector"] for m in metrics}


# ---- the rule ----------------------------------------------------------------------------------------------------


def test_not_ranked_at_the_boundary_compared_as_printed():
    values = pd.Series([90.0, 89.0, 80.0, 80.0, 70.0], index=list("abcde"))
    # a: lead 1.00, std 1.00 -> ranked (not larger); b: lead 9.00, std 9.004 prints 9.00 -> ranked;
    # c: tied with d, lead over e 10.00, std 10.01 -> not ranked; d: std NaN -> never; e: lowest -> never
    spread = pd.Series([1.0, 9.004, 10.01, float("nan"), 50.0], index=list("abcde"))
    assert list(not_ranked(values, spread)) == [False, False, True, False, False]
    assert list(not_ranked(values, spread + 0.01)) == [True, True, True, False, False]
    assert not not_ranked(pd.Series([93.40, 92.80]), pd.Series([0.60, 0.0])).iloc[0]  # 93.40 - 92.80 is 0.60


def test_marks_withheld_where_the_spread_exceeds_the_lead():
    values = pd.DataFrame({"Mean": [90.0, 89.0, 80.0], "g": [50.0, 60.0, 70.0]}, index=list("abc"))
    spread = pd.DataFrame({"Mean": [1.01, 0.5, 3.0], "g": [0.0, 9.99, 0.0]}, index=list("abc"))
    kept, withheld = supported_marks(rank_marks(values), values, spread)
    assert list(kept["Mean"]) == ["", "second", ""]  # a's lead 1.00 < 1.01: its bold goes
    assert list(kept["g"]) == ["", "second", "best"]  # b's lead 10.00 > 9.99: kept
    assert withheld == 1


# ---- the table ---------------------------------------------------------------------------------------------------


def test_spread_column_caption_and_not_ranked_mark(tmp_path):
    metrics = metrics_of({"a": 90.0, "b": 89.0, "c": 80.0})
    path = spread_file(tmp_path / "spread.json", {"a": [89.0, 90.0, 91.0],    # std 1.00 = lead 1.00: ranked
                                                  "b": [79.99, 89.0, 98.01],  # std 9.01 > lead 9.00: not ranked
                                                  "c": [70.0, 80.0, 90.0]})   # std 10, lowest row: ranked
    md, csv, tex = table(tmp_path, metrics, load_spread(metrics, row_of(metrics), path))
    cells = rows(md)
    assert md.splitlines()[0].split("|")[5].strip() == "Seed std"
    assert cells["a"][3] == "1.00" and cells["b"][3] == f"9.01 {NOT_RANKED_MARK}" and cells["c"][3] == "10.00"
    assert cells["a"][2] == "**90.00**" and cells["b"][2] == "89.00"  # b's underline is not supported
    assert "measured once by `benchmarks/seed_spread.py`" in md and "Test CPU x2" in md
    assert f"{NOT_RANKED_MARK} not ranked (1 row)" in md and "(3 marks withheld)" in md
    assert "spread not measured for this protocol" not in md
    frame = pd.read_csv(tmp_path / "out/t_acc.csv", index_col=0, keep_default_na=False)
    assert list(frame.columns) == ["g1", "g2", "Mean", "Seed std", "Not ranked"]
    assert frame.loc["b", "Not ranked"] == "yes" and frame.loc["a", "Not ranked"] == ""
    assert frame.loc["b", "Seed std"] == 9.01
    assert r"9.01 $\approx$" in tex and "≈" not in tex.split(r"\begin{tabular}")[1].split(r"\end{tabular}")[0]


def test_a_row_whose_protocol_changed_gets_no_spread(tmp_path):
    metrics = metrics_of({"a": 90.0, "b": 80.0}, hashes={"b": "b" * 16})
    path = spread_file(tmp_path / "spread.json", {"a": [85.0, 90.0, 95.0], "b": [79.0, 80.0, 81.0]})
    md, _, _ = table(tmp_path, metrics, load_spread(metrics, row_of(metrics), path))
    cells = rows(md)
    assert cells["a"][3] == "5.00" and cells["b"][3] == "-"
    assert "spread not measured for this protocol (b)" in md
    assert cells["a"][2] == "**90.00**"  # lead 10.00 > std 5.00


def test_missing_file_or_other_profile_changes_nothing(tmp_path):
    metrics = metrics_of({"a": 90.0, "b": 89.0})
    assert load_spread(metrics, row_of(metrics), tmp_path / "absent.json") is None
    other = spread_file(tmp_path / "spread.json", {"a": [80.0, 90.0, 100.0]}, profile="mini")
    assert load_spread(metrics, row_of(metrics), other) is None
    without = table(tmp_path, metrics, None)
    assert "Seed std" not in without[0] and without[1].startswith("detector,g1,g2,Mean\n")
    with_none = table(tmp_path, metrics, load_spread(metrics, row_of(metrics), tmp_path / "absent.json"))
    assert with_none == without


def test_unreadable_file_is_a_stated_skip(tmp_path):
    metrics = metrics_of({"a": 90.0, "b": 89.0})
    bad = tmp_path / "spread.json"
    bad.write_text(json.dumps({"profile": "tiny", "seeds": [0, 1], "detectors": {"a": {"mean_acc_per_seed": 3}}}))
    spread = load_spread(metrics, row_of(metrics), bad)
    md, _, _ = table(tmp_path, metrics, spread)
    assert "Seed std" not in md.split("\n\n")[0] and "Seed spread not shown" in md and "unreadable" in md


def test_report_command_reads_the_committed_spread_file(synth):
    write_results(synth, "tiny", GENERATORS, {"npr": 0.75, "sep": 0.95})
    hashes = {m["detector"]: m["protocol_hash"] for m in
              (json.loads(p.read_text()) for p in synth.glob("results/metrics/tiny/*/seed0.json"))}
    spread_file(synth / "results/benchmarks/seed_spread.json", {"npr": [70.0, 75.0, 80.0], "sep": [94.0, 95.0, 96.0]},
                hashes=hashes)
    res = CliRunner().invoke(app, ["report", "--n-boot", "200"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    md = (synth / "results/tables/tiny_acc.md").read_text()
    assert md.splitlines()[0].split("|")[5].strip() == "Seed std"
    assert rows(md)["npr"][3] == "5.00" and rows(md)["sep"][3] == "1.00"
