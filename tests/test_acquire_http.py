"""Sources over HTTP, offline: a threaded server on 127.0.0.1 plays Dataverse, ModelScope and the Hugging Face Hub
(huggingface_hub itself is driven against it), drops connections mid-file and serves corrupted files."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.acquire.catalog import HFRepo, get_benchmark
from sep_bench.acquire.download import ChecksumError, DownloadError, download
from sep_bench.acquire.normalise import convert_parquet
from sep_bench.acquire.verify import verify_tree
from sep_bench.data.layouts import read_layout, summarize
from tests.test_acquire import image_bytes

runner = CliRunner()


class FakeServer:
    """Routes: path -> bytes | dict (JSON) | callable(query) -> bytes | dict | None. Records every request.

    ``drop[path] = n`` makes the next GET of `path` announce the full length, send `n` bytes and close the
    connection. Range requests (``bytes=N-`` and ``bytes=N-M``, one range) are answered with 206 unless
    ``ignore_range``; ``If-Range`` with another ETag gets the whole file. ``redirects[path] = url`` answers 302
    to `url` (another host: object storage). ``sent`` counts the body bytes sent per path.

    Misbehaviour on demand: ``poison[path] = k`` answers a range request with the right ``Content-Range`` but
    the bytes from `k` further on (a poisoned 206); ``trickle[path] = s`` sends the body one byte every `s`
    seconds (until the server stops).
    """

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.redirects: dict[str, str] = {}
        self.sent: dict[str, int] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.drop: dict[str, int] = {}
        self.extra_headers: dict[str, dict] = {}
        self.ignore_range = False
        self.poison: dict[str, int] = {}
        self.trickle: dict[str, float] = {}
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def resolve(self, raw_path: str):
        u = urlsplit(raw_path)
        route = self.routes.get(u.path)
        if callable(route):
            route = route({k: v[0] for k, v in parse_qs(u.query).items()})
        return u.path, route


def _handler(server: FakeServer):
    class H(BaseHTTPRequestHandler):
        timeout = 10

        def log_message(self, *a):  # quiet
            pass

        def _serve(self, head: bool):
            with server.lock:
                server.requests.append((self.command, self.path, dict(self.headers)))
            if (loc := server.redirects.get(urlsplit(self.path).path)) is not None:
                self.send_response(302)
                self.send_header("Location", loc)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, body = server.resolve(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            ctype = "application/octet-stream"
            if isinstance(body, (dict, list)):
                body, ctype = json.dumps(body).encode(), "application/json"
            etag = '"' + hashlib.sha256(body).hexdigest() + '"'
            start, stop, status = 0, len(body), 200
            rng = self.headers.get("Range")
            if rng and not server.ignore_range and self.headers.get("If-Range", etag) == etag:
                first, last = rng.split("=")[1].split("-")
                start = int(first)
                stop = min(int(last) + 1, len(body)) if last else len(body)
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(stop - start))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}")
            for k, v in server.extra_headers.get(path, {}).items():
                self.send_header(k, v)
            self.end_headers()
            if head:
                return
            with server.lock:
                cut = server.drop.pop(path, None) if self.command == "GET" else None
            if cut is not None:
                self.wfile.write(body[start:min(start + cut, stop)])
                self.wfile.flush()
                with server.lock:
                    server.sent[path] = server.sent.get(path, 0) + min(cut, stop - start)
                self.close_connection = True
                return
            if (shift := server.poison.get(path)) and status == 206:
                body = body[shift:] + body[:shift]  # the announced range, another offset's bytes
            if (delay := server.trickle.get(path)) is not None:
                self._trickle(body[start:stop], delay)
                return
            self.wfile.write(body[start:stop])
            with server.lock:
                server.sent[path] = server.sent.get(path, 0) + stop - start

        def _trickle(self, data: bytes, delay: float) -> None:
            for i in range(len(data)):
                if server.stopped.wait(delay):
                    break
                try:
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    break
            self.close_connection = True

        def do_GET(self):
            self._serve(head=False)

        def do_HEAD(self):
            self._serve(head=True)

    return H


def _start(host_name: str = "127.0.0.1"):
    fake = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    httpd.daemon_threads = True
    httpd.fake = fake
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    fake.url = f"http://{host_name}:{httpd.server_address[1]}"
    return fake, httpd, t


def _stop(httpd, t) -> None:
    httpd.fake.stopped.set()
    httpd.shutdown()
    httpd.server_close()
    t.join(timeout=5)


@pytest.fixture
def server():
    fake, httpd, t = _start()
    try:
        yield fake
    finally:
        _stop(httpd, t)


def _ranges(server: FakeServer, path_part: str) -> list[str | None]:
    return [h.get("Range") for m, p, h in server.requests if m == "GET" and path_part in p]


# ---- resumable download ---------------------------------------------------------------------------------------


def test_interrupted_download_resumes_with_range_in_a_later_run(server, tmp_path):
    blob = bytes(range(256)) * 4000  # ~1 MB
    server.routes["/f.bin"] = blob
    server.drop["/f.bin"] = 300_000
    sha = hashlib.sha256(blob).hexdigest()
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download(server.url + "/f.bin", dest, checksum=("sha256", sha), retries=0, backoff=0)
    part = tmp_path / "f.bin.part"
    assert not dest.exists() and part.stat().st_size == 300_000  # the interrupted run left a .part, not the file
    download(server.url + "/f.bin", dest, checksum=("sha256", sha), retries=0, backoff=0)
    assert _ranges(server, "/f.bin") == [None, "bytes=300000-"]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha and not part.exists()
    assert not (tmp_path / "f.bin.part.json").exists()


def test_dropped_connection_is_retried_within_one_call(server, tmp_path):
    blob = b"abc" * 100_000
    server.routes["/g.bin"] = blob
    server.drop["/g.bin"] = 1234
    seen = []
    download(server.url + "/g.bin", tmp_path / "g.bin", checksum=("md5", hashlib.md5(blob).hexdigest()),
             retries=2, backoff=0, progress=lambda t, d, n: seen.append((d, n)))
    assert _ranges(server, "/g.bin") == [None, "bytes=1234-"]
    assert (tmp_path / "g.bin").read_bytes() == blob and seen[-1][0] == len(blob)


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    blob = b"xyz" * 50_000
    server.routes["/h.bin"] = blob
    server.drop["/h.bin"] = 999
    server.ignore_range = True
    download(server.url + "/h.bin", tmp_path / "h.bin", expected_size=len(blob), retries=1, backoff=0)
    assert (tmp_path / "h.bin").read_bytes() == blob


def test_corrupted_download_is_detected_and_named(server, tmp_path):
    server.routes["/bad.zip"] = b"not what the publisher hashed"
    with pytest.raises(ChecksumError, match=r"bad\.zip: md5 mismatch"):
        download(server.url + "/bad.zip", tmp_path / "bad.zip", checksum=("md5", "0" * 32), retries=0)
    assert not (tmp_path / "bad.zip").exists() and not (tmp_path / "bad.zip.part").exists()
    with pytest.raises(DownloadError, match="404"):
        download(server.url + "/nothing", tmp_path / "n", retries=0)


# Dataverse (a byte-sliced Zip64 archive) and ModelScope (a paged tree): test_acquire_real.py


# ---- Hugging Face -----------------------------------------------------------------------------------------------

_TINY_GENERATORS = ["Real", "ADM", "BigGAN", "GLIDE", "Midjourney", "SD14", "SD15", "VQDM", "Wukong"]


def parquet_shard(rows: list[tuple[bytes, str, int, int]], generators: list[str] | None = _TINY_GENERATORS) -> bytes:
    """A shard as `datasets` writes it: image struct (bytes, path), ClassLabel ints, HF feature metadata."""
    cols = {"image": [{"bytes": b, "path": p} for b, p, _, _ in rows], "label": [r[2] for r in rows]}
    feats = {"image": {"_type": "Image"}, "label": {"names": ["real", "fake"], "_type": "ClassLabel"}}
    if generators is not None:
        cols["generator"] = [r[3] for r in rows]
        feats["generator"] = {"names": generators, "_type": "ClassLabel"}
    table = pa.table(cols).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": feats}})})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=5)
    return buf.getvalue()


def _tiny_rows(split: str, n: int = 4) -> list[tuple[bytes, str, int, int]]:
    rows = []
    for gi, g in enumerate(_TINY_GENERATORS):
        for i in range(n):
            data = image_bytes(1000 * gi + i + (500 if split == "validation" else 0), "JPEG" if gi == 0 else "PNG")
            rows.append((data, f"{g}_{split}_{i}.{'jpg' if gi == 0 else 'png'}", 0 if gi == 0 else 1, gi))
    return rows


def _fake_hub(server: FakeServer, repo: str, files: dict[str, bytes]) -> None:
    commit = "c0ffee" + "0" * 34
    server.routes[f"/api/datasets/{repo}/tree/main"] = [
        {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest(),
         "lfs": {"oid": hashlib.sha256(b).hexdigest(), "size": len(b), "pointerSize": 134}}
        for p, b in files.items()]
    for p, b in files.items():
        server.routes[f"/datasets/{repo}/resolve/main/{p}"] = b
        server.extra_headers[f"/datasets/{repo}/resolve/main/{p}"] = {"X-Repo-Commit": commit}


def test_get_genimage_from_a_local_hugging_face_hub(server, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # only this local endpoint is reached
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    train, val = parquet_shard(_tiny_rows("train")), parquet_shard(_tiny_rows("validation", 2))
    _fake_hub(server, "TheKernel01/Tiny-GenImage", {"data/train-00000-of-00001.parquet": train,
                                                   "data/validation-00000-of-00001.parquet": val})
    train_path = "/datasets/TheKernel01/Tiny-GenImage/resolve/main/data/train-00000-of-00001.parquet"
    server.drop[train_path] = 3000  # huggingface_hub resumes it with a Range request
    out = tmp_path / "genimage"
    res = runner.invoke(app, ["data", "get", "genimage", "--source", "hf", "--endpoint", server.url,
                              "--out", str(out), "-g", "ADM,GLIDE,SDv1.4"])
    assert res.exit_code == 0, res.output
    assert _ranges(server, train_path) == [None, "bytes=3000-"]
    s = summarize(read_layout(out, "genimage"))
    assert set(s) == {"imagenet_ai_0508_adm", "imagenet_glide", "imagenet_ai_0419_sdv4"}
    assert {g: s[g]["train"]["fake"] for g in s} == {g: 4 for g in s}
    assert {g: s[g]["val"]["fake"] for g in s} == {g: 2 for g in s}
    # real images (generator "Real") are shared out among the copy's 8 generators by content hash
    reals = sum(s[g][sp]["real"] for g in s for sp in s[g])
    assert 0 < reals < 6
    assert (out / "imagenet_glide" / "train" / "ai" / "GLIDE_train_0.png").is_file()
    assert any(m == "GET" and "resolve/main/data/train" in p for m, p, _ in server.requests)
    verify_tree(out, "genimage")


def test_parquet_conversion_of_a_single_generator_copy(tmp_path):
    rows = [(image_bytes(i), f"x{i}.png", i % 2, 0) for i in range(6)] + [(image_bytes(0), "x0.png", 0, 0)]
    shard = tmp_path / "train-0.parquet"
    shard.write_bytes(parquet_shard(rows, generators=None))
    bench = get_benchmark("genimage")
    repo = HFRepo("someone/GenImage_ADM_labelled", generator="imagenet_ai_0508_adm")
    counts = convert_parquet([(shard, "data/train-00000-of-00001.parquet")], tmp_path / "tree", bench,
                             {"imagenet_ai_0508_adm"}, repo)
    assert counts == {"imagenet_ai_0508_adm": 6}  # the duplicate row is written once
    assert summarize(read_layout(tmp_path / "tree", "genimage")) == {
        "imagenet_ai_0508_adm": {"train": {"real": 3, "fake": 3}}}
