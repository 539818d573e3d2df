"""benchmarks/gpu_acceptance.py: the cost arithmetic, the data sizes from params.yaml, and the JSON's shape (a fake
detector run: no model is built)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from benchmarks import gpu_acceptance as ga
from sep_bench.protocol import load_params, resolve
from sep_bench.recon.config import ReconConfig
from tests.conftest import REPO


def _genimage(detector: str = "npr"):
    return resolve(load_params(REPO / "params.yaml", {"profiles.genimage.pretrained": False}), detector, "genimage")


def test_data_sizes_come_from_the_profile_full_size():
    spec = _genimage()
    full, data = spec.profile.full_size, spec.profile.data
    sizes = ga.data_sizes(spec)
    pool = sum(full.train[g] for g in data.train_generators)
    assert sizes["val_images"] == round(pool * data.val.fraction) > 0
    assert sizes["train_images"] + sizes["val_images"] == pool
    assert sizes["test_images"] == sum(full.test[g] for g in data.test_generators)
    assert sizes["variant_images"] == sizes["test_images"]  # genimage: no variant_subset


def test_budget_caps_and_a_missing_full_size_are_honoured():
    spec = _genimage()
    data = spec.profile.data.model_copy(update={"max_train_images": 1000, "max_test_images_per_generator": 10})
    capped = spec.model_copy(update={"profile": spec.profile.model_copy(update={"data": data})})
    sizes = ga.data_sizes(capped)
    assert sizes["train_images"] == 1000 and sizes["test_images"] == 10 * len(data.test_generators)
    bare = spec.model_copy(update={"profile": spec.profile.model_copy(update={"full_size": None})})
    with pytest.raises(ValueError, match="full_size is not set"):
        ga.data_sizes(bare)


def test_table_cost_arithmetic():
    sizes = {"train_images": 1000, "val_images": 100, "test_images": 400, "variant_images": 40}
    cost = ga.table_cost(sizes, epochs=3, passes=5, train_rate=10.0, eval_rate=20.0, recon_count=50,
                         recon_s_per_image=2.0)
    seconds = 3 * 1000 / 10 + 3 * 100 / 20 + (400 + 40 * 4) / 20 + 50 * 2.0
    assert cost["gpu_hours"] == pytest.approx(seconds / 3600, abs=1e-4)
    assert cost["seconds"] == {"train": 300.0, "validation": 15.0, "evaluation": 28.0, "reconstruction": 100.0}
    assert cost["arithmetic"].startswith("(3 x 1000 / 10 + 3 x 100 / 20 + (400 + 40 x 4) / 20 + 50 x 2)")


def test_eval_passes_and_reconstruction_counts():
    spec = _genimage()
    ev = spec.recipe.eval
    assert ga.eval_passes(spec) == 1 + len(ev.perturbations) + 1 + len(ev.preprocess)  # align: jpeg
    sizes = {"train_images": 10, "val_images": 2, "test_images": 5, "variant_images": 5}
    dire = ReconConfig(method="ddim-inversion", arch="tiny-unet", use="replace")
    drct = ReconConfig(method="sd-inpaint", arch="tiny-sd-inpaint", use="augment")
    assert (ga.recon_images(dire, sizes), ga.recon_images(drct, sizes), ga.recon_images(None, sizes)) == (17, 10, 0)
    trained, epochs = ga.train_plan(_genimage("drct"), drct, sizes)
    assert trained["train_images"] == 20 and epochs == _genimage("drct").recipe.train.epochs
    _, epochs = ga.train_plan(_genimage("formatonly"), None, sizes)  # feature cache: one feature pass
    assert epochs == 1


def test_offline_specs_are_random_init_everywhere():
    specs = ga.load_offline_specs(REPO / "params.yaml", "genimage", ["sep", "lgrad", "dire"])
    assert all(s.recipe.pretrained is False and s.profile.pretrained is False for s in specs.values())
    with pytest.raises(SystemExit, match="nosuch"):
        ga.load_offline_specs(REPO / "params.yaml", "genimage", ["nosuch"])


def test_json_shape_with_a_fake_detector_and_one_failure(tmp_path, monkeypatch):
    specs = ga.load_offline_specs(REPO / "params.yaml", "genimage", ["npr", "cnnspot"])

    def fake_predict(name, spec, paths, args, device):
        if name == "cnnspot":
            raise RuntimeError("out of memory (fake)")
        return {"train": {"images_per_s": 100.0}, "eval": {"images_per_s": 400.0}, "flops": {}}

    monkeypatch.setattr(ga, "predict_detector", fake_predict)
    args = SimpleNamespace(out=tmp_path / "ga.json", goal_gpu_hours=24.0, detectors=None, budget_s=1.0,
                           profile="genimage")
    results = {n: ga.run_one(n, s, [], args, None, measured=False) for n, s in specs.items()}
    results["lota"] = {"skipped": "--budget-s 1 s reached before it started"}
    summary = ga.write(args, None, False, results, specs)
    doc = json.loads(args.out.read_text())
    assert doc["measured"] is False and doc["kind"] == "predicted" and doc["pretrained"] is False
    assert "sustained_flops" in doc["assumptions"] and "source" in doc["assumptions"]
    npr = doc["results"]["npr"]
    sizes = ga.data_sizes(specs["npr"])
    expected = (npr["recipe"]["epochs"] * sizes["train_images"] / 100 + npr["recipe"]["epochs"] * sizes["val_images"]
                / 400 + (sizes["test_images"] + sizes["variant_images"] * (npr["recipe"]["eval_passes"] - 1)) / 400)
    assert npr["cost"]["gpu_hours"] == pytest.approx(expected / 3600, abs=1e-4)
    assert doc["results"]["cnnspot"]["error"] == "RuntimeError: out of memory (fake)"
    assert summary == doc["summary"]
    assert summary["detectors_failed"] == ["cnnspot"] and summary["detectors_skipped"] == ["lota"]
    assert summary["gpu_hours_total"] == pytest.approx(npr["cost"]["gpu_hours"], abs=0.01)
    assert summary["within_goal"] is False  # not every detector has a cost


def test_the_doc_block_is_the_committed_report():
    """docs/weights-and-gpu.md quotes results/benchmarks/gpu_acceptance.json exactly (no hand-typed figure)."""
    report = json.loads((REPO / "results" / "benchmarks" / "gpu_acceptance.json").read_text())
    text = ga.DOC.read_text()
    block = text.split(ga.DOC_MARK[0], 1)[1].split(ga.DOC_MARK[1], 1)[0].strip()
    assert block == ga.doc_block(report)
    assert report["kind"] == ("measured" if report["measured"] else "predicted")
    assert set(report["results"]) == set(load_params(REPO / "params.yaml").run.detectors)


def test_the_measured_path_runs_on_a_small_recipe(tmp_path, monkeypatch):
    """The GPU code path (engine loader + training step, run_inference, costs) on the CPU with mini NPR: the same
    functions a lent GPU runs, so a typo cannot wait for one."""
    import torch

    from benchmarks import _common as C

    monkeypatch.setattr(C.tempfile, "gettempdir", lambda: str(tmp_path))
    paths = C.make_image_set(8, 64, log=lambda _: None)
    spec = ga.load_offline_specs(REPO / "params.yaml", "mini", ["npr"])["npr"]
    args = SimpleNamespace(train_steps=2, eval_batches=1)
    torch.set_num_threads(1)
    result = ga.measure_detector("npr", spec, paths, args, torch.device("cpu"))
    assert result["train"]["images_per_s"] > 0 and result["train"]["steps"] == 3
    assert result["eval"]["images_per_s"] > 0 and result["eval"]["peak_memory_kind"] == "cpu_peak_rss"
    assert "reconstruction" not in result
    recon = ga.measure_recon(ReconConfig(arch="tiny-unet", steps=2, image_size=32, batch_size=4), paths,
                             torch.device("cpu"))
    assert recon["seconds_per_image"] > 0 and recon["images"] == 4 and recon["random_init"] is True
