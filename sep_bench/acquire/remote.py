"""Reading one zip archive cut into byte slices without downloading all of it (GenImage on Dataverse).

The Dataverse deposit of GenImage (doi:10.7910/DVN/AKDIHF) is ONE Zip64 archive of about 654 GB cut into byte
slices ``GenImage.z000`` ... ``GenImage.z499`` (no ``.zip`` part; ``cat GenImage.z* > GenImage.zip`` restores
it). Members are ``GenImage/<generator folder>/{train,val}/{ai,nature}/...``. The slices concatenated are one
ordinary one-disk zip, so every offset in it is global:

1. the end records and the central directory are read with single-range requests on the last slice(s)
   (`SparseFile` fetches a missing range on demand and keeps it in the cache as a span file);
2. every member is mapped to its global byte range: from its local header to the next member's local header
   (or the central directory), which covers the local header, the data and any data descriptor;
3. the ranges of the selected members (requested generators and splits) are merged into spans, each fetched with
   one ``Range`` request per slice it touches (`download.fetch_span`: resumable, kept across runs);
4. the members are then read from the spans by `extract.ZipReader` (size and CRC-32 of every member checked) and
   written by the safe extraction of `extract.extract_zip_reader`.

A 206 answer can carry the right ``Content-Range`` and the wrong bytes; nothing in the transfer can tell. So span
files are never trusted by their size: each one's sha256 is recorded when it is written and checked before it is
reused in a later run; the members a reused span holds are CRC-checked before extraction (a span that fails is
deleted, the user told, and fetched again in the same run); an index that does not parse, or a member that fails
its CRC or local header during extraction, deletes the spans involved (the member's and the index's) and the
error names the cache folder, so the next run against an honest server fetches them anew.

The PyPI package ``remotezip`` reads a remote zip with Range requests but only over one URL; it cannot span 500
slices served by separate URLs, hence this module. Slices already on disk (``--root`` with ``GenImage.z000``...)
are read in place by `extract.MultiFile`; only the member selection (`member_selector`) is shared.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import requests

from sep_bench.acquire import safepath
from sep_bench.acquire.catalog import AcquireError, Benchmark
from sep_bench.acquire.download import Progress, ScopedSession, Slice, check_recorded, discard, fetch_span
from sep_bench.acquire.extract import (ArchiveError, Limits, ReadOnlyFile, Select, ZipEntry, ZipReader,
                                            extract_zip_reader)
from sep_bench.acquire.transfer import Policy

__all__ = ["SparseFile", "SlicedArchive", "RemoteZip", "member_selector", "plan_spans", "human_bytes",
           "SLICE_RE", "find_slice_sets"]

log = logging.getLogger(__name__)

SLICE_RE = re.compile(r"^(?P<base>.+)\.z(?P<n>\d{3})$", re.I)  # GenImage.z000 ... (3 digits: byte slices)
_SPLITS = {"train": "train", "val": "val", "validation": "val", "valid": "val"}
_SPAN_RE = re.compile(r".+\.bytes-(\d{15})-(\d{15})")
MERGE_GAP = 64 << 10  # unselected bytes between two selected ranges that are fetched rather than split on


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def find_slice_sets(names: Sequence[str]) -> dict[str, list[str]]:
    """``{base: [names in order]}`` for the byte-sliced archives among `names` (``base.z000``... with no
    ``base.zip``). Raises `AcquireError` naming missing slices."""
    sets: dict[str, dict[int, str]] = {}
    plain = {n.lower() for n in names}
    for n in names:
        m = SLICE_RE.match(Path(n).name)
        if m and f"{m.group('base')}.zip".lower() not in plain:
            sets.setdefault(m.group("base"), {})[int(m.group("n"))] = n
    out = {}
    for base, parts in sets.items():
        if 0 not in parts:
            continue  # .z01-style parts of a spanned archive, not byte slices
        missing = [i for i in range(max(parts) + 1) if i not in parts]
        if missing:
            raise AcquireError(f"{base}: the sliced archive lacks slice(s) "
                               + ", ".join(f"{base}.z{i:03d}" for i in missing[:10]))
        out[base] = [parts[i] for i in sorted(parts)]
    return out


def member_selector(bench: Benchmark, wanted: set[str], splits: set[str] | None = None, hint=None,
                    keep_unknown: bool = True) -> Select:
    """Accept a member when the generator its path names (first folder naming one, else `hint`) is wanted and
    its split folder (if any) is among `splits`; members naming no generator are kept when `keep_unknown`."""
    def select(name: str) -> bool:
        parts = [p for p in name.replace("\\", "/").split("/") if p]
        folders = parts[:-1] if not name.endswith("/") else parts
        gen = next((g for p in folders if (g := bench.match_in(p)) is not None), None) or hint
        if gen is None:
            return keep_unknown
        if gen.folder not in wanted:
            return False
        if splits:
            split = next((_SPLITS[p.lower()] for p in folders if p.lower() in _SPLITS), None)
            if split is not None and split not in splits:
                return False
        return True

    return select


class SparseFile(ReadOnlyFile):
    """A read-only file of `length` bytes of which some ranges are on disk (span files). Reading a range that is
    not there calls `fetch(start, end) -> Path` while `allow_fetch` is set, else raises `ArchiveError`."""

    def __init__(self, length: int, fetch: Callable[[int, int], Path], label: str = "archive"):
        super().__init__()
        self.length = length
        self.fetch = fetch
        self.label = label
        self.allow_fetch = True
        self.spans: list[tuple[int, int, Path]] = []
        self.last_span: Path | None = None
        self.touched: set[Path] = set()  # span files read from
        self._pos = 0
        self._handles: dict[Path, io.BufferedReader] = {}

    def add(self, start: int, end: int, path: Path) -> None:
        self.spans.append((start, end, Path(path)))
        self.spans.sort(key=lambda s: (s[0], -s[1]))

    def covered(self, start: int, end: int) -> bool:
        pos = start
        for a, b, _ in self.spans:
            if a <= pos < b:
                pos = b
            if pos >= end:
                return True
        return pos >= end

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        n = 0
        while n < len(view) and self._pos < self.length:
            span = next(((a, e, p) for a, e, p in self.spans if a <= self._pos < e), None)
            if span is None:
                want_end = min(self._pos + len(view) - n, self.length)
                nxt = min((a for a, _, _ in self.spans if a > self._pos), default=self.length)
                want_end = min(want_end, nxt)
                if not self.allow_fetch:
                    raise ArchiveError(f"{self.label}: bytes {self._pos}-{want_end} were not downloaded")
                self.add(self._pos, want_end, self.fetch(self._pos, want_end))
                continue
            a, e, p = span
            f = self._handles.get(p)
            if f is None:
                f = self._handles[p] = open(p, "rb")
            f.seek(self._pos - a)
            got = f.readinto(view[n:n + min(len(view) - n, e - self._pos)])
            if not got:
                raise ArchiveError(f"{self.label}: {p} is shorter than the range it holds")
            self.last_span = p
            self.touched.add(p)
            n += got
            self._pos += got
        return n

    def forget(self, path: Path) -> None:
        """Stop reading the span file `path` (it is being deleted)."""
        self.spans = [s for s in self.spans if s[2] != path]
        f = self._handles.pop(path, None)
        if f is not None:
            f.close()
        if self.last_span == path:
            self.last_span = None

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles.clear()
        super().close()


def plan_spans(entries: Sequence[ZipEntry], selected: Sequence[ZipEntry], cd_start: int,
               merge_gap: int = MERGE_GAP) -> list[tuple[int, int]]:
    """The global byte ranges holding `selected` members: each from its local header to the next member's (or
    the central directory), adjacent ones (gaps up to `merge_gap`) merged."""
    starts = sorted({e.offset for e in entries})
    nxt = {s: (starts[i + 1] if i + 1 < len(starts) else cd_start) for i, s in enumerate(starts)}
    spans: list[list[int]] = []
    for e in sorted(selected, key=lambda e: e.offset):
        a, b = e.offset, max(nxt[e.offset], e.offset + 30 + len(e.name.encode()) + e.csize)
        if spans and a - spans[-1][1] <= merge_gap:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    return [(a, b) for a, b in spans]


@dataclass
class RemoteZip:
    """Members of a remote sliced archive whose bytes are in the cache, ready for safe extraction."""

    reader: ZipReader
    archive: "SlicedArchive"
    select: Select
    name: str

    @property
    def files(self) -> list[Path]:
        return list(self.archive.files)  # span files (deleted once installed)

    def extract(self, dest: Path, limits: Limits, progress: Progress | None) -> None:
        sparse = self.archive.sparse
        sparse.allow_fetch = False  # every byte needed was fetched: never download while extracting
        try:
            extract_zip_reader(self.reader, dest, limits, progress, self.select, self.name)
        except ArchiveError as err:
            dropped = self.archive.drop_after_failure(sparse.last_span, self.reader.cd_start)
            raise ArchiveError(f"{err}; {dropped}") from None
        finally:
            self.reader.close()


class SlicedArchive:
    """A zip archive cut into `slices` (remote URLs or local files), read through span files in the folder
    ``root / subdir / <label>.ranges`` (every file operation checked to stay inside `root`, the download cache).

    Spans are reused from an earlier run only when their recorded sha256 matches (`_reuse`); `verify_reused`
    also checks the CRC-32 of the selected members they hold. Bytes that fail (a span whose recorded digest
    differs, a member whose CRC or local header is wrong, an index that does not parse) are deleted from the
    cache and the user is told; `open` retries once with a fresh index when a reused one fails.
    """

    def __init__(self, slices: Sequence[Slice], root: Path, *, subdir: str = "",
                 session: requests.Session | None = None,
                 validator: str = "", retries: int = 5, backoff: float = 1.0, progress: Progress | None = None,
                 notify: Callable[[str], None] | None = None, label: str = "archive", policy: Policy | None = None):
        self.slices = list(slices)
        self.total = sum(s.size for s in self.slices)
        self.root = Path(root)
        self.label = safepath.check_name(label, what="archive name", service="sliced archive")
        self.cache = safepath.inside(self.root, f"{subdir}/{self.label}.ranges" if subdir else f"{self.label}.ranges",
                                     what="archive name", service="sliced archive")
        self.policy = policy or Policy()
        self.session = session or ScopedSession(self.policy)
        self.validator = validator
        self.retries, self.backoff = retries, backoff
        self.progress = progress
        self.notify = notify or log.info
        self.received = [0]  # bytes received over HTTP
        self.sparse = SparseFile(self.total, self._fetch, label)
        self.files: list[Path] = []
        self.reused: set[Path] = set()
        self._reuse()

    def _span_path(self, start: int, end: int) -> Path:
        return self.cache / f"{self.label}.bytes-{start:015d}-{end:015d}"

    def _spans_on_disk(self) -> list[Path]:
        return sorted(p for p in self.cache.glob(f"{self.label}.bytes-*") if _SPAN_RE.fullmatch(p.name))

    def _reuse(self) -> None:
        """Complete span files of earlier runs (same archive version, recorded sha256 matching) are used again;
        others are deleted, and the user told."""
        safepath.mkdir(self.root, self.cache)
        vfile = self.cache / f"{self.label}.version"
        if vfile.is_file() and vfile.read_text() != self.validator:
            for p in self._spans_on_disk():
                discard(self.root, p)
        safepath.write_text(self.root, vfile, self.validator)
        bad = []
        for p in self._spans_on_disk():
            m = _SPAN_RE.fullmatch(p.name)
            a, b = int(m.group(1)), int(m.group(2))
            if p.is_symlink() or not p.is_file() or p.stat().st_size != b - a or not check_recorded(p):
                bad.append(p.name)
                discard(self.root, p)
                continue
            self.sparse.add(a, b, p)
            self.files.append(p)
            self.reused.add(p)
        if bad:
            self.notify(f"{self.label}: {len(bad)} cached range(s) in {self.cache} failed their recorded sha256 "
                        f"(e.g. {bad[0]}); deleted, they will be fetched again")

    def _fetch(self, start: int, end: int) -> Path:
        if end - start > (16 << 20):
            self.notify(f"{self.label}: reading {human_bytes(end - start)} of the archive's index "
                        f"(bytes {start}-{end} of {human_bytes(self.total)})")
        dest = self._span_path(start, end)
        fetch_span(self.slices, start, end, dest, root=self.root, session=self.session, validator=self.validator,
                   retries=self.retries, backoff=self.backoff, policy=self.policy, progress=self.progress,
                   label=f"{self.label} index", counter=self.received)
        self.files.append(dest)
        return dest

    def _drop(self, paths) -> list[str]:
        names = []
        for p in {Path(p) for p in paths if p is not None}:
            self.sparse.forget(p)
            discard(self.root, p)
            self.files = [f for f in self.files if f != p]
            self.reused.discard(p)
            names.append(p.name)
        return sorted(names)

    def drop_after_failure(self, member_span: Path | None, cd_start: int) -> str:
        """Delete the span that failed and the index spans (those reaching past `cd_start`: the members' offsets
        came from them); say what was done."""
        names = self._drop([member_span, *[p for _, b, p in self.sparse.spans if b > cd_start]])
        return (f"the cached range(s) {', '.join(names) or '(none)'} in {self.cache} were deleted: run the command "
                "again to fetch them anew")

    def open(self) -> ZipReader:
        """Read the end records and the central directory (fetching them); return a reader over the archive.
        A reused index that does not parse is deleted and fetched once more."""
        for attempt in (0, 1):
            try:
                return ZipReader(f=self.sparse, label=f"{self.label} ({len(self.slices)} slices)")
            except ArchiveError as err:  # the spans it read are at fault: drop them, keep the others
                read = set(self.sparse.touched)
                stale = bool(read & self.reused)
                names = self._drop(read)
                kept = list(self.sparse.spans)
                self.sparse = SparseFile(self.total, self._fetch, self.label)  # the reader closed the old one
                for a, b, p in kept:
                    self.sparse.add(a, b, p)
                if attempt == 0 and stale:
                    self.notify(f"{self.label}: the cached index ranges in {self.cache} do not read as a zip index "
                                f"({err}); deleted {len(names)} cached range(s), fetching the index again")
                    continue
                raise ArchiveError(f"{err}; the index as downloaded was deleted from {self.cache}: run the command "
                                   "again to fetch it anew (if it fails again, the service serves a damaged archive)"
                                   ) from None
        raise AssertionError("unreachable")

    def verify_reused(self, reader: ZipReader, chosen: Sequence[ZipEntry]) -> None:
        """Check the CRC-32 of every chosen member that lies in a span reused from an earlier run; a span that
        fails is deleted (and the user told), so `fetch` downloads it again."""
        for a, b, p in sorted(self.sparse.spans, key=lambda s: s[0]):
            if p not in self.reused:
                continue
            members = [e for e in chosen if not e.is_dir and a <= e.offset < b]
            try:
                for e in members:
                    for _ in reader.open_stream(e, Limits()):
                        pass
            except ArchiveError as err:
                self._drop([p])
                self.notify(f"{self.label}: the cached range {p.name} in {self.cache} fails its check ({err}); "
                            "deleted, fetching it again")

    def slice_range(self, start: int, end: int) -> tuple[str, str]:
        pos, first, last = 0, None, None
        for s in self.slices:
            if first is None and start < pos + s.size:
                first = s.name
            if end > pos:
                last = s.name
            pos += s.size
        return first or "?", last or "?"

    def fetch(self, spans: Sequence[tuple[int, int]]) -> None:
        """Download the spans not yet in the cache (resumable)."""
        total = sum(b - a for a, b in spans)
        done = 0
        for a, b in spans:
            if not self.sparse.covered(a, b):
                dest = self._span_path(a, b)
                fetch_span(self.slices, a, b, dest, root=self.root, session=self.session, validator=self.validator,
                           retries=self.retries, backoff=self.backoff, policy=self.policy, label=self.label,
                           counter=self.received,
                           progress=(lambda t, d, n, base=done: self.progress(t, base + d, total))
                           if self.progress else None)
                self.sparse.add(a, b, dest)
                self.files.append(dest)
            done += b - a
