"""`sep-bench train` under torchrun: 2 CPU processes (gloo) against one process on the same protocol.

Stated tolerance: each global batch is split across ranks in the single-process order, so the runs differ only
through per-rank BatchNorm statistics: validation loss within 0.1 and accuracy within 1/8 (one image of the
8-image validation slice) at every epoch, and the same number of optimisation steps.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _train(workdir: Path, out: str, launcher: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [*launcher, "sep-bench", "train", "--detector", "npr", "--no-track", "--out", out]
    res = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads((workdir / out / "train.json").read_text())


@pytest.mark.timeout(400)
def test_two_process_ddp_matches_single_process(workdir):
    torchrun = Path(sys.executable).parent / "torchrun"
    single = _train(workdir, "single", [])
    ddp = _train(workdir, "ddp", [str(torchrun), "--nproc_per_node=2", "--no-python"])
    assert single["processes"] == 1 and ddp["processes"] == 2
    assert ddp["steps_per_epoch"] == single["steps_per_epoch"]
    for a, b in zip(single["history"], ddp["history"], strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) <= 0.1
        assert abs(a["val_acc"] - b["val_acc"]) <= 1 / 8
    assert (workdir / "ddp" / "best.safetensors").is_file()
