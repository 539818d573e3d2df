"""Sources as the real services serve them (../shared/reference/datasets.md, "What the real services serve"), offline:

- Dataverse GenImage: ONE Zip64 archive cut into byte slices ``GenImage.z000``... (no ``.zip`` part), members
  ``GenImage/<generator folder>/{train,val}/{ai,nature}/...``, every datafile answered by a redirect to object
  storage on another host, which honours one byte range per request; plus an ingested metadata CSV;
- the same slices on disk (``--root``);
- ModelScope: a paged tree (100 per page) with the test set in a sub-folder (``AIGCDetectionBenchMark/test_set.zip``);
- Hugging Face: a fake-only copy (one ``image`` column), the AIGCBenchmark copy whose reals are all "Real", and
  resolve URLs answered by a redirect to another host.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.acquire.verify import MANIFEST_NAME, MARKER_NAME, data_pairing, verify_tree
from sep_bench.data.layouts import read_layout, summarize
from tests.test_acquire import _has, image_bytes, write_zip
from tests.test_acquire_http import _fake_hub, _start, _stop, parquet_shard

runner = CliRunner()


@pytest.fixture(name="server")
def _server():
    """The service's API host (Dataverse, ModelScope, the Hub) on 127.0.0.1."""
    fake, httpd, t = _start()
    try:
        yield fake
    finally:
        _stop(httpd, t)


@pytest.fixture(name="storage")
def _storage():
    """Object storage the API redirects to, under another host name (another port at least)."""
    import socket

    try:
        name = "localhost" if socket.gethostbyname("localhost") == "127.0.0.1" else "127.0.0.1"
    except OSError:
        name = "127.0.0.1"
    fake, httpd, t = _start(name)
    try:
        yield fake
    finally:
        _stop(httpd, t)

# the archive's generator folders (as in the Dataverse deposit) -> sep-bench's canonical GenImage folders
FOLDERS = {"ADM": "imagenet_ai_0508_adm", "BigGAN": "imagenet_ai_0419_biggan", "glide": "imagenet_glide",
           "stable_diffusion_v_1_4": "imagenet_ai_0419_sdv4"}


# ---- builders --------------------------------------------------------------------------------------------------


def genimage_archive_members(folders=tuple(FOLDERS), n: int = 4, size: int = 32, extra: dict | None = None) -> dict:
    """Members as in the Dataverse archive, folder entries included: ai = PNG, nature = JPEG."""
    out = {"GenImage/": b""}
    for fi, folder in enumerate(folders):
        out[f"GenImage/{folder}/"] = b""
        for si, split in enumerate(("train", "val")):
            for cls, fmt, ext in (("ai", "PNG", "png"), ("nature", "JPEG", "JPEG")):
                out[f"GenImage/{folder}/{split}/{cls}/"] = b""
                for i in range(n):
                    out[f"GenImage/{folder}/{split}/{cls}/{cls}_{i}.{ext}"] = image_bytes(
                        10_000 * fi + 100 * si + i + (50 if cls == "ai" else 0), fmt, size)
    out.update(extra or {})
    return out


def zip64_archive(members: dict[str, bytes]) -> bytes:
    """A Zip64 archive as a 654 GB one is written: zip64 extras on every entry (sizes and offsets in them),
    zip64 end record and locator; images stored (already compressed), other files deflated."""
    stream, cd = bytearray(), bytearray()
    full32, full16 = 0xFFFFFFFF, 0xFFFF
    for name, data in members.items():
        nb = name.encode()
        method = 0 if name.lower().endswith((".png", ".jpeg", ".jpg")) or name.endswith("/") else 8
        if method == 8:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            cdata = c.compress(data) + c.flush()
        else:
            cdata = data
        crc = zlib.crc32(data) & 0xFFFFFFFF
        off = len(stream)
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(cdata))
        stream += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0x800, method, 0, 0x21, crc, full32, full32,
                              len(nb), len(local_extra)) + nb + local_extra + cdata
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(cdata), off)
        mode = (0o40755 if name.endswith("/") else 0o100644) << 16
        cd += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 0x032D, 45, 0x800, method, 0, 0x21, crc, full32,
                          full32, len(nb), len(extra), 0, 0, 0, mode, full32) + nb + extra
    cd_off = len(stream)
    stream += cd
    z64 = len(stream)
    stream += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, len(members), len(members), len(cd), cd_off)
    stream += struct.pack("<4sIQI", b"PK\x06\x07", 0, z64, 1)
    stream += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, full16, full16, full32, full32, 0)
    return bytes(stream)


@functools.lru_cache(maxsize=1)
def big_archive() -> tuple[dict, bytes]:
    """4 generators x 2 splits x 2 classes x 4 images of 64 px (~800 kB): a generator's share is ~1/4."""
    members = genimage_archive_members(size=64)
    return members, zip64_archive(members)


def slice_bytes(blob: bytes, size: int) -> list[bytes]:
    return [blob[i:i + size] for i in range(0, len(blob), size)]


def test_the_builder_writes_a_zip64_archive_that_zipfile_reads_after_cat():
    blob = zip64_archive(genimage_archive_members(n=1))
    restored = b"".join(slice_bytes(blob, 7_000))  # cat GenImage.z* > GenImage.zip
    with zipfile.ZipFile(io.BytesIO(restored)) as z:
        assert z.testzip() is None and "GenImage/ADM/train/ai/ai_0.png" in z.namelist()
        assert z.getinfo("GenImage/glide/val/nature/nature_0.JPEG").file_size > 0


# ---- Dataverse: the sliced archive -------------------------------------------------------------------------------

DOI = "doi:10.7910/DVN/AKDIHF"
METADATA = b"image_path,jpeg_quality,width,height,content\nGenImage/ADM/train/nature/nature_0.JPEG,75,32,32,dog\n"


def serve_dataverse(server, storage, blob: bytes, slice_size: int, metadata: bytes = METADATA) -> list[bytes]:
    """The deposit: GenImage.z000... (each datafile redirects to storage on another host) + metadata.tab."""
    parts = slice_bytes(blob, slice_size)
    entries = []
    for i, data in enumerate(parts):
        fid = 100 + i
        name = f"GenImage.z{i:03d}"
        md5 = hashlib.md5(data).hexdigest()
        entries.append({"label": name, "directoryLabel": None, "restricted": False, "dataFile": {
            "id": fid, "filename": name, "filesize": len(data), "md5": md5, "checksum": {"type": "MD5", "value": md5}}})
        storage.routes[f"/s3/{name}"] = data
        server.redirects[f"/api/access/datafile/{fid}"] = f"{storage.url}/s3/{name}?X-Amz-Signature=abc"
    md5 = hashlib.md5(metadata).hexdigest()
    entries.append({"label": "metadata.tab", "directoryLabel": None, "dataFile": {
        "id": 99, "filename": "metadata.tab", "filesize": len(metadata) + 7, "md5": md5,
        "checksum": {"type": "MD5", "value": md5}, "originalFileFormat": "text/csv",
        "originalFileName": "GenImage_metadata.csv"}})
    server.routes["/api/access/datafile/99"] = lambda q: metadata if q.get("format") == "original" else b"tab"
    server.routes["/api/datasets/:persistentId/"] = lambda q: (
        {"status": "OK", "data": {"id": 1, "latestVersion": {"versionNumber": 2, "versionMinorNumber": 0,
                                                              "files": entries}}}
        if q.get("persistentId") == DOI else None)
    return parts


def _dv(server, out, *args):
    return runner.invoke(app, ["data", "get", "genimage", "--endpoint", server.url, "--out", str(out), *map(str, args)])


def test_dataverse_fetches_only_the_requested_generator_from_the_sliced_archive(server, storage, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("DATAVERSE_API_TOKEN", "dv-secret")
    members, blob = big_archive()
    parts = serve_dataverse(server, storage, blob, slice_size=50_000)
    assert len(parts) >= 8
    storage.drop["/s3/GenImage.z004"] = 700  # a connection dropped mid-range: resumed within the run
    out = tmp_path / "data" / "external" / "genimage"
    res = _dv(server, out, "-g", "SDv1.4", "--retries", "2")
    assert res.exit_code == 0, res.output
    assert summarize(read_layout(out, "genimage")) == {
        "imagenet_ai_0419_sdv4": {"train": {"real": 4, "fake": 4}, "val": {"real": 4, "fake": 4}}}
    received = sum(storage.sent.values())
    share = sum(len(d) for n, d in members.items() if "stable_diffusion" in n)
    assert share < received < 0.4 * len(blob), (received, share, len(blob))  # ~1/4 of the archive, not all of it
    assert _has(res.output, "GenImage", "to download", "files of SDv1.4")
    # every slice request is one closed byte range; the API key went to the Dataverse host only
    st = [(p, h) for m, p, h in storage.requests if m == "GET"]
    assert st and all(h.get("Range", "").startswith("bytes=") and not h["Range"].endswith("-") for _, h in st)
    assert not any("dv-secret" in json.dumps(h) for _, h in st)
    assert all(h.get("X-Dataverse-key") == "dv-secret" for m, p, h in server.requests)
    assert not any(p.startswith("/s3/GenImage.z000") for p, _ in st)  # the first slices hold ADM/BigGAN only
    # the metadata CSV, in its original format, installed beside the tree and in the manifest
    assert (out / "metadata" / "GenImage_metadata.csv").read_bytes() == METADATA
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert "metadata/GenImage_metadata.csv" in manifest["files"]
    sliced = manifest["provenance"]["imagenet_ai_0419_sdv4"]["sliced_archives"][0]
    assert sliced["slices"] == len(parts) and sliced["bytes_fetched"] < 0.4 * len(blob)
    assert manifest["data_pairing"] == {"imagenet_ai_0419_sdv4": "benchmark"}
    verify_tree(out, "genimage")
    assert not list((tmp_path / "data" / "external" / ".downloads").rglob("*.bytes-*"))  # ranges removed


def test_dataverse_resumes_a_range_in_a_later_run_and_asks_for_yes_above_the_threshold(server, storage, tmp_path,
                                                                                       monkeypatch):
    members, blob = big_archive()
    serve_dataverse(server, storage, blob, slice_size=50_000)
    out = tmp_path / "genimage"
    monkeypatch.setenv("SEP_BENCH_CONFIRM_ABOVE_GB", "0.00002")  # 20 kB
    res = _dv(server, out, "-g", "ADM")
    assert res.exit_code == 2 and _has(res.output, "to download", "--yes") and "Traceback" not in res.output
    index_only = sum(storage.sent.values())
    assert index_only <= 65_557 < 0.15 * len(blob)  # the end of the archive was read (its index), no member
    storage.drop["/s3/GenImage.z001"] = 3_000
    res = _dv(server, out, "-g", "ADM", "--splits", "val", "--yes", "--retries", "0")
    assert [p for m, p, h in storage.requests if "z001" in p], "the ADM val members should lie in slice z001"
    assert res.exit_code == 2 and _has(res.output, "run the command again to resume")
    before = len(storage.requests)
    res = _dv(server, out, "-g", "ADM", "--splits", "val", "--yes")
    assert res.exit_code == 0, res.output
    again = [h["Range"] for m, p, h in storage.requests[before:] if p.startswith("/s3/GenImage.z001")]
    first = [h["Range"] for m, p, h in storage.requests[:before] if p.startswith("/s3/GenImage.z001")][-1]
    assert again and int(again[0][6:].split("-")[0]) == int(first[6:].split("-")[0]) + 3_000  # resumed
    assert summarize(read_layout(out, "genimage")) == {"imagenet_ai_0508_adm": {"val": {"real": 4, "fake": 4}}}


def test_dataverse_sliced_archive_refuses_traversal_and_names_a_corrupted_member(server, storage, tmp_path):
    evil = genimage_archive_members(folders=("ADM",), n=1,
                                    extra={"GenImage/ADM/train/ai/../../../../../escaped.png": image_bytes(1)})
    serve_dataverse(server, storage, zip64_archive(evil), slice_size=5_000)
    res = _dv(server, tmp_path / "out", "-g", "ADM")
    assert res.exit_code == 2 and _has(res.output, "path traversal", "escaped.png")
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("escaped.png"))

    blob = bytearray(zip64_archive(genimage_archive_members(folders=("ADM",), n=1)))
    victim = blob.find(b"IDAT")  # inside the first PNG's data
    blob[victim + 20] ^= 0xFF
    serve_dataverse(server, storage, bytes(blob), slice_size=5_000)
    res = _dv(server, tmp_path / "out2", "-g", "ADM")
    assert res.exit_code == 2 and _has(res.output, "corrupted (CRC or size mismatch)", "run the command again")
    assert not (tmp_path / "out2").exists()


def test_slices_on_disk_are_read_in_place_and_bad_files_are_listed(tmp_path):
    zero = {"GenImage/ADM/train/ai/empty.png": b""}  # the real ADM/GLIDE have zero-byte PNGs
    blob = zip64_archive(genimage_archive_members(extra=zero))
    dl = tmp_path / "GenImage_dataverse"
    dl.mkdir()
    for i, data in enumerate(slice_bytes(blob, 9_000)):
        (dl / f"GenImage.z{i:03d}").write_bytes(data)
    out = tmp_path / "genimage"
    res = runner.invoke(app, ["data", "get", "genimage", "--root", str(dl), "--out", str(out), "-g", "ADM,GLIDE"])
    assert res.exit_code == 0, res.output
    assert summarize(read_layout(out, "genimage")) == {
        "imagenet_ai_0508_adm": {"train": {"real": 4, "fake": 5}, "val": {"real": 4, "fake": 4}},
        "imagenet_glide": {"train": {"real": 4, "fake": 4}, "val": {"real": 4, "fake": 4}}}
    bad = json.loads((out / MANIFEST_NAME).read_text())["bad_files"]
    assert bad["zero_byte"] == ["imagenet_ai_0508_adm/train/ai/empty.png"] and bad["count"] == 1
    assert bad["per_generator"] == {"imagenet_ai_0508_adm": {"zero_byte": 1, "unreadable": 0}}
    assert len(list(dl.iterdir())) == len(slice_bytes(blob, 9_000))  # the user's slices untouched


# ---- ModelScope: paged tree, archive in a sub-folder -------------------------------------------------------------

MS = "/api/v1/datasets/aemilia/AIGCDetectionBenchmark/repo"


def serve_modelscope(server, files: dict[str, bytes], page_size: int = 100, sha: dict | None = None) -> None:
    listing = [{"Path": p, "Name": Path(p).name, "Type": "blob", "Size": len(b),
                "Sha256": (sha or {}).get(p, hashlib.sha256(b).hexdigest())} for p, b in files.items()]
    listing.insert(0, {"Path": "AIGCDetectionBenchMark", "Type": "tree"})

    def tree(q):
        n, size = int(q.get("PageNumber", 1)), min(int(q.get("PageSize", 100)), page_size)
        return {"Code": 200, "Data": {"Files": listing[(n - 1) * size:n * size], "TotalCount": len(listing)}}

    server.routes[MS + "/tree"] = tree
    server.routes[MS] = lambda q: files.get(q.get("FilePath")) if q.get("Revision") == "master" else None


def test_modelscope_lists_every_page_and_finds_the_test_set_in_a_sub_folder(server, tmp_path):
    members = {}
    for gen in ("progan/car", "progan/cat", "ADM", "Glide", "wukong"):
        for cls in ("0_real", "1_fake"):
            for i in range(2):
                members[f"test/{gen}/{cls}/{i}.png"] = image_bytes(hash((gen, cls, i)) % 1000)
    blob = write_zip(tmp_path / "t.zip", members).read_bytes()
    files = {f"samples/{i:03d}.png": b"x" * i for i in range(230)}  # pages 1-3 hold other files
    files["AIGCDetectionBenchMark/test_set.zip"] = blob
    serve_modelscope(server, files)
    server.drop[MS] = 5000
    out = tmp_path / "aigcbench"
    res = runner.invoke(app, ["data", "get", "aigcbench", "--endpoint", server.url, "--out", str(out),
                              "-g", "progan,GLIDE,ADM", "--retries", "1"])
    assert res.exit_code == 0, res.output
    pages = sorted(int(p.split("PageNumber=")[1].split("&")[0]) for m, p, h in server.requests if "/tree" in p)
    assert pages == [1, 2, 3]
    assert summarize(read_layout(out, "aigcbench")) == {
        "ADM": {"test": {"real": 2, "fake": 2}}, "Glide": {"test": {"real": 2, "fake": 2}},
        "progan": {"test": {"real": 4, "fake": 4}}}
    got = [p for m, p, h in server.requests if m == "GET" and "FilePath=" in p]
    assert len(got) == 2 and all(p.endswith("FilePath=AIGCDetectionBenchMark/test_set.zip") for p in got)
    assert [h.get("Range") for m, p, h in server.requests if "FilePath=" in p] == [None, "bytes=5000-"]
    prov = json.loads((out / MANIFEST_NAME).read_text())["provenance"]["ADM"]
    assert prov["files"] == [{"name": "AIGCDetectionBenchMark/test_set.zip", "sha256": hashlib.sha256(blob).hexdigest()}]


def test_modelscope_sha256_mismatch_and_no_test_set_are_clear_errors(server, tmp_path):
    blob = write_zip(tmp_path / "t.zip", {"test/ADM/0_real/a.png": image_bytes(1)}).read_bytes()
    serve_modelscope(server, {"AIGCDetectionBenchmark/test.zip": blob},
                     sha={"AIGCDetectionBenchmark/test.zip": "0" * 64})
    res = runner.invoke(app, ["data", "get", "aigcbench", "--endpoint", server.url, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and _has(res.output, "test.zip: sha256 mismatch")
    serve_modelscope(server, {"README.md": b"hello", "train/train.zip": b"zz"})
    res = runner.invoke(app, ["data", "get", "aigcbench", "--endpoint", server.url, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and _has(res.output, "no test_set.zip or test.zip in any folder", "README.md",
                                       "train/train.zip")


# ---- Hugging Face: fake-only copies, the AIGCBenchmark copy, redirects -------------------------------------------


def fake_only_shard(n: int, seed: int = 0) -> bytes:
    """bitmind/GenImage_ADM: one `image` column (HF Image feature), nothing else."""
    table = pa.table({"image": [{"bytes": image_bytes(seed + i), "path": None} for i in range(n)]})
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": {
        "image": {"_type": "Image"}}}})})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def test_fake_only_copy_is_refused_or_paired_with_named_reals(server, storage, tmp_path, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    repo = "bitmind/GenImage_ADM"
    shard = "data/train-00000-of-00021.parquet"
    _fake_hub(server, repo, {shard: fake_only_shard(5)})
    # the Hub answers the resolve URL with a redirect to storage on another host (xet / CDN)
    storage.routes["/xet/shard"] = server.routes.pop(f"/datasets/{repo}/resolve/main/{shard}")
    server.redirects[f"/datasets/{repo}/resolve/main/{shard}"] = f"{storage.url}/xet/shard?sig=1"
    out = tmp_path / "genimage"
    res = runner.invoke(app, ["data", "get", "genimage", "--source", "hf", "--repo", repo, "--endpoint", server.url,
                              "--out", str(out), "-g", "ADM"])
    assert res.exit_code == 2 and _has(res.output, "holds fake images only", "--real-from")
    assert not storage.requests and not out.exists()  # refused before downloading anything

    reals = tmp_path / "genimage_official"  # e.g. an extracted official archive
    for i in range(3):
        for split in ("train", "val"):
            p = reals / "imagenet_ai_0508_adm" / split / "nature" / f"n{split}{i}.JPEG"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(image_bytes(900 + i, "JPEG"))
    (reals / "imagenet_ai_0508_adm" / "train" / "ai").mkdir()
    (reals / "imagenet_ai_0508_adm" / "train" / "ai" / "other_fake.png").write_bytes(image_bytes(7))
    res = runner.invoke(app, ["data", "get", "genimage", "--source", "hf", "--repo", repo, "--endpoint", server.url,
                              "--out", str(out), "-g", "ADM", "--real-from", str(reals)])
    assert res.exit_code == 0, res.output
    # fakes from the copy, reals of the split it has (train) from --real-from; its own fakes are not taken
    assert summarize(read_layout(out, "genimage")) == {"imagenet_ai_0508_adm": {"train": {"real": 3, "fake": 5}}}
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["generators"]["imagenet_ai_0508_adm"]["data_pairing"] == f"real-from:{reals}"
    # the token went to the Hub's host, never to the storage host the download was redirected to
    hub_auth = [h.get("Authorization") for m, p, h in server.requests if "resolve" in p]
    assert hub_auth and all(a == "Bearer hf_secret" for a in hub_auth)
    assert storage.requests and not any("hf_secret" in json.dumps(h) for m, p, h in storage.requests)


_AIGC_NAMES = ["Real", "ADM", "BigGAN", "CycleGAN", "DALLE2", "GauGAN", "GLIDE", "Midjourney", "ProGAN", "SD14",
               "SD15", "SDXL", "StarGAN", "StyleGAN", "StyleGAN2", "VQDM", "WhichFaceIsReal", "Wukong"]


@pytest.mark.parametrize("with_path", [False, True])
def test_aigcbench_hf_copy_recovers_the_pairing_from_paths_or_marks_shared_reals(server, tmp_path, hub, with_path):
    rows = []
    for gi, g in ((1, "ADM"), (6, "GLIDE")):
        folder = {"ADM": "ADM", "GLIDE": "Glide"}[g]
        for i in range(3):
            rows.append((image_bytes(100 * gi + i), f"test/{folder}/1_fake/{i}.png", 1, gi))
            rows.append((image_bytes(100 * gi + 50 + i), f"test/{folder}/0_real/{i}.png" if with_path else None,
                         0, 0))
    repo = "TheKernel01/AIGC-Detection-Benchmark"
    _fake_hub(server, repo, {"data/test-00000-of-00001.parquet": parquet_shard(rows, _AIGC_NAMES)})
    out = tmp_path / "aigcbench"
    res = runner.invoke(app, ["data", "get", "aigcbench", "--source", "hf", "--endpoint", server.url,
                              "--out", str(out), "-g", "ADM,GLIDE"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    s = summarize(read_layout(out, "aigcbench"))
    if with_path:  # each real image back with its own generator
        assert s == {"ADM": {"test": {"real": 3, "fake": 3}}, "Glide": {"test": {"real": 3, "fake": 3}}}
        assert manifest["data_pairing"] == {"ADM": "recovered-from-path", "Glide": "recovered-from-path"}
        assert data_pairing(out) == "recovered-from-path"
    else:  # reals shared out among the copy's 17 generators: marked, never passed off as the benchmark
        assert sum(s[g]["test"]["real"] for g in s) < 6
        assert manifest["data_pairing"] == {"ADM": "shared-reals", "Glide": "shared-reals"}
        assert json.loads((out / MARKER_NAME).read_text())["generators"]["ADM"]["data_pairing"] == "shared-reals"
        assert data_pairing(out) == data_pairing(out, ["Glide"]) == "shared-reals"  # the MLflow tag's value
        assert data_pairing(out, ["progan"]) is None and data_pairing(tmp_path / "nothing") is None
