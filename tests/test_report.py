"""Report tables, reported-vs-reproduced and plots, on synthetic results with known values (no training)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.engine.metrics import summarize_predictions
from sep_bench.report.reported import load_reported, render_reported, reported_name, reported_vs_reproduced
from sep_bench.report.tables import latex_escape, rank_marks, render_latex, render_markdown
from tests.conftest import REPO, SHARED

runner = CliRunner()
GENIMAGE = ["Midjourney", "SDv1.4", "SDv1.5", "ADM", "GLIDE", "Wukong", "VQDM", "BigGAN"]


def write_results(root: Path, profile: str, generators: list[str], accs: dict[str, float], seeds=(0,),
                  n: int = 60, no_weights: tuple[str, ...] = (), seed: int = 0) -> dict:
    """Predictions (``n`` images per generator, same paths for every detector) and metrics JSON files whose
    accuracy is about ``accs[detector]``, plus a params.yaml naming them. Returns the params dict."""
    rng = np.random.default_rng(seed)
    for det, acc in accs.items():
        for s in seeds:
            rows = []
            for g in generators:
                for i in range(n):
                    label, ok = i % 2, rng.random() < acc
                    sign = (1 if label else -1) * (1 if ok else -1)
                    rows.append({"path": f"{g}/{i:04d}.png", "generator": g, "label": label,
                                 "fake_logit": sign * rng.uniform(0.05, 4.0)})
            preds = pd.DataFrame(rows)
            metrics = {
                "schema": 1, "detector": det, "profile": profile, "protocol_hash": "0" * 16, "seed": s,
                "test_generators": generators, **summarize_predictions(preds, generators), "n_images": len(preds),
                "weights": "random-init", "pretrained": False, "intended_pretrained": det in no_weights,
            }
            (root / f"results/metrics/{profile}/{det}").mkdir(parents=True, exist_ok=True)
            (root / f"results/predictions/{profile}/{det}").mkdir(parents=True, exist_ok=True)
            (root / f"results/metrics/{profile}/{det}/seed{s}.json").write_text(json.dumps(metrics))
            preds.to_parquet(root / f"results/predictions/{profile}/{det}/seed{s}.parquet", index=False)
    params = {
        "profile": profile,
        "run": {"detectors": list(accs), "seeds": list(seeds)},
        "tracking": {"uri": None, "experiment": "test"},
        "profiles": {profile: {"data": {"source": "external", "root": "data/none", "train_generators": generators[:1],
                                        "test_generators": generators}}},
        "detectors": {d: {"optim": {"name": "adam", "lr": 1e-3}} for d in accs},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def _report_outs(profile: str) -> list[str]:
    """The report stage's outs as dvc.yaml declares them (so the command and the pipeline agree)."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]
    return [next(iter(o)).replace("${profile}", profile) for o in stage["outs"]]


# ---- formatting ------------------------------------------------------------------------------------------------


def test_rank_marks_bold_best_underline_second_with_ties():
    df = pd.DataFrame({"A": [90.0, 90.0, 80.0, 70.0], "B": [np.nan, 50.0, 50.0, 50.0],
                       "C": [85.004, 84.996, 84.0, 83.0]}, index=["p", "q", "r", "s"])
    m = rank_marks(df)
    assert list(m["A"]) == ["best", "best", "second", ""]  # a tie shares bold; second goes to the next value
    assert list(m["B"]) == ["", "best", "best", "best"]  # NaN unmarked; one distinct value: no second
    assert list(m["C"]) == ["best", "best", "second", ""]  # compared as printed (85.00 == 85.00)
    alone = rank_marks(df.iloc[:1].fillna(1.0))
    assert (alone == "").all().all()  # a single detector: nothing to rank


def test_markdown_marks_and_mean_std():
    mean = pd.DataFrame({"g": [90.0, 80.0, 70.0], "Mean": [70.0, 80.0, 90.0]}, index=pd.Index(["a", "b", "c"], name="detector"))
    std = mean * 0 + 1.5
    md = render_markdown(mean, std).splitlines()
    assert [c.strip() for c in md[0].split("|")[1:-1]] == ["detector", "g", "Mean"]
    assert "**90.00 ± 1.50**" in md[2] and "<u>80.00 ± 1.50</u>" in md[3] and md[4].count("**") == 2
    assert md[2].rstrip("| ").endswith("70.00 ± 1.50")  # a's Mean: neither best nor second
    assert "| -" not in render_markdown(mean)  # no std columns with one seed


def test_latex_escaping_and_booktabs(tmp_path):
    assert latex_escape("SDv1.4") == "SDv1.4"
    assert latex_escape("stable_diffusion_v_1_4") == r"stable\_diffusion\_v\_1\_4"
    assert latex_escape("50% & $5 #1 {x} ~^\\") == r"50\% \& \$5 \#1 \{x\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    assert latex_escape("univfd†") == r"univfd\textsuperscript{\dag}"
    mean = pd.DataFrame({"SDv1.4": [99.3, 98.2], "stable_diffusion_v_1_4": [80.0, 85.5], "Mean": [90.0, 91.0]},
                        index=pd.Index(["my_det", "univfd†"], name="detector"))
    tex = render_latex(mean, mean * 0 + 0.5, caption=["ACC (%) of `my_det`, 100% real"], label="tab:x",
                       notes=["† no weights"])
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert re.search(r"(?<!\\)[_%#]", body) is None, "unescaped special character"
    for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrr}", "SDv1.4 &",
                   r"stable\_diffusion\_v\_1\_4", r"my\_det", r"univfd\textsuperscript{\dag}",
                   r"\textbf{99.30\,{\scriptsize$\pm$0.50}}", r"\underline{98.20", r"\texttt{my\_det}, 100\% real"):
        assert needle in tex, needle
    engine = next((e for e in ("pdflatex", "lualatex", "xelatex") if shutil.which(e)), None)
    if engine is None:
        return  # no TeX engine here: the escaping checks above must do
    doc = tmp_path / "t.tex"
    doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\usepackage[T1]{fontenc}\n"
                   "\\begin{document}\n" + tex + "\\end{document}\n")
    res = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]


# ---- reported vs reproduced -----------------------------------------------------------------------------------


def test_reported_table_is_the_papers():
    rep = load_reported("genimage")
    assert list(rep.columns) == [*GENIMAGE, "Mean"]
    assert rep.loc["SEP", "Mean"] == 97.05 and rep.loc["NPR", "Midjourney"] == 81.0
    shared = SHARED / "reference" / "genimage_sdv14_reported.csv"
    if shared.is_file():
        ref = pd.read_csv(shared).set_index("method").drop(columns="venue")
        pd.testing.assert_frame_equal(rep.loc[ref.index], ref.astype(float))
    # rows beyond the paper's come from their own papers, each with its source, and are named in the comparison
    from sep_bench.report.reported import other_paper_sources

    others = other_paper_sources("genimage")
    assert set(rep.index) - set(pd.read_csv(shared).method if shared.is_file() else []) <= set(others)
    assert rep.loc["LOTA", "Midjourney"] == 91.3 and "Table 1" in others["LOTA"]
    assert abs(rep.loc["LOTA", GENIMAGE].mean() - rep.loc["LOTA", "Mean"]) < 0.05   # printed 98.5, cells 98.49
    mean = pd.DataFrame({g: [90.0] for g in GENIMAGE}, index=["lota"])
    comparison = reported_vs_reproduced("genimage", mean, mean * 0, {"lota": 1})
    assert set(comparison["method"]) == {"LOTA"}
    assert "LOTA: reported by its own paper" in render_reported("genimage", comparison)
    assert load_reported("mini") is None
    methods = list(rep.index)
    assert [reported_name(d, methods) for d in ("npr", "univfd", "sep", "fconv", "cnnspot")] == \
        ["NPR", "UnivFD", "SEP", "F-ConV", None]


def test_reported_vs_reproduced_diff_and_spread_flags():
    idx = pd.Index(["npr", "sep", "cnnspot"], name="detector")
    mean = pd.DataFrame({"Midjourney": [80.0, 86.0, 60.0], "SDv1.4": [90.0, 99.0, 60.0], "Mean": [85.0, 92.5, 60.0]},
                        index=idx)
    std = pd.DataFrame({"Midjourney": [1.0, 0.5, 1.0], "SDv1.4": [3.0, 0.1, 1.0], "Mean": [0.2, 0.1, 1.0]}, index=idx)
    t = reported_vs_reproduced("genimage", mean, std, pd.Series([3, 3, 3], index=idx)).set_index(["detector", "generator"])
    assert "cnnspot" not in t.index.get_level_values(0)  # not in the paper's table
    r = t.loc[("npr", "Midjourney")]
    assert (r.reported, r.reproduced, r["diff"]) == (81.0, 80.0, -1.0) and not r.outside_spread  # |-1| <= 2 x 1
    assert bool(t.loc[("npr", "SDv1.4"), "outside_spread"])  # 90 vs 98.2: |-8.2| > 2 x 3
    assert t.loc[("sep", "Midjourney"), "diff"] == pytest.approx(-0.08)
    assert not t.loc[("sep", "Midjourney"), "outside_spread"]  # |-0.08| <= 2 x 0.5
    assert bool(t.loc[("sep", "SDv1.4"), "outside_spread"])  # 99.0 vs 99.33: |-0.33| > 2 x 0.1
    assert t.loc[("sep", "Mean"), "reported"] == 97.05


def test_reported_single_seed_says_spread_unknown():
    idx = pd.Index(["npr"], name="detector")
    mean = pd.DataFrame({"Midjourney": [80.0]}, index=idx)
    t = reported_vs_reproduced("genimage", mean, mean * np.nan, pd.Series([1], index=idx))
    assert t.outside_spread.isna().all()
    md = render_reported("genimage", t)
    assert "unknown (1 seed)" in md and "**outside**" not in md
    assert "nothing to compare" in render_reported("mini", None)


# ---- the report command ---------------------------------------------------------------------------------------


def test_report_writes_every_declared_output_with_marks_std_ci_and_paired_tests(synth):
    write_results(synth, "tiny", ["g1", "g2"], {"npr": 0.75, "sep": 0.95, "univfd": 0.7}, seeds=(0, 1),
                  no_weights=("univfd",))
    res = runner.invoke(app, ["report", "--n-boot", "500"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for out in _report_outs("tiny"):
        assert (synth / out).is_file() and (synth / out).stat().st_size > 0, out
    md = (synth / "results/tables/tiny_acc.md").read_text()
    header, _, npr, sep, univfd = md.splitlines()[:5]
    assert [c.strip() for c in header.split("|")[1:-1]] == ["detector", "g1", "g2", "Mean"]
    assert sep.count("**") == 6 and "±" in sep  # SEP best everywhere, mean ± std over 2 seeds
    assert "univfd†" in univfd and "† trained without the pretrained weights" in md
    assert "mean ± std over seeds 0, 1" in md and "95% bootstrap confidence intervals" in md
    assert "`npr`: weights random-init; adam lr 0.001" in md
    csv = pd.read_csv(synth / "results/tables/tiny_acc.csv", index_col=0)
    assert list(csv.columns) == ["g1", "g2", "Mean"] and csv.loc["sep", "Mean"] > csv.loc["npr", "Mean"]
    tex = (synth / "results/tables/tiny_acc.tex").read_text()
    assert r"\toprule" in tex and r"univfd\textsuperscript{\dag}" in tex
    summary = pd.read_csv(synth / "results/tables/tiny_summary.csv")
    row = summary[(summary.detector == "sep") & (summary.generator == "Mean") & (summary.metric == "acc")].iloc[0]
    assert row.n_seeds == 2 and row.ci_low < row["mean"] < row.ci_high
    paired = (synth / "results/tables/tiny_paired.md").read_text()
    assert paired.startswith("| detector") and "| npr " in paired and "| univfd† " in paired and "\\*" in paired
    long = pd.read_csv(synth / "results/tables/tiny_paired.csv")
    assert set(long.reference) == {"sep"} and (long[long.generator == "Mean"]["diff"] < 0).all()
    assert "has no reported figures" in (synth / "results/tables/tiny_reported.md").read_text()
    rf = (synth / "results/tables/tiny_real_fake.md").read_text().splitlines()
    assert rf[0].split("|")[1].strip() == "class" and sum(line.startswith("| real") for line in rf) == 3
    assert "g1" in res.output and "Mean" in res.output and "ACC difference vs sep" in res.output

    # unchanged inputs -> byte-identical plots and tables (DVC sees no change)
    before = {o: (synth / o).read_bytes() for o in _report_outs("tiny")}
    assert runner.invoke(app, ["report", "--n-boot", "500"]).exit_code == 0
    changed = [o for o in before if (synth / o).read_bytes() != before[o]]
    assert not changed, changed


def test_report_without_the_reference_says_so(synth):
    write_results(synth, "tiny", ["g1"], {"npr": 0.8})
    res = runner.invoke(app, ["report", "--n-boot", "200"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "reference detector `sep` is not in run.detectors" in (synth / "results/tables/tiny_paired.md").read_text()
    assert "no paired comparison" in " ".join(res.output.split())


def test_report_refuses_results_of_different_protocols(synth):
    write_results(synth, "tiny", ["g1"], {"sep": 0.9})
    params = write_results(synth, "tiny", ["g1", "g2"], {"npr": 0.8})
    params["run"]["detectors"] = ["npr", "sep"]
    params["detectors"]["sep"] = {}
    (synth / "params.yaml").write_text(yaml.safe_dump(params))
    res = runner.invoke(app, ["report", "--n-boot", "200"])
    assert res.exit_code == 2 and "cannot share a table" in " ".join(res.output.split()), res.output


def test_report_genimage_profile_compares_with_the_paper(synth):
    write_results(synth, "genimage", GENIMAGE, {"npr": 0.85, "sep": 0.9, "cnnspot": 0.7}, n=20)
    res = runner.invoke(app, ["report", "--n-boot", "200"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = pd.read_csv(synth / "results/tables/genimage_reported.csv")
    assert set(rep.detector) == {"npr", "sep"} and len(rep) == 2 * 9
    r = rep[(rep.detector == "sep") & (rep.generator == "SDv1.4")].iloc[0]
    assert r.reported == 99.33 and r["diff"] == pytest.approx(r.reproduced - 99.33, abs=1e-3)
    md = (synth / "results/tables/genimage_reported.md").read_text()
    assert "unknown (1 seed)" in md and "| sep " in md
    assert "Reported vs reproduced" in res.output
    # the scatter is a real plot, larger than the "nothing to compare" placeholder
    assert (synth / "results/plots/genimage_reported_vs_reproduced.png").stat().st_size > 30_000


def test_dvc_plots_show_renders_the_declared_plots(synth):
    write_results(synth, "tiny", ["g1", "g2"], {"npr": 0.8, "sep": 0.9})
    assert runner.invoke(app, ["report", "--n-boot", "200", "--no-track"]).exit_code == 0
    # the top-level plots section as dvc.yaml declares it (the stages need the real project around them)
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    (synth / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=synth, check=True, timeout=120)
    res = subprocess.run([*dvc, "plots", "show", "--json"], cwd=synth, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert "errors" not in shown, shown["errors"]
    data = shown["data"]
    for plot in ("tiny_acc_heatmap.png", "tiny_acc_bars.png", "tiny_roc.png", "tiny_reported_vs_reproduced.png"):
        assert data[f"results/plots/{plot}"][0]["type"] == "image", plot
    bars = data["ACC per detector and generator (%)"][0]
    assert bars["type"] == "vega" and "sep / Mean" in json.dumps(bars["content"])


def test_rows_are_marked_by_provenance():
    from sep_bench.report.tables import row_name

    assert row_name({"detector": "npr", "provenance": "official"}) == "npr"
    assert row_name({"detector": "fatformer", "provenance": "official-inference"}) == "fatformer°"
    assert row_name({"detector": "f3net"}) == "f3net¶"  # older metrics files: the registry's provenance
    assert row_name({"detector": "f3net", "intended_pretrained": True, "pretrained": False}) == "f3net¶†"


def test_shared_reals_data_is_said_in_the_caption():
    from sep_bench.data.pairing import SHARED_REALS_CAPTION
    from sep_bench.report.tables import caption_lines

    m = {"detector": "npr", "profile": "aigcbench", "seed": 0, "protocol_hash": "h", "weights": "none",
         "data_pairing": "shared-reals", "generators": {}, "mean": {}}
    _, notes = caption_lines([m], "ACC")
    assert SHARED_REALS_CAPTION in notes
    _, notes = caption_lines([{**m, "data_pairing": "benchmark"}], "ACC")
    assert SHARED_REALS_CAPTION not in notes


def test_every_paper_row_maps_to_a_detector_or_is_marked_not_reproducible():
    from sep_bench.detectors import list_detectors
    from sep_bench.report.reported import load_reported, not_reproducible, reported_name

    methods = list(load_reported("genimage").index)
    covered = {reported_name(d, methods) for d in list_detectors()} - {None}
    assert set(methods) - covered <= set(not_reproducible("genimage")), set(methods) - covered
