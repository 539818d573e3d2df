"""`sep-bench pipeline`'s progress lines and stage timings, with a stand-in for dvc."""

import io
import json
import stat

from sep_bench.runner import run_pipeline

FAKE_DVC = """#!/usr/bin/env bash
if [ "$1" = stage ]; then printf 'data\\ntrain@a-0\\nevaluate@a-0\\nreport\\n'; exit 0; fi
echo "Stage 'data' didn't change, skipping"
echo "Running stage 'train@a-0':"
echo "> sep-bench train --detector a"
echo "Running stage 'evaluate@a-0':"
echo "Running stage 'report':"
exit ${FAKE_RC:-0}
"""


def _fake(tmp_path):
    dvc = tmp_path / "dvc"
    dvc.write_text(FAKE_DVC)
    dvc.chmod(dvc.stat().st_mode | stat.S_IEXEC)
    return str(dvc)


def test_progress_lines_count_stages_and_estimate_from_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the runner reads and records the fingerprint of the working directory
    times = tmp_path / "times.json"
    times.write_text(json.dumps({"evaluate@a-0": 30.0, "report": 5.0}))
    ticks = iter(range(0, 1000, 10))
    out = io.StringIO()
    run = run_pipeline(dvc=_fake(tmp_path), out=out, clock=lambda: float(next(ticks)), times_file=times, warm=False)
    text = out.getvalue()
    assert run.returncode == 0 and run.skipped == ["data"]
    assert set(run.stages) == {"train@a-0", "evaluate@a-0", "report"}
    assert "[stage 2/4] train@a-0 · 20s elapsed · ~35s left" in text  # the remaining two stages' last times
    assert "[stage 4/4] report" in text and "3 stage(s) run, 1 up to date" in text
    assert set(json.loads(times.read_text())) == {"train@a-0", "evaluate@a-0", "report"}


def test_failure_is_passed_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_RC", "3")
    run = run_pipeline(dvc=_fake(tmp_path), out=io.StringIO(), times_file=tmp_path / "t.json", warm=False)
    assert run.returncode == 3


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
