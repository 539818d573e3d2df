"""End to end on a tree placed by hand with GenImage's shape: the documented path (docs/real-data.md) in a
temporary clone. `sep-bench data synth --like genimage` writes the stand-in (the real set's folder names, sizes,
formats and known bad files, random pixels), `sep-bench data prepare --profile genimage` stamps it, then

    dvc exp run -S profile=genimage -S 'run.detectors=[npr,formatonly]' -S budget=ci
                -S profiles.genimage.pretrained=false

runs the full genimage recipes of NPR and the format control under the run budget ``ci`` (the CI group's; the
documented ``smoke`` differs only in how many images) to the report (the acceptance
command with SEP instead of the format control is measured by benchmarks/full_recipes.py --acceptance: SEP's
evaluation alone costs more CPU time than CI has for it), without editing run.selection; the known bad files are
counted skips; every .dvc file and the dataset stay as they were; a data stage that fails afterwards leaves the
earlier data/prepared/genimage in place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stage_deps import GIT_ENV, copy_worktree

pytestmark = pytest.mark.slow

EXP = ["dvc", "exp", "run", "-S", "profile=genimage", "-S", "run.detectors=[npr,formatonly]", "-S", "budget=ci",
       "-S", "profiles.genimage.pretrained=false",
       # a validation slice the tiny tree can fill; a bad file is a quarter of its generator's test images (half
       # under an extra evaluation of budget smoke: one per class); `++`: a key params.yaml does not list (add, or
       # override on the second run, whose params.yaml dvc exp run already changed)
       "-S", "profiles.genimage.data.val.fraction=0.25", "-S", "++profiles.genimage.data.max_skip_fraction=0.5",
       # speed only (no stage reads it as a parameter): no loader processes on a small CI machine
       "-S", "profiles.genimage.loader.train_workers=0", "-S", "profiles.genimage.loader.eval_workers=0"]


def _run(cmd, cwd, env, ok=True):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    out = res.stdout + res.stderr
    assert (res.returncode == 0) == ok, f"{cmd} exit {res.returncode}:\n{out[-6000:]}"
    return out


def _tree_state(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.timeout(1800)
def test_dvc_exp_run_on_a_placed_genimage_tree(tmp_path):
    dest = tmp_path / "clone"
    dest.mkdir()
    copy_worktree(dest)
    env = {**os.environ, **GIT_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1"}
    for var in ("DVC_ROOT", "DVC_STAGE", "MLFLOW_TRACKING_URI", "SEP_BENCH_PARENT_RUN_ID"):
        env.pop(var, None)
    for stale in ("results/metrics/genimage", "results/predictions/genimage", "dvc.lock"):
        target = dest / stale
        subprocess.run(["rm", "-rf", str(target)], check=True)
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "commit", "-qm", "clone"], dest, env)
    # 2 test images per generator and class (budgets.ci takes all 4 of a generator), half the real sizes
    _run(["sep-bench", "data", "synth", "--like", "genimage", "--scale", "0.5", "--n-test", "2"], dest, env)
    tree = dest / "data/external/genimage"  # the profile's data root

    _run(["sep-bench", "data", "prepare", "--profile", "genimage"], dest, env)  # the documented stamp
    assert (dest / "data/stamps/genimage.json").is_file()
    data_before = _tree_state(tree)
    out = _run(EXP, dest, env)
    for stage in ("data", "train@npr-0", "evaluate@formatonly-0", "selection@f3net-0", "report"):
        assert f"Running stage '{stage}'" in out, stage
    acc = (dest / "results/tables/genimage_acc.md").read_text()
    assert "| npr" in acc and "| formatonly" in acc and "RUN BUDGET `ci`" in acc
    assert "RUN BUDGET `ci`" in (dest / "results/tables/genimage_reported.md").read_text()
    skipped = json.loads((dest / "results/selection/genimage/f3net/seed0.json").read_text())
    assert "not in run.detectors" in skipped["skipped"]
    metrics = json.loads((dest / "results/metrics/genimage/npr/seed0.json").read_text())
    assert metrics["budget"] == "ci" and metrics["pretrained"] is False
    # 4 test images per generator, less the known bad files: ADM's and GLIDE's zero-byte PNGs, SD v1.5's truncated JPEG
    assert metrics["n_images"] == 8 * 4 - 3 and metrics["skipped"]["count"] == 3
    assert {f["generator"] for f in metrics["skipped_files"]} == {"ADM", "GLIDE", "SDv1.5"}
    assert _tree_state(tree) == data_before  # the dataset untouched, its manifest not rewritten
    status = _run(["git", "status", "--porcelain", "--untracked-files=all"], dest, env)
    assert not [line for line in status.splitlines() if line.endswith(".dvc")], status  # no .dvc file written

    # a data stage that fails (a file added to the verified tree) keeps the earlier output
    summary = dest / "data/prepared/genimage/summary.json"
    before = summary.read_bytes()
    (tree / "imagenet_glide/val/ai/added.png").write_bytes((tree / "imagenet_glide/val/ai/imagenet_glide_00000.png")
                                                           .read_bytes())
    _run(["sep-bench", "data", "prepare", "--profile", "genimage"], dest, env, ok=False)
    (dest / "data/stamps/genimage.json").write_text('{"changed": true}\n')  # so that DVC reruns the data stage
    out = _run(EXP, dest, env, ok=False)
    assert "not in the manifest" in out and summary.read_bytes() == before
