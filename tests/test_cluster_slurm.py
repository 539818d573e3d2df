"""On a real SLURM cluster (scripts/slurm-local.sh start; .ci/run starts it): `sep-bench cluster submit` leaves
what a local `dvc repro` leaves, survives a preemption, cancels what depends on a failed stage, and a resubmission
runs only what is still out of date.

The mini pipeline and the comparisons are benchmarks/cluster.py's (which also measures the timings); where no
cluster answers, every test here skips with the reason. Job ids, the preemption and requeue, and the final
`dvc status` are printed to the terminal whatever pytest's capture setting.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sep_bench.cluster.sbatch import MARK
from tests.conftest import REPO

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _cluster_answers() -> str | None:
    """None when `sinfo` answers with a usable node, else why not."""
    try:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"no SLURM client here ({err})"
    if res.returncode != 0 or not res.stdout.strip():
        return f"no SLURM cluster answers ({(res.stderr or 'no nodes').strip()[:200]})"
    if not any(s.startswith(("idle", "mixed", "allocated")) for s in res.stdout.split()):
        return f"the SLURM node is not usable: {res.stdout.split()}"
    return None


@pytest.fixture(scope="module")
def slurm():
    why = _cluster_answers()
    if why:
        pytest.skip(f"{why}; `scripts/slurm-local.sh start` starts a single-node cluster (needs root and apt-get)")


@pytest.fixture
def say(capsys):
    def _say(msg: str) -> None:
        with capsys.disabled():
            print(f"\n[cluster test] {msg}", end="", flush=True)
    return _say


@pytest.mark.timeout(2400)  # two runs of the small pipeline: 17 min on this 2-core machine under load 13
def test_mini_pipeline_on_slurm_equals_a_local_run(slurm, tmp_path, say):
    sys.path.insert(0, str(REPO))
    from benchmarks import cluster as bench

    started = time.perf_counter()
    (tmp_path / "local").mkdir(), (tmp_path / "cluster").mkdir()
    local_dir, cluster_dir = tmp_path / "local", tmp_path / "cluster"
    env_a, env_b = bench.make_copy(local_dir), bench.make_copy(cluster_dir)
    local = bench.run_local(local_dir, env_a)
    say(f"local dvc repro: {local['seconds']} s")
    run = bench.run_cluster(cluster_dir, env_b, say)
    states = run["states"]

    assert set(states) == set(bench.STAGES)
    assert all(s["state"] == "COMPLETED" for s in states.values()), _failed_jobs(states, run["logs"], cluster_dir)
    # the preempted training ran twice and resumed from its checkpoint
    assert states[bench.PREEMPT_STAGE]["restarts"] >= 1
    attempts = [line for line in run["logs"].splitlines()
                if line.startswith("[sep-bench cluster]") and f"stage {bench.PREEMPT_STAGE} " in line]
    assert len(attempts) == 2 and "attempt 2" in attempts[1], attempts
    assert "resuming npr at epoch 1 step 0" in run["logs"]
    # DVC outlived the preemption's SIGTERM (the job script's `trap '' TERM`): it recorded the stopped stage command
    # and released its own lock entries, so the second attempt found none of a killed DVC to remove
    first, second = run["logs"].split(attempts[1], 1)
    assert re.search(rf"ERROR: failed to reproduce '{bench.PREEMPT_STAGE}': failed to run: +sep-bench train .*"
                     r"exited with \d+", first), first[-2000:]
    assert "had been killed. Auto removed it from the lock file" not in second.split(MARK, 1)[0]

    pending, printed = bench.dvc_status(cluster_dir, env_b)
    say("final dvc status: " + (printed.strip().replace("\n", " / ") or "clean"))
    assert pending == {}  # every pipeline stage up to date (data.dvc, with no data pulled, is not a stage)

    locks = bench.compare_locks(local_dir, cluster_dir)
    assert locks["equal"], locks["stages"]
    tables = bench.compare_tables(local_dir, cluster_dir)
    assert not tables["different"], tables["different"]
    assert {"mini_robustness.md", "mini_paired.md", "mini_learning.md"} <= set(tables["identical"])
    say(f"dvc.lock: {len(locks['stages'])} stage entries equal to the local run's ({len(locks['measured'])} paths "
        f"differ in measured times only); tables: {len(tables['identical'])} byte-identical, "
        f"{len(tables['measured_cells_only'])} identical but for img/s and memory")

    runs = bench.mlflow_runs(cluster_dir)
    assert runs["parents"] == [(run["parent_run_id"], "FINISHED")]
    finished = [(name, parent) for name, status, parent in runs["stage_runs"] if status == "FINISHED"]
    assert sorted(finished) == sorted((f"{k}/{d}/seed0", run["parent_run_id"])
                                      for k in ("train", "evaluate") for d in bench.DETECTORS)
    # the preempted attempt, ended by its SIGTERM (sep_bench.error: _Terminated), under the same parent
    stopped = [(name, status, parent) for name, status, parent in runs["stage_runs"] if status != "FINISHED"]
    assert stopped == [("train/npr/seed0", "FAILED", run["parent_run_id"])], stopped
    assert runs["runs_in_default"] == 0

    out = subprocess.run(["sep-bench", "cluster", "submit"], cwd=cluster_dir, env=env_b, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and "nothing to submit" in out.stdout, out.stdout + out.stderr
    say(f"resubmission: {out.stdout.strip()}; test wall time {time.perf_counter() - started:.0f} s")


def _failed_jobs(states: dict, logs: str, root: Path) -> str:
    """What failed: each unfinished stage's state, the last lines its job printed (every attempt), DVC's lock
    table and the SLURM daemon's errors."""
    out = []
    for stage, st in states.items():
        if st["state"] != "COMPLETED":
            out.append(f"{stage}: job {st['job']} {st['state']} ({st['reason']}), restarts {st['restarts']}")
    blocks, current = {}, None
    for line in logs.splitlines():
        if line.startswith(MARK):
            current = line.split(" stage ", 1)[1].split()[0]
        if current:
            blocks.setdefault(current, []).append(line)
    for stage in (s for s, st in states.items() if st["state"] != "COMPLETED"):
        out.append(f"--- {stage}'s log (tail) ---\n" + "\n".join(blocks.get(stage, ["(no log)"])[-60:]))
    rwlock = root / ".dvc/tmp/rwlock"  # DVC's lock table: empty if a DVC process died while rewriting it
    if rwlock.is_file():
        out.append(f"--- {rwlock} ({rwlock.stat().st_size} bytes) ---\n{rwlock.read_bytes()[:600]!r}")
    daemon = Path("/var/log/slurm/slurmd.log")  # a launch that failed (e.g. a revoked credential) is logged there
    if daemon.is_file():
        errors = [line for line in daemon.read_text(errors="replace").splitlines()
                  if "error" in line.lower() and "pmix" not in line.lower() and "mpi:" not in line.lower()]
        out.append("--- slurmd.log errors (tail) ---\n" + "\n".join(errors[-15:]))
    return "\n".join(out)


DVC_YAML = {"stages": {
    "first": {"cmd": "python -c \"import sys; open('a.txt', 'w').write('a'); sys.exit(int(open('fail').read()))\"",
              "deps": ["fail"], "outs": ["a.txt"]},
    "second": {"cmd": "python -c \"open('b.txt', 'w').write(open('a.txt').read() * 2)\"",
               "deps": ["a.txt"], "outs": ["b.txt"]},
    "apart": {"cmd": "python -c \"open('c.txt', 'w').write('c')\"", "outs": ["c.txt"]},
}}


def test_failed_stage_cancels_its_dependants_and_resubmission_runs_what_is_left(slurm, tmp_path, say):
    from sep_bench.cluster.status import wait
    from sep_bench.cluster.submit import load_submission, submit
    from sep_bench.protocol import load_params

    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], [str(Path(sys.executable).parent / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, env=env, timeout=120)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (tmp_path / "fail").write_text("1")
    params = load_params(REPO / "params.yaml", overrides={"cluster.default.time": "00:05:00"})
    dvc = str(Path(sys.executable).parent / "dvc")

    sub = submit(tmp_path, params, dvc=dvc, track=False)
    states = wait(sub, timeout_s=300, poll_s=0.5)
    say("failing stage: " + ", ".join(f"{s}={st.job} {st.state} ({st.reason})" for s, st in states.items()))
    assert states["first"].state == "FAILED"
    assert states["second"].state == "CANCELLED" and "Dependency" in states["second"].reason
    assert states["apart"].state == "COMPLETED"

    (tmp_path / "fail").write_text("0")
    again = submit(tmp_path, params, dvc=dvc, track=False)
    assert again.stages == ["first", "second"]  # `apart` is up to date
    states = wait(load_submission(tmp_path), timeout_s=300, poll_s=0.5)
    assert all(st.state == "COMPLETED" for st in states.values()), states
    assert (tmp_path / "b.txt").read_text() == "aa"
    assert submit(tmp_path, params, dvc=dvc, track=False) is None
