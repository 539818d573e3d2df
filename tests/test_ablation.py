"""The ablation table: SEP variants evaluated (tracked) under the same protocol, collected from MLflow."""

from __future__ import annotations

import json

import pandas as pd
import torch
import yaml
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.detectors import get_detector
from sep_bench.engine.checkpoint import save_checkpoint
from sep_bench.report.ablation import ablation_switches
from sep_bench.weights import WeightsSource

runner = CliRunner()
SEP_MODEL = {"classifier_size": 48, "backbone": "resnet18", "dwt_size": 32, "eval_candidates": 16}


def test_switches_are_the_config_fields_marked_as_ablations():
    assert ablation_switches("sep") == ["eps", "gbcsa", "fpm", "srm_guide"]
    assert ablation_switches("npr") == []


def _evaluate_variant(workdir, model_cfg: dict, epochs: int = 2) -> dict:
    """Evaluate a random SEP of this config (tracked) with params.yaml set to it; return its metrics."""
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["detectors"]["sep"] = {"model": model_cfg}
    params["profiles"]["tiny"]["train"]["epochs"] = epochs
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    spec = get_detector("sep")
    torch.manual_seed(0)
    model = spec.build(spec.make_config(model_cfg), WeightsSource.none())
    ckpt = workdir / "sep.safetensors"
    save_checkpoint(ckpt, model, {"detector": "sep", "model_config": model_cfg, "weights": {"kind": "none"}})
    res = runner.invoke(app, ["evaluate", "-d", "sep", "--checkpoint", str(ckpt)])
    assert res.exit_code == 0, res.output
    return json.loads((workdir / "results/metrics/tiny/sep/seed0.json").read_text())


def test_ablation_table_from_tracked_variants(workdir):
    stale = _evaluate_variant(workdir, {**SEP_MODEL, "fpm": False}, epochs=5)  # another budget: must not count
    no_gbcsa = _evaluate_variant(workdir, {**SEP_MODEL, "gbcsa": False})
    full = _evaluate_variant(workdir, SEP_MODEL)
    assert stale["protocol_hash"] != full["protocol_hash"]

    res = runner.invoke(app, ["ablation", "-d", "sep"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(workdir / "results/tables/tiny_sep_ablation.csv", index_col=0)
    assert list(table.index) == ["sep (full)", "w/o gbcsa"]  # the fpm run had another protocol
    assert abs(table.loc["sep (full)", "Mean"] - 100 * full["mean"]["acc"]) < 1e-6
    assert abs(table.loc["w/o gbcsa", "Mean"] - 100 * no_gbcsa["mean"]["acc"]) < 1e-6
    assert abs(table.loc["w/o gbcsa", "Δ Mean"] - 100 * (no_gbcsa["mean"]["acc"] - full["mean"]["acc"])) < 1e-6
    assert table.loc["sep (full)", "Δ Mean"] == 0 and (table["seeds"] == 1).all()
    md = (workdir / "results/tables/tiny_sep_ablation.md").read_text()
    assert "| w/o gbcsa " in md and "Δ Mean" in md
    assert (workdir / "results/tables/tiny_sep_ablation.tex").read_text().count("\\\\") >= 3


def test_ablation_without_runs_or_switches_is_a_clear_error(workdir):
    res = runner.invoke(app, ["ablation", "-d", "npr"])
    assert res.exit_code == 2 and "no MLflow experiment" in res.output
    assert runner.invoke(app, ["train", "-d", "npr"]).exit_code == 0
    res = runner.invoke(app, ["ablation", "-d", "npr"])
    assert res.exit_code == 2 and "no ablation switches" in res.output, res.output
