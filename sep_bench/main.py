"""The ``sep-bench`` command: a warm start when ``sep-bench pipeline`` offers one (`sep_bench.warm`), else the CLI.

Only the standard library is imported before the decision, so asking the warm server costs milliseconds.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main", "run_local"]


def run_local() -> int:
    """Run the CLI in this interpreter (typer exits with the command's status)."""
    from sep_bench.cli import app

    app(prog_name="sep-bench")
    return 0


def main() -> None:
    from sep_bench.warm import ENV, run_remote

    if os.environ.get(ENV):
        code = run_remote(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    sys.exit(run_local())


if __name__ == "__main__":
    main()
