"""Resumable HTTP downloads: Range requests, retries, a progress callback, checksum check, atomic finalisation.

A download writes ``<dest>.part`` and, beside it, ``<dest>.part.json`` (the URL and the server's validator).
An interrupted transfer (dropped connection, timeout, a transfer below the minimum rate, a killed process)
leaves the ``.part`` file; the next attempt, in this call or a later run, asks for the rest with
``Range: bytes=<n>-`` (plus ``If-Range`` with the validator, so a changed file restarts from zero). Only a
complete file whose checksum matches is renamed to `dest`, so `dest` existing means the file is whole. A file
without a published checksum gets its sha256 recorded beside it (``.<name>.sha256``) when it is finalised.

A cached `dest` is reused only after verification: the published checksum, else the recorded sha256 (and the
listed size). A copy that fails is deleted, the user is told, and it is downloaded again in the same call.

Every file operation goes through `safepath` under a `root` (the download folder): nothing outside it is
written, replaced or deleted, and no link inside it is followed. Every request is bounded by a `transfer.Policy`
(read timeout, minimum rate, deadline, redirects); network failures become one-line `DownloadError`s naming the
host and what to try.

Credentials travel in a `ScopedSession`: each one is bound to the host it belongs to and is put on a request
(every hop of a redirect chain included) only when that request goes to that host, so a redirect to object
storage or a CDN never carries the Dataverse key or the Hugging Face token. The session follows http/https
redirects only, at most ``Policy.max_redirects`` per request. `fetch_span` downloads one byte range of a file
cut into slices (GenImage on Dataverse) with single-range requests, resumable like `download`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

import requests

from sep_bench.acquire import safepath
from sep_bench.acquire.catalog import AcquireError
from sep_bench.acquire.transfer import (
    Interrupted, NetworkError, Policy, body_chunks, check_redirect, describe, host_of, network_error,
)
from sep_bench.io import Progress, file_digest  # re-exported: the download code's callers use them from here

__all__ = ["download", "file_digest", "ChecksumError", "DownloadError", "Progress", "ScopedSession", "Slice",
           "fetch_span", "host_of", "discard", "recorded_digest_path", "check_recorded"]

log = logging.getLogger(__name__)


_CHUNK = 1 << 20


class ChecksumError(AcquireError):
    """A file's checksum differs from the publisher's; the message names the file."""


class DownloadError(NetworkError):
    """A transfer failed after every retry, or the server refused it."""


def check_digest(path: Path, algorithm: str, expected: str, label: str | None = None,
                 progress: Progress | None = None) -> None:
    actual = file_digest(path, algorithm, progress, f"checking {label or path.name}")
    if actual.lower() != str(expected).lower():
        raise ChecksumError(f"{label or path.name}: {algorithm} mismatch (expected {str(expected).lower()}, got "
                            f"{actual}); the file is corrupted or incomplete: it was deleted, run the command again to "
                            "download it anew")


def recorded_digest_path(dest: Path) -> Path:
    """Where the sha256 of a finalised download without a published checksum is recorded."""
    return dest.with_name(f".{dest.name}.sha256")


def _record_digest(root: Path, dest: Path) -> None:
    safepath.write_text(root, recorded_digest_path(dest), file_digest(dest) + "\n")


def check_recorded(dest: Path) -> bool:
    """Whether `dest` matches the sha256 recorded when it was written (False when none was recorded)."""
    try:
        want = recorded_digest_path(dest).read_text().strip()
    except OSError:
        return False
    return bool(want) and file_digest(dest) == want


def discard(root: Path, dest: Path) -> None:
    """Delete a download and everything sep-bench keeps beside it (.part, .part.json, recorded digest)."""
    for p in (dest, *_part_paths(dest), recorded_digest_path(dest)):
        safepath.unlink(root, p)


def _part_paths(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


class ScopedSession(requests.Session):
    """A session whose credentials are sent to their own host only, on every request and every redirect hop.

    ``add_credential(url, header, value)`` binds a header (``X-Dataverse-key``, ``Authorization``...) to the
    host of `url`. `send` (which requests also calls for each redirect it follows) removes every credential
    header, then adds back those bound to the request's host; plain ``requests`` would keep custom headers on a
    redirect to another host. Redirects go to http/https URLs only (`transfer.check_redirect`), at most
    `policy.max_redirects` of them per request.
    """

    def __init__(self, policy: Policy | None = None):
        super().__init__()
        self.policy = policy or Policy()
        self.max_redirects = self.policy.max_redirects
        self._creds: dict[str, dict[str, str]] = {}

    def add_credential(self, url: str, header: str, value: str) -> None:
        self._creds.setdefault(host_of(url), {})[header] = value

    def get_redirect_target(self, resp):
        return check_redirect(resp, super().get_redirect_target(resp), self.policy)

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
    root: str | Path | None = None,
    expected_size: int | None = None,
    checksum: tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    policy: Policy | None = None,
    progress: Progress | None = None,
    label: str | None = None,
    notify: Callable[[str], None] | None = None,
) -> Path:
    """Download `url` to `dest` inside `root` (default: `dest`'s folder), resuming a ``.part``; return `dest`.

    `checksum` is ``(algorithm, hexdigest)`` (md5, sha1, sha256...). An existing `dest` is reused only when it
    matches `checksum` (else its recorded sha256) and `expected_size`; otherwise it is deleted (`notify` says
    so) and downloaded again. Raises `DownloadError` after `retries` failed attempts (the ``.part`` stays for
    the next run) and `ChecksumError` when the complete file does not match (the ``.part`` is deleted: it
    cannot be repaired by resuming).
    """
    dest = Path(dest)
    root = Path(root) if root is not None else dest.parent
    label = label or dest.name
    policy = policy or Policy()
    safepath.guard(root, dest, "write")
    if (dest.exists() or dest.is_symlink()) and _reusable(root, dest, expected_size, checksum, label, progress,
                                                          notify or log.warning):
        return dest
    safepath.mkdir(root, dest.parent)
    part, meta_path = _part_paths(dest)
    meta = _read_meta(root, meta_path, url)
    sess = session or ScopedSession(policy)
    att = _resuming(lambda: _attempt(sess, url, root, part, meta, meta_path, dict(headers or {}), policy,
                                     expected_size, progress, label), part, label, url, retries, backoff, policy)
    if expected_size is not None and att.done != expected_size:
        discard(root, dest)
        raise ChecksumError(f"{label}: received {att.done} bytes from {host_of(url)}, the listing says "
                            f"{expected_size}; the partial file was deleted: run the command again")
    if checksum is not None:
        try:
            check_digest(part, checksum[0], checksum[1], label, progress)
        except ChecksumError:
            discard(root, dest)
            raise
    safepath.replace(root, part, dest)
    if checksum is None:
        _record_digest(root, dest)
    safepath.unlink(root, meta_path)
    return dest


def _reusable(root: Path, dest: Path, expected_size: int | None, checksum: tuple[str, str] | None, label: str,
              progress: Progress | None, say: Callable[[str], None]) -> bool:
    """Whether the cached `dest` passes its checks; a copy that fails is deleted (and the user told)."""
    safepath.guard(root, dest, "reuse")
    if not dest.is_file():
        raise safepath.UnsafePathError(f"{label}: {dest} exists and is not a file (two entries of the listing "
                                       "collide?); refused")
    size = dest.stat().st_size
    if expected_size is not None and size != expected_size:
        why = f"has {size} bytes, the listing says {expected_size}"
    elif checksum is not None:
        got = file_digest(dest, checksum[0], progress, f"checking {label}")
        if got.lower() == str(checksum[1]).lower():
            return True
        why = f"fails its {checksum[0]} check (expected {str(checksum[1]).lower()}, got {got})"
    elif check_recorded(dest):
        return True
    else:
        why = "does not match the sha256 recorded when it was downloaded (or none was recorded)"
    say(f"{label}: the cached copy {dest} {why}; deleted, downloading it again")
    discard(root, dest)
    return False


class _Incomplete(Interrupted):
    """The server closed the body before the announced length, or answered a transient error status."""


def _read_meta(root: Path, meta_path: Path, url: str) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {"url": url}
    if not isinstance(meta, dict) or meta.get("url") != url:  # a different file was being fetched here: start over
        safepath.unlink(root, meta_path.with_name(meta_path.name[: -len(".json")]))
        return {"url": url}
    return meta


T = TypeVar("T")
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, Interrupted)


def _resuming(attempt: Callable[[], T], part: Path, label: str, url: str, retries: int, backoff: float,
              policy: Policy) -> T:
    """`attempt()` until it returns; after a transient failure it runs again (it resumes from what `part` holds),
    at most `retries` more times, waiting `backoff` x the failure count in between. Any other network failure
    is a one-line `NetworkError` at once."""
    failures = 0
    while True:
        policy.check_deadline(label, url)
        try:
            return attempt()
        except _TRANSIENT as err:
            failures += 1
            have = part.stat().st_size if part.exists() else 0
            if failures > retries:
                happened, fix = describe(err, policy) if type(err) is not _Incomplete else (str(err), "")
                raise DownloadError(f"{label}: download from {host_of(url)} failed after {failures} attempts "
                                    f"({happened}); {have} bytes kept in {part}; run the command again to resume"
                                    + (f" (if it keeps failing: {fix})" if fix else "")) from None
            log.warning("%s: transfer interrupted at %d bytes (%s); resuming (attempt %d of %d)", label, have, err,
                        failures + 1, retries + 1)
            left = policy.remaining()
            time.sleep(max(0.0, min(backoff * failures, left if left is not None else backoff * failures)))
        except requests.RequestException as err:
            raise network_error(err, url, label, policy) from None


def _fail_status(r: requests.Response, name: str, url: str) -> None:
    """Raise the error (or the transient failure) an HTTP error status means; return for 2xx/3xx."""
    code = r.status_code
    if code in (401, 403):
        raise DownloadError(f"{name}: access denied (HTTP {code}) by {host_of(url)} for {url}; the source needs a "
                            "token or an accepted licence (see README 'Getting the real data')")
    if code == 404:
        raise DownloadError(f"{name}: not found (HTTP 404) at {url}")
    if code >= 500 or code == 429:
        raise _Incomplete(f"HTTP {code} from {host_of(url)}")
    if code >= 400:
        raise DownloadError(f"{name}: HTTP {code} from {host_of(url)} for {url}")


def _attempt(sess: requests.Session, url: str, root: Path, part: Path, meta: dict, meta_path: Path, headers: dict,
             policy: Policy, expected_size: int | None, progress: Progress | None, label: str) -> _Attempt:
    have = part.stat().st_size if part.exists() else 0
    if have:
        headers["Range"] = f"bytes={have}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]
    headers.setdefault("Accept-Encoding", "identity")  # sizes and ranges refer to the stored bytes
    with sess.get(url, headers=headers, stream=True, timeout=policy.request_timeout(), allow_redirects=True) as r:
        if r.status_code == 416 and have:
            # Range not satisfiable: either the .part is already complete or the file shrank. Start over.
            m = re.fullmatch(r"bytes \*/(\d+)", r.headers.get("Content-Range", "").strip())
            if m and int(m.group(1)) == have:
                return _Attempt(have, have)
            safepath.unlink(root, part)
            raise _Incomplete("server refused the range; restarting from zero")
        _fail_status(r, label, url)
        if r.status_code == 206:
            start, total = _content_range_total(r.headers.get("Content-Range"))
            if start != have:
                safepath.unlink(root, part)
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
        safepath.write_text(root, meta_path, json.dumps(meta))
        done = have
        watch = policy.watch(label, url)
        with safepath.open_write(root, part, mode) as f:
            for chunk in body_chunks(r, _CHUNK):
                watch.feed(len(chunk))
                f.write(chunk)
                done += len(chunk)
                if expected_size is not None and done > expected_size:
                    f.close()
                    safepath.unlink(root, part)
                    raise ChecksumError(f"{label}: {host_of(url)} sent more than the listed {expected_size} bytes; "
                                        "the partial file was deleted: run the command again")
                if progress is not None:
                    progress(label, done, total or done)
        if total is not None and done < total:
            raise _Incomplete(f"connection closed at {done} of {total} bytes")
        return _Attempt(done, total)


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
    root: str | Path | None = None,
    session: requests.Session | None = None,
    validator: str = "",
    retries: int = 5,
    backoff: float = 1.0,
    policy: Policy | None = None,
    progress: Progress | None = None,
    label: str | None = None,
    counter: list[int] | None = None,
) -> Path:
    """Write the bytes [start, end) of the concatenation of `slices` to `dest` (inside `root`); return `dest`.

    Each slice the range touches is asked for its part with one ``Range: bytes=a-b`` request (Dataverse honours
    a single range and no ``If-Range``). Like `download`, bytes go to ``<dest>.part`` and an interrupted
    transfer resumes from its length, in this call or a later run; ``<dest>.part.json`` holds the range and
    `validator` (e.g. the dataset version), and a different one starts over. The finalised span's sha256 is
    recorded beside it (`recorded_digest_path`) for verification before reuse. `counter[0]` is increased by
    every byte received (for measuring). Slices with a `path` are read from disk.
    """
    dest = Path(dest)
    root = Path(root) if root is not None else dest.parent
    label = label or dest.name
    policy = policy or Policy()
    safepath.guard(root, dest, "write")
    if dest.exists() and dest.stat().st_size == end - start and check_recorded(dest):
        return dest
    safepath.mkdir(root, dest.parent)
    part, meta_path = _part_paths(dest)
    want = {"start": start, "end": end, "validator": validator}
    try:
        if json.loads(meta_path.read_text()) != want:
            safepath.unlink(root, part)
    except (OSError, ValueError):
        safepath.unlink(root, part)
    safepath.write_text(root, meta_path, json.dumps(want))
    sess = session or ScopedSession(policy)
    first_url = next((s.url for s in slices if s.url), "file:")

    def attempt() -> None:
        have = part.stat().st_size if part.exists() else 0
        if have > end - start:  # more than the span: not a prefix of it
            safepath.unlink(root, part)
            have = 0
        with safepath.open_write(root, part, "ab") as f:
            _span_attempt(slices, start + have, end, f, sess, policy, progress, label, start, counter)

    _resuming(attempt, part, label, first_url, retries, backoff, policy)
    if part.stat().st_size != end - start:
        discard(root, dest)
        raise DownloadError(f"{label}: received {part.stat().st_size} bytes, expected {end - start}; the partial "
                            "range was deleted: run the command again")
    safepath.replace(root, part, dest)
    _record_digest(root, dest)
    safepath.unlink(root, meta_path)
    return dest


def _copy_local(s: Slice, a: int, b: int, f, label: str) -> int:
    with open(s.path, "rb") as src:
        src.seek(a)
        left = b - a
        while left > 0:
            chunk = src.read(min(left, _CHUNK))
            if not chunk:
                raise DownloadError(f"{label}: {s.path} is shorter than its listed size {s.size}")
            f.write(chunk)
            left -= len(chunk)
    return b - a


def _span_attempt(slices: Sequence[Slice], start: int, end: int, f, sess: requests.Session, policy: Policy,
                  progress: Progress | None, label: str, origin: int, counter: list[int] | None) -> None:
    done = start - origin
    for i, a, b in _pieces(slices, start, end):
        s = slices[i]
        if s.path is not None:
            done += _copy_local(s, a, b, f, label)
            continue
        headers = {"Range": f"bytes={a}-{b - 1}", "Accept-Encoding": "identity"}
        with sess.get(s.url, headers=headers, stream=True, timeout=policy.request_timeout(),
                      allow_redirects=True) as r:
            _fail_status(r, s.name, s.url)
            if r.status_code != 206:
                raise DownloadError(f"{s.name}: {host_of(r.url)} answered HTTP {r.status_code} to a byte-range "
                                    f"request (bytes={a}-{b - 1}); without ranges only the whole archive can be "
                                    "fetched (--source manual with the slices downloaded by hand)")
            got_start, _ = _content_range_total(r.headers.get("Content-Range"))
            if got_start != a:
                raise DownloadError(f"{s.name}: {host_of(r.url)} answered range start {got_start}, asked {a}")
            left = b - a
            watch = policy.watch(label, s.url)
            for chunk in body_chunks(r, _CHUNK):
                watch.feed(len(chunk))
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
