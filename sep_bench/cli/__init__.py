"""The `sep-bench` command line: thin typer wrappers, one module per command group, loaded on demand.

`COMMANDS` maps each top-level command to the module that defines it; `build_app` imports only the module of the
command being run (every module for ``--help`` or no command), so a stage command's process imports what that
command needs and no other command's code (`imported_modules` traces it). Each module has ``register(app, argv)``.
The commands call the jobs (`sep_bench.engine.jobs`) and the modules below; nothing re-enters the command line.
"""

from __future__ import annotations

import importlib
import logging
import signal
from typing import Sequence

import typer

from sep_bench.cli.common import console

__all__ = ["COMMANDS", "build_app", "run", "imported_modules"]

#: top-level command -> module of sep_bench.cli that defines it
COMMANDS = {
    "list": "inspect", "predict": "inspect", "explain": "inspect",
    "data": "data",
    "reconstruct": "reconstruct",
    "train": "train", "selection": "train",
    "evaluate": "evaluate", "released": "evaluate",
    "report": "report", "reproduced": "report", "compare": "report", "ablation": "report",
    "pipeline": "pipeline", "ui": "pipeline",
    "cluster": "cluster",
    "weights": "weights",
}


class _Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception so open MLflow runs end as failed and temp files are removed."""


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised by the reliability tests
    raise _Terminated()


def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("alembic", "mlflow", "urllib3", "PIL", "matplotlib", "timm", "open_clip", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _on_sigterm)


def _command_of(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The top-level command of `argv` (None for none) and the arguments after it."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return arg, list(argv[i + 1:])
    return None, []


def build_app(argv: Sequence[str] | None = None) -> typer.Typer:
    """The root app with the command group `argv` runs (every group when `argv` is None, names no known command,
    or asks for the top-level help)."""
    app = typer.Typer(
        help="sep-bench: train and evaluate AI-generated-image detectors (SEP and baselines) under one protocol.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.callback()(_main)
    command, rest = _command_of(argv or [])
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(f"sep_bench.cli.{name}").register(app, rest if command in COMMANDS else None)
    return app


def run(argv: Sequence[str]) -> int:
    """Run one `sep-bench` command in this process; typer exits with the command's status."""
    build_app(argv)(args=list(argv), prog_name="sep-bench")
    return 0


def imported_modules(argv: Sequence[str], cwd: str | None = None) -> set[str]:
    """The project modules (``sep_bench.*``) that running ``sep-bench *argv`` in a fresh interpreter (in `cwd`)
    has imported when it ends: what a stage command depends on. The command really runs (without the warm
    server); its exit status does not matter."""
    import json
    import os
    import subprocess
    import sys

    code = ("import sys, json, atexit\n"
            "atexit.register(lambda: print('\\n@@' + json.dumps(sorted(m for m in sys.modules "
            "if m == 'sep_bench' or m.startswith('sep_bench.'))), file=sys.__stderr__))\n"
            "from sep_bench.main import main\nsys.argv = ['sep-bench', *json.loads(sys.argv[1])]\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(list(argv))], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "SEP_BENCH_WARM": ""})
    marked = [line for line in proc.stderr.splitlines() if line.startswith("@@")]
    if not marked:
        raise RuntimeError(f"sep-bench {' '.join(argv)} ended before reporting its imports:\n{proc.stderr[-2000:]}")
    return set(json.loads(marked[-1][2:]))


def __getattr__(name: str):
    """``from sep_bench.cli import app``: the app with every command (tests, documentation)."""
    if name == "app":
        return build_app()
    raise AttributeError(name)
