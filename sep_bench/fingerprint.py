"""Has anything DVC tracks changed since the last complete pipeline run? Answered in milliseconds.

``dvc repro`` with nothing to do still takes seconds per dozens of stages (it checks every stage's deps, and most
stages depend on the prepared data's 1,640 files). DVC itself decides "unchanged" from each file's size, mtime
and inode (its state database) before it hashes anything. `fingerprint` records exactly that for every dep and
out that dvc.lock names, plus the bytes of dvc.yaml, dvc.lock, params.yaml and .dvcignore: when it equals the one
recorded after the last run that completed, DVC would find every stage up to date, and `sep-bench pipeline` says so
without starting DVC. Anything else (a changed file, a new detector in params.yaml, a deleted output, a stage DVC
always reruns) gives a different fingerprint or none, and DVC decides as usual.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
from pathlib import Path

from sep_bench.io import read_yaml

__all__ = ["fingerprint", "recorded", "record", "FINGERPRINT_FILE"]

FINGERPRINT_FILE = Path(".dvc/tmp/sep-bench-fingerprint")
_FILES = ("dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore")


def _ignored_patterns(root: Path) -> re.Pattern:
    """.dvcignore's name patterns (what DVC leaves out of a directory's hash) as one regex on base names."""
    path = root / ".dvcignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    names = [ln.strip().strip("/") for ln in lines if ln.strip() and not ln.startswith(("#", "!"))]
    return re.compile("|".join(fnmatch.translate(n) for n in names) or r"(?!)")


def _walk(path: str, ignored: re.Pattern):
    if ignored.match(os.path.basename(path)):
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        yield f"{path}\0missing"
        return
    if not stat.S_ISDIR(st.st_mode):
        yield f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
        return
    with os.scandir(path) as entries:
        children = sorted(entries, key=lambda e: e.name)
    for entry in children:
        if ignored.match(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path, ignored)
        else:
            st = entry.stat(follow_symlinks=False)
            yield f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"


def fingerprint(root: Path = Path(".")) -> str | None:
    """Digest of what decides `dvc repro`'s work; None when DVC must decide (no lock, an always-changed stage)."""
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return None
    lock = read_yaml(lock_file) or {}
    pipeline = read_yaml(root / "dvc.yaml") or {}
    always = {name for name, stage in (pipeline.get("stages") or {}).items() if stage.get("always_changed")}
    stages = lock.get("stages") or {}
    if any(name.split("@")[0] in always for name in stages):
        return None
    digest = hashlib.sha256()
    for name in _FILES:
        digest.update(name.encode() + b"\0" + ((root / name).read_bytes() if (root / name).is_file() else b"-"))
    paths = sorted({entry["path"] for stage in stages.values() for kind in ("deps", "outs")
                    for entry in stage.get(kind) or []})
    ignored = _ignored_patterns(root)
    for rel in paths:
        for line in _walk(str(root / rel), ignored):
            digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def recorded(root: Path = Path(".")) -> str | None:
    path = root / FINGERPRINT_FILE
    return path.read_text().strip() if path.is_file() else None


def record(value: str | None, root: Path = Path(".")) -> None:
    path = root / FINGERPRINT_FILE
    if value is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
