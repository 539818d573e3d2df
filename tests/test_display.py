"""What the console and the plots show: row names with [brackets], throughputs below 1 image/s, below-chance
heatmap cells, labels that do not overlap, and a `compare` view that fits a terminal with 21 detectors.
Fast (no training): about 5 s."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from sep_bench.cli.evaluate import efficiency_line, metrics_table, rate_text
from sep_bench.cli.report import compare_tables
from sep_bench.report import plots, tables
from sep_bench.report.compare import Comparison
from sep_bench.report.stats import MEAN, Interval, PairedResult

AIGCBENCH = ["progan", "stylegan", "biggan", "cyclegan", "stargan", "gaugan", "stylegan2", "whichfaceisreal", "ADM",
             "Glide", "Midjourney", "stable_diffusion_v_1_4", "stable_diffusion_v_1_5", "VQDM", "wukong", "DALLE2"]
DETECTORS = ["sep", "npr", "univfd", "cnnspot", "ssp", "f3net", "gramnet", "dire", "patchcraft", "freqnet",
             "fatformer", "drct", "aide", "c2pclip", "safe", "effort", "fconv", "lgrad", "fredect", "lota", "formatonly"]


def _render(renderable, width: int = 100) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def test_evaluate_table_shows_each_variant_by_name():
    r = {"acc": 0.9, "real_acc": 0.8, "fake_acc": 1.0, "ap": 0.95, "auc": 0.96}
    m = {"generators": {"g1": r}, "mean": r, "perturbed": {"jpeg95": {"mean": r}, "blur1+jpeg75": {"mean": r}}}
    text = _render(metrics_table(m, "npr [x] on tiny"))
    assert "Mean [jpeg95]" in text and "Mean [blur1+jpeg75]" in text and "npr [x] on tiny" in text


@pytest.mark.parametrize("value, text", [(0.5, "0.50"), (0.0123, "0.012"), (5.34, "5.3"), (12.5, "12"),
                                         (1234.5, "1,234"), (None, "-")])
def test_throughput_keeps_two_significant_digits_below_10(value, text):
    assert rate_text(value) == text
    if value is not None:
        assert tables.cost_text("img/s", value) == text
    eff = {"params_total": 1e6, "params_trainable": 1e6, "flops_per_image": None, "images_per_s": 0.5,
           "device": "CPU"}
    assert "0.50 images/s" in efficiency_line("clip", eff)


def test_cost_columns_do_not_round_slow_detectors_to_zero():
    eff = pd.DataFrame({"params_total": [3e8, 2e7], "params_trainable": [1e3, 2e7], "gflops": [80.0, 4.0],
                        "images_per_s": [0.5, 456.7], "peak_memory_mib": [9000.0, 900.0]}, index=["effort", "npr"])
    cost = tables.cost_columns(eff, ["effort", "npr"])
    assert cost.loc["effort", "img/s"] == 0.5 and cost.loc["npr", "img/s"] == 457
    _, cells = tables._extra_cells(cost, ["effort", "npr"])
    assert cells[0][2] == "0.50" and cells[1][2] == "457"


def test_heatmap_scale_reaches_below_chance_cells():
    df = pd.DataFrame({"g1": [31.0, 90.0], "Mean": [60.0, 95.0]}, index=["a", "b"])
    assert plots.heatmap_range(df) == (30.0, 100.0)
    assert plots.heatmap_range(df + 30) == (50.0, 100.0)  # chance and above: the usual 50-100 scale
    with plots.figure((4, 3)) as (fig, ax):
        plots.draw_heatmap(ax, df)
        norm = ax.collections[0].norm
        assert norm.vmin <= 31.0 and norm(31.0) < norm(50.0)  # a 31% cell is darker than chance


def _boxes_overlap(boxes) -> list:
    return [(a, b) for (a, b) in itertools.combinations(range(len(boxes)), 2) if boxes[a].overlaps(boxes[b])]


def test_heatmap_generator_names_do_not_overlap():
    df = pd.DataFrame(np.linspace(40, 100, 3 * 17).reshape(3, 17), columns=[*AIGCBENCH, "Mean"],
                      index=["sep", "npr", "cnnspot"])
    longest = max(len(c) for c in df.columns)
    with plots.figure((1.1 * len(df.columns) + 2.5, 0.55 * len(df) + 1.8 + 0.07 * (longest - 12))) as (fig, ax):
        plots.draw_heatmap(ax, df)
        fig.tight_layout()
        renderer = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
    assert len(boxes) == 17 and not _boxes_overlap(boxes)


def test_scatter_labels_of_21_close_points_do_not_overlap():
    rng = np.random.default_rng(0)
    xs = 10 ** rng.uniform(-0.5, 2.5, len(DETECTORS))  # log axis, as the accuracy-vs-cost plot
    ys = rng.uniform(48, 60, len(DETECTORS))
    with plots.figure((5.0, 4.1)) as (fig, ax):
        ax.scatter(xs, ys)
        ax.set_xscale("log")
        ax.set_xlim(xs.min() / 2.5, xs.max() * 2.5)
        ax.set_ylim(38, 65)
        fig.tight_layout()
        anns = plots.place_labels(ax, xs, ys, DETECTORS)
        renderer = fig.canvas.get_renderer()
        boxes = [a.get_window_extent(renderer) for a in anns]
    assert [a.get_text() for a in anns] == DETECTORS and not _boxes_overlap(boxes)


def _result(diff: float, p: float) -> PairedResult:
    return PairedResult(diff=Interval(diff, diff - 0.03, diff + 0.03, 200), p_bootstrap=p, n_a_only=5, n_b_only=3,
                        p_mcnemar=None, p_mcnemar_mid=None)


def test_compare_console_view_fits_a_terminal_with_21_detectors():
    gens = ["Midjourney", "SDv1.4", "SDv1.5", "ADM", "GLIDE", "Wukong", "VQDM", "BigGAN"]
    rows = ["mydet", *DETECTORS]
    mean = pd.DataFrame(np.linspace(50, 99, len(rows) * 9).reshape(len(rows), 9), index=rows, columns=[*gens, MEAN])
    tests = {d: {g: _result(0.05, 0.01) for g in [*gens, MEAN]} for d in rows if d != "sep"}
    c = Comparison("mydet", "sep", DETECTORS[1:], [], gens, mean, mean * 0, pd.Series(1, index=rows), {d: d for d in rows},
                   tests, [0], versus={d: _result(-0.02, 0.2) for d in DETECTORS})
    out = "".join(_render(t, width=100) for t in compare_tables(c, "genimage"))
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 100
    per_detector = out.split("against each detector")[1]
    assert all(f" {d} " in per_detector for d in DETECTORS) and "-2.00" in per_detector
