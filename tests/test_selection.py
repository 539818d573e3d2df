"""Checkpoint selection on validation vs on the test generators (train.select_on), and the selection table."""

from __future__ import annotations

import json

import pytest

from sep_bench.engine.selection import Selection, replay_selection, selection_record
from sep_bench.protocol import load_params, resolve


def _history(val_acc, test_acc):
    return [{"epoch": e, "val_acc": v, "val_loss": 1.0 - v, "test_mean_acc": t,
             "test": {"mean": {"acc": t}, "generators": {"g1": {"acc": t}, "g2": {"acc": t}}}}
            for e, (v, t) in enumerate(zip(val_acc, test_acc))]


def test_val_and_test_selection_pick_different_epochs_when_their_optima_differ():
    history = _history(val_acc=[0.6, 0.9, 0.7, 0.8], test_acc=[0.55, 0.60, 0.75, 0.70])
    assert replay_selection(history) == {"val": 1, "test": 2}
    # ties: validation falls back to the lower loss, test selection keeps the first of equal epochs
    sel = Selection(on="test")
    assert sel.update(0, {"acc": 0.5, "loss": 0.7}, 0.8) == (True, True)
    assert sel.update(1, {"acc": 0.5, "loss": 0.6}, 0.8) == (False, True)
    assert (sel.epoch, sel.val_epoch, sel.test_best) == (0, 1, 0.8)
    assert Selection.from_state(sel.state()) == sel
    with_val = Selection(on="val")
    assert with_val.update(0, {"acc": 0.5, "loss": 0.7}) == (True, True) and with_val.epoch == 0


def test_engine_keeps_the_test_best_epoch_and_records_every_epochs_test_metrics(workdir, monkeypatch):
    """A synthetic run whose validation and test optima differ: scripted per-epoch metrics replace the real
    validation/test passes, so the engine's choice is known in advance."""
    import sep_bench.engine.train as engine
    from sep_bench.engine.checkpoint import load_checkpoint
    from sep_bench.engine.jobs.train import selection_spec

    val_acc, test_acc = iter([0.6, 0.9, 0.7]), iter([0.55, 0.60, 0.75])
    monkeypatch.setattr(engine, "_validate", lambda *a: {"acc": (v := next(val_acc)), "ap": v, "auc": v,
                                                          "loss": 1 - v, "n": 8, "skipped": 0})

    def scripted_test(model, samples, loader, spec, device):
        assert {s.generator for s in samples} == {"g1", "g2"}  # the test generators, not the validation slice
        t = next(test_acc)
        per = {"acc": t, "real_acc": t, "fake_acc": t, "ap": t, "auc": t}
        return {"generators": {"g1": per, "g2": per}, "mean": per}

    monkeypatch.setattr(engine, "_test_metrics", scripted_test)
    base = resolve(load_params(workdir / "params.yaml", {"profiles.tiny.train.epochs": 3}), "npr")
    spec = selection_spec(base)
    assert spec.recipe.train.select_on == "test" and base.recipe.train.select_on == "val"
    assert spec.training_hash() != base.training_hash()
    result = engine.train(spec, workdir / "sel")
    assert result.best_epoch == 2
    summary = json.loads((workdir / "sel" / "train.json").read_text())
    assert [r["test_mean_acc"] for r in summary["history"]] == [0.55, 0.60, 0.75]
    assert summary["val_best_epoch"] == 1 and summary["select_on"] == "test"
    assert load_checkpoint(workdir / "sel" / "best.safetensors")[1]["epoch"] == 2
    record = selection_record(summary)
    assert record["val_selected"]["epoch"] == 1 and record["test_selected"]["epoch"] == 2
    assert record["val_selected"]["mean"]["acc"] == 0.60 and record["test_selected"]["mean"]["acc"] == 0.75


def test_selection_table_reports_the_inflation_over_seeds(tmp_path, monkeypatch):
    from sep_bench.io import write_json
    from sep_bench.paths import selection_path
    from sep_bench.report.protocol_tables import write_selection

    monkeypatch.chdir(tmp_path)
    for seed, (val, test) in enumerate((([0.6, 0.9, 0.7], [0.55, 0.60, 0.75]), ([0.8, 0.7], [0.70, 0.74]))):
        summary = {"detector": "npr", "profile": "tiny", "seed": seed, "protocol_hash": "h",
                   "history": _history(val, test)}
        write_json(selection_path("tiny", "npr", seed), selection_record(summary))
    clean = [{"detector": "npr", "seed": s, "mean": {"acc": a}} for s, a in ((0, 0.60), (1, 0.70))]
    files = write_selection("tiny", ["npr", "other"], [0, 1], tmp_path / "tiny_selection", clean)
    md = files[0].read_text()
    # seed 0: 60.00 (val, epoch 2) vs 75.00 (test, epoch 3); seed 1: 70.00 (epoch 1) vs 74.00 (epoch 2)
    assert "| npr" in md and "65.00 ± 7.07" in md and "74.50 ± 0.71 §" in md and "2, 1" in md and "3, 2" in md
    assert "+9.50 ± 7.78" in md and "+4.00 .. +15.00" in md
    assert "docs/protocols.md#tiny" in md and "results/selection/tiny/other/seed0.json" in md
    import pandas as pd

    csv = pd.read_csv(files[1])
    assert csv["inflation_pp"].tolist() == pytest.approx([15.0, 4.0])


def test_test_set_evaluation_leaves_the_training_rng_alone(workdir, monkeypatch):
    """A DataLoader draws its base seed from torch's global RNG: evaluating the test set between epochs must not
    shift what training draws next (dropout), or a select_on: test run would leave the val run's trajectory."""
    import numpy as np
    import torch

    import sep_bench.engine.train as engine
    from sep_bench.data.layouts import Sample

    spec = resolve(load_params(workdir / "params.yaml"), "npr")
    samples = [Sample(f"{g}{y}.png", y, g, "val") for g in spec.profile.data.test_generators for y in (1, 0)]
    n = len(samples)

    class Result:
        logits, kept, skipped = np.tile([0.5, -0.5], n // 2), np.ones(n, dtype=bool), []

        def check(self, *a):
            pass

    def consuming_infer(*a, **k):
        torch.rand(1000)  # what iterating a DataLoader does to the global RNG
        return Result()

    monkeypatch.setattr(engine, "infer", consuming_infer)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    engine._test_metrics(None, samples, None, spec, "cpu")
    assert torch.equal(torch.get_rng_state(), before)
