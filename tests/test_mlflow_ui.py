"""MLflow grouping (one parent run per pipeline execution, its id passed to the stage commands) and the MLflow UI
in headless Chromium.

The browser test starts `mlflow server` on the tiny pipeline's sqlite DB and loads the run pages in headless
Chromium (Debian package `chromium`); it is skipped, saying so, when Chromium is not installed. It saves a
screenshot of the evaluation run's page; set SEP_BENCH_SCREENSHOT_DIR to keep a copy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.cli.common import PARENT_RUN_ENV
from sep_bench.tracking import end_run, start_parent

runner = CliRunner()
CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)


def _ok(args):
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def _start(workdir, name="pipeline/test-1"):
    """What `sep-bench pipeline` does before it starts DVC: the execution's parent run."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    tags = {"sep_bench.kind": "pipeline", "sep_bench.detectors": "npr", "sep_bench.test_generators": "g1,g2"}
    return uri, start_parent(uri, "test/tiny", name, tags)


def _pipeline(workdir, monkeypatch):
    """train -> evaluate -> report as three commands of one pipeline execution (as DVC stages would run them,
    with the parent run's id in $SEP_BENCH_PARENT_RUN_ID), then the parent's end, as `sep-bench pipeline` does."""
    uri, parent_id = _start(workdir)
    monkeypatch.setenv(PARENT_RUN_ENV, parent_id)
    _ok(["train", "--detector", "npr"])
    _ok(["evaluate", "--detector", "npr"])
    _ok(["report", "--n-boot", "200"])
    end_run(uri, parent_id)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("test/tiny")
    runs = {r.data.tags["sep_bench.kind"]: r for r in client.search_runs([exp.experiment_id])}
    return client, exp, runs


def test_pipeline_runs_nest_under_the_parent_run_they_are_given(workdir, monkeypatch):
    client, exp, runs = _pipeline(workdir, monkeypatch)
    assert set(runs) == {"pipeline", "train", "evaluate"}
    parent = runs["pipeline"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sep_bench.detectors"] == "npr" and parent.data.tags["sep_bench.test_generators"] == "g1,g2"
    for kind in ("train", "evaluate"):
        assert runs[kind].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert runs[kind].data.tags["sep_bench.protocol_hash"] and runs[kind].data.tags["sep_bench.detector"] == "npr"
    assert "npr.mean.acc" in parent.data.metrics
    tables = {a.path for a in client.list_artifacts(parent.info.run_id, "report/tables")}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "report/plots")}
    assert "report/tables/tiny_acc.md" in tables and "report/plots/tiny_acc_heatmap.png" in plots
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"

    # without a parent id (`dvc repro` run directly) the runs are not nested, and the report logs to no parent
    monkeypatch.delenv(PARENT_RUN_ENV)
    _ok(["evaluate", "--detector", "npr"])
    _ok(["report", "--n-boot", "200"])
    evals = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags["sep_bench.kind"] == "evaluate"]
    assert len(evals) == 2 and sum("mlflow.parentRunId" not in r.data.tags for r in evals) == 1
    assert len([r for r in client.search_runs([exp.experiment_id]) if r.data.tags["sep_bench.kind"] == "pipeline"]) == 1


def test_a_failing_stage_fails_its_pipeline_parent(workdir, monkeypatch):
    uri, parent_id = _start(workdir, "pipeline/test-fail")
    monkeypatch.setenv(PARENT_RUN_ENV, parent_id)
    res = runner.invoke(app, ["evaluate", "--detector", "npr"])  # no checkpoint: the stage fails
    assert res.exit_code == 2
    end_run(uri, parent_id, status="FAILED")  # what `sep-bench pipeline` does when DVC fails; FAILED stays
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("test/tiny")
    runs = {r.data.tags["sep_bench.kind"]: r for r in client.search_runs([exp.experiment_id])}
    assert runs["evaluate"].info.status == "FAILED" and runs["pipeline"].info.status == "FAILED"
    assert "evaluate/npr/seed0" in runs["pipeline"].data.tags["sep_bench.error"]


def test_sep_bench_pipeline_opens_the_parent_run_for_dvc_and_ends_it(workdir, monkeypatch):
    """`sep-bench pipeline` creates the parent before DVC starts, hands its id to the stages in the environment
    and ends it when DVC returns (here a stand-in for dvc that records the id and fails)."""
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dvc"
    fake.write_text('#!/usr/bin/env bash\n[ "$1" = stage ] && exit 0\n'
                    'echo "$SEP_BENCH_PARENT_RUN_ID" > "$DVC_ROOT/parent.txt"\nexit 4\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    res = runner.invoke(app, ["pipeline", "--cold"])
    assert res.exit_code == 4, res.output
    parent_id = (workdir / "parent.txt").read_text().strip()
    run = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}").get_run(parent_id)
    assert run.data.tags["sep_bench.kind"] == "pipeline" and run.info.status == "FAILED"
    assert run.data.tags["sep_bench.detectors"] == "npr"


# ---- the UI in a browser -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(workdir):
    """start() -> URL of `mlflow server` on the project's DB (start it once the DB exists: a server and a
    command creating a fresh sqlite DB at the same time race through its schema migration)."""
    procs = []

    def start() -> str:
        port = _free_port()
        log = workdir / "mlflow-server.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited:\n" + log.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        return url
            except OSError:
                time.sleep(0.5)
        pytest.fail("mlflow server not healthy after 120 s")

    yield start
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def _chromium(url: str, profile_dir: Path, *, screenshot: Path | None = None) -> subprocess.Popen:
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", f"--user-data-dir={profile_dir}", "--virtual-time-budget=15000",
            "--window-size=1400,1700"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    return subprocess.Popen([*args, url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium)")
def test_mlflow_ui_shows_the_pipeline_runs_metrics_and_artifacts(workdir, monkeypatch, mlflow_server, tmp_path):
    client, exp, runs = _pipeline(workdir, monkeypatch)
    url = mlflow_server()
    base = f"{url}/#/experiments/{exp.experiment_id}/runs"
    ml = "?workflowType=machine_learning"  # the classic (model training) view, not the GenAI one
    ev = runs["evaluate"].info.run_id
    shot = tmp_path / "mlflow-evaluate-run.png"
    pages = {"evaluate": f"{base}/{ev}{ml}", "evaluate artifacts": f"{base}/{ev}/artifacts{ml}"}
    procs = {name: _chromium(u, tmp_path / f"chrome-{i}") for i, (name, u) in enumerate(pages.items())}
    procs["screenshot"] = _chromium(pages["evaluate"], tmp_path / "chrome-shot", screenshot=shot)
    dom = {}
    for name, p in procs.items():
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, f"chromium failed on {name}"
        dom[name] = out

    page = dom["evaluate"]
    assert "evaluate/npr/seed0" in page and runs["pipeline"].info.run_name in page  # the run, and its parent
    for metric in ("mean.acc", "mean.auc", "g1.acc", "g2.ap"):
        assert metric in page, metric
    assert "sep_bench.protocol_hash" in page and runs["evaluate"].data.tags["sep_bench.protocol_hash"] in page
    assert "seed0.json" in dom["evaluate artifacts"] and "seed0.parquet" in dom["evaluate artifacts"]
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("SEP_BENCH_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
