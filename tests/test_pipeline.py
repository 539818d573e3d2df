"""End to end: `sep-bench pipeline` (`dvc repro` with warm starts) in a temporary clone, on a shrunken mini profile.

Checks what a newcomer gets from README command 1: the data stage builds minigen, train@/evaluate@ run per
detector, the report writes the table and heatmap, MLflow has the runs, a fresh clone needs no downloaded data, and a
second `dvc repro` does nothing. Then an evaluation-only entry (the trained NPR
re-saved in the official format) is added: DVC evaluates it without a training stage and it reproduces the
trained model's predictions.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.stage_deps import GIT_ENV, copy_worktree

pytestmark = pytest.mark.slow



def _run(cmd, cwd, env):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    dest = tmp_path_factory.mktemp("clone")
    copy_worktree(dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["run"]["detectors"] = ["npr"]
    params["run"]["selection"] = ["npr"]
    mini = params["profiles"]["mini"]
    # the pinned generator weights with fewer, smaller images (no digest: this is not the pinned build)
    mini["data"]["minigen"] = {"seed": 0, "image_size": 48, "n_train_real": 24, "n_val_real": 8, "n_test_real": 8}
    mini["train"].update(epochs=1, batch_size=16)
    params["detectors"]["npr"]["overrides"]["mini"]["model"] = {"crop_size": 32, "train_resize": None, "layers": [1, 1]}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, **GIT_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("DVC_ROOT", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    for stale in ("results/metrics", "results/predictions", "results/tables", "results/plots", "dvc.lock"):
        target = dest / stale
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "commit", "-qm", "clone"], dest, env)
    return dest, env


def test_dvc_repro_in_a_fresh_clone_produces_table_plot_and_runs(clone):
    dest, env = clone
    # no data.dvc: `dvc exp run` commits every .dvc file of the repository, so a tracked data/external would be
    # hashed (hundreds of GB) by every experiment; hashing it is the user's `dvc add` (docs/real-data.md)
    assert not (dest / "data.dvc").exists() and not (dest / "data" / "external").exists()
    out = _run(["sep-bench", "pipeline"], dest, env)  # README command 1 (make pipeline) without the set-up
    for stage in ("data", "reconstruct@npr", "train@npr-0", "evaluate@npr-0", "selection@npr-0", "report"):
        assert f"Running stage '{stage}'" in out
    # stage commands after the first start warm (sep_bench.warm); test_released_entry_is_evaluated_without_training
    # compares this warm evaluation with a normal start's
    assert "warm start: " in out
    assert "warm start of `sep-bench evaluate --detector npr --seed 0`" in (dest / ".dvc/tmp/sep-bench-warm.log").read_text()

    table = (dest / "results/tables/mini_acc.md").read_text()
    header = [c.strip() for c in table.splitlines()[0].split("|")[1:-1]]
    # Seed std: the committed seed spread (results/benchmarks/seed_spread.json) is of the mini protocol, not this
    # shrunken one, so the column says "-" (test_seed_spread covers a matching protocol)
    assert header == ["detector", "vae8", "tconv", "nearest", "bilinear", "pixelshuffle", "Mean", "Seed std",
                      "Params (M)", "GFLOPs", "img/s", "Mem (MiB)"]
    npr_row = next(line for line in table.splitlines() if line.startswith("| npr "))
    assert [c.strip() for c in npr_row.split("|")[1:-1]][7] == "-"
    assert any(line.startswith("| npr ") for line in table.splitlines())
    assert (dest / "results/plots/mini_acc_heatmap.png").stat().st_size > 1000

    client = MlflowClient(tracking_uri=f"sqlite:///{dest / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sep-bench/mini")
    runs = client.search_runs([exp.experiment_id])
    stage_runs = [r for r in runs if r.data.tags.get("sep_bench.kind") in ("train", "evaluate")
                  and r.data.tags.get("dvc.stage") in ("train@npr-0", "evaluate@npr-0")]
    # one run per extra evaluation variant (perturbations, the aligned evaluation, preprocessing rules)
    import json

    folder = dest / "results/robustness/mini/npr/seed0"
    variants = sorted(f.stem for f in folder.glob("*.json") if f.stem not in ("index", "clean_subset")
                      and json.loads(f.read_text()).get("supported", True))
    perturbations = yaml.safe_load((dest / "params.yaml").read_text())["profiles"]["mini"]["eval"]["perturbations"]
    assert set(perturbations) <= set(variants)
    expected = ["evaluate@npr-0"] * (1 + len(variants)) + ["train@npr-0"]
    assert sorted(r.data.tags["dvc.stage"] for r in stage_runs) == expected
    assert sorted(r.data.tags.get("sep_bench.perturbation", "none") for r in stage_runs
                  if r.data.tags["sep_bench.kind"] == "evaluate") == sorted(["none", *variants])
    assert (dest / "results/tables/mini_robustness.md").is_file()
    (parent,) = [r for r in runs if r.data.tags.get("sep_bench.kind") == "pipeline"]
    clean = {r.info.run_id for r in stage_runs if "sep_bench.perturbation" not in r.data.tags
             or r.data.tags["sep_bench.perturbation"] == "none"}
    (evaluation,) = [r for r in stage_runs if r.info.run_id in clean and r.data.tags["sep_bench.kind"] == "evaluate"]
    for r in stage_runs:  # stage runs under the pipeline's run; perturbed evaluations under their evaluation run
        want = parent.info.run_id if r.info.run_id in clean else evaluation.info.run_id
        assert r.data.tags["mlflow.parentRunId"] == want
    assert (dest / "results/tables/mini_efficiency.md").is_file()
    assert (dest / "results/plots/mini_acc_vs_cost.png").stat().st_size > 1000
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["git.commit"] != "unknown" for r in stage_runs)
    assert exp.artifact_location.startswith(f"file://{dest}")


def test_second_repro_is_a_no_op(clone):
    dest, env = clone
    if not (dest / "dvc.lock").is_file():
        pytest.skip("needs the first repro")
    started = time.perf_counter()
    out = _run(["dvc", "repro"], dest, env)
    elapsed = time.perf_counter() - started
    assert "Running stage" not in out and "up to date" in out
    print(f"second dvc repro: {elapsed:.1f}s")


def test_released_entry_is_evaluated_without_training(clone):
    """An entry under released: gets released@ and evaluate_released@ stages, no train stage, and its own row."""
    import json
    from collections import OrderedDict

    import pandas as pd
    import torch

    from sep_bench.engine.checkpoint import load_detector

    dest, env = clone
    if not (dest / "dvc.lock").is_file():
        pytest.skip("needs the first repro")
    model, _ = load_detector(dest / "runs/mini/npr/seed0/train/best.safetensors")
    (dest / "weights").mkdir(exist_ok=True)
    torch.save(OrderedDict(model.state_dict()), dest / "weights/npr_official.pth")
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["released"] = {"npr-official": {"detector": "npr", "weights": "weights/npr_official.pth"}}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], dest, env)  # no warm server: every command starts normally
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"released@npr-official", "evaluate_released@npr-official-0", "report"}
    trained = pd.read_parquet(dest / "results/predictions/mini/npr/seed0.parquet")
    released = pd.read_parquet(dest / "results/predictions/mini/npr-official/seed0.parquet")
    assert released.equals(trained)  # a normal start reproduces the warm-started evaluation
    m = json.loads((dest / "results/metrics/mini/npr-official/seed0.json").read_text())
    digest = m["released"]["sha256"]
    table = (dest / "results/tables/mini_acc.md").read_text()
    assert "| npr-official‡ " in table and digest in table
    out = _run(["dvc", "repro"], dest, env)  # only the cheap sha256 record reruns; nothing downstream
    assert "Running stage 'evaluate_released" not in out and "Running stage 'report'" not in out
