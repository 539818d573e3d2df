"""Verification of an installed dataset tree against its ``MANIFEST.sha256.json``, and of its generators.

``MANIFEST.sha256.json`` at the dataset root is written when a tree is first acquired (`sep_bench.acquire`) or,
for a tree put there by hand, the first time it is verified, then checked: every file's size and sha256, no file
missing, no file added, and the counts per generator/split/class that the layout reader sees. Its ``stats`` give,
per generator/split/class, the image formats (from the file headers) and width/height statistics, and list files
whose header cannot be read. ``bad_files`` counts and lists every zero-byte file and every image whose header
cannot be read (the real GenImage has zero-byte PNGs in ADM and GLIDE and ~3.6k unreadable SD v1.5 nature JPEGs):
recorded, never fatal. `verify_external` is what the data stage runs for an external profile; it reads no
download code.

A mismatch raises `VerificationError` (a `LayoutError`, so the CLI prints it as one line) naming the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sep_bench.data.layouts import IMAGE_SUFFIXES, LayoutError, read_layout, summarize
from sep_bench.data.pairing import MANIFEST_NAME
from sep_bench.io import Progress, write_text

__all__ = ["MANIFEST_NAME", "MARKER_NAME", "INTENT_NAME", "VerificationError", "VerifyReport", "hash_files",
           "build_manifest", "load_manifest", "verify_tree", "check_generators", "verify_external", "tree_files"]

log = logging.getLogger(__name__)

MARKER_NAME = ".sep-bench-complete.json"
INTENT_NAME = ".sep-bench-installing.json"  # present only while generator folders are being renamed into place
_SKIP = {MANIFEST_NAME, MARKER_NAME, INTENT_NAME}
_MAX_NAMED = 20


class VerificationError(LayoutError):
    """The data on disk does not match its manifest or the publisher's checksums."""


@dataclass
class VerifyReport:
    root: str
    layout: str
    files: int
    bytes: int
    counts: dict
    stats: dict
    manifest_created: bool = False
    level: str = "full"
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"root": self.root, "layout": self.layout, "files": self.files, "bytes": self.bytes,
                "level": self.level, "manifest_created": self.manifest_created, "counts": self.counts,
                "stats": self.stats}


# ---- the manifest --------------------------------------------------------------------------------------------


def tree_files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for n in sorted(filenames):
            rel = n if rel_dir == "." else f"{rel_dir}/{n}".replace(os.sep, "/")
            if rel in _SKIP:
                continue
            out.append(rel)
    return out


def _file_info(path: Path) -> dict:
    """sha256, size and (for images) format and size, reading the file once."""
    from PIL import Image

    h = hashlib.sha256()
    head = b""
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if not head:
                head = chunk
            h.update(chunk)
            size += len(chunk)
    info = {"sha256": h.hexdigest(), "size": size}
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as im:  # header only, no decoding
                info["format"], (info["w"], info["h"]) = im.format, im.size
        except Exception:
            info["format"] = None
    return info


def hash_files(root: Path, rels: list[str], progress: Progress | None = None, task: str = "hashing",
               workers: int | None = None) -> dict[str, dict]:
    """`_file_info` of each relative path, in parallel threads (hashlib and file reads release the GIL)."""
    workers = workers or min(8, (os.cpu_count() or 2))
    out: dict[str, dict] = {}
    step = 4096  # bounded batches: millions of files never become millions of pending futures
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(rels), step):
            batch = rels[start:start + step]
            for rel, info in zip(batch, pool.map(lambda r: _file_info(root / r), batch)):
                out[rel] = info
            if progress is not None:
                progress(task, start + len(batch), len(rels))
    return out


def _stats(root: Path, layout: str, files: dict[str, dict]) -> dict:
    """Formats and image sizes per generator/split/class, from the layout reader's view of the tree."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for s in read_layout(root, layout):
        rel = os.path.relpath(s.path, root).replace(os.sep, "/")
        if rel in files:
            groups.setdefault((s.generator, s.split, "fake" if s.label else "real"), []).append((rel, files[rel]))
    out: dict = {}
    for (g, sp, c), items in sorted(groups.items()):
        formats: dict[str, int] = {}
        ws, hs, unreadable = [], [], []
        for rel, info in items:
            fmt = info.get("format")
            if fmt is None:
                unreadable.append(rel)
                continue
            formats[fmt] = formats.get(fmt, 0) + 1
            ws.append(info["w"])
            hs.append(info["h"])
        entry = {"n": len(items), "bytes": sum(i["size"] for _, i in items), "formats": formats,
                 "unreadable": len(unreadable), "unreadable_files": unreadable[:_MAX_NAMED]}
        if ws:
            entry["width"] = {"min": min(ws), "median": statistics.median(ws), "max": max(ws)}
            entry["height"] = {"min": min(hs), "median": statistics.median(hs), "max": max(hs)}
        out.setdefault(g, {}).setdefault(sp, {})[c] = entry
    return out


def _bad_files(files: dict[str, dict]) -> dict:
    """Zero-byte files and images whose header cannot be read, all of them, with counts per generator folder."""
    zero = sorted(r for r, i in files.items() if i["size"] == 0)
    unreadable = sorted(r for r, i in files.items() if i["size"] > 0 and "format" in i and i["format"] is None)
    per_gen: dict[str, dict[str, int]] = {}
    for kind, rels in (("zero_byte", zero), ("unreadable", unreadable)):
        for r in rels:
            g = per_gen.setdefault(r.split("/", 1)[0], {"zero_byte": 0, "unreadable": 0})
            g[kind] += 1
    return {"count": len(zero) + len(unreadable), "per_generator": per_gen, "zero_byte": zero,
            "unreadable": unreadable}


def build_manifest(root: str | Path, layout: str, *, files: dict[str, dict] | None = None, extra: dict | None = None,
                   progress: Progress | None = None) -> dict:
    """Hash every file under `root` (or take `files`), write ``MANIFEST.sha256.json``, return it."""
    root = Path(root)
    if files is None:
        files = hash_files(root, tree_files(root), progress, f"hashing {root.name}")
    samples = read_layout(root, layout)
    manifest = {
        "version": 1,
        "algorithm": "sha256",
        "layout": layout,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
        "counts": summarize(samples),
        "stats": _stats(root, layout, files),
        "bad_files": _bad_files(files),
        "files": {rel: {"sha256": i["sha256"], "size": i["size"], **({"format": i["format"], "w": i["w"], "h": i["h"]}
                                                                      if i.get("format") else {})}
                  for rel, i in sorted(files.items())},
    }
    write_text(root / MANIFEST_NAME, json.dumps(manifest, separators=(",", ":")) + "\n")  # compact: 1 line per tree
    return manifest


def load_manifest(root: Path) -> dict | None:
    p = Path(root) / MANIFEST_NAME
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except ValueError as err:
        raise VerificationError(f"{p}: unreadable manifest ({err}); delete it to rebuild it from the files") from None
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        raise VerificationError(f"{p}: not a sep-bench manifest; delete it to rebuild it from the files")
    return m


def _named(kind: str, items: list[str]) -> str:
    more = f" (and {len(items) - _MAX_NAMED} more)" if len(items) > _MAX_NAMED else ""
    return f"{len(items)} {kind}: " + ", ".join(items[:_MAX_NAMED]) + more


def verify_tree(root: str | Path, layout: str, *, level: str = "full", progress: Progress | None = None) -> VerifyReport:
    """Check a dataset tree against its manifest (writing the manifest first if there is none).

    level: ``full`` (sha256 of every file), ``quick`` (names and sizes only).
    """
    root = Path(root)
    samples = read_layout(root, layout)  # LayoutError with the fix when missing or empty
    counts = summarize(samples)
    if (root / INTENT_NAME).exists():
        raise VerificationError(f"{root}: an acquisition was interrupted while installing "
                                f"{(root / INTENT_NAME).read_text().strip()}; run the same `sep-bench data get` again")
    manifest = load_manifest(root)
    if manifest is None:
        log.warning("%s has no %s: writing one now from the files as they are (trust on first use)", root, MANIFEST_NAME)
        m = build_manifest(root, layout, progress=progress)
        return VerifyReport(str(root), layout, len(m["files"]), sum(f["size"] for f in m["files"].values()),
                            m["counts"], m["stats"], manifest_created=True, level=level)
    expected: dict[str, dict] = manifest["files"]
    present = tree_files(root)
    missing = sorted(set(expected) - set(present))
    added = sorted(set(present) - set(expected))
    problems = []
    if missing:
        problems.append(_named("file(s) missing", missing))
    if added:
        problems.append(_named("file(s) not in the manifest (an interrupted acquisition?)", added))
    common = [r for r in present if r in expected]
    bad_size = [r for r in common if (root / r).stat().st_size != expected[r]["size"]]
    if bad_size:
        problems.append(_named("file(s) with a different size", bad_size))
    if level == "full":
        infos = hash_files(root, [r for r in common if r not in set(bad_size)], progress, f"verifying {root.name}")
        bad_hash = sorted(r for r, i in infos.items() if i["sha256"] != expected[r]["sha256"])
        if bad_hash:
            problems.append(_named("file(s) whose sha256 differs (corrupted)", bad_hash))
    if not problems and manifest.get("counts") is not None and manifest["counts"] != counts:
        problems.append(f"counts per generator/split/class differ from the manifest: {counts} vs {manifest['counts']}")
    if problems:
        raise VerificationError(f"{root}: does not match {MANIFEST_NAME}: " + "; ".join(problems)
                                + ". Re-acquire the affected generators with `sep-bench data get ... --force`")
    return VerifyReport(str(root), layout, len(expected), sum(f["size"] for f in expected.values()), counts,
                        manifest.get("stats", {}), level=level)


def check_generators(counts: dict, wanted: list[str], aliases: dict[str, str], root: str, hint: str) -> None:
    """Every generator a profile uses (display names, mapped back through `aliases`) is present in `counts`."""
    present = set(counts) | {aliases.get(g, g) for g in counts}
    missing = [g for g in wanted if g not in present]
    if missing:
        raise VerificationError(f"{root}: generator(s) {', '.join(missing)} not found (present: "
                                f"{', '.join(sorted(counts)) or 'none'}); {hint}")


def verify_external(data, *, level: str = "full", progress=None) -> dict:
    """Verify an external profile's data (root, and train_root if set) and that its generators are there.

    `data` is a `protocol.DataSpec` with ``source: external``. Returns the summary the data stage writes:
    ``{"root", "counts", "verification": {"test": report, ["train": report]}}``. Raises `VerificationError`
    (a `LayoutError`) naming the files or generators at fault.
    """
    bench_of = {"genimage": "genimage", "aigcbench": "aigcbench"}
    reports = {"test": verify_tree(data.root, data.layout, level=level, progress=progress)}
    aliases = dict(data.generator_aliases)
    hint = (f"fetch them with `sep-bench data get {bench_of.get(data.layout, data.layout)} --generators ...` "
            "(README: Getting the real data)")
    check_generators(reports["test"].counts, list(data.test_generators), aliases, data.root, hint)
    if data.train_root:
        reports["train"] = verify_tree(data.train_root, data.train_layout or data.layout, level=level,
                                       progress=progress)
        check_generators(reports["train"].counts, list(data.train_generators), aliases, data.train_root,
                         "fetch them with `sep-bench data get progan --root <folder with the ProGAN training set>`")
    else:
        check_generators(reports["test"].counts, list(data.train_generators), aliases, data.root, hint)
    pairing = (load_manifest(Path(data.root)) or {}).get("data_pairing") or {}
    return {"root": str(data.root), "counts": reports["test"].counts,
            **({"data_pairing": pairing} if pairing else {}),
            **({"train_root": str(data.train_root), "train_counts": reports["train"].counts} if data.train_root else {}),
            "verification": {k: r.to_json() for k, r in reports.items()}}
