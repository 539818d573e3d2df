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


def test_progress_lines_count_stages_and_estimate_from_history(tmp_path):
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
    monkeypatch.setenv("FAKE_RC", "3")
    run = run_pipeline(dvc=_fake(tmp_path), out=io.StringIO(), times_file=tmp_path / "t.json", warm=False)
    assert run.returncode == 3
