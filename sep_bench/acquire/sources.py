"""Where the data comes from. Each source turns a request into a `Payload` (verified local files):

- ``hf``: a Hugging Face dataset repository: huggingface_hub lists it (and supplies the user's token); files come
  through the hub's resolve URLs with our resumable downloader, sha256 of LFS files checked against the listing.
  Parquet shards are converted to image files later (`normalise`). Copies holding fake images only
  (``bitmind/GenImage_ADM``, ``bitmind/GenImage_glide``: one ``image`` column) are refused unless paired with
  real images named by ``--real-from``. Endpoint: ``--endpoint`` or ``HF_ENDPOINT``; gated/private repos use
  ``HF_TOKEN`` (or ``hf auth login``), sent to the Hub's host only.
- ``dataverse``: a Dataverse dataset by DOI (Harvard Dataverse by default) through its HTTP API: the listing
  ``/api/datasets/:persistentId/?persistentId=<doi>`` gives each file's id, size and md5; files come from
  ``/api/access/datafile/<id>`` (a redirect to object storage). A byte-sliced archive (GenImage:
  ``GenImage.z000``... ``.z499``, one Zip64 archive) is read remotely (`remote.py`): only the members of the
  requested generators and splits are fetched. Other files (the metadata CSV) are downloaded whole with their
  md5 checked. ``DATAVERSE_API_TOKEN`` is sent to the Dataverse host only, never to the storage it redirects to.
- ``modelscope``: a ModelScope dataset through its HTTP API (``/api/v1/datasets/<ns>/<name>/repo``): the whole
  paged tree is listed, the test-set archive found by name in any folder (``test_set.zip``, ``test.zip``) and
  checked against the listed sha256.
- ``manual``: archives (or already extracted folders) the user downloaded into a folder (Google Drive, Baidu,
  or the Dataverse slices ``GenImage.z000``...); GenImage archives are checked against a community md5 list
  (see `verify.genimage_md5`): a mismatch is a warning, and ``--trust-sha256`` pins a copy.

Everything a service sends is untrusted: every name taken from a listing (Dataverse ``filename``,
``directoryLabel``, ``originalFileName``; ModelScope ``Path``; Hub tree paths; repository ids) is checked by
`safepath` before it becomes a path (a violation is an error naming the entry and the service), sizes and ids
must be non-negative integers, listings are read within `ctx.policy` (time, rate, size, pages, entries), and
every download stays inside `ctx.cache`.

Sources are looked up by name in `SOURCES`; each is a function ``fetch(ctx) -> Payload``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import requests

from sep_bench.acquire import safepath
from sep_bench.acquire.catalog import AcquireError, Benchmark, Generator, HFRepo
from sep_bench.acquire.download import (
    ChecksumError, Progress, ScopedSession, Slice, discard, download, file_digest,
)
from sep_bench.acquire.extract import ArchiveGroup, group_archives, is_archive_name
from sep_bench.acquire.remote import (
    RemoteZip, SlicedArchive, find_slice_sets, human_bytes, member_selector, plan_spans,
)
from sep_bench.acquire.transfer import Interrupted, NetworkError, Policy, body_chunks, host_of, network_error
from sep_bench.acquire.verify import (
    VerificationError, genimage_md5, load_md5_csv, load_sha256_manifest, verify_archives, write_sha256_manifest,
)
from sep_bench.data.layouts import IMAGE_SUFFIXES

__all__ = ["FetchContext", "Payload", "SOURCES", "DEFAULT_ENDPOINTS", "CONFIRM_ABOVE"]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS = {
    "dataverse": ("SEP_BENCH_DATAVERSE_URL", "https://dataverse.harvard.edu"),
    "modelscope": ("SEP_BENCH_MODELSCOPE_URL", "https://www.modelscope.cn"),
    "hf": ("HF_ENDPOINT", "https://huggingface.co"),
}


CONFIRM_ABOVE = 50e9  # bytes: a larger download needs --yes (env SEP_BENCH_CONFIRM_ABOVE_GB overrides)


@dataclass
class FetchContext:
    bench: Benchmark
    generators: list[Generator]
    cache: Path  # where downloads go (kept across runs for resuming)
    endpoint: str | None = None
    repo: str | None = None  # hf repo id / dataverse DOI / modelscope namespace/name, overriding the catalog
    revision: str | None = None
    root: Path | None = None  # manual: the folder with the user's downloads
    checksums: Path | None = None  # an md5 CSV overriding the bundled community list
    trust_sha256: Path | None = None  # {archive name: sha256} of a copy the user vouches for (overrides md5)
    splits: set[str] | None = None  # GenImage: train / val (None: both)
    real_from: Path | None = None  # real images to pair with a fake-only copy
    yes: bool = False  # confirmed: download even above the size threshold
    progress: Progress | None = None
    notify: Callable[[str], None] | None = None  # messages the user must see (sizes before downloading)
    retries: int = 5
    backoff: float = 1.0
    policy: Policy = field(default_factory=Policy)  # time, rate, redirect and listing bounds

    def say(self, msg: str) -> None:
        (self.notify or log.warning)(msg)

    def confirm(self, nbytes: int, what: str) -> None:
        """Say how much will be downloaded; refuse above the threshold unless --yes was given."""
        limit = float(os.environ.get("SEP_BENCH_CONFIRM_ABOVE_GB", CONFIRM_ABOVE / 1e9)) * 1e9
        self.say(f"{what}: {human_bytes(nbytes)} to download")
        if nbytes > limit and not self.yes:
            raise AcquireError(f"{what}: {human_bytes(nbytes)} to download, over the {human_bytes(limit)} that "
                               "needs confirmation; run the same command with --yes to proceed (or ask for fewer "
                               "generators / --splits)")

    @property
    def wanted(self) -> set[str]:
        return {g.folder for g in self.generators}

    def base_url(self, source: str) -> str:
        env, default = DEFAULT_ENDPOINTS[source]
        return (self.endpoint or os.environ.get(env) or default).rstrip("/")


@dataclass
class Payload:
    """Verified local material for one acquisition."""

    archives: list[tuple[ArchiveGroup, Generator | None]] = field(default_factory=list)  # (group, name hint)
    shards: list[tuple[Path, str]] = field(default_factory=list)  # parquet (local path, name in the repo)
    dirs: list[tuple[Path, str]] = field(default_factory=list)  # (folder with images, "move" | "link")
    repo: HFRepo | None = None
    downloaded: list[Path] = field(default_factory=list)  # our downloads (deletable once installed)
    provenance: dict = field(default_factory=dict)
    remote_zips: list[RemoteZip] = field(default_factory=list)  # members of remote sliced archives, fetched
    extras: list[tuple[Path, str]] = field(default_factory=list)  # (file, name under <out>/metadata/) e.g. CSVs
    real_dirs: list[Path] = field(default_factory=list)  # real images paired with a fake-only copy


def _select_groups(ctx: FetchContext, groups: list[ArchiveGroup]) -> list[tuple[ArchiveGroup, Generator | None]]:
    """Archives named after a requested generator, plus those named after none (they may hold anything)."""
    out = []
    for g in groups:
        hint = ctx.bench.match_in(g.name)
        if hint is None or hint.folder in ctx.wanted:
            out.append((g, hint))
        else:
            log.debug("%s: archive of %s, not requested", g.name, hint.folder)
    return out


def _has_images(folder: Path) -> bool:
    for _, _, files in os.walk(folder):
        if any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
            return True
    return False


# ---- manual ------------------------------------------------------------------------------------------------


def fetch_manual(ctx: FetchContext) -> Payload:
    root = ctx.root
    if root is None:
        raise AcquireError(f"--source manual needs --root: the folder holding the downloads; {ctx.bench.manual_help}")
    if not root.is_dir():
        raise AcquireError(f"{root} is not a folder; {ctx.bench.manual_help}")
    groups: list[ArchiveGroup] = []
    loose_images = False
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        files = [Path(dirpath) / n for n in filenames if not n.startswith(".")]
        archives = [f for f in files if is_archive_name(f.name)]
        g, _ = group_archives(archives)
        groups += g
        loose_images = loose_images or any(f.suffix.lower() in IMAGE_SUFFIXES for f in files)
    selected = _select_groups(ctx, groups)
    payload = Payload(archives=selected, provenance={"source": "manual", "root": str(root)})
    if loose_images:
        payload.dirs.append((root, "link"))
    if not selected and not loose_images:
        raise AcquireError(f"no archives or images for {', '.join(g.display for g in ctx.generators)} under {root}; "
                           f"{ctx.bench.manual_help}")
    files = [p for grp, _ in selected for p in grp.parts]
    trusted = load_sha256_manifest(ctx.trust_sha256) if ctx.trust_sha256 else {}
    if trusted:
        pinned = [f for f in files if f.name in trusted]
        for f in pinned:
            got = file_digest(f, "sha256", ctx.progress, f"sha256 {f.name}")
            if got != trusted[f.name]:
                raise VerificationError(f"{f}: sha256 {got} differs from {trusted[f.name]} in {ctx.trust_sha256}; "
                                        "this is not the copy you pinned: download it again")
        payload.provenance["trusted_sha256"] = {"manifest": str(ctx.trust_sha256), "checked": [f.name for f in pinned]}
        files = [f for f in files if f.name not in trusted]
    md5s = load_md5_csv(ctx.checksums) if ctx.checksums else (genimage_md5() if ctx.bench.name == "genimage" else {})
    if md5s and files:
        res = verify_archives(files, md5s, ctx.progress)
        payload.provenance["md5_list"] = {"list": str(ctx.checksums) if ctx.checksums else
                                          "bundled community list (GenImage PR #2, Drive-derived)",
                                          "checked": res["checked"], "unlisted": res["unlisted"],
                                          "mismatched": sorted(res["mismatched"])}
        if res["unlisted"]:
            more = f" (and {len(res['unlisted']) - 10} more)" if len(res["unlisted"]) > 10 else ""
            log.warning("no md5 in the list for: %s%s", ", ".join(res["unlisted"][:10]), more)
        if res["mismatched"]:
            pin = safepath.guard(ctx.cache, ctx.cache / "archives.sha256.json", "write")
            write_sha256_manifest(pin, [f for f in files if f.name in res["mismatched"]], ctx.progress)
            for name, (got, want) in res["mismatched"].items():
                ctx.say(f"warning: {name}: md5 {got} differs from {want} in the md5 list, which is community-"
                        "contributed (GenImage pull request #2, hashes of the Google Drive copy); a copy from another "
                        "mirror (Baidu) may differ legitimately. Continuing: every member's CRC-32 is still checked "
                        f"while extracting. The sha256 of this copy is in {pin}: pass --trust-sha256 {pin} to pin it "
                        "(later runs then check it instead of the md5 list); if the file came from Google Drive, "
                        "download it again.")
    return payload


# ---- Dataverse ---------------------------------------------------------------------------------------------


def _json(session: requests.Session, url: str, what: str, policy: Policy, **kw) -> dict:
    """A JSON object from `url`, read within the policy's time, rate and size bounds; one-line errors."""
    try:
        with session.get(url, timeout=policy.request_timeout(), stream=True, **kw) as r:
            if r.status_code in (401, 403):
                raise NetworkError(f"{what}: access denied (HTTP {r.status_code}) by {host_of(url)} at {url}; a "
                                   "token may be needed")
            if r.status_code != 200:
                raise NetworkError(f"{what}: HTTP {r.status_code} from {host_of(url)} for {url}; check --endpoint "
                                   "and --repo, or try again later")
            watch, body = policy.watch(what, url), bytearray()
            for chunk in body_chunks(r, 64 << 10):
                watch.feed(len(chunk))
                body += chunk
                if len(body) > policy.max_json_bytes:
                    raise NetworkError(f"{what}: the answer of {host_of(url)} exceeds {policy.max_json_bytes} bytes "
                                       "(SEP_BENCH_MAX_JSON_BYTES); refused")
    except (requests.RequestException, Interrupted) as err:
        raise network_error(err, url, what, policy) from None
    try:
        data = json.loads(bytes(body))
    except ValueError:
        raise NetworkError(f"{what}: {url} did not answer JSON (is --endpoint the service's base URL?)") from None
    if not isinstance(data, dict):
        raise NetworkError(f"{what}: {url} answered JSON that is not an object")
    return data


def _listed_int(value, what: str, service: str) -> int:
    """A size or id from a listing: a non-negative integer, else a clear error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        if isinstance(value, str) and value.isdigit():
            return int(value)
        raise AcquireError(f"{service}: {what} is {value!r}, not a non-negative integer; refused")
    return value


_DIGEST_LEN = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}


def _dataverse_checksum(df: dict, name: str, service: str) -> tuple[str, str] | None:
    """``(algorithm, hex digest)`` a Dataverse file entry lists (``md5``, else ``checksum{type, value}``)."""
    cs = df.get("checksum") if isinstance(df.get("checksum"), dict) else {}
    algo, value = ("md5", df["md5"]) if df.get("md5") else (str(cs.get("type") or "").replace("-", "").lower(),
                                                             cs.get("value"))
    if not value or algo not in _DIGEST_LEN:
        return None
    if not isinstance(value, str) or len(value) != _DIGEST_LEN[algo] or not re.fullmatch(r"[0-9a-fA-F]+", value):
        raise AcquireError(f"{service}: the listed {algo} of {name!r} is {str(value)[:80]!r}, not a {algo} digest; "
                           "refused")
    return algo, value.lower()


def _dataverse_files(entries: list, service: str, policy: Policy) -> list[tuple[str, str, dict]]:
    """``(file name, folder, dataFile)`` of each listed file, every name checked (`safepath`)."""
    if len(entries) > policy.max_listing_entries:
        raise AcquireError(f"{service}: the listing has {len(entries)} files, over the limit of "
                           f"{policy.max_listing_entries} (SEP_BENCH_MAX_LISTING_ENTRIES); refused")
    files = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("dataFile") or {}, dict):
            raise AcquireError(f"{service}: a listing entry is not an object ({str(e)[:80]!r}); refused")
        df = e.get("dataFile") or {}
        name = df.get("filename") or e.get("label")
        if not name or df.get("id") is None:
            continue
        safepath.check_name(name, what="file name", service=service)
        folder = e.get("directoryLabel") or ""
        if folder:
            safepath.check_relpath(folder, what=f"directoryLabel of {name!r}", service=service)
        _listed_int(df["id"], f"the id of {name!r}", service)
        if df.get("originalFileFormat") and df.get("originalFileName"):
            safepath.check_name(df["originalFileName"], what=f"originalFileName of {name!r}", service=service)
        files.append((name, folder, df))
    return files


def fetch_dataverse(ctx: FetchContext) -> Payload:
    doi = ctx.repo or ctx.bench.dataverse_doi
    if not doi:
        raise AcquireError(f"{ctx.bench.name} has no known Dataverse copy; pass --repo doi:...")
    base = ctx.base_url("dataverse")
    session = ScopedSession(ctx.policy)
    if token := os.environ.get("DATAVERSE_API_TOKEN"):
        session.add_credential(base, "X-Dataverse-key", token)  # the Dataverse host only, not its storage
    service = f"Dataverse {doi}"
    listing = _json(session, f"{base}/api/datasets/:persistentId/", service, ctx.policy,
                    params={"persistentId": doi})
    version = listing.get("data") if isinstance(listing.get("data"), dict) else {}
    version = version.get("latestVersion") if isinstance(version.get("latestVersion"), dict) else {}
    entries = version.get("files") or []
    if not entries or not isinstance(entries, list):
        raise AcquireError(f"Dataverse {doi}: the dataset lists no files")
    vstr = f"{version.get('versionNumber')}.{version.get('versionMinorNumber')}"
    out_dir = ctx.cache / "dataverse"
    payload = Payload(provenance={"source": "dataverse", "endpoint": base, "doi": doi, "version": vstr,
                                  "files": []})
    files = _dataverse_files(entries, service, ctx.policy)
    slice_sets = find_slice_sets([n for n, _, _ in files])
    in_sets = {n for names in slice_sets.values() for n in names}
    by_name = {n: (folder, df) for n, folder, df in files}
    plan = []
    for name, folder, df in files:
        if name in in_sets:
            continue
        hint = ctx.bench.match_in(Path(name).name.split(".")[0]) or next(
            (g for part in Path(folder).parts if (g := ctx.bench.match(part))), None)
        if hint is not None and hint.folder not in ctx.wanted:
            continue
        ingested = bool(df.get("originalFileFormat"))
        if ingested:  # tabular files are served converted unless the original is asked for
            name = df.get("originalFileName") or name
        checksum = _dataverse_checksum(df, name, service)
        url = f"{base}/api/access/datafile/{int(df['id'])}" + ("?format=original" if ingested else "")
        size = None if ingested or df.get("filesize") is None else _listed_int(df["filesize"], f"the size of {name!r}",
                                                                                service)
        dest = safepath.inside(out_dir, f"{folder}/{name}" if folder else name, what="file", service=service)
        plan.append((url, dest, size, checksum, hint))
    archives_named = [d for _, d, _, _, h in plan if is_archive_name(d.name)]
    if not plan and not slice_sets:
        raise AcquireError(f"Dataverse {doi}: no file matches {', '.join(g.display for g in ctx.generators)}")
    # sliced archives: index first (a few requests), then only the selected members' bytes
    spans_total = 0
    for stem, names in sorted(slice_sets.items()):
        slices = []
        for n in names:
            folder, df = by_name[n]
            if df.get("filesize") is None:
                raise AcquireError(f"Dataverse {doi}: {n} has no size in the listing; cannot map the archive")
            slices.append(Slice(n, _listed_int(df["filesize"], f"the size of {n!r}", service),
                                url=f"{base}/api/access/datafile/{int(df['id'])}"))
        arch = SlicedArchive(slices, ctx.cache, subdir=out_dir.name, session=session,
                             validator=f"{doi} v{vstr} {sum(x.size for x in slices)} bytes", retries=ctx.retries,
                             backoff=ctx.backoff, progress=ctx.progress, notify=ctx.say, label=stem,
                             policy=ctx.policy)
        reader = arch.open()
        select = member_selector(ctx.bench, ctx.wanted, ctx.splits, keep_unknown=False)
        chosen = [e for e in reader.entries if select(e.name)]
        if not any(not e.is_dir for e in chosen):
            present = sorted({g.display for e in reader.entries for p in e.name.split("/")[:-1]
                              if (g := ctx.bench.match_in(p)) is not None})
            reader.close()
            raise AcquireError(f"Dataverse {doi}: {stem} ({len(slices)} slices) holds no member of "
                               f"{', '.join(g.display for g in ctx.generators)}"
                               f"{' in ' + ', '.join(sorted(ctx.splits)) if ctx.splits else ''}; "
                               f"its generators: {', '.join(present) or 'none recognised'}")
        spans = plan_spans(reader.entries, chosen, reader.cd_start)
        need = sum(b - a for a, b in spans)
        spans_total += need
        first, last = arch.slice_range(spans[0][0], spans[-1][1])
        what = (f"{stem} ({human_bytes(arch.total)} in {len(slices)} slices): "
                f"{sum(1 for e in chosen if not e.is_dir)} files of {', '.join(g.display for g in ctx.generators)}"
                f"{' (' + ', '.join(sorted(ctx.splits)) + ')' if ctx.splits else ''} in {len(spans)} byte "
                f"range(s) of {first}..{last}")
        ctx.confirm(need + sum(s or 0 for _, _, s, _, _ in plan), what)
        arch.verify_reused(reader, chosen)
        arch.fetch(spans)
        payload.remote_zips.append(RemoteZip(reader, arch, select, stem))
        payload.downloaded += arch.files
        payload.provenance.setdefault("sliced_archives", []).append({
            "name": stem, "slices": len(slices), "archive_bytes": arch.total, "members": len(chosen),
            "ranges": len(spans), "bytes_fetched": need, "bytes_received": arch.received[0],
            "checks": "size and CRC-32 of every member (the slices' md5 cover whole slices only)"})
    if not slice_sets:
        ctx.confirm(sum(s or 0 for _, _, s, _, _ in plan), f"Dataverse {doi}")
    for url, dest, size, checksum, hint in plan:
        download(url, dest, root=ctx.cache, expected_size=size, checksum=checksum, session=session,
                 retries=ctx.retries, backoff=ctx.backoff, policy=ctx.policy, progress=ctx.progress,
                 label=dest.name, notify=ctx.say)
        payload.downloaded.append(dest)
        payload.provenance["files"].append({"name": str(dest.relative_to(out_dir)), "url": url,
                                            **({checksum[0]: checksum[1]} if checksum else {})})
        if not is_archive_name(dest.name) and dest.suffix.lower() not in IMAGE_SUFFIXES:
            payload.extras.append((dest, dest.name))  # the metadata CSV (quality, size, content per image)
    _collect(payload, ctx, out_dir, archives_named + [d for _, d, *_ in plan if d.suffix.lower() in IMAGE_SUFFIXES])
    return payload


def _collect(payload: Payload, ctx: FetchContext, out_dir: Path, files: list[Path]) -> None:
    """Group downloaded archives; downloaded image files make a folder to normalise."""
    by_dir: dict[Path, list[Path]] = {}
    for f in files:
        by_dir.setdefault(f.parent, []).append(f)
    for folder, fs in sorted(by_dir.items()):
        groups, _ = group_archives([f for f in fs if is_archive_name(f.name)])
        payload.archives += _select_groups(ctx, groups)
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in files):
        payload.dirs.append((out_dir, "link"))


# ---- ModelScope --------------------------------------------------------------------------------------------


_MS_PAGE = 100  # the ModelScope SDK's page size


def _modelscope_listing(session: requests.Session, base: str, ds: str, rev: str,
                        policy: Policy) -> dict[str, dict]:
    """``{path: {"size", "sha256"}}`` of every file of the repository tree, all pages read (at most
    `policy.max_listing_pages` pages and `policy.max_listing_entries` files). Paths are as listed, less one
    leading ``/`` (the repository root the request names); they are checked (`safepath`) when used."""
    url = f"{base}/api/v1/datasets/{ds}/repo/tree"
    service = f"ModelScope {ds}"
    out: dict[str, dict] = {}
    page = 1
    while True:
        if page > policy.max_listing_pages:
            raise AcquireError(f"{service}: the tree listing goes on past {policy.max_listing_pages} pages "
                               f"({len(out)} files so far); stopped (a broken or hostile service?); raise "
                               "SEP_BENCH_MAX_LISTING_PAGES if the repository is really that large")
        data = _json(session, url, service, policy, params={
            "Revision": rev, "Root": "/", "Recursive": "True", "PageNumber": page, "PageSize": _MS_PAGE})
        body = data.get("Data", data)
        items = body.get("Files") if isinstance(body, dict) else body
        items = [it for it in items if isinstance(it, dict) and isinstance(it.get("Path"), str) and it["Path"]] \
            if isinstance(items, list) else []
        new = 0
        for it in items:
            path = it["Path"][1:] if it["Path"].startswith("/") else it["Path"]
            if it.get("Type", "blob") != "tree" and path not in out:
                size = it.get("Size")
                out[path] = {"size": None if size is None else _listed_int(size, f"the size of {path!r}", service),
                             "sha256": it.get("Sha256") if isinstance(it.get("Sha256"), str) else None}
                new += 1
        if len(out) > policy.max_listing_entries:
            raise AcquireError(f"{service}: the tree listing holds more than {policy.max_listing_entries} files; "
                               "stopped (SEP_BENCH_MAX_LISTING_ENTRIES)")
        total = body.get("TotalCount") if isinstance(body, dict) else None
        total = total if isinstance(total, int) and not isinstance(total, bool) else None
        if len(items) < _MS_PAGE or not new or (total is not None and page * _MS_PAGE >= total):
            return out
        page += 1


def _modelscope_pick(listing: dict[str, dict], names: tuple[str, ...]) -> list[str]:
    """The test-set archive (and its parts) in any folder: the first of `names` found, by preference."""
    for want in names:
        stem = want.lower().split(".")[0]
        hits = sorted(p for p in listing if Path(p).name.lower() == want.lower())
        if not hits:
            continue
        if len(hits) > 1:
            log.warning("several %s in the repository (%s); using %s", want, ", ".join(hits), hits[0])
        folder = str(Path(hits[0]).parent)
        parts = [p for p in listing if str(Path(p).parent) == folder and p != hits[0]
                 and is_archive_name(Path(p).name) and Path(p).name.lower().split(".")[0] == stem]
        return [hits[0], *sorted(parts)]
    return []


def fetch_modelscope(ctx: FetchContext) -> Payload:
    ds = ctx.repo or ctx.bench.modelscope_id
    if not ds:
        raise AcquireError(f"{ctx.bench.name} has no known ModelScope copy; pass --repo namespace/name")
    base = ctx.base_url("modelscope")
    rev = ctx.revision or "master"
    session = ScopedSession(ctx.policy)
    listing = _modelscope_listing(session, base, ds, rev, ctx.policy)
    names = ctx.bench.modelscope_files or ("test_set.zip", "test.zip")
    wanted_files = _modelscope_pick(listing, names)
    if not wanted_files:
        shown = sorted(listing)[:40]
        raise AcquireError(f"ModelScope {ds} (revision {rev}): no {' or '.join(names)} in any folder; the repository "
                           f"holds {len(listing)} file(s)"
                           + (": " + ", ".join(f"{safepath.shown(p)} ({human_bytes(listing[p]['size'] or 0)})"
                                                for p in shown)
                              + (" ..." if len(listing) > len(shown) else "") if listing else "")
                           + ". Pass --repo for another dataset, or download the test set by hand and use --root")
    ctx.confirm(sum(listing[p].get("size") or 0 for p in wanted_files), f"ModelScope {ds}: {', '.join(wanted_files)}")
    out_dir = ctx.cache / "modelscope"
    payload = Payload(provenance={"source": "modelscope", "endpoint": base, "dataset": ds, "revision": rev,
                                  "files": []})
    service = f"ModelScope {ds}"
    dests = {path: safepath.inside(out_dir, path, what="tree entry", service=service) for path in wanted_files}
    for path in wanted_files:
        meta = listing.get(path, {})
        checksum = ("sha256", meta["sha256"]) if meta.get("sha256") else None
        if checksum is None:
            ctx.say(f"warning: ModelScope lists no sha256 for {path}: only the members' CRC-32 will be checked")
        url = f"{base}/api/v1/datasets/{ds}/repo?Revision={quote(rev)}&FilePath={quote(path)}"
        dest = dests[path]
        download(url, dest, root=ctx.cache, expected_size=meta.get("size"), checksum=checksum, session=session,
                 retries=ctx.retries, backoff=ctx.backoff, policy=ctx.policy, progress=ctx.progress,
                 label=Path(path).name, notify=ctx.say)
        payload.downloaded.append(dest)
        payload.provenance["files"].append({"name": path, **({"sha256": checksum[1]} if checksum else {})})
    _collect(payload, ctx, out_dir, payload.downloaded)
    return payload


# ---- Hugging Face ------------------------------------------------------------------------------------------


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _hub_transport_errors() -> tuple[type[BaseException], ...]:
    """The transport errors of the HTTP client huggingface_hub uses (httpx or its successor httpx2), if any."""
    found = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def fetch_hf(ctx: FetchContext) -> Payload:
    try:
        from huggingface_hub import HfApi, constants, hf_hub_url
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
        from huggingface_hub.utils import build_hf_headers
    except ImportError:  # pragma: no cover - a dependency of the project
        raise AcquireError("--source hf needs huggingface_hub (pip install huggingface_hub)") from None
    if constants.HF_HUB_OFFLINE:
        raise AcquireError("HF_HUB_OFFLINE is set: unset it to download from the Hugging Face Hub")
    if ctx.repo:
        known = next((r for r in ctx.bench.hf_repos if r.repo_id == ctx.repo), None)
        repo = known or HFRepo(ctx.repo)
    elif ctx.bench.hf_repos:
        repo = ctx.bench.hf_repos[0]
        single = [r for r in ctx.bench.hf_repos if r.generator and {r.generator} == ctx.wanted
                  and (ctx.real_from is not None or not r.fake_only)]
        repo = single[0] if single else repo  # a per-generator copy when exactly its generator is requested
    else:
        raise AcquireError(f"{ctx.bench.name} has no known Hugging Face copy; pass --repo owner/name")
    if repo.note:
        log.warning("%s: %s", repo.repo_id, repo.note)
    if repo.fake_only:
        if ctx.real_from is None:
            raise AcquireError(
                f"{repo.repo_id} holds fake images only (one `image` column, no label, no real images): a benchmark "
                "built from it alone would have one class. Pair it with real images: --real-from DIR, a GenImage "
                "tree or extracted archive holding <subset>/{train,val}/nature of the same generator (e.g. from "
                "`sep-bench data get genimage --root ...`); or use another source")
        if not Path(ctx.real_from).is_dir():
            raise AcquireError(f"--real-from {ctx.real_from}: not a folder")
    endpoint = ctx.endpoint  # None: huggingface_hub reads HF_ENDPOINT itself
    rev = ctx.revision or "main"
    api = HfApi(endpoint=endpoint)
    try:
        entries = [e for e in api.list_repo_tree(repo.repo_id, repo_type="dataset", revision=rev, recursive=True)
                   if hasattr(e, "size")]
    except GatedRepoError:
        raise AcquireError(f"{repo.repo_id} is gated: accept its terms on the dataset page, then set HF_TOKEN (or run "
                           "`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise AcquireError(f"{repo.repo_id}: no such dataset repository (or it is private: set HF_TOKEN)") from None
    except (HfHubHTTPError, OSError, *_hub_transport_errors()) as err:
        where = host_of(endpoint or constants.ENDPOINT)
        raise NetworkError(f"{repo.repo_id}: cannot list the repository at {where} ({type(err).__name__}: "
                           f"{' '.join(str(err).split())[:160]}); check the network and --endpoint / HF_ENDPOINT, "
                           "then run the command again") from None
    files = [e for e in entries if e.path.endswith(".parquet") or is_archive_name(Path(e.path).name)]
    if not files:
        raise AcquireError(f"{repo.repo_id}: no parquet shards or archives in the repository")
    ctx.confirm(sum(e.size or 0 for e in files), f"{repo.repo_id} ({len(files)} files)")
    service = f"Hugging Face {repo.repo_id}"
    local_dir = safepath.inside(ctx.cache, "hf/" + repo.repo_id.replace("/", "__"), what="repository id",
                                service=service)
    payload = Payload(repo=repo, provenance={"source": "hf", "endpoint": endpoint or ctx.base_url("hf"),
                                             "repo": repo.repo_id, "revision": rev, "files": []})
    headers = dict(build_hf_headers())  # the user's token (HF_TOKEN / `hf auth login`) for gated or private repos
    session = ScopedSession(ctx.policy)
    for k in [k for k in headers if k.lower() == "authorization"]:  # sent to the Hub only, never to its storage
        session.add_credential(endpoint or constants.ENDPOINT, "Authorization", headers.pop(k))
    if ctx.real_from is not None:
        payload.real_dirs.append(Path(ctx.real_from))
        payload.provenance["real_from"] = str(ctx.real_from)
    for e in sorted(files, key=lambda e: e.path):
        url = hf_hub_url(repo.repo_id, e.path, repo_type="dataset", revision=rev, endpoint=endpoint)
        lfs = getattr(e, "lfs", None)
        sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
        dest = safepath.inside(local_dir, e.path, what="tree entry", service=service)
        local = download(url, dest, root=ctx.cache, expected_size=e.size, headers=headers, session=session,
                         checksum=("sha256", sha256) if sha256 else None, retries=ctx.retries, backoff=ctx.backoff,
                         policy=ctx.policy, progress=ctx.progress, label=Path(e.path).name, notify=ctx.say)
        if sha256:
            algo, want = "sha256", sha256
        else:  # a small file kept in git: its id is the git blob sha1
            algo, want = "git-sha1", e.blob_id
            if want and _git_blob_sha1(local) != want:
                discard(ctx.cache, local)
                raise ChecksumError(f"{repo.repo_id}/{e.path}: git blob sha1 differs from the Hub's {want}; deleted, "
                                    "run again to download it anew")
        payload.downloaded.append(local)
        payload.provenance["files"].append({"name": e.path, algo: want})
        if e.path.endswith(".parquet"):
            payload.shards.append((local, e.path))
    archives = [p for p in payload.downloaded if not p.name.endswith(".parquet")]
    if archives:
        _collect(payload, ctx, local_dir, archives)
    return payload


SOURCES: dict[str, Callable[[FetchContext], Payload]] = {
    "hf": fetch_hf,
    "dataverse": fetch_dataverse,
    "modelscope": fetch_modelscope,
    "manual": fetch_manual,
}
