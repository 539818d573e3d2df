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
    assert on_disk == {k: v for k, v in metrics.items() if k != "perturbed"}  # the perturbed runs: own files
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
    # the bookkeeping too (a SLURM preemption's resume left `seen` one step short before): the same last.json
    meta_full, meta_resumed = (json.loads((workdir / d / "last.json").read_text()) for d in ("full", "resumed"))
    assert meta_resumed["seen"] == meta_full["seen"] > 0


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


# ---- gradient accumulation and the global batch ------------------------------------------------------------------

from sep_bench.detectors import Detector, DetectorSpec, register  # noqa: E402


class _Linear(Detector):
    """No BatchNorm: accumulation over k passes must equal one k-times-larger batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 1)

    def forward_features(self, views):
        return torch.nn.functional.avg_pool2d(views["image"], 4).flatten(1)

    def forward_head(self, features):
        return self.fc(features)


def _linear_view(img, rng):
    from sep_bench.data.transforms import center_crop, pad_to, to_tensor

    return {"image": to_tensor(center_crop(pad_to(img, 32), 32))}


class _NoConfig(__import__("pydantic").BaseModel):
    pass


@pytest.fixture
def linear_detector():
    """A test detector, registered for one test only (the registry is walked by other tests)."""
    from sep_bench.detectors import _REGISTRY

    spec = register(DetectorSpec(name="test-linear", summary="test", paper="-", repo="-", config=_NoConfig,
                                 build=lambda cfg, w: _Linear(), views=lambda cfg, train, hflip: _linear_view,
                                 provenance="paper"))
    yield spec
    _REGISTRY.pop(spec.name, None)


def _linear_spec(workdir, **train):
    over = {f"profiles.tiny.train.{k}": v for k, v in train.items()}
    over.update({"detectors.test-linear": {"optim": {"name": "sgd", "lr": 0.5, "momentum": 0.9}},
                 "profiles.tiny.train.epochs": 2})
    return resolve(load_params(workdir / "params.yaml", over), "test-linear")


def test_accumulating_k_passes_equals_one_k_times_larger_batch(workdir, linear_detector):
    # 24 training images: one batch of 16 per step (steps of 16 + 8 images), or 4 passes of 4 (the last step 2)
    big = train(_linear_spec(workdir, batch_size=16), workdir / "big")
    acc = train(_linear_spec(workdir, batch_size=4, accumulate=4), workdir / "acc")
    train(_linear_spec(workdir, batch_size=4, global_batch=16), workdir / "glob")
    a, b, c = (load_file(workdir / d / "last.safetensors") for d in ("big", "acc", "glob"))
    assert big.epochs == acc.epochs == 2
    for k in ("model.fc.weight", "model.fc.bias"):
        assert torch.allclose(a[k], b[k], atol=1e-6) and torch.equal(b[k], c[k])
    s_big, s_acc = (json.loads((workdir / d / "train.json").read_text()) for d in ("big", "acc"))
    assert s_big["steps_per_epoch"] == s_acc["steps_per_epoch"] == 2
    assert [r["train_loss"] for r in s_acc["history"]] == pytest.approx([r["train_loss"] for r in s_big["history"]])
    assert s_acc["batch"] == {"pass_batch": 4, "rank_batch": 4, "accumulate": 4, "effective_batch": 16, "lr": 0.5,
                              "lr_rule": "0.5 (no scaling)"}
    assert "batch" not in s_big  # the plain run's train.json is as before


def test_accumulated_run_resumes_mid_epoch_identically(workdir, monkeypatch, linear_detector):
    spec = _linear_spec(workdir, batch_size=4, accumulate=2, checkpoint_every_steps=1)
    train(spec, workdir / "full")
    _interrupted_run(workdir, monkeypatch, spec, workdir / "resumed")
    pos = json.loads((workdir / "resumed" / "last.json").read_text())["position"]
    assert pos == {"epoch": 0, "step": 1}  # after the first optimiser step (two passes)
    train(spec, workdir / "resumed")
    a, b = load_file(workdir / "full" / "last.safetensors"), load_file(workdir / "resumed" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_batch_plan_global_batch_and_lr_scaling_rules():
    from sep_bench.engine.batching import plan_batches, step_weights
    from sep_bench.protocol import OptimSpec, ProtocolError, TrainSpec

    aide = TrainSpec(batch_size=32, global_batch=256)
    blr = OptimSpec(name="adamw", lr=1e-3, lr_scale="linear")
    one, eight = plan_batches(aide, blr, 1), plan_batches(aide, blr, 8)
    assert (one.accumulate, one.rank_batch, one.effective_batch) == (8, 32, 256)
    assert (eight.accumulate, eight.rank_batch, eight.effective_batch) == (1, 32, 256)
    assert one.lr == eight.lr == pytest.approx(1e-3) and one.lr_rule == "0.001 x 256/256 (linear)"
    safe = plan_batches(TrainSpec(batch_size=32, global_batch=128), OptimSpec(lr=1e-2, lr_scale="linear"), 1)
    assert safe.lr == pytest.approx(5e-3) and safe.accumulate == 4  # SAFE: blr 1e-2 x 128 / 256
    sqrt = plan_batches(TrainSpec(batch_size=64), OptimSpec(lr=1e-3, lr_scale="sqrt"), 1)
    assert sqrt.lr == pytest.approx(0.5e-3)
    plain = plan_batches(TrainSpec(batch_size=32, accumulate=2), OptimSpec(lr=1e-4), 2)
    assert (plain.pass_batch, plain.rank_batch, plain.effective_batch, plain.lr) == (32, 16, 64, 1e-4)
    with pytest.raises(ProtocolError, match="not a multiple of train.batch_size 48"):
        plan_batches(TrainSpec(batch_size=48, global_batch=256), blr, 1)
    with pytest.raises(ValueError, match="not both"):
        TrainSpec(global_batch=256, accumulate=2)
    assert step_weights(1, 4, [4, 4, 4, 4, 4, 4]) == [0.5, 0.5]
    assert step_weights(0, 2, [16, 8]) == [16 / 24, 8 / 24]


def test_new_keys_at_their_defaults_leave_the_protocol_hash_unchanged(workdir):
    spec = _spec(workdir)
    same = _spec(workdir, **{"profiles.tiny.train.select_on": "val", "profiles.tiny.train.accumulate": 1,
                             "profiles.tiny.eval.align": "none", "detectors.npr.optim.lr_base_batch": 128})
    assert same.protocol_hash() == spec.protocol_hash() and same.training_hash() == spec.training_hash()
    assert _spec(workdir, **{"profiles.tiny.train.accumulate": 2}).training_hash() != spec.training_hash()
    assert _spec(workdir, **{"profiles.tiny.eval.align": "jpeg95"}).training_hash() == spec.training_hash()
    assert _spec(workdir, **{"profiles.tiny.eval.align": "jpeg95"}).protocol_hash() != spec.protocol_hash()
