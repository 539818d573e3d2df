"""sep_bench.fingerprint: changes exactly when something DVC would look at changes."""

import os
import time

from sep_bench.fingerprint import fingerprint

LOCK = """schema: '2.0'
stages:
  train@a-0:
    cmd: x
    deps:
    - path: src
    - path: data/in.txt
    outs:
    - path: runs/model.bin
"""


def _tree(tmp_path, always_changed=False):
    (tmp_path / "src/__pycache__").mkdir(parents=True)
    (tmp_path / "src/mod.py").write_text("x = 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data/in.txt").write_text("data")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs/model.bin").write_bytes(b"\0" * 8)
    extra = "\n    always_changed: true" if always_changed else ""
    (tmp_path / "dvc.yaml").write_text(f"stages:\n  train:\n    cmd: x{extra}\n")
    (tmp_path / "dvc.lock").write_text(LOCK)
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / ".dvcignore").write_text("__pycache__/\n*.pyc\n")
    return tmp_path


def _bump(path):
    later = time.time_ns() + 10**9
    os.utime(path, ns=(later, later))


def test_same_tree_same_fingerprint_and_build_litter_does_not_count(tmp_path):
    root = _tree(tmp_path)
    first = fingerprint(root)
    assert first is not None and fingerprint(root) == first
    (root / "src/__pycache__/mod.cpython-311.pyc").write_bytes(b"pyc")
    (root / "src/other.pyc").write_bytes(b"pyc")
    assert fingerprint(root) == first


def test_a_changed_dep_param_or_missing_output_changes_it(tmp_path):
    root = _tree(tmp_path)
    first = fingerprint(root)
    _bump(root / "src/mod.py")  # same size and bytes, newer mtime: DVC would re-hash it
    second = fingerprint(root)
    assert second != first
    (root / "src/new.py").write_text("")
    third = fingerprint(root)
    assert third != second
    (root / "params.yaml").write_text("a: 2\n")
    fourth = fingerprint(root)
    assert fourth != third
    (root / "runs/model.bin").unlink()
    assert fingerprint(root) != fourth


def test_no_lock_or_an_always_changed_stage_leaves_the_decision_to_dvc(tmp_path):
    root = _tree(tmp_path, always_changed=True)
    assert fingerprint(root) is None
    (root / "dvc.lock").unlink()
    assert fingerprint(root) is None
