"""Dataset acquisition offline: multi-part archives, safe extraction, normalisation, manifest verification, and
`sep-bench data get --source manual` end to end (the acceptance path). Sources over HTTP: test_acquire_http.py."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.acquire.catalog import AcquireError, get_benchmark
from sep_bench.acquire.extract import (
    ArchiveError, ArchiveGroup, Limits, UnsafeArchiveError, extract, group_archives,
)
from sep_bench.acquire.normalise import normalise_tree
from sep_bench.acquire.verify import (
    INTENT_NAME, MANIFEST_NAME, MARKER_NAME, VerificationError, genimage_md5, verify_tree,
)
from sep_bench.data.layouts import read_layout, summarize

runner = CliRunner()


# ---- builders ------------------------------------------------------------------------------------------------


def image_bytes(seed: int, fmt: str = "PNG", size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def genimage_members(prefix: str, splits=("train", "val"), n: int = 3, seed: int = 0, size: int = 24) -> dict[str, bytes]:
    """``{archive member name: bytes}`` for one GenImage subset: ai = PNG, nature = JPEG (as in GenImage)."""
    out = {}
    for si, split in enumerate(splits):
        for cls, fmt in (("ai", "PNG"), ("nature", "JPEG")):
            for i in range(n):
                ext = "png" if fmt == "PNG" else "JPEG"
                out[f"{prefix}/{split}/{cls}/{cls}_{split}_{i}.{ext}"] = image_bytes(seed * 1000 + si * 100 + i +
                                                                                   (50 if cls == "ai" else 0), fmt, size)
    return out


def write_spanned_zip(folder: Path, base: str, members: dict[str, bytes], part_size: int) -> list[Path]:
    """A spanned multi-part zip as ``zip -s`` writes it (``base.z01``..., last part ``base.zip``), in pure Python.

    Each part is a "disk": local header offsets, the central directory's start and the end record are relative
    to the disk they are on, so a reader that ignores disks (or just concatenates the parts) gets them wrong.
    """
    stream = bytearray(b"PK\x07\x08")  # spanning signature at the start of the first disk
    cd = bytearray()
    for name, data in members.items():
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        cdata = comp.compress(data) + comp.flush()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        off = len(stream)
        nb = name.encode()
        stream += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(cdata), len(data), len(nb), 0)
        stream += nb + cdata
        disk, rel = divmod(off, part_size)
        cd += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 0x031E, 20, 0, 8, 0, 0x21, crc, len(cdata),
                          len(data), len(nb), 0, 0, disk, 0, (0o100644 << 16), rel) + nb
    # data parts of part_size bytes; the last part (.zip) holds the rest of the data, the central directory and
    # the end record, as zip -s writes them
    last_disk, cd_rel = divmod(len(stream), part_size)
    n_entries = len(members)
    stream += cd
    stream += struct.pack("<4sHHHHIIH", b"PK\x05\x06", last_disk, last_disk, n_entries, n_entries, len(cd), cd_rel, 0)
    chunks = [bytes(stream[i * part_size:(i + 1) * part_size]) for i in range(last_disk)]
    chunks.append(bytes(stream[last_disk * part_size:]))
    paths = []
    for i, c in enumerate(chunks):
        p = folder / (f"{base}.z{i + 1:02d}" if i < len(chunks) - 1 else f"{base}.zip")
        p.write_bytes(c)
        paths.append(p)
    return paths


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def md5_csv(path: Path, files: list[Path]) -> Path:
    lines = ["md5Checksum,originalFilename"] + [
        f'"{hashlib.md5(f.read_bytes()).hexdigest()}","{f.name}"' for f in files]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def genimage_downloads(tmp_path) -> tuple[Path, Path]:
    """A folder as a user fills it from Google Drive: SD v1.4 as a 3-part spanned zip nested one level deeper,
    GLIDE (val only) as one zip, Midjourney too (not requested in some tests); plus the md5 CSV of these."""
    dl = tmp_path / "downloads"
    dl.mkdir()
    files = write_spanned_zip(dl, "imagenet_ai_0419_sdv4",
                              genimage_members("stable_diffusion_v_1_4/imagenet_ai_0419_sdv4"), part_size=5_000)
    assert len(files) >= 3
    files.append(write_zip(dl / "imagenet_glide.zip", genimage_members("imagenet_glide", splits=("val",), seed=1)))
    files.append(write_zip(dl / "imagenet_midjourney.zip", genimage_members("imagenet_midjourney", seed=2)))
    return dl, md5_csv(tmp_path / "checksums.csv", files)


def _get(*args) -> object:
    return runner.invoke(app, ["data", "get", *map(str, args)])


def _flat(text: str) -> str:
    """Output without the line breaks rich inserts at the terminal width."""
    return "".join(text.split())


def _has(output: str, *needles: str) -> bool:
    return all(_flat(n) in _flat(output) for n in needles)


# ---- multi-part zip reading -----------------------------------------------------------------------------------


def test_spanned_zip_parts_are_grouped_and_extracted(tmp_path):
    members = genimage_members("imagenet_ai_0419_sdv4", n=2)
    parts = write_spanned_zip(tmp_path, "imagenet_ai_0419_sdv4", members, part_size=3_000)
    assert len(parts) >= 3
    groups, others = group_archives(parts + [tmp_path / "notes.txt"])
    assert others == [tmp_path / "notes.txt"] and len(groups) == 1
    g = groups[0]
    assert g.spanned and [p.name for p in g.parts] == [p.name for p in parts]  # .z01.. then .zip
    try:  # the stdlib cannot read a spanned set, even concatenated
        bad = zipfile.ZipFile(io.BytesIO(b"".join(p.read_bytes() for p in parts))).testzip()
    except zipfile.BadZipFile:
        bad = "refused"
    assert bad is not None
    stats = extract(g, tmp_path / "x")
    assert stats.files == len(members)
    for name, data in members.items():
        assert (tmp_path / "x" / name).read_bytes() == data


@pytest.mark.skipif(shutil.which("zip") is None, reason="Info-ZIP `zip` not installed")
def test_spanned_zip_written_by_info_zip(tmp_path):
    src = tmp_path / "src"
    members = genimage_members("imagenet_glide", n=4, size=96)  # about 220 kB: 64 kB is zip's smallest split
    for name, data in members.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (tmp_path / "dl").mkdir()
    subprocess.run(["zip", "-q", "-r", "-s", "64k", str(tmp_path / "dl" / "imagenet_glide.zip"), "imagenet_glide"],
                   cwd=src, check=True, capture_output=True)
    groups, _ = group_archives(sorted((tmp_path / "dl").iterdir()))
    assert len(groups) == 1 and len(groups[0].parts) >= 2
    extract(groups[0], tmp_path / "x")
    for name, data in members.items():
        assert (tmp_path / "x" / name).read_bytes() == data


def test_byte_split_zip_and_missing_parts_are_named(tmp_path):
    blob = (write_zip(tmp_path / "whole.zip", genimage_members("imagenet_glide", n=2))).read_bytes()
    for i in range(3):
        (tmp_path / f"test.zip.{i + 1:03d}").write_bytes(blob[i * len(blob) // 3:(i + 1) * len(blob) // 3])
    groups, _ = group_archives([tmp_path / f"test.zip.{i:03d}" for i in (1, 2, 3)])
    extract(groups[0], tmp_path / "x")
    assert len(list((tmp_path / "x").rglob("*.png"))) == 4
    with pytest.raises(ArchiveError, match=r"test\.zip\.002"):
        group_archives([tmp_path / "test.zip.001", tmp_path / "test.zip.003"])
    parts = write_spanned_zip(tmp_path, "imagenet_ai_0508_adm", genimage_members("a"), part_size=5_000)
    with pytest.raises(ArchiveError, match=r"imagenet_ai_0508_adm\.z02"):
        group_archives([p for p in parts if not p.name.endswith(".z02")])
    with pytest.raises(ArchiveError, match=r"imagenet_ai_0508_adm\.zip"):
        group_archives([p for p in parts if not p.name.endswith(".zip")])


def test_truncated_part_and_corrupted_member_are_reported(tmp_path):
    parts = write_spanned_zip(tmp_path, "g", genimage_members("imagenet_glide", n=2), part_size=3_000)
    data = bytearray(parts[0].read_bytes())
    data[200] ^= 0xFF  # inside the first member's compressed data
    parts[0].write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="corrupted|damaged|invalid"):
        try:
            extract(group_archives(parts)[0][0], tmp_path / "x")
        except zlib.error as err:  # a flipped bit may also break the deflate stream itself
            raise ArchiveError(f"invalid deflate data: {err}") from None


# ---- extraction safety ----------------------------------------------------------------------------------------


def _zip_with(tmp_path: Path, name: str, data: bytes = b"x", mode: int | None = None) -> ArchiveGroup:
    p = tmp_path / "evil.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("ok/fine.png", image_bytes(1))
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.create_system = 3
            info.external_attr = mode << 16
        z.writestr(info, data)
    return ArchiveGroup("evil", "zip", [p])


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> ArchiveGroup:
    p = tmp_path / "evil.tar.gz"
    with tarfile.open(p, "w:gz") as t:
        ok = tarfile.TarInfo("ok/fine.png")
        img = image_bytes(1)
        ok.size = len(img)
        t.addfile(ok, io.BytesIO(img))
        t.addfile(member, io.BytesIO(data) if data else None)
    return ArchiveGroup("evil", "tar", [p])


def _tinfo(name: str, kind: bytes, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.size = kind, linkname, size
    return m


@pytest.mark.parametrize("make, needle", [
    (lambda t: _zip_with(t, "../escaped.png"), "path traversal"),
    (lambda t: _zip_with(t, "a/../../escaped.png"), "path traversal"),
    (lambda t: _zip_with(t, "/tmp/abs.png"), "absolute path"),
    (lambda t: _zip_with(t, "C:\\win\\abs.png"), "absolute path"),
    (lambda t: _zip_with(t, "..\\escaped.png"), "path traversal"),
    (lambda t: _zip_with(t, "link.png", b"../../../etc/passwd", mode=0o120777), "symbolic link"),
    (lambda t: _zip_with(t, "link2.png", b"/etc/passwd", mode=0o120777), "symbolic link"),
    (lambda t: _zip_with(t, "dev", b"", mode=0o020644), "device"),
    (lambda t: _tar_with(t, _tinfo("../escaped.png", tarfile.REGTYPE, size=1), b"x"), "path traversal"),
    (lambda t: _tar_with(t, _tinfo("/abs.png", tarfile.REGTYPE, size=1), b"x"), "absolute path"),
    (lambda t: _tar_with(t, _tinfo("sub/link", tarfile.SYMTYPE, "../../outside")), "symbolic link"),
    (lambda t: _tar_with(t, _tinfo("hard", tarfile.LNKTYPE, "../outside")), "hard link"),
    (lambda t: _tar_with(t, _tinfo("hard2", tarfile.LNKTYPE, "/etc/passwd")), "hard link"),
    (lambda t: _tar_with(t, _tinfo("null", tarfile.CHRTYPE)), "device"),
    (lambda t: _tar_with(t, _tinfo("fifo", tarfile.FIFOTYPE)), "device"),
])
def test_malicious_archives_are_refused(tmp_path, make, needle):
    group = make(tmp_path)
    dest = tmp_path / "stage" / "x"
    with pytest.raises(UnsafeArchiveError, match=needle) as err:
        extract(group, dest)
    assert group.parts[0].name.split(".")[0] in str(err.value)  # names the archive (and the member)
    assert not (tmp_path / "stage" / "escaped.png").exists() and not (tmp_path / "escaped.png").exists()
    assert not (tmp_path / "outside").exists()


def test_links_inside_are_skipped_and_limits_hold(tmp_path):
    group = _zip_with(tmp_path, "ok/alias.png", b"fine.png", mode=0o120777)
    stats = extract(group, tmp_path / "x")
    assert stats.skipped_links == ["ok/alias.png"] and not (tmp_path / "x" / "ok" / "alias.png").exists()
    assert (tmp_path / "x" / "ok" / "fine.png").is_file()
    with pytest.raises(UnsafeArchiveError, match="members"):
        extract(group, tmp_path / "y", Limits(max_members=1))
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.png", b"\0" * (4 << 20))
    with pytest.raises(UnsafeArchiveError, match="bomb"):
        extract(ArchiveGroup("bomb", "zip", [bomb]), tmp_path / "z", Limits(max_ratio=100))
    with pytest.raises(UnsafeArchiveError, match="limit"):
        extract(ArchiveGroup("bomb", "zip", [bomb]), tmp_path / "w", Limits(max_file_bytes=1 << 20))


# ---- normalisation -------------------------------------------------------------------------------------------


def test_normalise_aigcbench_nesting_to_canonical_names(tmp_path):
    src = tmp_path / "raw" / "0001_test"
    for rel in ("test/progan/car/0_real/a.png", "test/progan/car/1_fake/b.png", "test/GLIDE/0_real/c.png",
                "test/GLIDE/1_fake/d.png", "test/stable_diffusion_v_1_4/1_fake/e.png", "test/unknown/1_fake/f.png"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(image_bytes(len(rel)))
    bench = get_benchmark("aigcbench")
    counts = normalise_tree(src, tmp_path / "tree", bench, {"progan", "Glide"})
    assert counts == {"progan": 2, "Glide": 2}
    s = summarize(read_layout(tmp_path / "tree", "aigcbench"))
    assert s == {"Glide": {"test": {"real": 1, "fake": 1}}, "progan": {"test": {"real": 1, "fake": 1}}}
    assert (tmp_path / "tree" / "progan" / "car" / "0_real" / "a.png").is_file()


def test_generator_names_resolve_through_synonyms():
    g = get_benchmark("genimage")
    assert [x.folder for x in g.resolve(["SDv1.4", "sdv5", "imagenet_glide", "BigGAN"])] == [
        "imagenet_ai_0419_sdv4", "imagenet_ai_0424_sdv5", "imagenet_glide", "imagenet_ai_0419_biggan"]
    assert g.match_in("imagenet_ai_0508_adm-003").folder == "imagenet_ai_0508_adm"
    a = get_benchmark("aigcbench")
    assert [x.folder for x in a.resolve(["GLIDE", "SD14", "DALLE2", "WhichFaceIsReal"])] == [
        "Glide", "stable_diffusion_v_1_4", "DALLE2", "whichfaceisreal"]
    with pytest.raises(AcquireError, match="unknown generator"):
        g.resolve(["sdxl"])
    # folder names are what params.yaml expects: GenImage aliases, AIGCBenchmark test generators
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    assert set(params["profiles"]["genimage"]["data"]["generator_aliases"]) == {x.folder for x in g.generators}
    assert set(params["profiles"]["aigcbench"]["data"]["test_generators"]) <= {x.folder for x in a.generators}
    assert set(params["profiles"]["aigcbench"]["data"]["train_generators"]) <= {
        x.folder for x in get_benchmark("progan").generators}


def test_bundled_genimage_checksums():
    md5 = genimage_md5()
    assert len(md5) == 207 and md5["imagenet_glide.zip"] == "3479bc2e81af2aacfb3b07e18ad3abad"
    assert all(len(v) == 32 for v in md5.values())


# ---- `sep-bench data get --source manual` (acceptance) ----------------------------------------------------------


def test_get_manual_genimage_builds_canonical_tree_and_manifest(tmp_path, genimage_downloads):
    dl, csv = genimage_downloads
    out = tmp_path / "data" / "external" / "genimage"
    res = _get("genimage", "--source", "manual", "--root", dl, "--out", out, "--checksums", csv,
               "--generators", "SDv1.4,GLIDE")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST_NAME, MARKER_NAME, "imagenet_ai_0419_sdv4", "imagenet_glide"])  # Midjourney not requested
    assert summarize(read_layout(out, "genimage")) == {
        "imagenet_ai_0419_sdv4": {"train": {"real": 3, "fake": 3}, "val": {"real": 3, "fake": 3}},
        "imagenet_glide": {"val": {"real": 3, "fake": 3}},
    }
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert len(manifest["files"]) == 18 and all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    st = manifest["stats"]["imagenet_ai_0419_sdv4"]["train"]
    assert st["fake"]["formats"] == {"PNG": 3} and st["real"]["formats"] == {"JPEG": 3}
    assert st["fake"]["width"] == {"min": 24, "median": 24, "max": 24}
    assert "imagenet_glide.zip" in manifest["provenance"]["imagenet_glide"]["md5_list"]["checked"]
    assert not list(out.parent.glob(".genimage.staging-*"))  # staging removed
    assert sorted(p.name for p in dl.iterdir()) == sorted(p.name for p in dl.iterdir())  # user files untouched
    assert (dl / "imagenet_glide.zip").exists()
    verify_tree(out, "genimage")

    # a second run adds a generator and leaves the installed ones alone
    before = (out / "imagenet_glide").stat().st_ino
    res = _get("genimage", "--root", dl, "--out", out, "--checksums", csv, "-g", "Midjourney", "-g", "GLIDE")
    assert res.exit_code == 0 and _has(res.output, "already installed"), res.output
    assert (out / "imagenet_glide").stat().st_ino == before
    marker = json.loads((out / MARKER_NAME).read_text())
    assert set(marker["generators"]) == {"imagenet_ai_0419_sdv4", "imagenet_glide", "imagenet_midjourney"}
    assert verify_tree(out, "genimage").counts["imagenet_midjourney"]["train"] == {"real": 3, "fake": 3}


def test_manifest_names_corrupted_missing_and_extra_files(tmp_path, genimage_downloads):
    dl, csv = genimage_downloads
    out = tmp_path / "genimage"
    assert _get("genimage", "--root", dl, "--out", out, "--checksums", csv, "-g", "GLIDE").exit_code == 0
    victim = out / "imagenet_glide" / "val" / "ai" / "ai_val_1.png"
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="sha256 differs.*imagenet_glide/val/ai/ai_val_1.png"):
        verify_tree(out, "genimage")
    verify_tree(out, "genimage", level="quick")  # same size: only the full check sees it
    (out / "imagenet_glide" / "val" / "nature" / "nature_val_0.JPEG").unlink()
    (out / "imagenet_glide" / "val" / "ai" / "stray.png").write_bytes(image_bytes(9))
    with pytest.raises(VerificationError) as err:
        verify_tree(out, "genimage")
    msg = str(err.value)
    assert "missing: imagenet_glide/val/nature/nature_val_0.JPEG" in msg
    assert "not in the manifest (an interrupted acquisition?): imagenet_glide/val/ai/stray.png" in msg


def test_md5_list_mismatch_is_a_warning_with_a_way_to_pin_the_copy(tmp_path):
    dl = tmp_path / "dl"
    dl.mkdir()
    write_zip(dl / "imagenet_glide.zip", genimage_members("imagenet_glide", splits=("val",)))
    out = tmp_path / "out"
    res = _get("genimage", "--root", dl, "--out", out, "-g", "GLIDE")  # the bundled community list
    assert res.exit_code == 0, res.output
    pin = tmp_path / ".downloads" / "genimage" / "archives.sha256.json"
    assert _has(res.output, "warning: imagenet_glide.zip", "3479bc2e81af2aacfb3b07e18ad3abad", "community",
                f"--trust-sha256 {pin}")
    prov = json.loads((out / MANIFEST_NAME).read_text())["provenance"]["imagenet_glide"]
    assert prov["md5_list"]["mismatched"] == ["imagenet_glide.zip"] and "Drive" in prov["md5_list"]["list"]
    # pinned: checked against the sha256 manifest instead, silently; a different file is then an error
    res = _get("genimage", "--root", dl, "--out", out, "-g", "GLIDE", "--force", "--trust-sha256", pin)
    assert res.exit_code == 0 and "warning" not in res.output, res.output
    write_zip(dl / "imagenet_glide.zip", genimage_members("imagenet_glide", splits=("val",), seed=5))
    res = _get("genimage", "--root", dl, "--out", out, "-g", "GLIDE", "--force", "--trust-sha256", pin)
    assert res.exit_code == 2 and _has(res.output, "imagenet_glide.zip: sha256") and "Traceback" not in res.output


def test_malicious_archive_via_cli_leaves_nothing(tmp_path):
    dl = tmp_path / "dl"
    dl.mkdir()
    with zipfile.ZipFile(dl / "imagenet_glide.zip", "w") as z:
        z.writestr("imagenet_glide/val/ai/a.png", image_bytes(1))
        z.writestr("../../escaped.png", image_bytes(2))
    csv = md5_csv(tmp_path / "c.csv", [dl / "imagenet_glide.zip"])
    res = _get("genimage", "--root", dl, "--out", tmp_path / "out", "--checksums", csv, "-g", "GLIDE")
    assert res.exit_code == 2 and _has(res.output, "path traversal", "../../escaped.png")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.staging-*"))
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path.parent / "escaped.png").exists()


def test_missing_generator_and_foreign_tree_are_user_errors(tmp_path, genimage_downloads):
    dl, csv = genimage_downloads
    res = _get("genimage", "--root", dl, "--out", tmp_path / "out", "--checksums", csv, "-g", "ADM")
    assert res.exit_code == 2 and _has(res.output, "no archives or images for ADM") and "Traceback" not in res.output
    foreign = tmp_path / "foreign"
    (foreign / "mine").mkdir(parents=True)
    res = _get("genimage", "--root", dl, "--out", foreign, "--checksums", csv, "-g", "GLIDE")
    assert res.exit_code == 2 and _has(res.output, "--force")
    res = _get("genimage", "--root", dl, "--out", foreign, "--checksums", csv, "-g", "GLIDE", "--force")
    assert res.exit_code == 0, res.output
    assert (foreign / "mine").is_dir()  # --force replaces requested generators only


def test_interrupted_install_is_never_taken_as_complete(tmp_path, genimage_downloads, monkeypatch):
    import sep_bench.acquire.assemble as assemble

    dl, csv = genimage_downloads
    out = tmp_path / "genimage"
    real = assemble.build_manifest

    def crash(*a, **k):  # the generator folder is renamed in; the process dies before the manifest/marker
        raise KeyboardInterrupt

    monkeypatch.setattr(assemble, "build_manifest", crash)
    res = _get("genimage", "--root", dl, "--out", out, "--checksums", csv, "-g", "GLIDE")
    assert res.exit_code != 0  # click turns the interrupt into "Aborted!"
    assert (out / "imagenet_glide").is_dir() and (out / INTENT_NAME).exists() and not (out / MARKER_NAME).exists()
    with pytest.raises(VerificationError, match="interrupted"):
        verify_tree(out, "genimage")
    monkeypatch.setattr(assemble, "build_manifest", real)
    res = _get("genimage", "--root", dl, "--out", out, "--checksums", csv, "-g", "GLIDE")  # no --force needed
    assert res.exit_code == 0, res.output
    assert not (out / INTENT_NAME).exists() and (out / MARKER_NAME).exists()
    verify_tree(out, "genimage")


def test_data_prepare_verifies_external_data(tmp_path, genimage_downloads, monkeypatch):
    dl, csv = genimage_downloads
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    prof = params["profiles"]["genimage"]
    prof["data"]["test_generators"] = ["SDv1.4", "GLIDE"]
    params["profile"] = "genimage"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("sep_bench.tracking.ensure_store", lambda uri: None)  # MLflow's DB is not under test here
    res = _get("genimage", "--root", dl, "--checksums", csv, "-g", "SDv1.4,GLIDE")  # --out from params.yaml
    assert res.exit_code == 0, res.output
    out = tmp_path / "data" / "external" / "genimage"
    stamp = json.loads((tmp_path / "data/stamps/genimage.json").read_text())  # what the DVC data stage can track
    assert stamp["manifests_sha256"] == {"data/external/genimage": hashlib.sha256(
        (out / MANIFEST_NAME).read_bytes()).hexdigest()}
    assert not (tmp_path / "data/stamps/mini.json").exists()
    res = runner.invoke(app, ["data", "prepare"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "data/prepared/genimage/summary.json").read_text())
    assert summary["counts"]["imagenet_glide"]["val"] == {"real": 3, "fake": 3}
    assert summary["verification"]["test"]["files"] == 18
    assert summary["verification"]["test"]["stats"]["imagenet_glide"]["val"]["real"]["formats"] == {"JPEG": 3}

    victim = out / "imagenet_ai_0419_sdv4" / "train" / "nature" / "nature_train_2.JPEG"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    res = runner.invoke(app, ["data", "prepare"])
    assert res.exit_code == 2 and _has(res.output, "imagenet_ai_0419_sdv4/train/nature/nature_train_2.JPEG")

    victim.unlink()
    prof["data"]["test_generators"] = ["SDv1.4", "GLIDE", "Wukong"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (out / MANIFEST_NAME).unlink()  # a tree without a manifest gets one on first verification
    res = runner.invoke(app, ["data", "prepare"])
    assert res.exit_code == 2 and _has(res.output, "Wukong", "sep-bench data get genimage")
    assert (out / MANIFEST_NAME).exists()
