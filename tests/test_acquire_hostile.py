"""`sep-bench data get` against hostile or broken services, on loopback servers (issue 25).

Each test plays one misbehaviour of a mirror (paths that leave the download folder in a listing, a 206 with the
right Content-Range and the wrong bytes, a trickle, an endless listing, a redirect loop, a ``file://``
redirect, a refused connection) and asserts the exit code, the one-line message, and that canary files outside
the command's folders are untouched. Limits are made small through the ``SEP_BENCH_*`` variables
(`transfer.Policy`) so each test takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.acquire.download import recorded_digest_path
from sep_bench.data.layouts import read_layout, summarize
from tests.test_acquire import _has, image_bytes, write_zip
from tests.test_acquire_http import _fake_hub, parquet_shard
from tests.test_acquire_real import (  # noqa: F401  (the server/storage fixtures)
    DOI, MS, _server, _storage, big_archive, serve_dataverse, serve_modelscope,
)

runner = CliRunner()

LISTING = "/api/datasets/:persistentId/"


class Canary:
    """Files outside the command's folders that must stay exactly as they were (bytes, inode, mtime), in a
    folder where nothing may appear."""

    def __init__(self, folder: Path, names: tuple[str, ...]):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        for n in names:
            (folder / n).write_bytes(f"canary {n}: must survive\n".encode())
        self.before = self._state()

    def _state(self) -> dict:
        return {str(p.relative_to(self.folder)): (p.read_bytes() if p.is_file() else b"", p.lstat().st_ino,
                                                   p.lstat().st_mtime_ns) for p in sorted(self.folder.rglob("*"))}

    def untouched(self) -> bool:
        return self._state() == self.before


def _error_line(res) -> str:
    """The command's error: exit code 2, no traceback, exactly one line starting with ``error:``."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit), res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def _dv(server, out: Path, *args):
    return runner.invoke(app, ["data", "get", "genimage", "--endpoint", server.url, "--out", str(out),
                               *map(str, args)])


def _ms(server, out: Path, *args):
    return runner.invoke(app, ["data", "get", "aigcbench", "--endpoint", server.url, "--out", str(out),
                               "-g", "ADM,Glide", *map(str, args)])


def _add_dataverse_entry(server, entry: dict) -> None:
    """One more file entry in the served Dataverse listing."""
    honest = server.routes[LISTING]

    def listing(q):
        data = honest(q)
        if data is not None:
            data = json.loads(json.dumps(data))
            data["data"]["latestVersion"]["files"].append(entry)
        return data

    server.routes[LISTING] = listing


def _aigc_zip(tmp_path: Path) -> bytes:
    members = {f"test/{g}/{c}/{i}.png": image_bytes(hash((g, c, i)) % 997)
               for g in ("ADM", "Glide") for c in ("0_real", "1_fake") for i in range(2)}
    return write_zip(tmp_path / "t.zip", members).read_bytes()


# ---- 1. paths from a listing ------------------------------------------------------------------------------------

_CANARY_CSV = b"a,b\n1,2\n" * 40


@pytest.mark.parametrize("field,value,needle", [
    ("directoryLabel", "../../../../escape", "directoryLabel of 'canary.csv'"),
    ("filename", "../../../../escape/canary.csv", "file name"),
    ("directoryLabel", "ABSOLUTE", "absolute path"),
    ("directoryLabel", "..\\..\\..\\..\\escape", "path separator"),
    ("directoryLabel", "sub//x", "empty"),
    ("filename", "canary.csv\x00.png", "control character"),
    ("originalFileName", "../../../../escape/canary.csv", "originalFileName"),
])
def test_dataverse_listing_paths_that_leave_the_download_folder_are_refused(server, storage, tmp_path, field,
                                                                          value, needle):
    _, blob = big_archive()
    serve_dataverse(server, storage, blob, slice_size=50_000)
    # the cache is <tmp>/data/external/.downloads/genimage/dataverse: ../../../../escape is <tmp>/data/escape
    canary = Canary(tmp_path / "data" / "escape", ("canary.csv",))
    value = str(canary.folder) if value == "ABSOLUTE" else value
    df = {"id": 77, "filename": "canary.csv", "filesize": len(_CANARY_CSV),
          "md5": hashlib.md5(_CANARY_CSV).hexdigest()}
    entry = {"label": "canary.csv", "directoryLabel": None, "dataFile": df}
    if field == "directoryLabel":
        entry["directoryLabel"] = value
    elif field == "filename":
        df["filename"] = entry["label"] = value
    else:  # an ingested file whose original name is hostile
        df.update(originalFileFormat="text/csv", originalFileName=value)
    _add_dataverse_entry(server, entry)
    server.routes["/api/access/datafile/77"] = _CANARY_CSV
    out = tmp_path / "data" / "external" / "genimage"
    line = _error_line(_dv(server, out, "-g", "ADM"))
    assert _has(line, f"Dataverse {DOI}", needle, "refused"), line
    assert repr(value) in line
    assert canary.untouched() and not out.exists()
    assert not storage.requests and not any("datafile/77" in p for _, p, _ in server.requests)


@pytest.mark.parametrize("path,needle", [
    ("../../../../escape/test_set.zip", "'..' (path traversal)"),
    ("AIGCDetectionBenchMark/../../../../../escape/test_set.zip", "'..' (path traversal)"),
    ("AIGC\\..\\..\\..\\..\\escape/test_set.zip", "path separator"),
    ("//ABSOLUTE/test_set.zip", "absolute path"),
    ("AIGC/\x1b[2J/test_set.zip", "control character"),
])
def test_modelscope_tree_paths_that_leave_the_download_folder_are_refused(server, tmp_path, path, needle):
    # the cache is <tmp>/data/.downloads/aigcbench/modelscope: ../../../../escape is <tmp>/escape
    canary = Canary(tmp_path / "escape", ("test_set.zip",))
    path = path.replace("/ABSOLUTE", str(canary.folder))
    serve_modelscope(server, {path: _aigc_zip(tmp_path), "README.md": b"hi"})
    out = tmp_path / "data" / "aigcbench"
    line = _error_line(_ms(server, out))
    assert _has(line, "ModelScope aemilia/AIGCDetectionBenchmark", "tree entry", needle, "refused"), line
    assert canary.untouched() and not out.exists()
    assert not [p for m, p, _ in server.requests if "FilePath=" in p]  # nothing was downloaded


def test_hugging_face_tree_paths_that_leave_the_download_folder_are_refused(server, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    canary = Canary(tmp_path / "data" / "escape", ("x.parquet",))
    _fake_hub(server, "TheKernel01/Tiny-GenImage", {"../../../../../escape/x.parquet": parquet_shard([])})
    out = tmp_path / "data" / "genimage"
    line = _error_line(runner.invoke(app, ["data", "get", "genimage", "--source", "hf", "--endpoint", server.url,
                                           "--out", str(out), "-g", "ADM"]))
    assert _has(line, "Hugging Face TheKernel01/Tiny-GenImage", "tree entry", "path traversal"), line
    assert canary.untouched() and not any("resolve" in p for _, p, _ in server.requests)


def test_a_link_planted_in_the_download_folder_is_never_followed(server, storage, tmp_path):
    """A symbolic link along the way (here the cache's ``dataverse`` folder pointing elsewhere) stops the write."""
    _, blob = big_archive()
    serve_dataverse(server, storage, blob, slice_size=50_000)
    canary = Canary(tmp_path / "elsewhere", ("GenImage.ranges",))
    cache = tmp_path / "cache"
    cache.mkdir()
    os.symlink(canary.folder, cache / "dataverse")
    line = _error_line(_dv(server, tmp_path / "out", "-g", "ADM", "--cache", cache))
    assert _has(line, "symbolic link", str(cache / "dataverse")), line
    assert canary.untouched() and not storage.requests


# ---- 2. integrity of the cache ----------------------------------------------------------------------------------


def _slices_holding(storage, blob: bytes, member: str, slice_size: int) -> list[str]:
    """The storage paths of the slices holding `member`'s bytes (its local header onwards)."""
    start = blob.find(member.encode()) - 30
    first, last = start // slice_size, (start + 30 + len(member) + 3000) // slice_size
    return [f"/s3/GenImage.z{i:03d}" for i in range(first, last + 1)]


def test_a_poisoned_206_is_caught_deleted_from_the_cache_and_an_honest_rerun_succeeds(server, storage, tmp_path):
    _, blob = big_archive()
    serve_dataverse(server, storage, blob, slice_size=50_000)
    canary = Canary(tmp_path / "outside", ("keep.txt",))
    for path in _slices_holding(storage, blob, "GenImage/ADM/val/ai/ai_0.png", 50_000):
        storage.poison[path] = 7  # right Content-Range, bytes from 7 further on
    out = tmp_path / "data" / "genimage"
    line = _error_line(_dv(server, out, "-g", "ADM", "--splits", "val"))
    cache = tmp_path / "data" / ".downloads" / "genimage" / "dataverse" / "GenImage.ranges"
    assert _has(line, "ADM", str(cache), "were deleted", "run the command again"), line
    assert not out.exists() and canary.untouched()
    storage.poison.clear()  # the mirror is honest again: the rerun needs no manual step
    before = len(storage.requests)
    res = _dv(server, out, "-g", "ADM", "--splits", "val")
    assert res.exit_code == 0, res.output
    assert summarize(read_layout(out, "genimage")) == {"imagenet_ai_0508_adm": {"val": {"real": 4, "fake": 4}}}
    assert any(p.startswith("/s3/GenImage.z000") for _, p, _ in storage.requests[before:])  # fetched anew
    assert canary.untouched()


def test_a_poisoned_index_is_deleted_from_the_cache_and_an_honest_rerun_succeeds(server, storage, tmp_path):
    _, blob = big_archive()
    parts = serve_dataverse(server, storage, blob, slice_size=50_000)
    canary = Canary(tmp_path / "outside", ("keep.txt",))
    storage.poison[f"/s3/GenImage.z{len(parts) - 1:03d}"] = 11  # the end records and central directory
    out = tmp_path / "genimage"
    line = _error_line(_dv(server, out, "-g", "BigGAN"))
    assert _has(line, str(tmp_path / ".downloads" / "genimage" / "dataverse" / "GenImage.ranges"), "deleted",
                "run the command again"), line
    storage.poison.clear()
    res = _dv(server, out, "-g", "BigGAN")
    assert res.exit_code == 0, res.output
    assert summarize(read_layout(out, "genimage"))["imagenet_ai_0419_biggan"]["train"] == {"real": 4, "fake": 4}
    assert canary.untouched()


@pytest.mark.parametrize("digest", ["stale", "rewritten", "index"])
def test_cached_ranges_are_verified_before_reuse_and_a_bad_one_is_fetched_again(server, storage, tmp_path, digest):
    """A kept range whose bytes changed is deleted and fetched anew in the same run: caught by its recorded sha256
    ("stale"), or, when the recorded digest matches bad bytes (a poisoned range kept by a killed run), by the
    CRC-32 of the members it holds ("rewritten") or by the index not parsing ("index")."""
    _, blob = big_archive()
    serve_dataverse(server, storage, blob, slice_size=50_000)
    out, cache = tmp_path / "genimage", tmp_path / "cache"
    res = _dv(server, out, "-g", "ADM", "--keep-downloads", "--cache", cache)
    assert res.exit_code == 0, res.output
    ranges = cache / "dataverse" / "GenImage.ranges"
    spans = sorted(ranges.glob("GenImage.bytes-*"))
    span = spans[0] if digest != "index" else next(p for p in spans if b"PK\x05\x06" in p.read_bytes())
    data = bytearray(span.read_bytes())
    if digest == "index":  # the end-of-archive record's signature
        i = data.rfind(b"PK\x05\x06")
        data[i:i + 2] = b"XX"
    else:  # a byte of ADM's first PNG (the lowest offsets)
        data[data.find(b"IDAT") + 40] ^= 0xFF
    span.write_bytes(bytes(data))
    if digest != "stale":
        recorded_digest_path(span).write_text(hashlib.sha256(data).hexdigest() + "\n")
    before = len(storage.requests)
    res = _dv(server, out, "-g", "ADM", "--force", "--cache", cache)
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert {"stale": "failed their recorded sha256", "rewritten": "fails its check",
            "index": "do not read as a zip index"}[digest] in flat
    assert "deleted" in flat and str(ranges) in res.output.replace("\n", "")
    again = [p for _, p, _ in storage.requests[before:]]
    assert any(p.startswith("/s3/GenImage.z000") for p in again) == (digest != "index")  # only the bad range
    assert summarize(read_layout(out, "genimage"))["imagenet_ai_0508_adm"]["val"] == {"real": 4, "fake": 4}


def test_a_cached_download_failing_its_checksum_is_deleted_and_fetched_again(server, tmp_path):
    blob = _aigc_zip(tmp_path)
    serve_modelscope(server, {"AIGCDetectionBenchMark/test_set.zip": blob})
    cache = tmp_path / "cache"
    cached = cache / "modelscope" / "AIGCDetectionBenchMark" / "test_set.zip"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"X" * len(blob))  # right size, wrong bytes (a poisoned earlier run)
    res = _ms(server, tmp_path / "aigcbench", "--cache", cache)
    assert res.exit_code == 0, res.output
    assert _has(res.output, "the cached copy", "fails its sha256 check", "deleted, downloading it again")
    assert summarize(read_layout(tmp_path / "aigcbench", "aigcbench"))["ADM"] == {"test": {"real": 2, "fake": 2}}


def test_a_download_without_a_listed_digest_that_fails_its_crc_is_deleted(server, tmp_path):
    """No sha256 listed: a bad member CRC deletes the cached archive, and the honest rerun succeeds."""
    blob = _aigc_zip(tmp_path)
    bad = bytearray(blob)
    bad[bad.find(b"IDAT") + 30] ^= 0xFF
    serve_modelscope(server, {"AIGCDetectionBenchMark/test_set.zip": bytes(bad)},
                     sha={"AIGCDetectionBenchMark/test_set.zip": None})
    cache = tmp_path / "cache"
    line = _error_line(_ms(server, tmp_path / "aigcbench", "--cache", cache))
    assert _has(line, "corrupted", "test_set.zip", str(cache / "modelscope" / "AIGCDetectionBenchMark"),
                "were deleted"), line
    assert not (cache / "modelscope" / "AIGCDetectionBenchMark" / "test_set.zip").exists()
    serve_modelscope(server, {"AIGCDetectionBenchMark/test_set.zip": blob},
                     sha={"AIGCDetectionBenchMark/test_set.zip": None})
    res = _ms(server, tmp_path / "aigcbench", "--cache", cache)
    assert res.exit_code == 0, res.output


# ---- 3. bounds ----------------------------------------------------------------------------------------------------


def test_a_trickling_download_is_cut_resumed_then_stopped_and_an_honest_rerun_resumes(server, tmp_path,
                                                                                      monkeypatch):
    blob = _aigc_zip(tmp_path)
    serve_modelscope(server, {"AIGCDetectionBenchMark/test_set.zip": blob})
    canary = Canary(tmp_path / "outside", ("keep.txt",))
    monkeypatch.setenv("SEP_BENCH_RATE_WINDOW", "0.4")
    server.trickle[MS] = 0.05  # 20 bytes/s, far below --min-rate
    out = tmp_path / "aigcbench"
    t0 = time.monotonic()
    line = _error_line(_ms(server, out, "--retries", "1", "--min-rate", "2"))
    assert time.monotonic() - t0 < 20
    host = server.url.split("//")[1]
    assert _has(line, "test_set.zip", f"download from {host} failed after 2 attempts", "below the minimum of 2000 "
                "bytes/s", "run the command again to resume", "--min-rate"), line
    part = tmp_path / ".downloads" / "aigcbench" / "modelscope" / "AIGCDetectionBenchMark" / "test_set.zip.part"
    assert 0 < part.stat().st_size < len(blob)
    server.trickle.clear()
    res = _ms(server, out)
    assert res.exit_code == 0, res.output
    ranges = [h.get("Range") for m, p, h in server.requests if "FilePath=" in p]
    assert ranges[-1] and ranges[-1].startswith("bytes=") and ranges[-1] != "bytes=0-"  # resumed
    assert canary.untouched()


def test_a_trickling_listing_is_a_network_error_naming_the_host(server, storage, tmp_path, monkeypatch):
    _, blob = big_archive()
    serve_dataverse(server, storage, blob, slice_size=50_000)
    server.trickle[LISTING] = 0.05
    monkeypatch.setenv("SEP_BENCH_RATE_WINDOW", "0.4")
    canary = Canary(tmp_path / "outside", ("keep.txt",))
    t0 = time.monotonic()
    line = _error_line(_dv(server, tmp_path / "out", "-g", "ADM"))
    assert time.monotonic() - t0 < 10
    assert _has(line, f"Dataverse {DOI}: network error talking to {server.url.split('//')[1]}", "below the minimum",
                "check the network"), line
    assert canary.untouched() and not storage.requests


def test_the_deadline_stops_a_run_that_is_slow_but_not_below_the_rate(server, tmp_path):
    blob = _aigc_zip(tmp_path)
    serve_modelscope(server, {"AIGCDetectionBenchMark/test_set.zip": blob})
    server.trickle[MS] = 0.001
    canary = Canary(tmp_path / "outside", ("keep.txt",))
    t0 = time.monotonic()
    line = _error_line(_ms(server, tmp_path / "aigcbench", "--deadline", "0.01", "--min-rate", "0.1"))
    assert time.monotonic() - t0 < 10
    assert _has(line, "deadline of 1 s passed", "run the command again to resume", "--deadline"), line
    assert canary.untouched()


def test_an_endless_paged_listing_stops_at_the_page_cap(server, tmp_path, monkeypatch):
    def endless(q):
        n = int(q.get("PageNumber", 1))
        return {"Code": 200, "Data": {"Files": [{"Path": f"p{n}/f{i}.png", "Type": "blob", "Size": 1}
                                                for i in range(100)]}}

    server.routes[MS + "/tree"] = endless
    monkeypatch.setenv("SEP_BENCH_MAX_LISTING_PAGES", "5")
    canary = Canary(tmp_path / "outside", ("keep.txt",))
    line = _error_line(_ms(server, tmp_path / "aigcbench"))
    assert _has(line, "ModelScope aemilia/AIGCDetectionBenchmark: the tree listing goes on past 5 pages",
                "500 files", "SEP_BENCH_MAX_LISTING_PAGES"), line
    assert sum("/tree" in p for _, p, _ in server.requests) == 5 and canary.untouched()


def test_a_listing_with_too_many_entries_is_refused(server, tmp_path, monkeypatch):
    def huge(q):
        n = int(q.get("PageNumber", 1))
        return {"Code": 200, "Data": {"Files": [{"Path": f"p{n}/f{i}.png", "Type": "blob", "Size": 1}
                                                for i in range(100)], "TotalCount": 10**9}}

    server.routes[MS + "/tree"] = huge
    monkeypatch.setenv("SEP_BENCH_MAX_LISTING_ENTRIES", "250")
    line = _error_line(_ms(server, tmp_path / "aigcbench"))
    assert _has(line, "holds more than 250 files", "SEP_BENCH_MAX_LISTING_ENTRIES"), line


# ---- 4. redirects and network failures ----------------------------------------------------------------------------


def test_a_redirect_loop_is_a_one_line_error(server, tmp_path, monkeypatch):
    serve_modelscope(server, {"AIGCDetectionBenchMark/test_set.zip": _aigc_zip(tmp_path)})
    server.redirects[MS] = server.url + MS + "?again=1"
    monkeypatch.setenv("SEP_BENCH_MAX_REDIRECTS", "4")
    canary = Canary(tmp_path / "outside", ("keep.txt",))
    line = _error_line(_ms(server, tmp_path / "aigcbench"))
    assert _has(line, "test_set.zip: network error talking to", "more than 4 redirects (a redirect loop)"), line
    assert 4 <= sum(p.startswith(MS + "?") for _, p, _ in server.requests) <= 6 and canary.untouched()


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/x"])
def test_a_redirect_to_another_scheme_is_refused_not_read_as_a_bad_archive(server, storage, tmp_path, target):
    _, blob = big_archive()
    parts = serve_dataverse(server, storage, blob, slice_size=50_000)
    for i in range(len(parts)):
        server.redirects[f"/api/access/datafile/{100 + i}"] = target
    canary = Canary(tmp_path / "outside", ("keep.txt",))
    line = _error_line(_dv(server, tmp_path / "out", "-g", "ADM"))
    host = server.url.split("//")[1]
    assert _has(line, f"{host} redirected to a {target.split(':')[0]}: URL", "only http and https"), line
    assert "zip" not in line.lower() and not storage.requests and canary.untouched()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source", ["modelscope", "dataverse"])  # hf: huggingface_hub retries for ~25 s first
def test_an_unreachable_service_is_a_one_line_network_error(tmp_path, source):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bench = "aigcbench" if source == "modelscope" else "genimage"
    res = runner.invoke(app, ["data", "get", bench, "--source", source, "--endpoint", f"http://127.0.0.1:{port}",
                              "--out", str(tmp_path / "o"), "-g", "ADM"])
    line = _error_line(res)
    assert _has(line, f"network error talking to 127.0.0.1:{port}", "the connection failed", "check the network"), line
    assert "zip" not in line.lower()


def test_a_hostile_listed_digest_or_size_is_refused(server, storage, tmp_path):
    _, blob = big_archive()
    serve_dataverse(server, storage, blob, slice_size=50_000)
    _add_dataverse_entry(server, {"label": "x.csv", "dataFile": {"id": 78, "filename": "x.csv", "filesize": 3,
                                                                  "md5": "../../../etc/passwd"}})
    line = _error_line(_dv(server, tmp_path / "out", "-g", "ADM"))
    assert _has(line, f"Dataverse {DOI}", "the listed md5 of 'x.csv'", "not a md5 digest"), line
    serve_dataverse(server, storage, blob, slice_size=50_000)
    _add_dataverse_entry(server, {"label": "y.csv", "dataFile": {"id": 79, "filename": "y.csv", "filesize": -5}})
    line = _error_line(_dv(server, tmp_path / "out", "-g", "ADM"))
    assert _has(line, "the size of 'y.csv' is -5, not a non-negative integer"), line
    assert not storage.requests


def test_a_shard_with_a_listed_digest_that_is_not_parquet_is_deleted_and_an_honest_rerun_succeeds(server, tmp_path,
                                                                                                  monkeypatch):
    from huggingface_hub import constants

    from tests.test_acquire_http import _tiny_rows

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    shard = "data/train-00000-of-00001.parquet"
    _fake_hub(server, "TheKernel01/Tiny-GenImage", {shard: b"PAR1 this is not parquet PAR1"})  # digest matches
    cache, out = tmp_path / "cache", tmp_path / "genimage"
    args = ["data", "get", "genimage", "--source", "hf", "--endpoint", server.url, "--out", str(out), "--cache",
            str(cache), "-g", "ADM"]
    line = _error_line(runner.invoke(app, args))
    local = cache / "hf" / "TheKernel01__Tiny-GenImage" / "data"
    assert _has(line, "not a readable parquet shard", str(local), "was deleted", "run the command again"), line
    assert not (local / "train-00000-of-00001.parquet").exists()
    _fake_hub(server, "TheKernel01/Tiny-GenImage", {shard: parquet_shard(_tiny_rows("train"))})
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert summarize(read_layout(out, "genimage"))["imagenet_ai_0508_adm"]["train"]["fake"] == 4
