"""Names a remote service supplies, and every file operation of the acquisition code, kept inside its folder.

A service (Dataverse, ModelScope, the Hugging Face Hub, a mirror) names files in its listing: a Dataverse
``directoryLabel`` and ``filename``, a ModelScope tree ``Path``, a Hub tree path. None of them is trusted:

- `check_name` accepts one path component: not empty, not ``.`` or ``..``, no ``/`` or ``\\``, no NUL or other
  control character, no drive letter (``C:``), at most 255 bytes in UTF-8;
- `check_relpath` accepts a relative path of such components joined by ``/`` (no leading ``/``, no empty
  segment, at most 4096 bytes);
- `inside` joins a checked path to a root and confirms that the result is lexically inside it.

A violation raises `UnsafePathError` naming the entry and the service. At write time (`guard`), a path is also
refused when any component from the root down to it is a symbolic link, or when it resolves outside the root,
so a link planted in a cache folder cannot redirect a write, a rename or a delete. `unlink`, `replace`, `mkdir`
and `open_write` (``O_NOFOLLOW``) are the only ways the acquisition modules change the disk under a root.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from sep_bench.acquire.catalog import AcquireError

__all__ = ["UnsafePathError", "check_name", "check_relpath", "inside", "guard", "unlink", "replace", "mkdir",
           "open_write", "write_text", "shown"]

_MAX_NAME = 255  # bytes, the usual file-system limit of one component
_MAX_PATH = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(AcquireError):
    """A name from a service (or a path at write time) would leave the folder it belongs in."""


def _reason(name: str) -> str | None:
    """Why `name` is not an acceptable single path component (None: acceptable)."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if name in ("", ".", ".."):
        return "is empty, '.' or '..'" if name != ".." else "is '..' (path traversal)"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if _CONTROL.search(name):
        return "contains a NUL or control character"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME:
        return f"is longer than {_MAX_NAME} bytes"
    return None


def check_name(name: str, *, what: str, service: str) -> str:
    """`name` when it is one safe path component; else `UnsafePathError` naming `what` and `service`."""
    why = _reason(name)
    if why is not None:
        raise UnsafePathError(f"{service}: {what} {name!r} {why}; refused (a listing must name files inside the "
                              "dataset)")
    return name


def check_relpath(path: str, *, what: str, service: str) -> str:
    """`path` when it is a relative path of safe components joined by ``/``; else `UnsafePathError`."""
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"{service}: {what} {path!r} is empty or not a string; refused")
    if path.startswith("/") or _DRIVE.match(path) or path.startswith("\\"):
        raise UnsafePathError(f"{service}: {what} {path!r} is an absolute path; refused (a listing must name files "
                              "inside the dataset)")
    if len(path.encode("utf-8", "surrogatepass")) > _MAX_PATH:
        raise UnsafePathError(f"{service}: {what} {path[:80]!r}... is longer than {_MAX_PATH} bytes; refused")
    for part in path.split("/"):
        why = _reason(part)
        if why is not None:
            raise UnsafePathError(f"{service}: {what} {path!r}: component {part!r} {why}; refused (a listing must "
                                  "name files inside the dataset)")
    return path


def shown(text: str, limit: int = 200) -> str:
    """`text` from a service, safe to print: as it is when printable, else its repr (no terminal escapes)."""
    text = str(text)[:limit]
    return text if text.isprintable() else repr(text)


def inside(root: Path, rel: str, *, what: str, service: str) -> Path:
    """``root / rel`` for a checked relative path `rel` (``""``: the root itself)."""
    if rel == "":
        return Path(root)
    rel = check_relpath(rel, what=what, service=service)
    out = Path(root).joinpath(*rel.split("/"))
    if not _lexically_inside(Path(root), out):  # cannot happen after the checks; kept as the last word
        raise UnsafePathError(f"{service}: {what} {rel!r} leaves {root}; refused")
    return out


def _lexically_inside(root: Path, path: Path) -> bool:
    r, p = os.path.abspath(root), os.path.abspath(path)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def guard(root: Path, path: Path, action: str) -> Path:
    """`path` when it lies inside `root` with no symbolic link from `root` down to it (the existing part of it)
    and resolves inside `root`; else `UnsafePathError`. Call it right before writing, renaming or deleting."""
    root, path = Path(root), Path(path)
    if not _lexically_inside(root, path) or path == root:
        raise UnsafePathError(f"refused to {action} {path}: it is not inside {root}")
    rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    cur = Path(os.path.abspath(root))
    for part in rel.parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except (FileNotFoundError, NotADirectoryError):  # the rest does not exist (yet)
            break
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"refused to {action} {path}: {cur} is a symbolic link (inside {root}, where "
                                  "sep-bench creates none); remove it and run again")
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UnsafePathError(f"refused to {action} {path}: it resolves to {real}, outside {root}")
    return path


def unlink(root: Path, path: Path, *, missing_ok: bool = True) -> None:
    """Delete the file `path` inside `root` (never through a link, never a folder)."""
    guard(root, path, "delete")
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def replace(root: Path, src: Path, dst: Path) -> None:
    """``os.replace(src, dst)``, both inside `root`."""
    guard(root, src, "move")
    guard(root, dst, "replace")
    os.replace(src, dst)


def mkdir(root: Path, path: Path) -> Path:
    """Create the folder `path` (and its parents) inside `root`; `root` itself must exist or be creatable."""
    Path(root).mkdir(parents=True, exist_ok=True)
    if Path(path) != Path(root):
        guard(root, path, "create the folder")
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as err:  # a listing naming both "x" and "x/y"
            raise UnsafePathError(f"cannot create the folder {path}: a file is in the way ({err.strerror}); two "
                                  "entries of the listing collide") from None
        guard(root, path, "create the folder")  # a link swapped in while creating it
    return Path(path)


def open_write(root: Path, path: Path, mode: str = "wb"):
    """Open `path` inside `root` for writing (``wb`` or ``ab``) without following a link at its last component."""
    guard(root, path, "write")
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if mode == "ab" else os.O_TRUNC
    fd = os.open(path, flags, 0o644)
    return os.fdopen(fd, mode)


def write_text(root: Path, path: Path, text: str) -> None:
    """Write a small text file inside `root` (a temporary file beside it, then an atomic rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open_write(root, tmp, "wb") as f:
        f.write(text.encode())
    replace(root, tmp, path)
