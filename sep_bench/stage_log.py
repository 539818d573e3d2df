"""The pipeline's own progress record: each stage command appends one line when it starts.

`sep-bench pipeline` (`sep_bench.runner`) sets ``$SEP_BENCH_STAGE_LOG`` to a file for ``dvc repro``; every
``sep-bench`` command that DVC starts for a stage (``$DVC_STAGE`` set, torchrun rank 0) appends
``{"stage": <name>, "t": <unix time>}`` to it (`record_start`, called by `sep_bench.main` before anything else), and
the runner reads the new lines (`read_new`) to print its progress. The record is ours, so the progress lines do not
depend on how DVC words its console output. Standard library only: it runs before the CLI is imported.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["ENV", "record_start", "read_new"]

ENV = "SEP_BENCH_STAGE_LOG"


def record_start(environ: dict[str, str] | None = None) -> bool:
    """Append this stage command's start to the log named by ``$SEP_BENCH_STAGE_LOG``; False when there is none
    (not under `sep-bench pipeline`, not a DVC stage, or not rank 0 of a launch)."""
    env = os.environ if environ is None else environ
    path, stage = env.get(ENV, ""), env.get("DVC_STAGE", "")
    if not path or not stage or env.get("RANK", "0") != "0":
        return False
    line = json.dumps({"stage": stage, "t": time.time()}) + "\n"
    try:
        with open(path, "a") as fh:  # one short write per stage: appends from sequential stages do not interleave
            fh.write(line)
    except OSError:
        return False
    return True


def read_new(path: Path, offset: int) -> tuple[list[dict], int]:
    """The complete records after byte `offset` of `path`, and the offset after them (a line still being written
    is left for the next call; a malformed line is skipped)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("stage"), str) and isinstance(event.get("t"), (int, float)):
            events.append(event)
    return events, offset + end
