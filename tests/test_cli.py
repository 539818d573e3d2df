"""The CLI end to end on the tiny dataset, with MLflow tracking into the project's sqlite DB."""

import json

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from sep_bench.cli import app

runner = CliRunner()


def _ok(args):
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def test_train_evaluate_report_with_mlflow_runs(workdir):
    _ok(["train", "--detector", "npr"])
    _ok(["evaluate", "--detector", "npr"])
    res = _ok(["report"])
    assert "g1" in res.output and "Mean" in res.output

    md = (workdir / "results/tables/tiny_acc.md").read_text()
    assert md.splitlines()[0].split("|")[1:-1][-5].strip() == "Mean" and "| npr " in md  # then the cost columns
    assert (workdir / "results/tables/tiny_acc.csv").read_text().startswith("detector,g1,g2,Mean")
    assert (workdir / "results/plots/tiny_acc_heatmap.png").stat().st_size > 1000

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test/tiny")
    runs = {r.data.tags["sep_bench.kind"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"train", "evaluate"}
    for r in runs.values():
        assert r.info.status == "FINISHED"
        tags = r.data.tags
        assert tags["sep_bench.detector"] == "npr" and tags["sep_bench.profile"] == "tiny"
        assert tags["sep_bench.pretrained"] == "false" and len(tags["sep_bench.protocol_hash"]) == 16
        assert "git.commit" in tags and "version.torch" in tags
        assert r.data.params["recipe.optim.lr"] == "0.001"
    ev = runs["evaluate"]
    assert set(ev.data.metrics) >= {"g1.acc", "g2.ap", "mean.acc", "mean.auc"}
    metrics = json.loads((workdir / "results/metrics/tiny/npr/seed0.json").read_text())
    assert ev.data.metrics["mean.acc"] == pytest.approx(metrics["mean"]["acc"])
    arts = {a.path for a in client.list_artifacts(ev.info.run_id)}
    assert {"seed0.json", "seed0.parquet"} <= arts
    assert "val_acc" in runs["train"].data.metrics


def test_user_errors_are_one_line_with_exit_code_2(workdir):
    for args, needle in [
        (["train", "--detector", "ghost"], "no block detectors.ghost; defined: npr"),
        (["train", "--detector", "npr", "--params", "nope.yaml"], "nope.yaml: not found"),
        (["evaluate", "--detector", "npr", "--no-track", "--checkpoint", "missing.safetensors"], "not found"),
        (["report"], "no results of profile 'tiny'"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert needle in res.output and "Traceback" not in res.output


def test_failed_run_ends_failed_not_running(workdir):
    import yaml

    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["profiles"]["tiny"]["data"]["test_generators"] = ["g1", "missing_gen"]
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    _ok(["train", "--detector", "npr", "--no-track"])
    res = runner.invoke(app, ["evaluate", "--detector", "npr"])
    assert res.exit_code == 2 and "missing_gen" in res.output
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test/tiny")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED" and "missing_gen" in run.data.tags["sep_bench.error"]


def test_list_shows_registered_detectors_with_provenance(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    res = _ok(["list"])
    rows = {line.split("│")[1].strip(): line for line in res.output.splitlines() if line.count("│") > 3}
    assert "official" in rows["npr"] and "official-inference" in rows["fatformer"] and "paper" in rows["f3net"]
    assert "failed to load" not in res.output


def test_ui_serves_the_project_db_on_loopback(workdir, monkeypatch):
    seen = {}
    monkeypatch.setattr("subprocess.call", lambda cmd: seen.setdefault("cmd", cmd) and 0)
    runner.invoke(app, ["ui", "--port", "5123"])
    cmd = seen["cmd"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "5123" in cmd
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{workdir / 'mlflow.db'}"
