"""Warm starts for the pipeline's stage commands: import the scientific stack once, fork it per stage.

Every DVC stage is a new process, and importing torch, torchvision, timm, open_clip, MLflow and sep-bench costs
seconds per process on a small machine (about 4-6 s each with compiled bytecode on 2 cores, ~45 stages in the
default run). ``sep-bench pipeline`` therefore starts one *warm server* (`serve`) that imports all of it and then
waits on a Unix socket, in a folder only its user may enter; the socket's path is put in the environment as
``SEP_BENCH_WARM`` for ``dvc repro``. A stage's
``sep-bench`` command (`sep_bench.main`) finds it and asks the server to run the command in a forked child with
the caller's arguments, working directory, environment and standard streams (passed as file descriptors); the
caller waits, forwards SIGINT/SIGTERM/SIGHUP to the child and exits with the child's exit status. To DVC the
command behaves exactly like a normal start.

The command starts normally instead (and the server logs why) when:

- there is no ``SEP_BENCH_WARM`` or nothing answers on it (``sep-bench pipeline --cold`` runs without a server);
- the caller's environment differs from the server's in anything but DVC's and the shell's own variables
  (`IGNORED_ENV`): a launcher's ``RANK``/``WORLD_SIZE``, another thread count, an ``MKL_CBWR`` set for a
  deterministic profile must reach a fresh interpreter, because libraries read them when they load;
- the server runs a second Python thread (fork would copy a lock that thread may hold). The server imports
  modules only: it runs no tensor operation (so torch's OpenMP pool does not exist yet), opens no MLflow store and
  never touches a GPU. The idle worker threads OpenBLAS starts when numpy and scipy load are fork-aware (OpenBLAS
  shuts its pool down at fork and the child starts its own), as they are for every forking DataLoader.

A child runs the command as `sep_bench.main` would, runs the ``atexit`` handlers and exits with its status; the
server reaps it and reports the status (a child killed by signal N reports 128 + N) and the child's CPU seconds
and peak memory to the caller.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["ENV", "SERVE_ARG", "IGNORED_ENV", "PRELOAD", "request", "exit_report", "run_remote", "serve",
           "env_difference", "Server", "WarmServer", "summary"]

ENV = "SEP_BENCH_WARM"
#: `sep_bench.main`'s argument that makes the process a warm server (``python -m sep_bench.main --warm-server ...``)
SERVE_ARG = "--warm-server"
#: variables DVC or a shell set per command (a non-interactive bash drops the prompts PS1...), and PATH (DVC drops
#: pyenv's shims from it; no library reads it when it loads, and the child runs with the caller's); any other
#: difference needs a fresh interpreter
IGNORED_ENV = ("PWD", "OLDPWD", "SHLVL", "_", "PS1", "PS2", "PS3", "PS4", "DVC_", "COLUMNS", "LINES", "PATH", ENV)
#: what the server imports: everything the stage commands import at start-up, plus the detectors' modules
PRELOAD = ("numpy", "PIL.Image", "scipy.ndimage", "sklearn.metrics", "pandas", "torch", "torchvision", "timm",
           "open_clip", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "sep_bench.cli.train",
           "sep_bench.cli.evaluate", "sep_bench.cli.reconstruct", "sep_bench.cli.data", "sep_bench.cli.report",
           "sep_bench.detectors", "sep_bench.engine.jobs.train", "sep_bench.engine.jobs.evaluate",
           "sep_bench.recon.command", "sep_bench.report.build")
_HEADER = struct.Struct("!Q")


# ---------------------------------------------------------------------------------------------- the caller side
def _send(sock: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> dict:
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return json.loads(_recv_exact(sock, n))


def request(argv: Sequence[str], path: str, *, cwd: str, env: dict[str, str], fds: Sequence[int] = (0, 1, 2),
            ) -> tuple[socket.socket, int] | None:
    """Ask the server at `path` to run ``sep-bench *argv`` in `cwd` with `env` and the standard streams `fds`;
    (the connection its exit report arrives on, the child's pid), or None when it cannot or will not (start
    normally then). Read the report with `exit_report`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        sock.connect(path)
        data = json.dumps({"argv": list(argv), "cwd": cwd, "env": env, "pid": os.getpid()}).encode()
        socket.send_fds(sock, [_HEADER.pack(len(data))], list(fds))
        sock.sendall(data)
        reply = _recv(sock)
    except (OSError, ConnectionError, ValueError):
        sock.close()
        return None
    if not reply.get("ok"):
        sock.close()
        return None
    sock.settimeout(None)
    return sock, int(reply["pid"])


def exit_report(sock: socket.socket) -> dict:
    """The server's report when the child has ended: ``exit`` (its status) and its resource usage (``cpu_s``,
    ``user_s``, ``sys_s``, ``peak_rss_kib``: what ``os.wait4`` says of the child); raises ConnectionError when
    the server stopped first."""
    try:
        report = _recv(sock)
        int(report["exit"])
        return report
    except (OSError, ValueError, KeyError) as err:
        raise ConnectionError(f"the warm server stopped before reporting: {err}") from err
    finally:
        sock.close()


def run_remote(argv: Sequence[str], path: str | None = None) -> int | None:
    """Run ``sep-bench *argv`` in the warm server with this process's working directory, environment and
    standard streams, forwarding SIGINT/SIGTERM/SIGHUP; its exit status, or None to start normally."""
    path = path if path is not None else os.environ.get(ENV, "")
    started = request(argv, path, cwd=os.getcwd(), env=dict(os.environ)) if path else None
    if started is None:
        return None
    sock, pid = started

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        return int(exit_report(sock)["exit"])
    except ConnectionError:
        print(f"sep-bench: the warm server stopped while running pid {pid}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------- the server side
def env_difference(caller: dict[str, str], server: dict[str, str]) -> list[str]:
    """Names of the variables that differ between two environments, ignoring `IGNORED_ENV`."""
    keys = set(caller) | set(server)
    return sorted(k for k in keys if caller.get(k) != server.get(k) and not k.startswith(IGNORED_ENV))


def _python_threads() -> int:
    import threading

    return threading.active_count()


def _run_child(request: dict, fds: list[int], run: Callable[[list[str]], int]) -> None:
    """In the forked child: become the caller's command and exit with its status (never returns)."""
    code = 1
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=stream.isatty())
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["sep-bench", *request["argv"]]
        code = run(list(request["argv"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - report like an interpreter would, then exit
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _usage(usage) -> dict:
    """A child's resource usage as the exit report carries it (``os.wait4``'s ``ru_maxrss`` is in KiB on Linux)."""
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "user_s": round(usage.ru_utime, 3),
            "sys_s": round(usage.ru_stime, 3), "peak_rss_kib": usage.ru_maxrss}


class Server:
    """The warm server's state: the listening socket, the environment it imported under, running children."""

    def __init__(self, path: str, log: Path | None = None, run: Callable[[list[str]], int] | None = None) -> None:
        self.run = run
        self.path = path
        self.env = dict(os.environ)
        self.children: dict[int, socket.socket] = {}
        self.log_file = log
        self.counts = {"warm": 0, "cold": 0}
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def listen(self) -> None:
        """Bind only when ready: a caller that comes earlier finds no socket and starts normally."""
        tmp = f"{self.path}.tmp"
        self.listener.bind(tmp)
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        os.replace(tmp, self.path)

    def log(self, message: str) -> None:
        if self.log_file is not None:
            with self.log_file.open("a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} {message}\n")

    def decline(self, conn: socket.socket, argv: list[str], why: str) -> None:
        self.counts["cold"] += 1
        self.log(f"cold start of `sep-bench {' '.join(argv)}`: {why}")
        try:
            _send(conn, {"ok": False, "why": why})
        finally:
            conn.close()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            header, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
            (n,) = _HEADER.unpack(header)
            request = json.loads(_recv_exact(conn, n))
        except (OSError, ConnectionError, ValueError, struct.error):
            conn.close()
            return
        try:
            if len(fds) != 3:
                return self.decline(conn, request.get("argv", []), "the standard streams did not arrive")
            differ = env_difference(request["env"], self.env)
            if differ:
                return self.decline(conn, request["argv"], f"environment differs in {', '.join(differ)}")
            threads = _python_threads()
            if threads != 1:
                return self.decline(conn, request["argv"], f"the server runs {threads} Python threads")
            pid = os.fork()
            if pid == 0:  # the child keeps nothing of the server's: no socket of its own or of another caller
                for sock in (self.listener, conn, *self.children.values()):
                    sock.close()
                _run_child(request, fds, self.run)
            self.counts["warm"] += 1
            self.children[pid] = conn
            self.log(f"warm start of `sep-bench {' '.join(request['argv'])}` (pid {pid})")
            try:
                _send(conn, {"ok": True, "pid": pid})
            except OSError:  # the caller is gone (timed out and started cold): the command must not run twice
                os.kill(pid, signal.SIGKILL)
                self.log(f"caller of `sep-bench {' '.join(request['argv'])}` gone; child {pid} killed")
        finally:
            for fd in fds:
                os.close(fd)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            code = os.waitstatus_to_exitcode(status)
            if conn is not None:
                try:
                    _send(conn, {"exit": code if code >= 0 else 128 - code, **_usage(usage)})
                except OSError:
                    pass
                conn.close()

    def serve_forever(self, parent: int) -> None:
        """Accept requests until the parent process is gone or SIGTERM arrives."""
        while os.getppid() == parent:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                conn = None
            if conn is not None:
                self.handle(conn)
            self.reap()


def serve(path: str, parent: int, log: Path | None, preload: Sequence[str] | None,
          run: Callable[[list[str]], int]) -> None:
    """Import `preload` (default: `PRELOAD` and every registered detector's module), then serve `path` while
    `parent` lives; each request runs ``run(argv)`` in a forked child (`sep_bench.main` passes the CLI's)."""
    import importlib
    import importlib.metadata

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the children through their callers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if preload is None:
        preload = [*PRELOAD, *sorted({ep.module for ep in importlib.metadata.entry_points(group="sep_bench.detectors")})]
    names = [name for name in preload if name]
    server = Server(path, log, run)
    t0 = time.perf_counter()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - a detector whose extra is missing fails in its own command
            server.log(f"preload {name}: {type(err).__name__}: {err}")
    server.log(f"ready: {len(names)} modules imported in {time.perf_counter() - t0:.1f} s")
    server.listen()
    try:
        server.serve_forever(parent)
    finally:
        server.log(f"stopped: {server.counts['warm']} warm start(s), {server.counts['cold']} cold")
        server.listener.close()
        Path(path).unlink(missing_ok=True)


class WarmServer:
    """A warm server for one pipeline run: `env` (with ``SEP_BENCH_WARM``) is fixed at once, the server process is
    started by `start` (the runner calls it when DVC runs its first stage, so a run with nothing to do starts
    none) and stopped by `stop`. Until it has imported everything, callers find no socket and start normally.

    The server gets exactly `env` (so its callers' environments match it), its own session (a Ctrl-C in the
    terminal reaches the children through their callers only, once), and stops with `stop` or this process.
    """

    def __init__(self, env: dict[str, str], log: Path, preload: Sequence[str] | None = None) -> None:
        import tempfile

        self.folder = tempfile.mkdtemp(prefix="sep-bench-warm-")  # short: a socket path has at most 107 bytes
        self.env = {**env, ENV: os.path.join(self.folder, "socket")}
        self.log, self.preload, self.proc = log, preload, None

    def start(self) -> None:
        import subprocess

        if self.proc is not None:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        extra = [",".join(self.preload)] if self.preload is not None else []
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sep_bench.main", SERVE_ARG, self.env[ENV], str(os.getpid()), str(self.log),
                 *extra],
                env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)

    def wait_ready(self, timeout_s: float) -> bool:
        """Start the server if needed and wait until it answers (its imports done); False after `timeout_s` or
        when it exited (its log says why)."""
        self.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if os.path.exists(self.env[ENV]):
                return True
            time.sleep(0.1)
        return os.path.exists(self.env[ENV])

    def stop(self) -> None:
        import shutil
        import subprocess

        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "WarmServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def summary(log: Path) -> dict[str, float | int | None]:
    """From the server's log: commands started warm, declined (cold), and the seconds its imports took."""
    import re

    try:
        text = log.read_text()
    except OSError:
        text = ""
    ready = re.search(r"ready: \d+ modules imported in ([\d.]+) s", text)
    stopped = re.search(r"stopped: (\d+) warm start\(s\), (\d+) cold", text)
    return {"warm": int(stopped.group(1)) if stopped else None, "declined": int(stopped.group(2)) if stopped else None,
            "import_seconds": float(ready.group(1)) if ready else None}
