"""Resumable HTTP downloads: Range requests, retries, a progress callback, checksum check, atomic finalisation.

A download writes ``<dest>.part`` and, beside it, ``<dest>.part.json`` (the URL and the server's validator).
An interrupted transfer (dropped connection, timeout, a killed process) leaves the ``.part`` file; the next
attempt, in this call or a later run, asks for the rest with ``Range: bytes=<n>-`` (plus ``If-Range`` with the
validator, so a changed file restarts from zero). Only a complete file whose checksum matches is renamed to
`dest`, so `dest` existing means the file is whole.

Credentials travel in a `ScopedSession`: each one is bound to the host it belongs to and is put on a request
(every hop of a redirect chain included) only when that request goes to that host, so a redirect to object
storage or a CDN never carries the Dataverse key or the Hugging Face token. `fetch_span` downloads one byte range
of a file cut into slices (GenImage on Dataverse) with single-range requests, resumable like `download`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

import requests

from sep_bench.data.acquire.catalog import AcquireError

__all__ = ["download", "file_digest", "ChecksumError", "DownloadError", "Progress", "ScopedSession", "Slice",
           "fetch_span", "host_of"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (task, completed, total)

_CHUNK = 1 << 20


class ChecksumError(AcquireError):
    """A file's checksum differs from the publisher's; the message names the file."""


class DownloadError(AcquireError):
    """A transfer failed after every retry."""


def file_digest(path: str | Path, algorithm: str = "sha256", progress: Progress | None = None,
                task: str | None = None) -> str:
    h = hashlib.new(algorithm)
    size = os.path.getsize(path)
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(task or f"{algorithm} {Path(path).name}", done, size)
    return h.hexdigest()


def check_digest(path: Path, algorithm: str, expected: str, label: str | None = None,
                 progress: Progress | None = None) -> None:
    actual = file_digest(path, algorithm, progress, f"checking {label or path.name}")
    if actual.lower() != expected.lower():
        raise ChecksumError(f"{label or path.name}: {algorithm} mismatch (expected {expected.lower()}, got {actual}); "
                            "the file is corrupted or incomplete: delete it and download it again")


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, lower case: the scope of a credential."""
    u = urlsplit(url)
    host = (u.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(u.scheme)
    return host if u.port in (None, default) else f"{host}:{u.port}"


class ScopedSession(requests.Session):
    """A session whose credentials are sent to their own host only, on every request and every redirect hop.

    ``add_credential(url, header, value)`` binds a header (``X-Dataverse-key``, ``Authorization``...) to the
    host of `url`. `send` (which requests also calls for each redirect it follows) removes every credential
    header, then adds back those bound to the request's host; plain ``requests`` would keep custom headers on a
    redirect to another host.
    """

    def __init__(self):
        super().__init__()
        self._creds: dict[str, dict[str, str]] = {}

    def add_credential(self, url: str, header: str, value: str) -> None:
        self._creds.setdefault(host_of(url), {})[header] = value

    def send(self, request, **kwargs):
        names = {h.lower() for creds in self._creds.values() for h in creds} | {"authorization"}
        for h in [h for h in request.headers if h.lower() in names]:
            if h.lower() == "authorization" and not self._creds:
                continue  # nothing scoped: requests' own rule applies (stripped on a change of host)
            del request.headers[h]
        for h, v in self._creds.get(host_of(request.url), {}).items():
            request.headers[h] = v
        return super().send(request, **kwargs)


@dataclass
class _Attempt:
    done: int
    total: int | None


def _content_range_total(value: str | None) -> tuple[int | None, int | None]:
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if not m:
        return None, None
    return int(m.group(1)), (None if m.group(2) == "*" else int(m.group(2)))


def download(
    url: str,
    dest: str | Path,
    *,
    expected_size: int | None = None,
    checksum: tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: Progress | None = None,
    label: str | None = None,
) -> Path:
    """Download `url` to `dest` (resuming a ``.part`` left by an earlier attempt); return `dest`.

    `checksum` is ``(algorithm, hexdigest)`` (md5, sha1, sha256...). An existing `dest` is kept when it matches
    `checksum`/`expected_size` (or when neither is given). Raises `DownloadError` after `retries` failed
    attempts (the ``.part`` stays for the next run) and `ChecksumError` when the complete file does not match
    (the ``.part`` is deleted: it cannot be repaired by resuming).
    """
    dest = Path(dest)
    label = label or dest.name
    if dest.exists():
        if expected_size is not None and dest.stat().st_size != expected_size:
            log.warning("%s: size %d differs from the expected %d; downloading again", dest, dest.stat().st_size,
                        expected_size)
            dest.unlink()
        else:
            if checksum is not None:
                check_digest(dest, checksum[0], checksum[1], label, progress)
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meta_path = dest.with_name(dest.name + ".part.json")
    meta = _read_meta(meta_path, url)
    sess = session or requests.Session()
    att = _resuming(lambda: _attempt(sess, url, part, meta, meta_path, dict(headers or {}), timeout, progress, label),
                    part, label, retries, backoff)
    if expected_size is not None and att.done != expected_size:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise ChecksumError(f"{label}: received {att.done} bytes, expected {expected_size}")
    if checksum is not None:
        try:
            check_digest(part, checksum[0], checksum[1], label, progress)
        except ChecksumError:
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            raise
    os.replace(part, dest)
    meta_path.unlink(missing_ok=True)
    return dest


class _Incomplete(Exception):
    """The server closed the body before the announced length."""


def _read_meta(meta_path: Path, url: str) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {"url": url}
    if meta.get("url") != url:  # a different file was being fetched here: start over
        meta_path.with_name(meta_path.name[: -len(".json")]).unlink(missing_ok=True)
        return {"url": url}
    return meta


T = TypeVar("T")
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, _Incomplete)


def _resuming(attempt: Callable[[], T], part: Path, label: str, retries: int, backoff: float) -> T:
    """`attempt()` until it returns; after a transient failure it runs again (it resumes from what `part` holds),
    at most `retries` more times, waiting `backoff` x the failure count in between."""
    failures = 0
    while True:
        try:
            return attempt()
        except _TRANSIENT as err:
            failures += 1
            have = part.stat().st_size if part.exists() else 0
            if failures > retries:
                raise DownloadError(f"{label}: download failed after {failures} attempts ({err}); {have} bytes kept "
                                    f"in {part}; run the command again to resume") from None
            log.warning("%s: transfer interrupted at %d bytes (%s); resuming (attempt %d of %d)", label, have, err,
                        failures + 1, retries + 1)
            time.sleep(backoff * failures)


def _attempt(sess: requests.Session, url: str, part: Path, meta: dict, meta_path: Path, headers: dict,
             timeout: float, progress: Progress | None, label: str) -> _Attempt:
    have = part.stat().st_size if part.exists() else 0
    if have:
        headers["Range"] = f"bytes={have}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]
    headers.setdefault("Accept-Encoding", "identity")  # sizes and ranges refer to the stored bytes
    with sess.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True) as r:
        if r.status_code == 416 and have:
            # Range not satisfiable: either the .part is already complete or the file shrank. Start over.
            m = re.fullmatch(r"bytes \*/(\d+)", r.headers.get("Content-Range", "").strip())
            if m and int(m.group(1)) == have:
                return _Attempt(have, have)
            part.unlink(missing_ok=True)
            raise _Incomplete("server refused the range; restarting from zero")
        if r.status_code in (401, 403):
            raise DownloadError(f"{label}: access denied (HTTP {r.status_code}) for {url}; the source needs a token "
                                "or an accepted licence (see README 'Getting the real data')")
        if r.status_code == 404:
            raise DownloadError(f"{label}: not found (HTTP 404) at {url}")
        if r.status_code >= 500 or r.status_code == 429:
            raise _Incomplete(f"HTTP {r.status_code}")
        if r.status_code >= 400:
            raise DownloadError(f"{label}: HTTP {r.status_code} from {url}")
        if r.status_code == 206:
            start, total = _content_range_total(r.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Incomplete(f"server answered range start {start}, asked {have}")
            mode = "ab"
        else:  # 200: the whole file (first attempt, or the server ignored/refused our range)
            have = 0
            cl = r.headers.get("Content-Length")
            total = int(cl) if cl and cl.isdigit() else None
            mode = "wb"
        validator = r.headers.get("ETag") or r.headers.get("Last-Modified")
        if validator and not validator.startswith("W/") and meta.get("validator") != validator:
            meta["validator"] = validator
        meta_path.write_text(json.dumps(meta))
        done = have
        with open(part, mode) as f:
            for chunk in _chunks(r):
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(label, done, total or done)
        if total is not None and done < total:
            raise _Incomplete(f"connection closed at {done} of {total} bytes")
        return _Attempt(done, total)


def _chunks(r: requests.Response):
    """The body as it arrives: every byte received before a connection drops reaches the .part file."""
    raw = r.raw
    read1 = getattr(raw, "read1", None)
    if read1 is None or r.headers.get("Content-Encoding", "identity") not in ("identity", ""):
        yield from r.iter_content(_CHUNK)
        return
    try:
        while chunk := read1(_CHUNK):
            yield chunk
    except Exception as err:  # urllib3's protocol errors: a broken transfer, resumed by the caller
        raise _Incomplete(str(err)) from None


# ---- byte ranges of a sliced file --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slice:
    """One byte slice of a file cut into pieces (``GenImage.z000``...): where to get it and its size."""

    name: str
    size: int
    url: str | None = None  # remote slice
    path: Path | None = None  # slice on disk


def _pieces(slices: Sequence[Slice], start: int, end: int) -> list[tuple[int, int, int]]:
    """``(slice index, first byte, end byte)`` within each slice covering the global range [start, end)."""
    out, pos = [], 0
    for i, s in enumerate(slices):
        a, b = max(start, pos), min(end, pos + s.size)
        if a < b:
            out.append((i, a - pos, b - pos))
        pos += s.size
    if end > pos:
        raise AcquireError(f"byte range {start}-{end} lies beyond the end of the archive ({pos} bytes)")
    return out


def fetch_span(
    slices: Sequence[Slice],
    start: int,
    end: int,
    dest: str | Path,
    *,
    session: requests.Session | None = None,
    validator: str = "",
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: Progress | None = None,
    label: str | None = None,
    counter: list[int] | None = None,
) -> Path:
    """Write the bytes [start, end) of the concatenation of `slices` to `dest`; return `dest`.

    Each slice the range touches is asked for its part with one ``Range: bytes=a-b`` request (Dataverse honours
    a single range and no ``If-Range``). Like `download`, bytes go to ``<dest>.part`` and an interrupted
    transfer resumes from its length, in this call or a later run; ``<dest>.part.json`` holds the range and
    `validator` (e.g. the dataset version), and a different one starts over. `counter[0]` is increased by
    every byte received (for measuring). Slices with a `path` are read from disk.
    """
    dest = Path(dest)
    label = label or dest.name
    if dest.exists() and dest.stat().st_size == end - start:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meta_path = dest.with_name(dest.name + ".part.json")
    want = {"start": start, "end": end, "validator": validator}
    try:
        if json.loads(meta_path.read_text()) != want:
            part.unlink(missing_ok=True)
    except (OSError, ValueError):
        part.unlink(missing_ok=True)
    meta_path.write_text(json.dumps(want))
    sess = session or requests.Session()

    def attempt() -> None:
        have = part.stat().st_size if part.exists() else 0
        if have > end - start:  # more than the span: not a prefix of it
            part.unlink()
            have = 0
        _span_attempt(slices, start + have, end, part, sess, timeout, progress, label, start, counter)

    _resuming(attempt, part, label, retries, backoff)
    if part.stat().st_size != end - start:
        raise DownloadError(f"{label}: received {part.stat().st_size} bytes, expected {end - start}")
    os.replace(part, dest)
    meta_path.unlink(missing_ok=True)
    return dest


def _span_attempt(slices: Sequence[Slice], start: int, end: int, part: Path, sess: requests.Session, timeout: float,
                  progress: Progress | None, label: str, origin: int, counter: list[int] | None) -> None:
    done = start - origin
    with open(part, "ab") as f:
        for i, a, b in _pieces(slices, start, end):
            s = slices[i]
            if s.path is not None:
                with open(s.path, "rb") as src:
                    src.seek(a)
                    left = b - a
                    while left > 0:
                        chunk = src.read(min(left, _CHUNK))
                        if not chunk:
                            raise DownloadError(f"{label}: {s.path} is shorter than its listed size {s.size}")
                        f.write(chunk)
                        left -= len(chunk)
                        done += len(chunk)
                continue
            headers = {"Range": f"bytes={a}-{b - 1}", "Accept-Encoding": "identity"}
            with sess.get(s.url, headers=headers, stream=True, timeout=timeout, allow_redirects=True) as r:
                if r.status_code in (401, 403):
                    raise DownloadError(f"{s.name}: access denied (HTTP {r.status_code}) for {s.url}; the source "
                                        "needs a token or an accepted licence (see README 'Getting the real data')")
                if r.status_code == 404:
                    raise DownloadError(f"{s.name}: not found (HTTP 404) at {s.url}")
                if r.status_code >= 500 or r.status_code == 429:
                    raise _Incomplete(f"HTTP {r.status_code}")
                if r.status_code != 206:
                    raise DownloadError(f"{s.name}: the server answered HTTP {r.status_code} to a byte-range request "
                                        f"(bytes={a}-{b - 1}); without ranges only the whole archive can be fetched")
                got_start, _ = _content_range_total(r.headers.get("Content-Range"))
                if got_start != a:
                    raise DownloadError(f"{s.name}: the server answered range start {got_start}, asked {a}")
                left = b - a
                for chunk in _chunks(r):
                    chunk = chunk[:left]
                    f.write(chunk)
                    left -= len(chunk)
                    done += len(chunk)
                    if counter is not None:
                        counter[0] += len(chunk)
                    if progress is not None:
                        progress(label, done, end - origin)
                    if left <= 0:
                        break
                f.flush()
                if left > 0:
                    raise _Incomplete(f"connection closed {left} bytes before the end of {s.name}'s range")
