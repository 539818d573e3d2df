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

The PyPI package ``remotezip`` reads a remote zip with Range requests but only over one URL; it cannot span 500
slices served by separate URLs, hence this module. Slices already on disk (``--root`` with ``GenImage.z000``...)
are read in place by `extract.MultiFile`; only the member selection (`member_selector`) is shared.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import requests

from sep_bench.data.acquire.catalog import AcquireError, Benchmark
from sep_bench.data.acquire.download import Progress, Slice, fetch_span
from sep_bench.data.acquire.extract import (ArchiveError, Limits, ReadOnlyFile, Select, ZipEntry, ZipReader,
                                            extract_zip_reader)

__all__ = ["SparseFile", "SlicedArchive", "RemoteZip", "member_selector", "plan_spans", "human_bytes",
           "SLICE_RE", "find_slice_sets"]

log = logging.getLogger(__name__)

SLICE_RE = re.compile(r"^(?P<base>.+)\.z(?P<n>\d{3})$", re.I)  # GenImage.z000 ... (3 digits: byte slices)
_SPLITS = {"train": "train", "val": "val", "validation": "val", "valid": "val"}
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
            n += got
            self._pos += got
        return n

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
    sparse: SparseFile
    select: Select
    name: str
    files: list[Path] = field(default_factory=list)  # span files (deleted once installed)

    def extract(self, dest: Path, limits: Limits, progress: Progress | None) -> None:
        self.sparse.allow_fetch = False  # every byte needed was fetched: never download while extracting
        try:
            extract_zip_reader(self.reader, dest, limits, progress, self.select, self.name)
        except ArchiveError as err:
            bad = self.sparse.last_span
            if bad is not None and "corrupted" in str(err):
                bad.unlink(missing_ok=True)
                raise ArchiveError(f"{err}; the downloaded range {bad.name} was deleted: run the command again to "
                                   "fetch it anew") from None
            raise
        finally:
            self.reader.close()


class SlicedArchive:
    """A zip archive cut into `slices` (remote URLs or local files), read through span files in `cache`."""

    def __init__(self, slices: Sequence[Slice], cache: Path, *, session: requests.Session | None = None,
                 validator: str = "", retries: int = 5, backoff: float = 1.0, progress: Progress | None = None,
                 notify: Callable[[str], None] | None = None, label: str = "archive"):
        self.slices = list(slices)
        self.total = sum(s.size for s in self.slices)
        self.cache = Path(cache)
        self.session = session or requests.Session()
        self.validator = validator
        self.retries, self.backoff = retries, backoff
        self.progress = progress
        self.notify = notify or log.info
        self.label = label
        self.received = [0]  # bytes received over HTTP
        self.sparse = SparseFile(self.total, self._fetch, label)
        self.files: list[Path] = []
        self._reuse()

    def _span_path(self, start: int, end: int) -> Path:
        return self.cache / f"{self.label}.bytes-{start:015d}-{end:015d}"

    def _reuse(self) -> None:
        """Complete span files of earlier runs (same archive version) are used again."""
        vfile = self.cache / f"{self.label}.version"
        if vfile.is_file() and vfile.read_text() != self.validator:
            for p in self.cache.glob(f"{self.label}.bytes-*"):
                p.unlink()
        self.cache.mkdir(parents=True, exist_ok=True)
        vfile.write_text(self.validator)
        for p in self.cache.glob(f"{self.label}.bytes-*"):
            m = re.fullmatch(r".+\.bytes-(\d+)-(\d+)", p.name)
            if m and p.stat().st_size == int(m.group(2)) - int(m.group(1)):
                self.sparse.add(int(m.group(1)), int(m.group(2)), p)
                self.files.append(p)

    def _fetch(self, start: int, end: int) -> Path:
        if end - start > (16 << 20):
            self.notify(f"{self.label}: reading {human_bytes(end - start)} of the archive's index "
                        f"(bytes {start}-{end} of {human_bytes(self.total)})")
        dest = self._span_path(start, end)
        fetch_span(self.slices, start, end, dest, session=self.session, validator=self.validator,
                   retries=self.retries, backoff=self.backoff, progress=self.progress,
                   label=f"{self.label} index", counter=self.received)
        self.files.append(dest)
        return dest

    def open(self) -> ZipReader:
        """Read the end records and the central directory (fetching them); return a reader over the archive."""
        return ZipReader(f=self.sparse, label=f"{self.label} ({len(self.slices)} slices)")

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
                fetch_span(self.slices, a, b, dest, session=self.session, validator=self.validator,
                           retries=self.retries, backoff=self.backoff, label=self.label, counter=self.received,
                           progress=(lambda t, d, n, base=done: self.progress(t, base + d, total))
                           if self.progress else None)
                self.sparse.add(a, b, dest)
                self.files.append(dest)
            done += b - a
