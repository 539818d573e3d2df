"""sep_bench.cluster without a cluster: planning from DVC's output, job scripts, settings, state parsing, and the
tracking hand-over (SEP_BENCH_PARENT_RUN_ID, concurrent experiment creation). The real cluster:
tests/test_cluster_slurm.py."""

from __future__ import annotations

import json

import pytest

from sep_bench.cluster.plan import Graph, group_jobs, parse_dot, parse_status, stages_to_run, waits
from sep_bench.cluster.sbatch import JobEnv, dependency_option, render_script, sbatch_options
from sep_bench.protocol.cluster import ClusterSettings, check_launcher
from sep_bench.cluster.status import parse_sacct, parse_scontrol
from sep_bench.cluster.submit import ClusterError, check_dvc_lock_table, submit
from sep_bench.protocol import ProtocolError, load_params
from tests.conftest import REPO

DOT = """strict digraph {
"data.dvc";
"data";
"reconstruct";
"train@npr-0";
"train@cnnspot-0";
"evaluate@npr-0";
"evaluate@cnnspot-0";
"report";
"data" -> "reconstruct";
"data" -> "train@npr-0";
"reconstruct" -> "train@npr-0";
"data" -> "train@cnnspot-0";
"reconstruct" -> "train@cnnspot-0";
"train@npr-0" -> "evaluate@npr-0";
"data" -> "evaluate@npr-0";
"reconstruct" -> "evaluate@npr-0";
"train@cnnspot-0" -> "evaluate@cnnspot-0";
"data" -> "evaluate@cnnspot-0";
"reconstruct" -> "evaluate@cnnspot-0";
"evaluate@npr-0" -> "report";
"evaluate@cnnspot-0" -> "report";
}
"""


@pytest.fixture
def graph() -> Graph:
    return parse_dot(DOT)


def test_dot_is_read_without_data_sources(graph):
    assert graph.stages[0] == "data" and "data.dvc" not in graph.stages
    assert graph.upstream["evaluate@npr-0"] == {"train@npr-0", "data", "reconstruct"}


def test_everything_downstream_of_a_changed_stage_runs(graph):
    assert stages_to_run(graph, {"train@npr-0"}) == ["train@npr-0", "evaluate@npr-0", "report"]
    assert stages_to_run(graph, set()) == []
    assert len(stages_to_run(graph, {"data"})) == 7


def test_status_json_keeps_only_pipeline_stages(graph):
    text = '{"data.dvc": [{"changed outs": {}}], "dvc.yaml:train@npr-0": ["changed deps"], "report": []}'
    assert parse_status(text, graph) == {"train@npr-0", "report"}
    with pytest.raises(RuntimeError, match="not JSON"):
        parse_status("<html>", graph)


def test_waits_are_reduced_to_the_nearest_running_stages(graph):
    w = waits(graph, stages_to_run(graph, {"data"}))
    assert w["train@npr-0"] == {"reconstruct"}  # not also data, which reconstruct waits for
    assert w["evaluate@npr-0"] == {"train@npr-0"}
    assert w["report"] == {"evaluate@npr-0", "evaluate@cnnspot-0"}
    # a stage that does not run is looked through: evaluate waits for nothing when only it runs
    assert waits(graph, ["evaluate@npr-0"]) == {"evaluate@npr-0": frozenset()}


def test_groups_are_arrays_and_evaluation_pairs_with_training(graph):
    groups = group_jobs(graph, stages_to_run(graph, {"data"}))
    assert [(g.kind, g.stages, g.paired) for g in groups] == [
        ("data", ["data"], False), ("reconstruct", ["reconstruct"], False),
        ("train", ["train@npr-0", "train@cnnspot-0"], False),
        ("evaluate", ["evaluate@npr-0", "evaluate@cnnspot-0"], True),  # task i after train task i
        ("report", ["report"], False)]
    job_of = {"data": "1", "reconstruct": "2", "train@npr-0": "3_0", "train@cnnspot-0": "3_1",
              "evaluate@npr-0": "4_0", "evaluate@cnnspot-0": "4_1"}
    assert dependency_option(groups[2], job_of) == "--dependency=afterok:2"
    assert dependency_option(groups[3], job_of) == "--dependency=aftercorr:3"
    assert dependency_option(groups[4], job_of) == "--dependency=afterok:4_0:4_1"
    assert dependency_option(groups[0], job_of) is None


def test_one_changed_training_is_a_single_job_chain(graph):
    groups = group_jobs(graph, stages_to_run(graph, {"train@cnnspot-0"}))
    assert [(g.stages, g.after, g.paired) for g in groups] == [
        (["train@cnnspot-0"], [], False), (["evaluate@cnnspot-0"], ["train@cnnspot-0"], False),
        (["report"], ["evaluate@cnnspot-0"], False)]


def test_different_resources_split_an_array(graph):
    shape = {"train@npr-0": "1gpu", "train@cnnspot-0": "4gpu"}.get
    groups = group_jobs(graph, ["train@npr-0", "train@cnnspot-0"], shape=lambda s: shape(s))
    assert [g.stages for g in groups] == [["train@npr-0"], ["train@cnnspot-0"]]


def test_job_script_runs_the_stage_through_dvc_requeueable(graph, tmp_path):
    settings = ClusterSettings.model_validate({"partition": "gpu", "array_throttle": 4,
                                               "train": {"gpus": 2, "mem": "32G"},
                                               "extra_sbatch": ["--mail-type=FAIL"]})
    (train,) = [g for g in group_jobs(graph, stages_to_run(graph, {"data"})) if g.kind == "train"]
    env = JobEnv(root=tmp_path, bin_dir=tmp_path / "bin", log_dir=tmp_path / "logs", parent_run_id="abc123",
                 tracking_uri=None)
    opts = sbatch_options(train, settings.resources("train", "npr"), settings, env)
    for want in ("--requeue", "--kill-on-invalid-dep=yes", "--open-mode=append", "--partition=gpu",
                 "--gpus-per-node=2", "--mem=32G", "--cpus-per-task=1", "--time=04:00:00", "--array=0-1%4",
                 "--mail-type=FAIL", f"--chdir={tmp_path}"):
        assert want in opts
    script = render_script(train, opts, env)
    assert "STAGES=(train@npr-0 train@cnnspot-0)" in script
    assert 'exec dvc --wait-for-lock repro --single-item "$STAGE"' in script
    # DVC ignores SIGTERM from there on, so a preemption never kills it halfway through rewriting its lock table
    assert script.index("trap '' TERM") < script.index("exec dvc")
    assert "export SEP_BENCH_PARENT_RUN_ID=abc123" in script and "unset MLFLOW_TRACKING_URI" in script
    (report,) = [g for g in group_jobs(graph, stages_to_run(graph, {"data"})) if g.kind == "report"]
    script = render_script(report, sbatch_options(report, settings.resources("report", ""), settings, env), env)
    assert script.rstrip().endswith('repro --single-item "$STAGE"\nsep-bench cluster end-parent abc123')


def test_cluster_settings_are_validated_in_params_yaml():
    p = load_params(REPO / "params.yaml", overrides={"cluster.train.gpus": 8,
                                                     "cluster.detectors": {"sep": {"train": {"gpus": 2}}}})
    assert p.cluster.resources("train", "npr").gpus == 8 and p.cluster.resources("train", "sep").gpus == 2
    assert p.cluster.resources("evaluate", "sep").gpus is None
    with pytest.raises(ProtocolError, match=r"cluster\.trian: unknown key; allowed: partition"):
        load_params(REPO / "params.yaml", overrides={"cluster.trian": {"gpus": 1}})
    with pytest.raises(ProtocolError, match=r"cluster\.train\.time"):
        load_params(REPO / "params.yaml", overrides={"cluster.train.time": "two hours"})
    with pytest.raises(ProtocolError, match="unknown stage kind"):
        load_params(REPO / "params.yaml", overrides={"cluster.detectors": {"sep": {"trains": {}}}})
    with pytest.raises(ProtocolError, match="--name=value"):
        load_params(REPO / "params.yaml", overrides={"cluster.extra_sbatch": ["-p gpu\n#SBATCH --x"]})


def test_cluster_settings_change_no_protocol_hash():
    from sep_bench.protocol import resolve

    base = load_params(REPO / "params.yaml")
    other = load_params(REPO / "params.yaml", overrides={"cluster.train.gpus": 8, "cluster.partition": "x"})
    assert resolve(base, "npr", seed=0).protocol_hash() == resolve(other, "npr", seed=0).protocol_hash()


def test_launcher_needs_as_many_gpus_as_processes():
    check_launcher("torchrun --nproc_per_node=4 --no-python", 4, "train@sep-0")
    check_launcher("", None, "train@sep-0")
    with pytest.raises(ValueError, match="starts 8 processes per node but the job asks for 2"):
        check_launcher("torchrun --nproc_per_node=8 --no-python", 2, "train@sep-0")


def test_scontrol_and_sacct_lines_are_parsed_defensively():
    text = ("JobId=12 ArrayJobId=12 ArrayTaskId=1-3%2 JobState=PENDING Reason=Dependency Restarts=0 RunTime=00:00:00\n"
            "JobId=13 ArrayJobId=12 ArrayTaskId=0 JobState=RUNNING Reason=None Restarts=1 RunTime=00:01:05 "
            "ExitCode=0:0\n"
            "JobId=20 JobState=COMPLETED Reason=None Restarts=0 RunTime=00:00:07 ExitCode=0:0\n"
            "garbage line JobState=FAILED\nJobId=abc JobState=X\n")
    states = parse_scontrol(text)
    assert sorted(states) == ["12_0", "12_1", "12_2", "12_3", "20"]
    assert states["12_0"].state == "RUNNING" and states["12_0"].restarts == 1
    assert states["12_3"].reason == "Dependency" and states["20"].elapsed == "00:00:07"
    sacct = parse_sacct("30|COMPLETED|00:00:03|0:0\n31_1|CANCELLED by 0|00:00:00|0:0\nbad|x\n'; drop|X|Y|Z\n")
    assert sorted(sacct) == ["30", "31_1"] and sacct["31_1"].state == "CANCELLED"


# ---- tracking: the submitter's parent run and concurrent experiment creation ---------------------------------------


def test_jobs_nest_under_the_parent_run_the_submitter_hands_over(tmp_path, monkeypatch, workdir):
    """The submitter's parent id reaches each job as SEP_BENCH_PARENT_RUN_ID; the CLI reads it once and the job's
    run nests under it; the report job's `cluster end-parent` ends it."""
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from sep_bench import tracking
    from sep_bench.cli import app
    from sep_bench.cli.common import PARENT_RUN_ENV, tracking as cli_tracking
    from sep_bench.protocol import load_params

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    parent = tracking.start_parent(uri, "test/tiny", "pipeline/slurm test", {"sep_bench.kind": "pipeline"})
    monkeypatch.setenv(PARENT_RUN_ENV, parent)
    where = cli_tracking(load_params(workdir / "params.yaml"), None, False)
    assert where.parent_run_id == parent and where.uri == uri
    res = CliRunner().invoke(app, ["train", "--detector", "npr"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test/tiny")
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert [r.data.tags["sep_bench.kind"] for r in children] == ["train"]
    res = CliRunner().invoke(app, ["cluster", "end-parent", parent], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert client.get_run(parent).info.status == "FINISHED"


def test_experiment_created_concurrently_is_reread(tmp_path, monkeypatch):
    """A server store has no file lock: another job may create the experiment between our read and our create."""
    from mlflow.tracking import MlflowClient

    from sep_bench import tracking

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_store(uri)
    real = MlflowClient(uri)
    theirs = real.create_experiment("sep-bench/mini")

    class LateReader:  # the first read happens before the other job's create
        def __init__(self):
            self.reads = 0

        def get_experiment_by_name(self, name):
            self.reads += 1
            return None if self.reads == 1 else real.get_experiment_by_name(name)

        def __getattr__(self, name):
            return getattr(real, name)

    assert tracking.get_experiment(LateReader(), "http://server:5000", "sep-bench/mini") == theirs


def test_a_chain_of_per_item_stages_pairs_each_with_the_one_before():
    dot = "\n".join(['"data";'] + [f'"data" -> "{k}@{d}";' for k in ("train",) for d in "ab"]
                    + [f'"train@{d}" -> "evaluate@{d}";' for d in "ab"]
                    + [f'"evaluate@{d}" -> "plot@{d}";' for d in "ab"])
    groups = group_jobs(parse_dot(dot), stages_to_run(parse_dot(dot), {"data"}))
    assert [(g.kind, g.stages, g.paired) for g in groups] == [
        ("data", ["data"], False), ("train", ["train@a", "train@b"], False),
        ("evaluate", ["evaluate@a", "evaluate@b"], True), ("plot", ["plot@a", "plot@b"], True)]


def test_status_without_a_submission_is_one_clear_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sep_bench.cli import app

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    res = CliRunner().invoke(app, ["cluster", "status"])
    assert res.exit_code == 2, res.output
    assert "error: no cluster submission in" in res.output and "Traceback" not in res.output
    (tmp_path / "runs/cluster").mkdir(parents=True)
    (tmp_path / "runs/cluster/latest").write_text("x\n")
    (tmp_path / "runs/cluster/x").mkdir()
    (tmp_path / "runs/cluster/x/submission.json").write_text('{"id": 1, "evil": true}')
    res = CliRunner().invoke(app, ["cluster", "status"])
    assert res.exit_code == 2 and "not a readable submission record" in res.output, res.output
    (tmp_path / "runs/cluster/x/submission.json").write_text(json.dumps({
        "id": "x", "root": str(tmp_path), "created": "", "parent_run_id": None, "tracking_uri": "", "experiment": "",
        "stages": ["data"], "jobs": {"data": "1; rm -rf /"}}))
    res = CliRunner().invoke(app, ["cluster", "status"])
    assert res.exit_code == 2 and "do not match" in res.output, res.output


def test_a_damaged_dvc_lock_table_is_refused_with_its_remedy(tmp_path):
    table = tmp_path / ".dvc/tmp/rwlock"
    check_dvc_lock_table(tmp_path)  # no table yet: DVC creates it
    table.parent.mkdir(parents=True)
    for damaged in (b"", b'{"write": {"/w/runs/mini/npr', b"[]", b"\xff\xfe"):  # empty, cut, not an object, not UTF-8
        table.write_bytes(damaged)
        with pytest.raises(ClusterError, match=r"rwlock is damaged .* remove it \(rm \.dvc/tmp/rwlock\)"):
            submit(tmp_path, params=None)  # refused before anything is planned or submitted
    table.write_text('{"read": {}}')
    check_dvc_lock_table(tmp_path, reads=1)
