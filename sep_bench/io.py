"""Atomic file output: write to a temporary file beside the target, flush it to disk, then rename.

An interrupted run therefore never leaves a truncated checkpoint, metrics file or table that looks valid: the
target is either the previous complete file or the new complete file. The temporary file is named
``.<target name>.<host>-<pid>.<random>.tmp``; it is removed when the write fails or the process is stopped by an
exception (SIGTERM, Ctrl-C). A process killed outright (SIGKILL, OOM killer) cannot clean up, so the next write
into the same folder on the same host removes temporary files whose writing process no longer exists (DVC would
otherwise commit them inside a persisted output folder).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["atomic_path", "write_json", "write_text", "read_json", "remove_stale_temps", "file_digest", "Progress"]

Progress = Callable[[str, int, int], None]  # (task, completed, total)

_HOST = hashlib.sha256(platform.node().encode()).hexdigest()[:8]
_TEMP_RE = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.tmp$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete this host's leftover atomic-write temporaries in `folder` whose writer process is gone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m and m["host"] == _HOST and not _alive(int(m["pid"])):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(Path(tmp))  # the bytes are on disk before the name points at them (power loss, not just kill)
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_yaml(path: str | Path) -> Any:
    """The YAML document of `path`, parsed with libyaml where PyYAML has it (``dvc.lock`` is half a megabyte:
    seconds for the pure-Python parser) and once per process while the file is unchanged (same size and
    modification time): callers share the result and must not modify it. Raises OSError and yaml.YAMLError."""
    st = os.stat(path)
    return _parse_yaml(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _parse_yaml(path: str, _size: int, _mtime_ns: int) -> Any:
    import yaml

    return yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def file_digest(path: str | Path, algorithm: str = "sha256", progress: Progress | None = None,
                task: str | None = None) -> str:
    """The hex digest of a file, read in 1 MiB chunks (`progress` is told the bytes done)."""
    h = hashlib.new(algorithm)
    size = os.path.getsize(path)
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(task or f"{algorithm} {Path(path).name}", done, size)
    return h.hexdigest()
