"""`sep-bench compare` end to end with the example plugin package, pip-installed from examples/.

The package is installed with pip into a temporary --target folder put on PYTHONPATH / sys.path, rather
than into the interpreter's site-packages: the test then cannot leave a stray plugin behind for other test runs
(or other processes sharing the environment) if it is interrupted, and entry points are discovered the same way.
To keep the test fast, the reference is `npr` on the tiny dataset (`--against` defaults to `sep`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.detectors import get_detector, list_detectors
from sep_bench.engine.metrics import summarize_predictions
from sep_bench.protocol import load_params, resolve
from tests.conftest import REPO

runner = CliRunner()
EXAMPLE = REPO / "examples" / "sep-bench-example-detector"
BLURDIFF = {"model": {"crop_size": 32, "width": 4}, "pretrained": False, "optim": {"name": "adam", "lr": 1e-3}}


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example package built and installed by pip (no network, no build isolation) into a folder."""
    src = tmp_path_factory.mktemp("src") / EXAMPLE.name
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path_factory.mktemp("site")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (site / "sep_bench_example" / "blurdiff.py").is_file()
    return site


def _env(site: Path, workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SEP_BENCH_PARENT_RUN_ID", "DVC_STAGE")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               DVC_ROOT=str(workdir), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", COLUMNS="200")
    return env


def _sep_bench(args, site, workdir):
    exe = Path(sys.executable).with_name("sep-bench")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "sep_bench.main"]
    res = subprocess.run([*cmd, *args], cwd=workdir, env=_env(site, workdir), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res.stdout + res.stderr


def _fake_baseline(workdir: Path, name: str) -> None:
    """Results of a baseline under the current protocol: npr's predictions with every logit negated."""
    p = load_params(workdir / "params.yaml")
    spec = resolve(p, name, "tiny", 0)
    preds = pd.read_parquet(workdir / "results/predictions/tiny/npr/seed0.parquet")
    preds["fake_logit"] = -preds["fake_logit"] + 0.01
    (workdir / f"results/predictions/tiny/{name}").mkdir(parents=True)
    (workdir / f"results/metrics/tiny/{name}").mkdir(parents=True)
    preds.to_parquet(workdir / f"results/predictions/tiny/{name}/seed0.parquet", index=False)
    metrics = {"detector": name, "profile": "tiny", "protocol_hash": spec.protocol_hash(), "seed": 0,
               "test_generators": ["g1", "g2"], **summarize_predictions(preds, ["g1", "g2"]),
               "weights": "random-init", "pretrained": False, "intended_pretrained": False}
    (workdir / f"results/metrics/tiny/{name}/seed0.json").write_text(json.dumps(metrics))


def test_compare_trains_evaluates_then_reuses(plugin_site, workdir, monkeypatch):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["detectors"]["blurdiff"] = BLURDIFF
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))

    # 1. a fresh project: both detectors are trained and evaluated exactly as the pipeline does
    out = _sep_bench(["compare", "--detector", "blurdiff", "--against", "npr"], plugin_site, workdir)
    assert "npr seed 0: trained + evaluated" in out and "blurdiff seed 0: trained + evaluated" in out
    assert "blurdiff vs npr" in out and "g1" in out and "Mean" in out
    p = load_params(workdir / "params.yaml")
    for det in ("npr", "blurdiff"):
        m = json.loads((workdir / f"results/metrics/tiny/{det}/seed0.json").read_text())
        assert m["protocol_hash"] == resolve(p, det, "tiny", 0).protocol_hash()
        assert (workdir / f"results/predictions/tiny/{det}/seed0.parquet").is_file()
        assert (workdir / f"runs/tiny/{det}/seed0/train/best.safetensors").is_file()
    md = (workdir / "results/compare/tiny/blurdiff_vs_npr.md").read_text()
    assert md.startswith("| generator") and "| Mean " in md and "diff (95% CI)" in md
    table = pd.read_csv(workdir / "results/compare/tiny/blurdiff_vs_npr.csv")
    assert set(table.generator) == {"g1", "g2", "Mean"} and set(table.detector) == {"blurdiff"}

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test/tiny")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sep_bench.kind") == "compare"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == [
        "evaluate/blurdiff/seed0", "evaluate/npr/seed0", "train/blurdiff/seed0", "train/npr/seed0"]
    assert parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "compare")} == {
        "compare/blurdiff_vs_npr.md", "compare/blurdiff_vs_npr.csv"}

    # 2. current results are reused, never recomputed; baselines of run.detectors with results are shown
    stamps = {d: (workdir / f"results/metrics/tiny/{d}/seed0.json").stat().st_mtime_ns for d in ("npr", "blurdiff")}
    params["detectors"]["univfd"] = {"optim": {"name": "adam", "lr": 1e-4}}
    params["detectors"]["cnnspot"] = {}
    params["run"]["detectors"] = ["npr", "univfd", "cnnspot"]
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    _fake_baseline(workdir, "univfd")
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setenv("COLUMNS", "200")
    assert "blurdiff" in list_detectors() and get_detector("blurdiff").name == "blurdiff"
    res = runner.invoke(app, ["compare", "-d", "blurdiff", "--against", "npr", "--n-boot", "500"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "npr seed 0: reused" in res.output and "blurdiff seed 0: reused" in res.output
    assert "univfd" in res.output.split("against each detector")[1] and "cnnspot" in res.output.split("not shown")[1]
    assert stamps == {d: (workdir / f"results/metrics/tiny/{d}/seed0.json").stat().st_mtime_ns for d in stamps}
    assert "univfd" in (workdir / "results/compare/tiny/blurdiff_vs_npr.md").read_text()

    # 3. a protocol change of one detector recomputes that detector only
    params["detectors"]["blurdiff"]["optim"]["lr"] = 2e-3
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    res = runner.invoke(app, ["compare", "-d", "blurdiff", "--against", "npr", "--n-boot", "500", "--no-track"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "npr seed 0: reused" in res.output and "blurdiff seed 0: trained + evaluated" in res.output


def test_compare_errors_name_the_fix(workdir):
    for args, needle in [
        (["compare", "-d", "ghost", "--against", "npr"], "unknown detector 'ghost'"),
        (["compare", "-d", "cnnspot", "--against", "npr"], "no block detectors.cnnspot"),
        (["compare", "-d", "npr", "--against", "npr"], "both 'npr'"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert needle in " ".join(res.output.split()) and "Traceback" not in res.output
