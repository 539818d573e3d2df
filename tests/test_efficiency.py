"""Cost columns: FLOPs against a hand count, parameter counts, the evaluate stage's efficiency record, the tables."""

from __future__ import annotations

import json

import pandas as pd
import torch
from torch import nn
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.engine.efficiency import forward_flops, parameter_counts, peak_memory_mib
from sep_bench.report import tables


class Tiny(nn.Module):
    """conv 3->8 (3x3, padding 1) -> flatten -> linear -> 2, on a views dict like every detector."""

    def __init__(self, size: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * size * size, 2)
        self.conv.requires_grad_(False)  # a frozen part, as UnivFD's backbone

    def forward(self, views):
        return self.fc(torch.relu(self.conv(views["image"])).flatten(1))

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]


def test_flops_match_a_hand_count():
    size = 16
    model = Tiny(size)
    # 2 FLOPs per multiply-add; the conv: every output (8 x 16 x 16) sums 3 x 3 x 3 products; the linear: 2 x 2048
    conv = 2 * (8 * size * size) * (3 * 3 * 3)
    linear = 2 * (8 * size * size) * 2
    assert forward_flops(model, {"image": torch.zeros(1, 3, size, size)}) == conv + linear == 118_784
    assert forward_flops(model, {"image": torch.zeros(4, 3, size, size)}) == 4 * (conv + linear)
    assert model.training  # restored


def test_parameter_counts_follow_the_model_notion_of_trainable():
    model = Tiny(16)
    assert parameter_counts(model) == {"total": 8 * 27 + 8 + 2048 * 2 + 2, "trainable": 2048 * 2 + 2}


def test_peak_memory_on_cpu_is_the_process_rss():
    mib, kind = peak_memory_mib(torch.device("cpu"))
    assert kind == "cpu_peak_rss" and 10 < mib < 1e6


def test_evaluate_records_the_cost_and_the_tables_show_it(workdir):
    runner = CliRunner()
    assert runner.invoke(app, ["train", "-d", "npr", "--no-track"]).exit_code == 0
    res = runner.invoke(app, ["evaluate", "-d", "npr", "--no-track"])
    assert res.exit_code == 0, res.output
    assert "GFLOPs/image" in res.output
    m = json.loads((workdir / "results/metrics/tiny/npr/seed0.json").read_text())
    eff = m["efficiency"]
    from sep_bench.engine.checkpoint import load_detector

    model, _ = load_detector(workdir / "runs/tiny/npr/seed0/train/best.safetensors")
    assert eff["params_total"] == sum(p.numel() for p in model.parameters()) == eff["params_trainable"]
    assert eff["flops_input"] == {"image": [3, 32, 32]}  # the tiny profile's crop
    assert eff["flops_per_image"] == forward_flops(model, {"image": torch.zeros(1, 3, 32, 32)})
    assert eff["images_per_s"] > 0 and eff["peak_memory_kind"] == "cpu_peak_rss" and eff["device"].startswith("CPU")
    # perturbed passes do not repeat the cost measurement
    for f in (workdir / "results/robustness/tiny/npr/seed0").glob("*.json"):
        assert "efficiency" not in json.loads(f.read_text())

    res = runner.invoke(app, ["report", "--no-track"])
    assert res.exit_code == 0, res.output
    md = (workdir / "results/tables/tiny_acc.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| npr "))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[-4] == f"{eff['params_total'] / 1e6:.2f}" and cells[-3] == f"{eff['flops_per_image'] / 1e9:.3f}"
    assert "**" not in "".join(cells[-4:])  # cost is not ranked
    assert "Cost beside Mean" in md and eff["device"] in md
    csv = pd.read_csv(workdir / "results/tables/tiny_acc.csv", index_col=0)
    assert list(csv.columns[-4:]) == list(tables.COST_COLUMNS)
    tex = (workdir / "results/tables/tiny_acc.tex").read_text()
    assert "GFLOPs" in tex and "@{\\hspace{1.5em}}" in tex
