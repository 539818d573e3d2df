"""One acquisition, from a source's payload to an installed, verified canonical tree.

The tree is built in a staging folder beside the target (``.<name>.staging-<id>`` in the target's parent, on the
same file system, never inside the tree where a layout reader would see it). Installing writes an intent file
(``.sep-bench-installing.json``, naming the generators), renames each complete generator folder into the
target, rewrites the manifest, writes the completion marker (``.sep-bench-complete.json``, listing the
installed generators) and removes the intent file last. After an interruption the intent file remains: the next
`acquire` rebuilds those generators and `verify_tree` refuses the tree until then. Downloads are kept on failure,
so the next run resumes them.

Only the members of the requested generators (and ``--splits``) are extracted from any zip or tar
(`remote.member_selector`); members of remote sliced archives were fetched by the source and are extracted the
same safe way. Files that are not images (the GenImage metadata CSV) go to ``<out>/metadata/``. The manifest and
the marker record, per generator, how its real images were paired (``data_pairing``): ``benchmark`` (as
published), ``recovered-from-path``, ``real-from:<dir>`` (a fake-only copy paired by the user) or
``shared-reals`` (a copy without the pairing: reals shared out by hash, per-generator numbers are not the
benchmark's).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sep_bench.acquire import safepath
from sep_bench.acquire.catalog import AcquireError, Benchmark, Generator
from sep_bench.acquire.download import Progress, discard
from sep_bench.acquire.extract import ArchiveError, ArchiveGroup, Limits, extract, group_archives, is_archive_name
from sep_bench.acquire.normalise import ShardError, convert_parquet, normalise_tree
from sep_bench.acquire.remote import member_selector
from sep_bench.acquire.sources import SOURCES, FetchContext, Payload
from sep_bench.data.verify import (
    INTENT_NAME,
    MANIFEST_NAME,
    MARKER_NAME,
    build_manifest,
    hash_files,
    load_manifest,
    tree_files,
)
from sep_bench.io import write_json

__all__ = ["acquire", "AcquireResult", "read_marker"]

log = logging.getLogger(__name__)

_NESTED_DEPTH = 3  # archives inside archives (Google Drive folder downloads wrap the parts in zips)


@dataclass
class AcquireResult:
    out: Path
    installed: list[str]  # generator folders (re)built in this run
    present: list[str]  # already complete, left as they were
    counts: dict
    manifest: Path


def read_marker(out: Path, name: str = MARKER_NAME) -> dict:
    try:
        m = json.loads((out / name).read_text())
        return m if isinstance(m, dict) else {}
    except (OSError, ValueError):
        return {}


def _extract_downloaded(grp: ArchiveGroup, dest: Path, limits: Limits, progress: Progress | None, select,
                        downloaded: set[Path], cache: Path) -> None:
    """Extract one archive group; when it came from the download cache and its bytes fail (CRC, size,
    structure), the cached files are deleted and the error says so (a rerun fetches them anew)."""
    try:
        extract(grp, dest, limits, progress, select=select)
    except ArchiveError as err:
        cached = [p for p in grp.parts if p in downloaded]
        if not cached:
            raise
        for p in cached:
            discard(cache, p)
        raise ArchiveError(f"{err}; the downloaded file(s) {', '.join(p.name for p in cached)} in "
                           f"{cached[0].parent} were deleted: run the command again to fetch them anew") from None


def _convert_downloaded(payload: Payload, tree: Path, bench: Benchmark, wanted: set[str], ctx, rep: dict) -> Counter:
    """`convert_parquet` of the payload's shards; a shard that cannot be read is deleted from the download cache
    and the error says so (a rerun fetches it anew)."""
    try:
        return convert_parquet(payload.shards, tree, bench, wanted, payload.repo, ctx.progress,
                               fakes_only=bool(payload.real_dirs), report=rep)
    except ShardError as err:
        if err.path not in set(payload.downloaded):
            raise
        discard(ctx.cache, err.path)
        raise AcquireError(f"{err}; the downloaded shard {err.path.name} in {err.path.parent} was deleted: run the "
                           "command again to fetch it anew") from None


def _extract_all(payload: Payload, raw: Path, limits: Limits, progress: Progress | None, bench: Benchmark,
                 wanted: set[str], splits: set[str] | None, cache: Path) -> list[tuple[Path, Generator | None]]:
    """Extract every archive (and archives found inside them) under `raw`; return (folder, hint) pairs."""
    bench_match = bench.match_in
    done: list[tuple[Path, Generator | None]] = []
    n = 0
    for rz in payload.remote_zips:
        n += 1
        dest = raw / f"{n:04d}_{rz.name}"
        log.info("extracting the fetched members of %s", rz.name)
        rz.extract(dest, limits, progress)
        done.append((dest, None))
    queue = [(grp, hint, 0) for grp, hint in payload.archives]
    while queue:
        grp, hint, depth = queue.pop(0)
        n += 1
        dest = raw / f"{n:04d}_{grp.name}"
        log.info("extracting %s (%d part%s)", grp.name, len(grp.parts), "s" if len(grp.parts) > 1 else "")
        _extract_downloaded(grp, dest, limits, progress, member_selector(bench, wanted, splits, hint),
                            set(payload.downloaded) if depth == 0 else set(), cache)
        if depth > 0:  # an archive we extracted ourselves: drop it once its content is out
            for p in grp.parts:
                safepath.unlink(raw, p)
        done.append((dest, hint))
        if depth + 1 >= _NESTED_DEPTH:
            continue
        for dirpath, dirnames, filenames in os.walk(dest):
            inner = [Path(dirpath) / f for f in filenames if is_archive_name(f)]
            if inner:
                groups, _ = group_archives(inner)
                queue += [(g, bench_match(g.name) or hint, depth + 1) for g in groups]
    return done


@dataclass
class _Plan:
    """What an `acquire` call will do to `out`: the generators to fetch, those already there, and `out`'s state."""

    marker: dict
    interrupted: set
    todo: list
    present: list
    unmarked: bool


def _plan(out: Path, generators: list[Generator], force: bool) -> _Plan:
    marker = read_marker(out)
    interrupted = set(read_marker(out, INTENT_NAME).get("generators") or [])  # renamed in, never completed
    done_gens = set((marker.get("generators") or {}).keys()) - interrupted
    ours = {MANIFEST_NAME, MARKER_NAME, INTENT_NAME} | interrupted
    unmarked = out.exists() and not marker and any(p.name not in ours for p in out.iterdir())
    if unmarked and not force:
        raise AcquireError(f"{out} already holds data that `sep-bench data get` did not install; pass --force to "
                           "replace the requested generators, or run `sep-bench data prepare` to verify it as it is")
    todo = [g for g in generators if force or g.folder not in done_gens]
    return _Plan(marker, interrupted, todo, [g.folder for g in generators if g not in todo], unmarked)


def acquire(
    bench: Benchmark,
    generators: list[Generator],
    source: str,
    out: Path,
    ctx: FetchContext,
    *,
    force: bool = False,
    keep_downloads: bool = False,
    limits: Limits = Limits(),
) -> AcquireResult:
    """Fetch `generators` of `bench` from `source` and install them under `out` (see the module docstring)."""
    if source not in SOURCES:
        raise AcquireError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    if source not in bench.sources:
        raise AcquireError(f"{bench.name} cannot be fetched from {source!r}; its sources: {', '.join(bench.sources)}")
    out = Path(out)
    plan = _plan(out, generators, force)
    if not plan.todo:
        log.info("%s: %s already installed (use --force to fetch again)", out, ", ".join(plan.present))
        return AcquireResult(out, [], plan.present, (load_manifest(out) or {}).get("counts", {}), out / MANIFEST_NAME)
    ctx.generators = plan.todo
    payload = SOURCES[source](ctx)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"
    try:
        files, pairing = _build_tree(payload, staging, bench, plan.todo, source, ctx, limits)
        _install(out, staging, plan, {g.folder for g in plan.todo})
        manifest = _write_records(out, bench, source, plan, files, pairing, payload.provenance)
    except BaseException:
        _remove_staging(out, staging)
        raise
    _remove_staging(out, staging)
    if not keep_downloads:
        for p in payload.downloaded:
            discard(ctx.cache, p)
    return AcquireResult(out, [g.folder for g in plan.todo], plan.present, manifest["counts"], out / MANIFEST_NAME)


def _build_tree(payload: Payload, staging: Path, bench: Benchmark, todo: list[Generator], source: str, ctx: FetchContext,
                limits: Limits) -> tuple[dict, dict]:
    """Extract and normalise the payload into ``staging/tree``; returns its files' hashes and each generator's
    real/fake pairing."""
    tree, raw = staging / "tree", staging / "raw"
    wanted = {g.folder for g in todo}
    tree.mkdir(parents=True)
    counts: Counter = Counter()
    for folder, hint in _extract_all(payload, raw, limits, ctx.progress, bench, wanted, ctx.splits, ctx.cache):
        counts += normalise_tree(folder, tree, bench, wanted, hint=hint, mode="move", splits=ctx.splits)
    for folder, mode in payload.dirs:
        counts += normalise_tree(folder, tree, bench, wanted, mode=mode, splits=ctx.splits)
    pairing = {g.folder: "benchmark" for g in todo}
    if payload.shards:
        counts += _shards_into_tree(payload, tree, bench, todo, ctx, pairing)
    counts += _real_dirs_into_tree(payload, tree, bench, todo, pairing)
    payload.provenance["data_pairing"] = sorted(set(pairing.values()))
    for src_file, name in payload.extras:
        safepath.mkdir(tree, tree / "metadata")
        shutil.copy2(src_file, safepath.inside(tree / "metadata", name, what="metadata file", service=source))
    missing = [g for g in todo if not counts.get(g.folder)]
    if missing:
        raise AcquireError(f"the {source} download holds no images of {', '.join(g.display for g in missing)}"
                           + (f"; {bench.manual_help}" if source == "manual" else ""))
    for g in todo:  # each generator needs both classes to be usable
        classes = _classes(tree / g.folder, bench.layout)
        if len(classes) < 2:
            log.warning("%s: only %s images found", g.display, ", ".join(sorted(classes)) or "no")
    return hash_files(tree, tree_files(tree), ctx.progress, "hashing"), pairing


def _shards_into_tree(payload: Payload, tree: Path, bench: Benchmark, todo: list[Generator], ctx: FetchContext,
                      pairing: dict) -> Counter:
    """Parquet shards into the tree; `pairing` says how their real images were matched to generators."""
    rep: dict = {}
    counts = _convert_downloaded(payload, tree, bench, {g.folder for g in todo}, ctx, rep)
    payload.provenance["parquet_rows"] = rep
    if rep["reals_shared"] or (payload.repo is not None and payload.repo.shared_reals and not rep["reals_recovered"]):
        pairing.update({g.folder: "shared-reals" for g in todo})
        log.warning("%s: its real images carry no generator; they were shared out among the generators by "
                    "a hash of their content, so per-generator numbers from this tree are not the "
                    "benchmark's (marked data_pairing=shared-reals)", payload.repo.repo_id)
    elif rep["reals_recovered"]:
        pairing.update({g.folder: "recovered-from-path" for g in todo})
    return counts


def _real_dirs_into_tree(payload: Payload, tree: Path, bench: Benchmark, todo: list[Generator], pairing: dict) -> Counter:
    """`--real-from` folders: link their real images beside each generator's fakes (its splits only)."""
    counts: Counter = Counter()
    real_classes = {"nature"} if bench.layout == "genimage" else {"0_real"}
    for folder in payload.real_dirs:
        for g in todo:
            have = {p.name for p in (tree / g.folder).iterdir() if p.is_dir()} if (tree / g.folder).is_dir() \
                else set()
            n_real = normalise_tree(folder, tree, bench, {g.folder}, mode="link", classes=real_classes,
                                    splits=have if bench.layout == "genimage" and have else None)
            if not n_real.get(g.folder):
                raise AcquireError(f"--real-from {folder}: no real ({'/'.join(sorted(real_classes))}) images of "
                                   f"{g.display}{' in ' + ', '.join(sorted(have)) if have else ''} found there")
            counts += n_real
            pairing[g.folder] = f"real-from:{folder}"
    return counts


def _install(out: Path, staging: Path, plan: _Plan, wanted: set) -> None:
    """Move the staged generators (and metadata) into `out`, generator by generator, after an intent file."""
    tree, old = staging / "tree", staging / "old"
    old.mkdir()
    out.mkdir(parents=True, exist_ok=True)
    write_json(safepath.guard(out, out / INTENT_NAME, "write"), {"generators": sorted(wanted | plan.interrupted)})
    for g in plan.todo:
        dst = safepath.guard(out, out / g.folder, "replace")
        if dst.exists():
            os.replace(dst, safepath.guard(staging, old / g.folder, "write"))
        os.replace(safepath.guard(staging, tree / g.folder, "move"), dst)
    if (tree / "metadata").is_dir():
        safepath.mkdir(out, out / "metadata")
        for f in (tree / "metadata").iterdir():
            os.replace(safepath.guard(staging, f, "move"), safepath.guard(out, out / "metadata" / f.name, "replace"))


def _write_records(out: Path, bench: Benchmark, source: str, plan: _Plan, files: dict, pairing: dict,
                   provenance: dict) -> dict:
    """The manifest (merged with the kept generators' entries), then the completion marker (last), then the intent
    file cleared; returns the manifest."""
    wanted = {g.folder for g in plan.todo}
    prev = load_manifest(out) or {} if plan.marker else {}
    merged = {r: i for r, i in (prev.get("files") or {}).items() if r.split("/", 1)[0] not in wanted}
    merged.update(files)
    # entries kept from the old manifest lack image info when it was made elsewhere: take it from `files` only
    full = {r: {"sha256": i["sha256"], "size": i["size"], **({k: i[k] for k in ("format", "w", "h") if k in i})}
            for r, i in merged.items()}
    gens_meta = dict(plan.marker.get("generators") or {})
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for g in plan.todo:
        gens_meta[g.folder] = {"display": g.display, "source": source, "acquired": now,
                               "files": sum(1 for r in files if r.split("/", 1)[0] == g.folder),
                               "data_pairing": pairing[g.folder]}
    safepath.guard(out, out / MANIFEST_NAME, "write")
    manifest = build_manifest(out, bench.layout, files=None if plan.unmarked else full,  # unmarked: hash it all
                              extra={"benchmark": bench.name, "licence": bench.licence,
                                     "data_pairing": {**(prev.get("data_pairing") or {}), **pairing},
                                     "provenance": {**(prev.get("provenance") or {}),
                                                    **{g.folder: provenance for g in plan.todo}}})
    write_json(safepath.guard(out, out / MARKER_NAME, "write"),
               {"benchmark": bench.name, "layout": bench.layout, "generators": gens_meta,
                "manifest": MANIFEST_NAME, "completed": now})
    if plan.interrupted - wanted:  # still not rebuilt: keep them marked as unfinished
        write_json(safepath.guard(out, out / INTENT_NAME, "write"), {"generators": sorted(plan.interrupted - wanted)})
    else:
        safepath.unlink(out, out / INTENT_NAME)
    return manifest


def _remove_staging(out: Path, staging: Path) -> None:
    """Delete the staging folder this run created beside `out` (never through a link)."""
    if staging.exists():
        safepath.guard(out.parent, staging, "delete")
        shutil.rmtree(staging, ignore_errors=True)


def _classes(folder: Path, layout: str) -> set[str]:
    names = ("ai", "nature") if layout == "genimage" else ("0_real", "1_fake")
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        if Path(dirpath).name in names and filenames:
            found.add(Path(dirpath).name)
    return found
