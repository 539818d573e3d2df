"""MLflow grouping (one parent run per pipeline execution) and the MLflow UI in headless Chromium.

The browser test starts `mlflow server` on the tiny pipeline's sqlite DB and loads the run pages in headless
Chromium (Debian package `chromium`); it is skipped, saying so, when Chromium is not installed. It saves a
screenshot of the evaluation run's page; set SEP_BENCH_SCREENSHOT_DIR to keep a copy.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.tracking import PIPELINE_ENV, start_parent

runner = CliRunner()
CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)


def _ok(args):
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def _pipeline(workdir, monkeypatch, pid="test-pipeline-1"):
    """train -> evaluate -> report as three commands of one pipeline execution (as DVC stages would run)."""
    monkeypatch.setenv(PIPELINE_ENV, pid)
    _ok(["train", "--detector", "npr"])
    _ok(["evaluate", "--detector", "npr"])
    _ok(["report", "--n-boot", "200"])
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test/tiny")
    runs = {r.data.tags["sep_bench.kind"]: r for r in client.search_runs([exp.experiment_id])}
    return client, exp, runs


def test_pipeline_runs_nest_under_one_parent_that_the_report_ends(workdir, monkeypatch):
    client, exp, runs = _pipeline(workdir, monkeypatch)
    assert set(runs) == {"pipeline", "train", "evaluate"}
    parent = runs["pipeline"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sep_bench.pipeline_id"] == "test-pipeline-1"
    assert parent.data.tags["sep_bench.detectors"] == "npr" and parent.data.tags["sep_bench.test_generators"] == "g1,g2"
    for kind in ("train", "evaluate"):
        assert runs[kind].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert runs[kind].data.tags["sep_bench.protocol_hash"] and runs[kind].data.tags["sep_bench.detector"] == "npr"
    assert "npr.mean.acc" in parent.data.metrics
    tables = {a.path for a in client.list_artifacts(parent.info.run_id, "report/tables")}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "report/plots")}
    assert "report/tables/tiny_acc.md" in tables and "report/plots/tiny_acc_heatmap.png" in plots
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"

    # the next execution gets its own parent, even when only the report stage runs (the others were cached)
    monkeypatch.setenv(PIPELINE_ENV, "test-pipeline-2")
    _ok(["report", "--n-boot", "200"])
    parents = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags["sep_bench.kind"] == "pipeline"]
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in parents)
    second = next(r for r in parents if r.data.tags["sep_bench.pipeline_id"] == "test-pipeline-2")
    assert client.list_artifacts(second.info.run_id, "report/tables")


def test_a_failing_stage_fails_its_pipeline_parent(workdir, monkeypatch):
    monkeypatch.setenv(PIPELINE_ENV, "test-pipeline-fail")
    res = runner.invoke(app, ["evaluate", "--detector", "npr"])  # no checkpoint: the stage fails
    assert res.exit_code == 2
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test/tiny")
    runs = {r.data.tags["sep_bench.kind"]: r for r in client.search_runs([exp.experiment_id])}
    assert runs["evaluate"].info.status == "FAILED" and runs["pipeline"].info.status == "FAILED"
    assert "evaluate/npr/seed0" in runs["pipeline"].data.tags["sep_bench.error"]


def test_stages_of_one_dvc_process_share_a_pipeline_id(tmp_path):
    """Each DVC stage is its own process; they share the id of the `dvc` process that runs them."""
    fake = tmp_path / "dvc"  # stands in for DVC: runs two "stages" through a shell, as DVC does
    probe = "from sep_bench.tracking import pipeline_id; print(pipeline_id())"
    fake.write_text(
        "import os, subprocess, sys\n"
        f"cmd = {sys.executable!r} + ' -c \"{probe}\"'\n"
        "for stage in ('train@a', 'evaluate@a'):\n"
        "    subprocess.run(['/bin/sh', '-c', cmd], env={**os.environ, 'DVC_STAGE': stage}, check=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (PIPELINE_ENV, "DVC_STAGE")}

    def ids():
        out = subprocess.run([sys.executable, str(fake), "repro"], env=env, capture_output=True, text=True,
                             check=True, timeout=120).stdout.split()
        assert len(out) == 2 and out[0].startswith("dvc:"), out
        return out

    first, second = ids(), ids()
    assert first[0] == first[1] and second[0] == second[1] and first[0] != second[0]
    # outside DVC (and with no exported id) nothing is grouped
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


def test_a_parent_left_running_by_a_finished_dvc_process_is_ended_by_the_next(tmp_path):
    """E.g. the report stage was cached: nobody ended that execution's parent. The next execution does."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"dvc:{platform.node()}:{gone.pid}:1"  # a pid with another start time: that process is gone
    alive_proc = psutil.Process()
    alive = f"dvc:{platform.node()}:{alive_proc.pid}:{int(alive_proc.create_time() * 1000)}"
    tags = {"sep_bench.kind": "pipeline"}
    old = start_parent(uri, "e/x", dead, "old", tags)
    running = start_parent(uri, "e/x", alive, "running", tags)
    new = start_parent(uri, "e/x", "explicit-id", "new", tags)
    assert start_parent(uri, "e/x", "explicit-id", "again", tags) == new  # looked up, not duplicated
    client = MlflowClient(tracking_uri=uri)
    status = {r: client.get_run(r).info.status for r in (old, running, new)}
    assert status == {old: "FINISHED", running: "RUNNING", new: "RUNNING"}
    assert "ended by the next pipeline execution" in client.get_run(old).data.tags["sep_bench.note"]


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
