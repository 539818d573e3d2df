"""Warm starts (sep_bench.warm): a stage command run in a fork of the server behaves like a normal start."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sep_bench import warm

ROOT = Path(__file__).resolve().parents[1]


def _cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "sep_bench.main", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, **kw)


def test_env_difference_ignores_what_dvc_and_shells_set_per_command():
    server = {"HOME": "/root", "PATH": "/a", "OMP_NUM_THREADS": "2"}
    caller = {**server, "PATH": "/b:/a", "DVC_STAGE": "train@npr-0", "DVC_ROOT": "/r", "PWD": "/r", "SHLVL": "2"}
    server["PS1"] = "$ "  # a non-interactive bash (DVC's shell) drops it
    assert warm.env_difference(caller, server) == []
    assert warm.env_difference({**caller, "RANK": "0", "OMP_NUM_THREADS": "1"}, server) == ["OMP_NUM_THREADS", "RANK"]


def test_commands_run_warm_like_cold_and_fall_back_when_the_environment_differs(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop(warm.ENV, None)
    cold_ok, cold_bad = _cli(["list"], env), _cli(["train", "--detector", "no-such-detector"], env)
    log = tmp_path / "warm.log"
    with warm.WarmServer(env, log, preload=["json"]) as server:
        warm_env = server.env
        server.start()
        for _ in range(200):  # the server binds its socket once its imports are done
            if Path(warm_env[warm.ENV]).exists():
                break
            time.sleep(0.05)
        ok, bad = _cli(["list"], warm_env), _cli(["train", "--detector", "no-such-detector"], warm_env)
        declined = _cli(["list"], {**warm_env, "OMP_NUM_THREADS": "1"})
    assert (ok.returncode, ok.stdout) == (cold_ok.returncode, cold_ok.stdout) and ok.returncode == 0
    assert (bad.returncode, bad.stderr) == (cold_bad.returncode, cold_bad.stderr) and bad.returncode == 2
    assert declined.returncode == 0 and declined.stdout == cold_ok.stdout
    assert warm.summary(log) == {"warm": 2, "declined": 1, "import_seconds": warm.summary(log)["import_seconds"]}
    assert "environment differs in OMP_NUM_THREADS" in log.read_text()


def test_no_server_means_a_normal_start(tmp_path):
    assert warm.run_remote(["list"], path=str(tmp_path / "missing.sock")) is None
    assert warm.run_remote(["list"], path="") is None


def test_the_caller_forwards_signals_and_exits_with_the_childs_status(tmp_path):
    """A stand-in server answers with the pid of a sleeping process and reports how it ended."""
    path = str(tmp_path / "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    result = {}

    def fake_server():
        conn, _ = listener.accept()
        header, fds, _, _ = socket.recv_fds(conn, warm._HEADER.size, 3)
        (n,) = warm._HEADER.unpack(header)
        warm._recv_exact(conn, n)
        for fd in fds:
            os.close(fd)
        child = subprocess.Popen(["sleep", "60"])
        warm._send(conn, {"ok": True, "pid": child.pid})
        result["pid"] = child.pid
        result["code"] = child.wait()
        warm._send(conn, {"exit": 128 - result["code"]})
        conn.close()

    thread = threading.Thread(target=fake_server, daemon=True)
    thread.start()
    caller = subprocess.Popen([sys.executable, "-c", f"import sys; from sep_bench.warm import run_remote; "
                               f"sys.exit(run_remote(['list'], path={path!r}))"], cwd=ROOT)
    for _ in range(600):
        if "pid" in result:
            break
        time.sleep(0.05)
    time.sleep(1.0)  # the caller installs its handlers right after the reply
    caller.send_signal(signal.SIGTERM)
    assert caller.wait(timeout=30) == 128 + signal.SIGTERM
    assert result["code"] == -signal.SIGTERM
    listener.close()


def test_a_request_with_its_own_streams_reports_the_childs_status_and_usage(tmp_path):
    """What benchmarks/full_recipes.py measures: the command's output in a file, its CPU seconds and peak memory."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop(warm.ENV, None)
    with warm.WarmServer(env, tmp_path / "warm.log", preload=["json"]) as server:
        assert server.wait_ready(60)
        with open(tmp_path / "out.log", "wb") as log, open(os.devnull, "rb") as null:
            started = warm.request(["list"], server.env[warm.ENV], cwd=str(ROOT), env=server.env,
                                   fds=[null.fileno(), log.fileno(), log.fileno()])
            assert started is not None
            report = warm.exit_report(started[0])
    assert report["exit"] == 0 and report["cpu_s"] > 0 and report["peak_rss_kib"] > 0
    assert "npr" in (tmp_path / "out.log").read_text()
