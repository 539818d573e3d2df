"""The ``sep-bench`` command: a warm start when ``sep-bench pipeline`` offers one (`sep_bench.warm`), else the CLI.

Only the standard library is imported before the decision, so asking the warm server costs milliseconds.
``python -m sep_bench.main --warm-server <socket> <parent pid> <log> [<modules>]`` is the warm server itself
(started by `sep_bench.warm.WarmServer`); its forked children run the CLI. Under `sep-bench pipeline`, a stage
command first records its start (`sep_bench.stage_log`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["main", "run_local"]


def run_local(argv: list[str] | None = None) -> int:
    """Run the CLI in this interpreter (typer exits with the command's status)."""
    from sep_bench.cli import run

    return run(sys.argv[1:] if argv is None else argv)


def main() -> None:
    from sep_bench.stage_log import record_start
    from sep_bench.warm import ENV, SERVE_ARG, run_remote, serve

    argv = sys.argv[1:]
    if argv[:1] == [SERVE_ARG]:
        socket_path, parent, log, *modules = argv[1:]
        serve(socket_path, int(parent), Path(log), modules[0].split(",") if modules else None, run_local)
        return
    record_start()  # under `sep-bench pipeline`: this stage has started (sep_bench.stage_log)
    if os.environ.get(ENV):
        code = run_remote(argv)
        if code is not None:
            sys.exit(code)
    sys.exit(run_local(argv))


if __name__ == "__main__":
    main()
