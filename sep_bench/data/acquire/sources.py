"""Where the data comes from. Each source turns a request into a `Payload` (verified local files):

- ``hf``: a Hugging Face dataset repository: huggingface_hub lists it (and supplies the user's token); files come
  through the hub's resolve URLs with our resumable downloader, sha256 of LFS files checked against the listing. Parquet shards are converted to image files later (`normalise`).
  Endpoint: ``--endpoint`` or ``HF_ENDPOINT``; gated/private repos use ``HF_TOKEN`` (or ``hf auth login``).
- ``dataverse``: a Dataverse dataset by DOI (Harvard Dataverse by default) through its HTTP API: the listing
  ``/api/datasets/:persistentId/?persistentId=<doi>`` gives each file's id, size and md5; files come from
  ``/api/access/datafile/<id>`` with Range resume and are checked. ``DATAVERSE_API_TOKEN`` is sent if set.
- ``modelscope``: a ModelScope dataset's files through its HTTP API (``/api/v1/datasets/<ns>/<name>/repo``),
  sha256-checked when the repository listing gives one.
- ``manual``: archives (or already extracted folders) the user downloaded into a folder (Google Drive, Baidu);
  GenImage archives are checked against the publisher's md5 list.

Sources are looked up by name in `SOURCES`; each is a function ``fetch(ctx) -> Payload``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import requests

from sep_bench.data.acquire.catalog import AcquireError, Benchmark, Generator, HFRepo
from sep_bench.data.acquire.download import ChecksumError, Progress, download
from sep_bench.data.acquire.extract import ArchiveGroup, group_archives, is_archive_name
from sep_bench.data.acquire.verify import genimage_md5, load_md5_csv, verify_archives
from sep_bench.data.layouts import IMAGE_SUFFIXES

__all__ = ["FetchContext", "Payload", "SOURCES", "DEFAULT_ENDPOINTS"]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS = {
    "dataverse": ("SEP_BENCH_DATAVERSE_URL", "https://dataverse.harvard.edu"),
    "modelscope": ("SEP_BENCH_MODELSCOPE_URL", "https://www.modelscope.cn"),
    "hf": ("HF_ENDPOINT", "https://huggingface.co"),
}


@dataclass
class FetchContext:
    bench: Benchmark
    generators: list[Generator]
    cache: Path  # where downloads go (kept across runs for resuming)
    endpoint: str | None = None
    repo: str | None = None  # hf repo id / dataverse DOI / modelscope namespace/name, overriding the catalog
    revision: str | None = None
    root: Path | None = None  # manual: the folder with the user's downloads
    checksums: Path | None = None  # a publisher md5 CSV overriding the bundled one
    progress: Progress | None = None
    retries: int = 5
    backoff: float = 1.0

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
    md5s = load_md5_csv(ctx.checksums) if ctx.checksums else (genimage_md5() if ctx.bench.name == "genimage" else {})
    if md5s:
        files = [p for grp, _ in selected for p in grp.parts]
        res = verify_archives(files, md5s, ctx.progress)
        payload.provenance["publisher_md5"] = res
        if res["unlisted"]:
            log.warning("no publisher checksum for: %s", ", ".join(res["unlisted"]))
    return payload


# ---- Dataverse ---------------------------------------------------------------------------------------------


def _json(session: requests.Session, url: str, what: str, **kw) -> dict:
    try:
        r = session.get(url, timeout=60, **kw)
    except requests.RequestException as err:
        raise AcquireError(f"{what}: cannot reach {url} ({err})") from None
    if r.status_code in (401, 403):
        raise AcquireError(f"{what}: access denied (HTTP {r.status_code}) at {url}; a token may be needed")
    if r.status_code != 200:
        raise AcquireError(f"{what}: HTTP {r.status_code} from {url}")
    try:
        return r.json()
    except ValueError:
        raise AcquireError(f"{what}: {url} did not answer JSON") from None


def fetch_dataverse(ctx: FetchContext) -> Payload:
    doi = ctx.repo or ctx.bench.dataverse_doi
    if not doi:
        raise AcquireError(f"{ctx.bench.name} has no known Dataverse copy; pass --repo doi:...")
    base = ctx.base_url("dataverse")
    session = requests.Session()
    if token := os.environ.get("DATAVERSE_API_TOKEN"):
        session.headers["X-Dataverse-key"] = token
    listing = _json(session, f"{base}/api/datasets/:persistentId/", f"Dataverse {doi}",
                    params={"persistentId": doi})
    version = (listing.get("data") or {}).get("latestVersion") or {}
    entries = version.get("files") or []
    if not entries:
        raise AcquireError(f"Dataverse {doi}: the dataset lists no files")
    out_dir = ctx.cache / "dataverse"
    payload = Payload(provenance={"source": "dataverse", "endpoint": base, "doi": doi,
                                  "version": f"{version.get('versionNumber')}.{version.get('versionMinorNumber')}",
                                  "files": []})
    plan = []
    for e in entries:
        df = e.get("dataFile") or {}
        name = df.get("filename") or e.get("label")
        fid = df.get("id")
        if not name or fid is None:
            continue
        folder = e.get("directoryLabel") or ""
        hint = ctx.bench.match_in(Path(name).name.split(".")[0]) or next(
            (g for part in Path(folder).parts if (g := ctx.bench.match(part))), None)
        if hint is not None and hint.folder not in ctx.wanted:
            continue
        ingested = bool(df.get("originalFileFormat"))
        if ingested:  # tabular files are served converted unless the original is asked for
            name = df.get("originalFileName") or name
        md5 = df.get("md5") or ((df.get("checksum") or {}).get("value")
                                if (df.get("checksum") or {}).get("type", "").upper() == "MD5" else None)
        checksum = None
        if md5:
            checksum = ("md5", md5)
        elif (cs := df.get("checksum")) and cs.get("type", "").upper() in ("SHA-1", "SHA-256", "SHA-512"):
            checksum = (cs["type"].replace("-", "").lower(), cs["value"])
        url = f"{base}/api/access/datafile/{fid}" + ("?format=original" if ingested else "")
        dest = out_dir / folder / name
        plan.append((url, dest, None if ingested else df.get("filesize"), checksum, hint))
    if not plan:
        raise AcquireError(f"Dataverse {doi}: no file matches {', '.join(g.display for g in ctx.generators)}")
    for url, dest, size, checksum, hint in plan:
        download(url, dest, expected_size=size, checksum=checksum, session=session, retries=ctx.retries,
                 backoff=ctx.backoff, progress=ctx.progress, label=dest.name)
        payload.downloaded.append(dest)
        payload.provenance["files"].append({"name": str(dest.relative_to(out_dir)), "url": url,
                                            **({checksum[0]: checksum[1]} if checksum else {})})
    _collect(payload, ctx, out_dir, [d for _, d, *_ in plan])
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


def _modelscope_listing(session: requests.Session, base: str, ds: str, rev: str) -> dict[str, dict]:
    """``{path: {"size", "sha256"}}`` from the repository tree; {} when the listing is unavailable."""
    url = f"{base}/api/v1/datasets/{ds}/repo/tree"
    try:
        data = _json(session, url, f"ModelScope {ds}", params={"Revision": rev, "Root": "/", "Recursive": "True"})
    except AcquireError as err:
        log.warning("%s; downloading without the listing's checksums", err)
        return {}
    body = data.get("Data", data)
    items = body.get("Files") if isinstance(body, dict) else body
    out = {}
    for it in items or []:
        if isinstance(it, dict) and it.get("Path") and it.get("Type", "blob") != "tree":
            out[it["Path"].lstrip("/")] = {"size": it.get("Size"), "sha256": it.get("Sha256")}
    return out


def fetch_modelscope(ctx: FetchContext) -> Payload:
    ds = ctx.repo or ctx.bench.modelscope_id
    if not ds:
        raise AcquireError(f"{ctx.bench.name} has no known ModelScope copy; pass --repo namespace/name")
    base = ctx.base_url("modelscope")
    rev = ctx.revision or "master"
    session = requests.Session()
    listing = _modelscope_listing(session, base, ds, rev)
    wanted_files = list(ctx.bench.modelscope_files)
    # parts of a configured archive (test.z01, test.zip.001...) come along
    stems = {Path(f).name.split(".")[0] for f in wanted_files}
    for path in listing:
        if path not in wanted_files and is_archive_name(Path(path).name) and Path(path).name.split(".")[0] in stems:
            wanted_files.append(path)
    if not wanted_files:
        wanted_files = [p for p in listing if is_archive_name(Path(p).name)]
    if not wanted_files:
        raise AcquireError(f"ModelScope {ds}: no archive to download")
    out_dir = ctx.cache / "modelscope"
    payload = Payload(provenance={"source": "modelscope", "endpoint": base, "dataset": ds, "revision": rev,
                                  "files": []})
    for path in sorted(wanted_files):
        meta = listing.get(path, {})
        checksum = ("sha256", meta["sha256"]) if meta.get("sha256") else None
        url = f"{base}/api/v1/datasets/{ds}/repo?Revision={quote(rev)}&FilePath={quote(path)}"
        dest = out_dir / path
        download(url, dest, expected_size=meta.get("size"), checksum=checksum, session=session,
                 retries=ctx.retries, backoff=ctx.backoff, progress=ctx.progress, label=Path(path).name)
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
        single = [r for r in ctx.bench.hf_repos if r.generator and {r.generator} == ctx.wanted]
        repo = single[0] if single else repo  # a per-generator copy when exactly its generator is requested
    else:
        raise AcquireError(f"{ctx.bench.name} has no known Hugging Face copy; pass --repo owner/name")
    if repo.note:
        log.warning("%s: %s", repo.repo_id, repo.note)
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
    except (HfHubHTTPError, OSError) as err:
        raise AcquireError(f"{repo.repo_id}: cannot list the repository ({err})") from None
    files = [e for e in entries if e.path.endswith(".parquet") or is_archive_name(Path(e.path).name)]
    if not files:
        raise AcquireError(f"{repo.repo_id}: no parquet shards or archives in the repository")
    local_dir = ctx.cache / "hf" / repo.repo_id.replace("/", "__")
    payload = Payload(repo=repo, provenance={"source": "hf", "endpoint": endpoint or ctx.base_url("hf"),
                                             "repo": repo.repo_id, "revision": rev, "files": []})
    headers = build_hf_headers()  # the user's token (HF_TOKEN / `hf auth login`) for gated or private repos
    session = requests.Session()
    for e in sorted(files, key=lambda e: e.path):
        url = hf_hub_url(repo.repo_id, e.path, repo_type="dataset", revision=rev, endpoint=endpoint)
        lfs = getattr(e, "lfs", None)
        sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
        local = download(url, local_dir / e.path, expected_size=e.size, headers=headers, session=session,
                         checksum=("sha256", sha256) if sha256 else None, retries=ctx.retries, backoff=ctx.backoff,
                         progress=ctx.progress, label=Path(e.path).name)
        if sha256:
            algo, want = "sha256", sha256
        else:  # a small file kept in git: its id is the git blob sha1
            algo, want = "git-sha1", e.blob_id
            if want and _git_blob_sha1(local) != want:
                local.unlink(missing_ok=True)
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
