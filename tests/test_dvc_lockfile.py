"""The fast lockfile update (sep_bench.dvc_lockfile) leaves the same dvc.lock as plain DVC, byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sep_bench import dvc_lockfile

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))

DVC_YAML = """\
# a comment DVC must keep
stages:
  make:
    foreach: [a, b]
    do:
      cmd: python -c "import sys; open('out_${item}.txt', 'w').write(sys.argv[1])" ${item}
      params:
        - block
      outs:
        - out_${item}.txt
  join:
    cmd: python -c "open('joined.txt', 'w').write(open('out_a.txt').read() + open('out_b.txt').read())"
    deps: [out_a.txt, out_b.txt]
    params:
      - block.nested
    outs:
      - joined.txt:
          cache: false
"""
PARAMS = """\
block:
  long: 5bce343eb9eb916a9b8a0fcf9596fb4fbe8e60a807286efe46b1ba3684bccc1b5bce343eb9eb916a9b8a0fcf9596fb4fbe8e60a807
  none:
  nested: {x: [1, 2.5, "three"], y: null, z: true}
"""


def _project(path: Path) -> Path:
    path.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=path, check=True, env=env)
    subprocess.run([DVC, "init", "-q"], cwd=path, check=True, env=env)
    (path / "dvc.yaml").write_text(DVC_YAML)
    (path / "params.yaml").write_text(PARAMS)
    return path


def _repro(path: Path, *command: str) -> None:
    proc = subprocess.run([*command, "repro"], cwd=path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(120)
def test_fast_update_then_canonicalize_gives_plain_dvcs_lockfile(tmp_path):
    plain, fast = _project(tmp_path / "plain"), _project(tmp_path / "fast")
    _repro(plain, DVC)
    _repro(fast, sys.executable, "-m", "sep_bench.dvc_lockfile")
    written = (fast / "dvc.lock").read_text()
    # the stages' entries went through the fast writer (another spelling of the same data) ...
    assert written != (plain / "dvc.lock").read_text()
    assert dvc_lockfile._fast_parse(written, "dvc.lock") == dvc_lockfile._fast_parse(
        (plain / "dvc.lock").read_text(), "dvc.lock")
    # ... which DVC reads as up to date, and canonicalize makes it DVC's own bytes
    status = subprocess.run([DVC, "status"], cwd=fast, capture_output=True, text=True, check=True).stdout
    assert "up to date" in status, status
    assert dvc_lockfile.canonicalize(fast / "dvc.lock") is True
    assert (fast / "dvc.lock").read_text() == (plain / "dvc.lock").read_text()
    assert dvc_lockfile.canonicalize(fast / "dvc.lock") is False
    # dvc.yaml (comments included) is DVC's business, untouched
    assert (fast / "dvc.yaml").read_text() == DVC_YAML


def test_the_committed_lockfile_reads_the_same_both_ways_and_is_canonical():
    from dvc.utils.serialize._yaml import parse_yaml_for_update

    text = (ROOT / "dvc.lock").read_text()
    data = dvc_lockfile._fast_parse(text, "dvc.lock")
    assert data == parse_yaml_for_update(text, "dvc.lock")
    import io

    out = io.StringIO()
    dvc_lockfile._fast_dump(data, out)
    assert dvc_lockfile._fast_parse(out.getvalue(), "x") == data


def test_canonicalize_leaves_other_yaml_alone(tmp_path):
    lock = tmp_path / "dvc.lock"
    assert dvc_lockfile.canonicalize(lock) is False   # no lockfile: nothing to do
    shutil.copy(ROOT / "dvc.lock", lock)
    assert dvc_lockfile.canonicalize(lock) is False   # the committed one is DVC's spelling already


def test_the_committed_lockfile_has_no_stale_stages():
    """DVC never drops the entries of stages that left dvc.yaml, and every stage rewrites the whole lockfile:
    stale entries only cost time."""
    from dvc.utils.serialize._yaml import parse_yaml

    listed = subprocess.run([DVC, "stage", "list", "--name-only"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    locked = parse_yaml((ROOT / "dvc.lock").read_text(), "dvc.lock")["stages"]
    assert sorted(set(locked) - set(listed)) == []
