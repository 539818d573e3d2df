"""Every DVC stage depends on exactly the code its command reads, so an edit reruns exactly the stages it affects.

In a shrunken copy of the project (two detectors: NPR, a baseline module, and SEP, a package), each stage's
command runs under an import tracer; every project module it imports must lie under a path the stage declares,
and every declared code path must hold a module it imports. Then DVC records the finished run (`dvc commit`) and
`dvc status` must name exactly the stages an edit reaches: one detector's module -> its train/evaluate/selection
stages; the download code -> none.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.stage_deps import GIT_ENV, code_paths, compare, copy_worktree, declared, shrink_mini, stage_definition, \
    traced_imports

pytestmark = pytest.mark.slow

DETECTORS = ["npr", "sep"]
STAGES = [  # (stage kind, detector) in pipeline order
    ("data", ""),
    *[(kind, d) for d in DETECTORS for kind in ("reconstruct", "train", "evaluate")],
    ("selection", "npr"), ("report", ""),
]


def _stage_name(kind: str, detector: str) -> str:
    if kind == "reconstruct":  # one stage per detector, no seed
        return f"{kind}@{detector}"
    return f"{kind}@{detector}-0" if detector else kind


def _argv(kind: str, detector: str) -> list[str]:
    cmd = stage_definition(kind)["cmd"].replace("${launcher}", "")
    cmd = cmd.replace("${item.detector}", detector).replace("${item.seed}", "0")
    argv = shlex.split(cmd)
    assert argv[0] == "sep-bench", cmd
    return argv[1:]


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    dest = tmp_path_factory.mktemp("deps")
    copy_worktree(dest)
    params = shrink_mini(yaml.safe_load((dest / "params.yaml").read_text()), DETECTORS)
    params["run"]["selection"] = ["npr"]
    params["detectors"]["npr"]["overrides"]["mini"]["model"] = {"crop_size": 32, "train_resize": None, "layers": [1, 1]}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, **GIT_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for name in ("DVC_ROOT", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "commit", "-qm", "copy"], dest, env)
    return dest, env


@pytest.fixture(scope="module")
def traced(project):
    """Every stage's command run in pipeline order: stage name -> the project files it imported."""
    dest, env = project
    return {_stage_name(kind, d): traced_imports(_argv(kind, d), dest, env) for kind, d in STAGES}


@pytest.mark.parametrize("kind,detector", STAGES, ids=[_stage_name(k, d) for k, d in STAGES])
def test_declared_code_dependencies_are_exactly_what_the_command_imports(traced, kind, detector):
    imported = traced[_stage_name(kind, detector)]
    deps = code_paths(declared(kind, profile="mini", detector=detector))
    undeclared, unused = compare(imported, deps)
    assert not undeclared, f"{_stage_name(kind, detector)} imports modules its stage does not declare: {undeclared}"
    assert not unused, f"{_stage_name(kind, detector)} declares code it never imports: {unused}"


def _status(dest: Path, env: dict) -> set[str]:
    """The stages of dvc.yaml that `dvc status` finds out of date (data.dvc, whose data a copy lacks, left out)."""
    out = _run([sys.executable, "-m", "dvc", "status", "--json", "dvc.yaml"], dest, env)
    return set(json.loads(out or "{}"))


@pytest.fixture(scope="module")
def recorded(project, traced):
    """The finished run recorded in dvc.lock as DVC would have (the stages' outputs are the traced commands')."""
    dest, env = project
    _run([sys.executable, "-m", "dvc", "commit", "-f", "-q", "dvc.yaml"], dest, env)
    return dest, env


def _touch(path: Path) -> bytes:
    before = path.read_bytes()
    path.write_bytes(before + b"\n# edited\n")
    return before


@pytest.mark.parametrize("edited,expected", [
    ("baselines/npr.py", {"reconstruct@npr", "train@npr-0", "evaluate@npr-0", "selection@npr-0"}),
    ("baselines/sep.py", {"reconstruct@sep", "train@sep-0", "evaluate@sep-0"}),
    ("sep_bench/acquire/download.py", set()),
])
def test_an_edit_invalidates_exactly_the_stages_that_read_it(recorded, edited, expected):
    dest, env = recorded
    assert _status(dest, env) == set(), "the recorded run is not up to date before the edit"
    before = _touch(dest / edited)
    try:
        assert _status(dest, env) == expected
    finally:
        (dest / edited).write_bytes(before)
