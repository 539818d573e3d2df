import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from sep_bench.engine.checkpoint import CheckpointError, load_detector
from sep_bench.engine.evaluate import evaluate
from sep_bench.engine.train import lr_factor, train
from sep_bench.protocol import ScheduleSpec, load_params, resolve


def _spec(workdir, **overrides):
    return resolve(load_params(workdir / "params.yaml", overrides), "npr")


def test_train_then_evaluate_writes_checkpoints_predictions_and_metrics(workdir):
    spec = _spec(workdir)
    result = train(spec, workdir / "run")
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json", "train.json"):
        assert (workdir / "run" / name).is_file()
    summary = json.loads((workdir / "run" / "train.json").read_text())
    assert summary["n_val"] == 8 and summary["n_train"] == 24 and len(summary["history"]) == 2
    assert summary["pretrained"] is False and summary["weights"] == "random-init"
    assert result.best_epoch in (0, 1)

    metrics = evaluate(spec, result.best_checkpoint, workdir / "m.json", workdir / "p.parquet")
    preds = pd.read_parquet(workdir / "p.parquet")
    assert list(preds.columns) == ["path", "generator", "label", "fake_logit"]
    assert len(preds) == 32 and set(preds.generator) == {"g1", "g2"}
    on_disk = json.loads((workdir / "m.json").read_text())
    assert on_disk == metrics
    for g in ("g1", "g2"):
        assert set(metrics["generators"][g]) >= {"acc", "real_acc", "fake_acc", "ap", "auc"}
    assert metrics["mean"]["acc"] == pytest.approx((metrics["generators"]["g1"]["acc"] + metrics["generators"]["g2"]["acc"]) / 2)
    assert metrics["skipped"] == {"count": 0, "by_reason": {}}
    # evaluation is bit-identical when repeated
    again = evaluate(spec, result.best_checkpoint, workdir / "m2.json", workdir / "p2.parquet")
    assert again["generators"] == metrics["generators"]
    assert pd.read_parquet(workdir / "p2.parquet").equals(preds)


def test_training_is_deterministic_and_resume_continues_identically(workdir):
    spec = _spec(workdir, **{"profiles.tiny.train.epochs": 2})
    train(spec, workdir / "a")
    # the same run again, from scratch, gives the same weights
    train(spec, workdir / "b")
    wa, wb = load_file(workdir / "a" / "best.safetensors"), load_file(workdir / "b" / "best.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # interrupted after epoch 1 (simulated by a 1-epoch budget with the same protocol otherwise), then resumed
    one = _spec(workdir, **{"profiles.tiny.train.epochs": 2, "profiles.tiny.train.max_steps_per_epoch": 2,
                            "profiles.tiny.train.checkpoint_every_steps": 1})
    train(one, workdir / "c")
    last = json.loads((workdir / "c" / "last.json").read_text())
    assert last["position"] == {"epoch": 2, "step": 0}


@pytest.mark.parametrize("schedule", [{"name": "constant"}, {"name": "cosine", "warmup_epochs": 0.5}])
def test_mid_epoch_resume_matches_uninterrupted(workdir, monkeypatch, schedule):
    over = {"profiles.tiny.train.epochs": 2, "profiles.tiny.train.checkpoint_every_steps": 1,
            "detectors.npr.schedule": schedule}
    spec = _spec(workdir, **over)
    train(spec, workdir / "full")

    import sep_bench.engine.train as engine

    calls = {"n": 0}
    real_save = engine.save_checkpoint

    def crash_after_third_save(*a, **k):
        real_save(*a, **k)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(engine, "save_checkpoint", crash_after_third_save)
    with pytest.raises(KeyboardInterrupt):
        train(spec, workdir / "resumed")
    pos = json.loads((workdir / "resumed" / "last.json").read_text())["position"]
    assert pos["step"] > 0  # really interrupted mid-epoch
    monkeypatch.setattr(engine, "save_checkpoint", real_save)
    train(spec, workdir / "resumed")
    a, b = load_file(workdir / "full" / "last.safetensors"), load_file(workdir / "resumed" / "last.safetensors")
    model_keys = [k for k in a if k.startswith("model.")]
    assert model_keys and all(torch.equal(a[k], b[k]) for k in model_keys)


def _interrupted_run(workdir, monkeypatch, spec, out):
    """Train `spec` into `out` and stop it after its first checkpoint save (an unfinished run)."""
    import sep_bench.engine.train as engine

    real_save = engine.save_checkpoint

    def stop_after_first_save(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(engine, "save_checkpoint", stop_after_first_save)
    with pytest.raises(KeyboardInterrupt):
        train(spec, out)
    monkeypatch.setattr(engine, "save_checkpoint", real_save)


def test_checkpoint_of_another_protocol_is_not_resumed(workdir, caplog, monkeypatch):
    over = {"profiles.tiny.train.epochs": 2, "profiles.tiny.train.checkpoint_every_steps": 1}
    _interrupted_run(workdir, monkeypatch, _spec(workdir, **over), workdir / "r")
    train(_spec(workdir, **over, **{"detectors.npr.optim.lr": 5e-4}), workdir / "r")
    assert "belongs to another protocol" in caplog.text


def test_a_finished_run_is_trained_again_not_reused(workdir, caplog):
    caplog.set_level("INFO")
    spec = _spec(workdir, **{"profiles.tiny.train.epochs": 1})
    train(spec, workdir / "r")
    first = load_file(workdir / "r" / "best.safetensors")
    train(spec, workdir / "r")
    assert "holds a finished run; training again from scratch" in caplog.text
    again = load_file(workdir / "r" / "best.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)  # deterministic, and really retrained


def test_checkpoint_for_another_detector_is_refused(workdir):
    train(_spec(workdir, **{"profiles.tiny.train.epochs": 1}), workdir / "r")
    meta = workdir / "r" / "best.json"
    data = json.loads(meta.read_text())
    with pytest.raises(CheckpointError, match="checkpoint of detector 'npr', not 'sep'"):
        load_detector(workdir / "r" / "best.safetensors", expect="sep")
    data["model_config"]["layers"] = [3, 4]
    meta.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="does not match detector 'npr'"):
        load_detector(workdir / "r" / "best.safetensors")


def test_unreadable_images_are_counted_not_fatal(workdir, tiny_tree, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_tree, data)
    (data / "g2" / "val" / "ai" / "p0__000.png").write_bytes(b"not an image")
    spec = _spec(workdir, **{"profiles.tiny.data.root": str(data), "profiles.tiny.train.epochs": 1,
                             "profiles.tiny.data.max_skip_fraction": 0.1})
    res = train(spec, workdir / "r")
    m = evaluate(spec, res.best_checkpoint, workdir / "m.json", workdir / "p.parquet")
    assert m["skipped"] == {"count": 1, "by_reason": {"not_an_image": 1}} and m["n_images"] == 31
    strict = _spec(workdir, **{"profiles.tiny.data.root": str(data), "profiles.tiny.train.epochs": 1,
                               "profiles.tiny.data.max_skip_fraction": 0.0})
    from sep_bench.engine.inference import SkipBudgetError

    with pytest.raises(SkipBudgetError, match="1 of 32 images could not be used"):
        evaluate(strict, res.best_checkpoint, workdir / "m.json", workdir / "p.parquet")


def test_lr_schedule_shapes():
    warm = ScheduleSpec(name="cosine", warmup_epochs=1)
    assert lr_factor(0, 10, 5, warm) == pytest.approx(0.1)
    assert lr_factor(9, 10, 5, warm) == pytest.approx(1.0)
    assert lr_factor(49, 10, 5, warm) < 0.01
    step = ScheduleSpec(name="step", step_epochs=10, gamma=0.9)
    assert lr_factor(10 * 100, 100, 50, step) == pytest.approx(0.9) and lr_factor(5, 100, 50, step) == 1.0


def test_poly_and_plateau_schedules():
    from sep_bench.engine.train import _plateau_step
    from sep_bench.protocol import Recipe

    poly = ScheduleSpec(name="poly", power=0.9)
    assert lr_factor(0, 10, 30, poly) == 1.0 and lr_factor(295, 10, 30, poly) == pytest.approx((1 / 30) ** 0.9)
    recipe = Recipe(schedule={"name": "plateau", "patience": 2, "gamma": 0.1, "min_lr": 1e-5},
                    train={}, eval={})
    state = {"scale": 1.0, "bad_epochs": 0}
    assert not _plateau_step(state, False, recipe, 1e-4) and state["scale"] == 1.0
    assert not _plateau_step(state, False, recipe, 1e-4) and state["scale"] == pytest.approx(0.1)
    assert not _plateau_step(state, True, recipe, 1e-4) and state["bad_epochs"] == 0
    _plateau_step(state, False, recipe, 1e-4)
    assert _plateau_step(state, False, recipe, 1e-4)  # 1e-4 * 0.01 < 1e-5: stop
