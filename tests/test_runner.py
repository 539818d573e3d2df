"""`sep-bench pipeline`'s progress lines and stage timings, with a stand-in for dvc.

The stand-in does what DVC and the stage commands do that the runner relies on: it lists the stages for
``dvc stage list --name-only``, and each stage it "runs" appends its start to ``$SEP_BENCH_STAGE_LOG``
(`sep_bench.stage_log`, as `sep_bench.main` does); its console text is not read.
"""

import io
import json
import os
import stat
import subprocess
import sys

from sep_bench import stage_log
from sep_bench.runner import run_pipeline

FAKE_DVC = """#!/usr/bin/env bash
if [ "$1" = stage ]; then printf 'data\\ntrain@a-0\\nevaluate@a-0\\nreport\\n'; exit 0; fi
echo "Stage 'data' didn't change, skipping"
for s in train@a-0:10 evaluate@a-0:20 report:50; do
  echo "{\\"stage\\": \\"${s%%:*}\\", \\"t\\": ${s##*:}}" >> "$SEP_BENCH_STAGE_LOG"
done
exit ${FAKE_RC:-0}
"""


def _fake(tmp_path):
    dvc = tmp_path / "dvc"
    dvc.write_text(FAKE_DVC)
    dvc.chmod(dvc.stat().st_mode | stat.S_IEXEC)
    return str(dvc)


def _clock(*values):
    ticks = iter(values)
    return lambda: float(next(ticks))


def test_progress_lines_count_stages_and_estimate_from_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the runner reads and records the fingerprint of the working directory
    times = tmp_path / "times.json"
    times.write_text(json.dumps({"evaluate@a-0": 30.0, "report": 5.0}))
    out = io.StringIO()
    # clock: the run's start (twice: before the fingerprint, before DVC), then DVC's exit
    run = run_pipeline(dvc=_fake(tmp_path), out=out, clock=_clock(0, 0, 60), times_file=times, warm=False)
    text = out.getvalue()
    assert run.returncode == 0 and run.skipped == ["data"]
    assert run.stages == {"train@a-0": 10.0, "evaluate@a-0": 30.0, "report": 10.0}
    assert "[stage 2/4] train@a-0 · 10s elapsed · ~35s left" in text  # the remaining two stages' last times
    assert "[stage 4/4] report · 50s elapsed" in text and "3 stage(s) run, 1 up to date" in text
    assert "didn't change" not in text  # DVC's own output goes to the terminal, unread
    assert set(json.loads(times.read_text())) == {"train@a-0", "evaluate@a-0", "report"}


def test_failure_is_passed_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_RC", "3")
    run = run_pipeline(dvc=_fake(tmp_path), out=io.StringIO(), times_file=tmp_path / "t.json", warm=False)
    assert run.returncode == 3 and run.skipped == []


def test_before_dvc_adds_to_the_stages_environment_and_is_not_called_on_the_no_op_path(tmp_path, monkeypatch):
    from sep_bench import fingerprint

    monkeypatch.chdir(tmp_path)
    dvc = tmp_path / "dvc"
    dvc.write_text('#!/usr/bin/env bash\n[ "$1" = stage ] && exit 0\necho "$SEP_BENCH_PARENT_RUN_ID" > seen.txt\n')
    dvc.chmod(dvc.stat().st_mode | stat.S_IEXEC)
    calls = []

    def before():
        calls.append(1)
        return {"SEP_BENCH_PARENT_RUN_ID": "abc123"}

    run = run_pipeline(dvc=str(dvc), out=io.StringIO(), times_file=tmp_path / "t.json", warm=False, before_dvc=before)
    assert run.returncode == 0 and (tmp_path / "seen.txt").read_text().strip() == "abc123" and calls == [1]
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    fingerprint.record(fingerprint.fingerprint())
    run_pipeline(dvc=str(tmp_path / "no-such-dvc"), out=io.StringIO(), times_file=tmp_path / "t.json", warm=False,
                 before_dvc=before)
    assert calls == [1]


def test_nothing_changed_since_the_last_complete_run_skips_dvc(tmp_path, monkeypatch):
    """A recorded fingerprint equal to the tree's: no DVC process at all (the stand-in would fail if started)."""
    from sep_bench import fingerprint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  a:\n    cmd: x\n    deps: [in.txt]\n    outs: [out.txt]\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  a:\n    cmd: x\n    deps:\n    - path: in.txt\n"
                                       "    outs:\n    - path: out.txt\n")
    (tmp_path / "in.txt").write_text("1")
    (tmp_path / "out.txt").write_text("2")
    fingerprint.record(fingerprint.fingerprint())
    out = io.StringIO()
    run = run_pipeline(dvc=str(tmp_path / "no-such-dvc"), out=out, times_file=tmp_path / "t.json", warm=False)
    assert run.returncode == 0 and not run.stages and "0 stage(s) run" in out.getvalue()
    (tmp_path / "in.txt").write_text("changed")  # now DVC must decide: the stand-in runs
    run = run_pipeline(dvc=_fake(tmp_path), out=io.StringIO(), times_file=tmp_path / "t.json", warm=False)
    assert list(run.stages) == ["train@a-0", "evaluate@a-0", "report"]


def test_a_stage_command_records_its_start_only_under_the_pipeline_and_on_rank_0(tmp_path):
    log = tmp_path / "stages.jsonl"
    assert not stage_log.record_start({"DVC_STAGE": "train@a-0"})  # no log named: not under `sep-bench pipeline`
    assert not stage_log.record_start({stage_log.ENV: str(log)})  # not a DVC stage
    assert not stage_log.record_start({stage_log.ENV: str(log), "DVC_STAGE": "x", "RANK": "1"})
    assert stage_log.record_start({stage_log.ENV: str(log), "DVC_STAGE": "train@a-0"})
    with log.open("a") as fh:
        fh.write("not json\n{\"stage\": \"half")  # a malformed line is skipped, a partial one waits
    events, offset = stage_log.read_new(log, 0)
    assert [e["stage"] for e in events] == ["train@a-0"] and offset < log.stat().st_size
    with log.open("a") as fh:
        fh.write("\n")  # the partial line completed, still malformed
    # the real entry point records before it parses anything (here: a command that fails at once)
    env = {**os.environ, stage_log.ENV: str(log), "DVC_STAGE": "data", "SEP_BENCH_WARM": ""}
    subprocess.run([sys.executable, "-m", "sep_bench.main", "no-such-command"], env=env, capture_output=True)
    assert [e["stage"] for e in stage_log.read_new(log, offset)[0]] == ["data"]


def test_the_warm_server_gets_the_environment_the_stages_get(monkeypatch, tmp_path):
    """Every variable `sep-bench pipeline` adds for the stages (the stage log, the parent run) is in the warm
    server's environment too; otherwise the server declines every stage as 'environment differs'."""
    from sep_bench import runner

    seen = {}

    class Server:
        proc = None

        def __init__(self, env, log):
            seen["server"], self.env = dict(env), env

        def start(self):
            pass

        def stop(self):
            pass

    def run_dvc(repro, *, env, log, **kwargs):
        seen["dvc"], seen["log"] = dict(env), log
        return runner.PipelineRun(returncode=1, seconds=0.0)

    monkeypatch.setattr(runner, "WarmServer", Server)
    monkeypatch.setattr(runner, "_run_dvc", run_dvc)
    monkeypatch.chdir(tmp_path)
    runner.run_pipeline(["--dry"], out=io.StringIO(), before_dvc=lambda: {"SEP_BENCH_PARENT_RUN_ID": "abc"})
    assert seen["server"] == seen["dvc"]
    assert seen["dvc"][stage_log.ENV] == str(seen["log"]) and seen["dvc"]["SEP_BENCH_PARENT_RUN_ID"] == "abc"
