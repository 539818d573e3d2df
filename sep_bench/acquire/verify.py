"""Verification: publisher checksums of archives, and a sha256 manifest of the canonical tree.

- Archives: an md5 list where one exists. For GenImage the bundled list (`genimage_md5`) is community-contributed:
  it comes from an unmerged pull request (#2 of GenImage-Dataset/GenImage) whose hashes were read from the Google
  Drive copy, not from the publisher; a copy from another mirror (Baidu) may differ, so a mismatch is reported
  (`verify_archives` returns it) and the caller warns; ``--trust-sha256`` takes a sha256 manifest of a copy the
  user vouches for (`write_sha256_manifest` / `load_sha256_manifest`). Google Drive's ``-001`` name suffixes are
  tolerated. Dataverse/Hub/ModelScope checksums are checked at download.
- Trees (`sep_bench.data.verify`, re-exported here): ``MANIFEST.sha256.json`` at the dataset root, written when a tree is first acquired (or, for a tree
  put there by hand, the first time it is verified), then checked: every file's size and sha256, no file
  missing, no file added, and the counts per generator/split/class that the layout reader sees. Its ``stats``
  give, per generator/split/class, the image formats (from the file headers) and width/height statistics, and
  list files whose header cannot be read. ``bad_files`` counts and lists every zero-byte file and every image whose
  header cannot be read (the real GenImage has zero-byte PNGs in ADM and GLIDE and ~3.6k unreadable SD v1.5
  nature JPEGs): recorded, never fatal.

A mismatch raises `VerificationError` (a `LayoutError`, so the CLI prints it as one line) naming the files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Iterable

from sep_bench.data.pairing import MANIFEST_NAME, PAIRING_TAG, SHARED_REALS_CAPTION, data_pairing  # noqa: F401
from sep_bench.data.verify import (  # noqa: F401 (re-exported: the tree verification the download code calls)
    INTENT_NAME,
    MARKER_NAME,
    VerificationError,
    VerifyReport,
    build_manifest,
    check_generators,
    hash_files,
    load_manifest,
    verify_tree,
)
from sep_bench.io import Progress, file_digest, write_text

__all__ = ["MANIFEST_NAME", "MARKER_NAME", "INTENT_NAME", "VerificationError", "VerifyReport", "hash_files", "build_manifest",
           "verify_tree", "load_md5_csv", "verify_archives", "genimage_md5", "write_sha256_manifest",
           "load_sha256_manifest", "data_pairing", "PAIRING_TAG", "SHARED_REALS_CAPTION"]

log = logging.getLogger(__name__)

# ---- publisher md5 lists -------------------------------------------------------------------------------------


def load_md5_csv(text_or_path: str | Path) -> dict[str, str]:
    """``{file name: md5}`` from a CSV with an md5 column and a file-name column (GenImage's checksums.csv)."""
    p = Path(text_or_path) if not isinstance(text_or_path, str) or "\n" not in text_or_path else None
    text = p.read_text() if p is not None else str(text_or_path)
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return {}
    head = [h.strip().lower() for h in rows[0]]
    md5_col = next((i for i, h in enumerate(head) if "md5" in h), None)
    name_col = next((i for i, h in enumerate(head) if "name" in h or "file" in h), None)
    body = rows[1:]
    if md5_col is None or name_col is None:  # no header: guess which column looks like an md5
        body, md5_col = rows, 0 if re.fullmatch(r"[0-9a-fA-F]{32}", rows[0][0].strip()) else 1
        name_col = 1 - md5_col
    out: dict[str, str] = {}
    for r in body:
        if len(r) > max(md5_col, name_col):
            out[r[name_col].strip()] = r[md5_col].strip().lower()
    return out


def genimage_md5() -> dict[str, str]:
    from sep_bench.acquire._genimage_md5 import CHECKSUMS_CSV

    return load_md5_csv(CHECKSUMS_CSV)


def _publisher_name(name: str, known: dict[str, str]) -> str | None:
    if name in known:
        return name
    m = re.fullmatch(r"(?P<base>.+?)-[^.]*(?P<ext>\.[^.]+)", name)  # Google Drive: base-001.z01
    if m and m.group("base") + m.group("ext") in known:
        return m.group("base") + m.group("ext")
    return None


def verify_archives(files: Iterable[Path], md5s: dict[str, str], progress: Progress | None = None) -> dict:
    """Check each file that the md5 list names; return ``{"checked": [...], "unlisted": [...],
    "mismatched": {name: (actual, listed)}}`` (the caller decides what a mismatch means)."""
    checked, unlisted, mismatched = [], [], {}
    for f in sorted(files):
        key = _publisher_name(f.name, md5s)
        if key is None:
            unlisted.append(f.name)
            continue
        actual = file_digest(f, "md5", progress, f"md5 {f.name}")
        if actual != md5s[key]:
            mismatched[f.name] = (actual, md5s[key])
        else:
            checked.append(f.name)
    return {"checked": checked, "unlisted": unlisted, "mismatched": mismatched}


def write_sha256_manifest(path: Path, files: Iterable[Path], progress: Progress | None = None) -> Path:
    """``{"algorithm": "sha256", "files": {name: sha256}}`` of archives, merged into `path` if it exists."""
    try:
        known = load_sha256_manifest(path)
    except VerificationError:
        known = {}
    for f in files:
        known[f.name] = file_digest(f, "sha256", progress, f"sha256 {f.name}")
    write_text(path, json.dumps({"algorithm": "sha256", "files": dict(sorted(known.items()))}, indent=1) + "\n")
    return path


def load_sha256_manifest(path: Path) -> dict[str, str]:
    """``{name: sha256}`` from a file written by `write_sha256_manifest` (or a plain ``sha256sum`` listing)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise VerificationError(f"--trust-sha256 {path}: cannot read it ({err})") from None
    try:
        data = json.loads(text)
        files = data.get("files", data) if isinstance(data, dict) else None
        if isinstance(files, dict):
            return {Path(k).name: str(v).lower() for k, v in files.items()}
    except ValueError:
        pass
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*([0-9a-fA-F]{64})\s+\*?(.+?)\s*", line)
        if m:
            out[Path(m.group(2)).name] = m.group(1).lower()
    if not out:
        raise VerificationError(f"--trust-sha256 {path}: no sha256 entries found")
    return out
