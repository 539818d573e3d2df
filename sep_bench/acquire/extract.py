"""Safe extraction of zip (single, spanned multi-part ``.z01``... ``.zip``, byte-split ``.zip.001``...) and tar
archives.

Every member name is checked before anything is written: absolute paths, drive letters, ``..`` components,
NUL bytes and other control characters are refused; links (symbolic or hard) whose target leaves the extraction root are refused; device
files, FIFOs and sockets are refused; links that stay inside are skipped (datasets need none); member count,
per-file and total sizes and the compression ratio are bounded (`Limits`). Refusal raises `UnsafeArchiveError`
naming the archive and the member. Files are opened with ``O_NOFOLLOW`` and nothing is ever created outside
the destination. Callers extract into a staging folder, so a refusal half-way leaves nothing that looks usable.

Multi-part zips are read by one reader of our own (`ZipReader`) that maps each part to its "disk" of the zip
specification (spanned archives written by ``zip -s``, as GenImage ships) or treats the concatenation of the
parts as one disk (byte-split archives: ``name.zip.001``... or GenImage's Dataverse slices ``GenImage.z000``...
``GenImage.z499`` with no ``.zip`` part, which ``cat`` restores); entries are decompressed with zlib/bz2 and
checked against their CRC-32 and declared size. A reader can also be given any seekable file (`ZipReader(f=...)`:
the remote slices of `remote.py`), and `extract` can take only the members a `select` function accepts.
"""

from __future__ import annotations

import bz2
import io
import logging
import os
import re
import stat
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from sep_bench.acquire.catalog import AcquireError
from sep_bench.acquire.download import Progress

__all__ = ["Limits", "ArchiveGroup", "UnsafeArchiveError", "ArchiveError", "group_archives", "extract",
           "is_archive_name", "MultiFile", "ZipReader", "extract_zip_reader", "Select"]

Select = Callable[[str], bool]  # member name -> extract it?

log = logging.getLogger(__name__)


class ArchiveError(AcquireError):
    """An archive is damaged, incomplete (a part is missing) or uses a feature we do not read."""


class UnsafeArchiveError(AcquireError):
    """An archive member would escape the destination or is not a plain file/folder."""


@dataclass(frozen=True)
class Limits:
    max_members: int = 10_000_000
    max_file_bytes: int = 8 << 30  # one image never comes near this
    max_total_bytes: int = 4 << 40
    max_ratio: float = 1000.0  # uncompressed / compressed, for members larger than 1 MiB


@dataclass
class ArchiveGroup:
    """One logical archive: its parts in reading order and how to read them."""

    name: str  # base name without part/extension, e.g. imagenet_ai_0508_adm
    kind: str  # "zip" | "tar"
    parts: list[Path]
    spanned: bool = False  # zip parts are disks (.z01 ... .zip), not byte slices

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.parts)


@dataclass
class ExtractStats:
    files: int = 0
    bytes: int = 0
    skipped_links: list[str] = field(default_factory=list)


# ---- grouping ----------------------------------------------------------------------------------------------

_TAR_EXT = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_RE_ZNN = re.compile(r"^(?P<base>.+)\.z(?P<n>\d{2,3})$", re.I)
_RE_SLICE = re.compile(r"^(?P<base>.+?)(?P<ext>\.zip|\.tar(?:\.gz|\.bz2|\.xz)?|\.tgz)\.(?P<n>\d{2,4})$", re.I)
_RE_GDRIVE = re.compile(r"^(?P<base>.+?)-\d{3,}$")  # Google Drive's "-001" suffix before the extension


def is_archive_name(name: str) -> bool:
    low = name.lower()
    return (low.endswith(".zip") or low.endswith(_TAR_EXT) or bool(_RE_ZNN.match(name))
            or bool(_RE_SLICE.match(name)))


def _strip_gdrive(stem: str) -> str:
    m = _RE_GDRIVE.match(stem)
    return m.group("base") if m else stem


def group_archives(files: list[Path]) -> tuple[list[ArchiveGroup], list[Path]]:
    """Group archive files (and their parts) found in one listing; return (groups, non-archive files).

    Raises `ArchiveError` naming a missing part (a gap in .z01... or .001..., or the final .zip of a spanned set).
    """
    zips: dict[str, Path] = {}
    znn: dict[str, dict[int, Path]] = {}
    slices: dict[tuple[str, str], dict[int, Path]] = {}
    groups: list[ArchiveGroup] = []
    others: list[Path] = []
    for f in sorted(files):
        name = f.name
        low = name.lower()
        if m := _RE_SLICE.match(name):
            slices.setdefault((m.group("base"), m.group("ext").lower()), {})[int(m.group("n"))] = f
        elif m := _RE_ZNN.match(name):
            znn.setdefault(_strip_gdrive(m.group("base")), {})[int(m.group("n"))] = f
        elif low.endswith(".zip"):
            zips[_strip_gdrive(name[:-4])] = f
        elif low.endswith(_TAR_EXT):
            base = name[: -len(next(e for e in _TAR_EXT if low.endswith(e)))]
            groups.append(ArchiveGroup(base, "tar", [f]))
        else:
            others.append(f)
    for base, parts in sorted(znn.items()):
        if 0 in parts and base not in zips:  # byte slices .z000, .z001... (Dataverse GenImage): `cat` restores them
            _check_sequence(base, ".z", parts, start=0)
            groups.append(ArchiveGroup(base, "zip", [parts[i] for i in sorted(parts)]))
            continue
        _check_sequence(base, ".z", parts, start=1)
        if base not in zips:
            raise ArchiveError(f"{base}: found parts .z{min(parts):02d}-.z{max(parts):02d} but not {base}.zip, the last "
                               "part of the multi-part archive; download it into the same folder")
        groups.append(ArchiveGroup(base, "zip", [parts[i] for i in sorted(parts)] + [zips.pop(base)], spanned=True))
    for base, f in sorted(zips.items()):
        groups.append(ArchiveGroup(base, "zip", [f]))
    for (base, ext), parts in sorted(slices.items()):
        start = min(parts)
        _check_sequence(base + ext, ".", parts, start=0 if start == 0 else 1)
        groups.append(ArchiveGroup(base, "zip" if ext == ".zip" else "tar", [parts[i] for i in sorted(parts)]))
    return sorted(groups, key=lambda g: g.name), others


def _check_sequence(base: str, sep: str, parts: dict[int, Path], start: int) -> None:
    missing = [i for i in range(start, max(parts) + 1) if i not in parts]
    if missing:
        width = len(next(iter(parts.values())).name.rsplit(".", 1)[1]) - (1 if sep == ".z" else 0)
        names = ", ".join(f"{base}{sep}{i:0{width}d}" for i in missing[:5])
        raise ArchiveError(f"{base}: multi-part archive is missing part(s) {names}; download them into the same folder")


# ---- a read-only file over several parts -------------------------------------------------------------------


class ReadOnlyFile(io.RawIOBase):
    """The position plumbing of a seekable, read-only file of `length` bytes; subclasses implement `readinto`."""

    length: int
    _pos: int = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.length}[whence]
        self._pos = max(0, base + offset)
        return self._pos


class MultiFile(ReadOnlyFile):
    """The concatenation of `parts` as one seekable, read-only binary file."""

    def __init__(self, parts: list[Path]):
        super().__init__()
        self.parts = [Path(p) for p in parts]
        self.sizes = [p.stat().st_size for p in self.parts]
        self.starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.length = sum(self.sizes)
        self._pos = 0
        self._handles: dict[int, BinaryIO] = {}

    def readinto(self, b) -> int:
        n, view = 0, memoryview(b).cast("B")
        while n < len(view) and self._pos < self.length:
            i = max(j for j, s in enumerate(self.starts) if s <= self._pos and (self.sizes[j] or j == 0))
            f = self._handles.get(i)
            if f is None:
                f = self._handles[i] = open(self.parts[i], "rb")
            f.seek(self._pos - self.starts[i])
            want = min(len(view) - n, self.starts[i] + self.sizes[i] - self._pos)
            got = f.readinto(view[n:n + want])
            if not got:
                break
            n += got
            self._pos += got
        return n

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles.clear()
        super().close()


# ---- zip ---------------------------------------------------------------------------------------------------


@dataclass
class ZipEntry:
    name: str
    method: int
    flags: int
    crc: int
    csize: int
    usize: int
    offset: int  # global offset of the local header
    mode: int  # unix mode when made on unix, else 0

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/") or stat.S_ISDIR(self.mode)


_EOCD = b"PK\x05\x06"
_EOCD64_LOC = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CDH = b"PK\x01\x02"
_LFH = b"PK\x03\x04"


class ZipReader:
    """Read a zip archive made of one or several parts (see the module docstring)."""

    def __init__(self, group: ArchiveGroup | None = None, *, f: BinaryIO | None = None, label: str | None = None):
        if group is None and f is None:
            raise ValueError("ZipReader needs an archive group or a file")
        self.group = group
        self.f = f if f is not None else MultiFile(group.parts)
        self.label = label
        try:
            self.entries = self._read_directory()
        except (struct.error, IndexError, ValueError) as err:
            self.f.close()
            raise ArchiveError(f"{self._label()}: not a readable zip archive ({err})") from None

    def _label(self) -> str:
        if self.label or self.group is None:
            return self.label or "archive"
        return self.group.parts[-1].name if len(self.group.parts) == 1 else f"{self.group.name} ({len(self.group.parts)} parts)"

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "ZipReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self, offset: int, n: int) -> bytes:
        self.f.seek(offset)
        data = self.f.read(n)
        if len(data) != n:
            raise ArchiveError(f"{self._label()}: truncated (wanted {n} bytes at {offset}); a part is incomplete")
        return data

    def _read_directory(self) -> list[ZipEntry]:
        total = self.f.length
        self.cd_start = self.cd_end = total
        tail_len = min(total, 65_557)
        tail = self._read(total - tail_len, tail_len)
        i = tail.rfind(_EOCD)
        if i < 0:
            raise ArchiveError(f"{self._label()}: no end-of-archive record; the file (or its last part) is incomplete")
        eocd_pos = total - tail_len + i
        disk_no, cd_disk, _, n_entries, cd_size, cd_off, _ = struct.unpack("<HHHHIIH", tail[i + 4:i + 22])
        record_pos = eocd_pos
        loc = eocd_pos - 20
        if loc >= 0 and self._read(loc, 4) == _EOCD64_LOC:
            z64_disk, z64_off, n_disks = struct.unpack("<IQI", self._read(loc + 4, 16))
            disks = self._disk_starts(n_disks)
            z64_pos = disks[z64_disk] + z64_off if len(disks) > 1 else z64_off
            if z64_pos + 56 > total or self._read(z64_pos, 4) != _EOCD64:
                z64_pos = loc - 56  # one disk with data prepended: the record sits right before its locator
                if z64_pos < 0 or self._read(z64_pos, 4) != _EOCD64:
                    raise ArchiveError(f"{self._label()}: damaged zip64 end record")
            (_, _, _, disk_no, cd_disk, _, n_entries, cd_size, cd_off) = struct.unpack(
                "<QHHIIQQQQ", self._read(z64_pos + 4, 52))
            record_pos = z64_pos
        else:
            disks = self._disk_starts(disk_no + 1)
        if len(disks) > 1:
            cd_start = disks[cd_disk] + cd_off
            delta = 0
        else:  # data prepended to a one-disk archive shifts every offset by the same amount
            delta = record_pos - (cd_off + cd_size)
            cd_start = cd_off + delta
        self.cd_start, self.cd_end = cd_start, cd_start + cd_size
        cd = self._read(cd_start, cd_size)
        entries, p = [], 0
        for _ in range(n_entries):
            if cd[p:p + 4] != _CDH:
                raise ArchiveError(f"{self._label()}: damaged central directory")
            (made_by, _, flags, method, _, _, crc, csize, usize, n_len, e_len, c_len, dstart, _, ext_attr,
             off) = struct.unpack("<HHHHHHIIIHHHHHII", cd[p + 4:p + 46])
            raw = cd[p + 46:p + 46 + n_len]
            extra = cd[p + 46 + n_len:p + 46 + n_len + e_len]
            p += 46 + n_len + e_len + c_len
            usize, csize, off, dstart = _zip64_extra(extra, usize, csize, off, dstart)
            name = raw.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
            mode = (ext_attr >> 16) if (made_by >> 8) == 3 else 0
            if len(disks) > 1:
                if dstart >= len(disks):
                    raise ArchiveError(f"{self._label()}: {name} starts on part {dstart + 1}, which is missing")
                goff = disks[dstart] + off
            else:
                goff = off + delta
            entries.append(ZipEntry(name, method, flags, crc, csize, usize, goff, mode))
        return entries

    def _disk_starts(self, n_disks: int) -> list[int]:
        if n_disks <= 1:
            return [0]
        if self.group is None:
            raise ArchiveError(f"{self._label()}: a spanned archive ({n_disks} disks) cannot be read from one stream")
        parts = len(self.group.parts)
        if n_disks != parts:
            raise ArchiveError(f"{self.group.name}: the archive spans {n_disks} parts but {parts} were found; "
                               "download every .zNN part and the .zip into the same folder")
        return list(self.f.starts)

    def open_stream(self, e: ZipEntry, limits: Limits) -> Iterator[bytes]:
        """The entry's uncompressed bytes, checked against its size and CRC-32."""
        if e.flags & 0x1:
            raise ArchiveError(f"{self._label()}: {e.name} is encrypted; sep-bench does not read encrypted archives")
        head = self._read(e.offset, 30)
        if head[:4] != _LFH:
            raise ArchiveError(f"{self._label()}: damaged local header for {e.name}")
        n_len, x_len = struct.unpack("<HH", head[26:30])
        pos = e.offset + 30 + n_len + x_len
        if e.method == 0:
            dec = None
        elif e.method == 8:
            dec = zlib.decompressobj(-15)
        elif e.method == 12:
            dec = bz2.BZ2Decompressor()
        else:
            raise ArchiveError(f"{self._label()}: {e.name} uses compression method {e.method}, which sep-bench does not "
                               "read (stored, deflate and bzip2 are supported); extract it with another tool first")
        remaining, out, crc = e.csize, 0, 0
        while True:
            if remaining > 0:
                self.f.seek(pos + e.csize - remaining)
                chunk = self.f.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ArchiveError(f"{self._label()}: {e.name} is truncated; a part is incomplete")
                remaining -= len(chunk)
            else:
                chunk = b""
            data = chunk if dec is None else dec.decompress(chunk, e.usize - out + 1)
            while True:  # bounded by the declared size, so a bomb never expands in memory
                out += len(data)
                if out > e.usize or out > limits.max_file_bytes:
                    raise ArchiveError(f"{self._label()}: {e.name} expands beyond its declared size {e.usize}")
                crc = zlib.crc32(data, crc)
                if data:
                    yield data
                if dec is None or not _pending(dec):
                    break
                data = dec.decompress(getattr(dec, "unconsumed_tail", b""), e.usize - out + 1)
                if not data:
                    break
            if remaining <= 0:
                break
        if dec is not None and isinstance(dec, type(zlib.decompressobj())):
            data = dec.flush()
            out += len(data)
            crc = zlib.crc32(data, crc)
            if out > e.usize:
                raise ArchiveError(f"{self._label()}: {e.name} expands beyond its declared size {e.usize}")
            if data:
                yield data
        if out != e.usize or (crc & 0xFFFFFFFF) != e.crc:
            raise ArchiveError(f"{self._label()}: {e.name} is corrupted (CRC or size mismatch)")


def _pending(dec) -> bool:
    """Whether a decompressor holds output back that another call (with no new input) would return."""
    if hasattr(dec, "unconsumed_tail"):
        return bool(dec.unconsumed_tail)
    return not dec.eof and not dec.needs_input


def _zip64_extra(extra: bytes, usize: int, csize: int, off: int, dstart: int) -> tuple[int, int, int, int]:
    p = 0
    while p + 4 <= len(extra):
        hid, hlen = struct.unpack("<HH", extra[p:p + 4])
        body = extra[p + 4:p + 4 + hlen]
        if hid == 0x0001:
            q = 0
            vals = []
            for cur, width in ((usize, 8), (csize, 8), (off, 8), (dstart, 4)):
                full = 0xFFFFFFFF if width == 8 else 0xFFFF
                if cur == full and q + width <= len(body):
                    vals.append(struct.unpack("<Q" if width == 8 else "<I", body[q:q + width])[0])
                    q += width
                else:
                    vals.append(cur)
            return vals[0], vals[1], vals[2], vals[3]
        p += 4 + hlen
    return usize, csize, off, dstart


# ---- shared safety checks -----------------------------------------------------------------------------------


def _safe_rel(archive: str, name: str) -> str:
    """The member's path relative to the destination ("" for the root); refuses anything that could escape."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a NUL byte in its name; refused")
    if re.search(r"[\x01-\x1f\x7f]", name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a control character in its name; refused")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refused")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..' (path traversal); refused")
    return "/".join(parts)


def _link_inside(archive: str, member: str, rel: str, target: str, hard: bool) -> bool:
    """Whether a link stays inside the destination; raises when it would escape."""
    t = target.replace("\\", "/")
    if t.startswith("/") or re.match(r"^[A-Za-z]:", t):
        inside = False
    else:
        base = [] if hard else rel.split("/")[:-1]  # hard links are relative to the archive root
        stack = list(base)
        inside = True
        for part in t.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    inside = False
                    break
                stack.pop()
            else:
                stack.append(part)
    if not inside:
        kind = "hard link" if hard else "symbolic link"
        raise UnsafeArchiveError(f"{archive}: member {member!r} is a {kind} to {target!r}, outside the extraction "
                                 "folder; refused")
    return True


class _Writer:
    """Creates folders and files under `dest` only, never following a link, within the limits."""

    def __init__(self, dest: Path, archive: str, limits: Limits):
        self.dest = dest
        self.real = os.path.realpath(dest)
        self.archive = archive
        self.limits = limits
        self.stats = ExtractStats()
        self.members = 0
        self._checked: set[Path] = set()

    def count(self, member: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise UnsafeArchiveError(f"{self.archive}: more than {self.limits.max_members} members; refused")

    def _folder(self, folder: Path) -> None:
        """Create `folder` and check, once per folder, that it resolves inside the destination."""
        if folder in self._checked:
            return
        folder.mkdir(parents=True, exist_ok=True)
        real = os.path.realpath(folder)
        if real != self.real and not real.startswith(self.real + os.sep):
            raise UnsafeArchiveError(f"{self.archive}: {folder} resolves outside the extraction folder; refused")
        self._checked.add(folder)

    def mkdir(self, rel: str) -> None:
        if rel:
            self._folder(self.dest / rel)

    def write(self, rel: str, chunks: Iterator[bytes], declared: int, compressed: int | None) -> None:
        if declared > self.limits.max_file_bytes:
            raise UnsafeArchiveError(f"{self.archive}: member {rel!r} is {declared} bytes, over the "
                                     f"{self.limits.max_file_bytes}-byte limit; refused")
        if compressed is not None and declared > (1 << 20) and declared > self.limits.max_ratio * max(compressed, 1):
            raise UnsafeArchiveError(f"{self.archive}: member {rel!r} expands {declared / max(compressed, 1):.0f}x "
                                     "(a compression bomb?); refused")
        target = self.dest / rel
        self._folder(target.parent)  # the last component is opened with O_NOFOLLOW
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        written = 0
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                written += len(chunk)
                self.stats.bytes += len(chunk)
                if written > self.limits.max_file_bytes or self.stats.bytes > self.limits.max_total_bytes:
                    raise UnsafeArchiveError(f"{self.archive}: extraction exceeds the size limits at {rel!r}; refused")
                f.write(chunk)
        self.stats.files += 1


# ---- extraction --------------------------------------------------------------------------------------------


def extract(group: ArchiveGroup, dest: str | Path, limits: Limits = Limits(), progress: Progress | None = None,
            select: Select | None = None) -> ExtractStats:
    """Extract one archive group into `dest` (created); see the module docstring for what is refused.

    `select`: extract only the members whose name it accepts (every name is still checked for safety)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if group.kind == "zip":
        with ZipReader(group) as z:
            return extract_zip_reader(z, dest, limits, progress, select, group.name)
    return _extract_tar(group, dest, limits, progress, select)


def extract_zip_reader(z: ZipReader, dest: str | Path, limits: Limits = Limits(), progress: Progress | None = None,
                       select: Select | None = None, name: str | None = None) -> ExtractStats:
    """Extract the members of an open `ZipReader` (those `select` accepts) into `dest`, safely."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    name = name or z._label()
    label = z._label()
    w = _Writer(dest, label, limits)
    # Check every member before writing anything.
    plan = []
    total = 0
    for e in z.entries:
        w.count(e.name)
        rel = _safe_rel(label, e.name)
        if select is not None and not select(e.name):
            continue
        kind = stat.S_IFMT(e.mode) if e.mode else 0
        if kind == stat.S_IFLNK:
            target = b"".join(z.open_stream(e, limits)).decode("utf-8", "replace")
            _link_inside(label, e.name, rel, target, hard=False)
            w.stats.skipped_links.append(rel)
            continue
        if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            raise UnsafeArchiveError(f"{label}: member {e.name!r} is a device/FIFO/socket; refused")
        total += e.usize
        plan.append((e, rel))
    if total > limits.max_total_bytes:
        raise UnsafeArchiveError(f"{label}: declares {total} bytes, over the {limits.max_total_bytes}-byte limit; "
                                 "refused")
    done = 0
    for e, rel in plan:
        try:
            if e.is_dir:
                w.mkdir(rel)
            elif rel:
                w.write(rel, z.open_stream(e, limits), e.usize, e.csize)
        except OSError as err:  # e.g. a member named like a folder another member needs
            raise ArchiveError(f"{label}: cannot write member {e.name!r} ({err})") from None
        done += 1
        if progress is not None and (done % 200 == 0 or done == len(plan)):
            progress(f"extracting {name}", done, len(plan))
    if w.stats.skipped_links:
        log.warning("%s: skipped %d link(s) inside the archive", label, len(w.stats.skipped_links))
    return w.stats


def _extract_tar(group: ArchiveGroup, dest: Path, limits: Limits, progress: Progress | None,
                 select: Select | None = None) -> ExtractStats:
    label = group.parts[0].name if len(group.parts) == 1 else f"{group.name} ({len(group.parts)} parts)"
    raw = MultiFile(group.parts)
    try:
        with tarfile.open(fileobj=io.BufferedReader(raw, 1 << 20), mode="r:*") as tar:
            w = _Writer(dest, label, limits)
            for m in tar:
                w.count(m.name)
                rel = _safe_rel(label, m.name)
                if select is not None and not select(m.name):
                    continue
                if m.issym() or m.islnk():
                    _link_inside(label, m.name, rel, m.linkname, hard=m.islnk())
                    w.stats.skipped_links.append(rel)
                elif m.ischr() or m.isblk() or m.isfifo() or m.isdev():
                    raise UnsafeArchiveError(f"{label}: member {m.name!r} is a device/FIFO; refused")
                elif m.isdir():
                    w.mkdir(rel)
                elif m.isfile():
                    src = tar.extractfile(m)
                    if src is None:
                        raise ArchiveError(f"{label}: cannot read member {m.name!r}")
                    w.write(rel, iter(lambda: src.read(1 << 20), b""), m.size, None)
                else:
                    raise UnsafeArchiveError(f"{label}: member {m.name!r} has an unsupported type; refused")
                if progress is not None and w.members % 200 == 0:
                    progress(f"extracting {group.name}", raw.tell(), raw.length)
            if progress is not None:
                progress(f"extracting {group.name}", raw.length, raw.length)
            if w.stats.skipped_links:
                log.warning("%s: skipped %d link(s) inside the archive", label, len(w.stats.skipped_links))
            return w.stats
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        if isinstance(err, (UnsafeArchiveError, ArchiveError)):
            raise
        raise ArchiveError(f"{label}: damaged or incomplete tar archive ({err})") from None
    finally:
        raw.close()
