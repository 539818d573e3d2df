"""minigen: layout, split hygiene, determinism and the atomic/reusable build, on a tiny config."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sep_bench.data.minigen import GENERATORS, GROUP_PATTERN, MANIFEST_NAME, MinigenConfig, build_minigen, load_photos

# Small image counts with the default training settings: the generators use the pinned weights.
TINY = MinigenConfig(image_size=48, n_train_real=8, n_val_real=3, n_test_real=6)
# Other training settings train their weights at build time (tiny, fast).
UNPINNED = replace(TINY, ae_steps=5, ae_width=8, ae_crop=32, ae_batch=4)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("minigen") / "mg"
    return out, build_minigen(out, TINY, workers=1)


def _group(path: Path) -> str:
    match = re.match(GROUP_PATTERN, path.name)
    assert match, path.name
    return match["group"]


def test_layout_and_counts(built: tuple[Path, dict]) -> None:
    out, manifest = built
    assert json.loads((out / MANIFEST_NAME).read_text()) == manifest
    assert manifest["name"] == "minigen" and manifest["train_generators"] == ["vae8"]
    assert set(manifest["generators"]) == set(TINY.generators) == set(GENERATORS)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(TINY.generators)
    for gen in TINY.generators:
        splits = ["train", "val"] if gen in TINY.train_generators else ["val"]
        assert sorted(p.name for p in (out / gen).iterdir()) == splits
        for split in splits:
            n = TINY.n_train_real + TINY.n_val_real if split == "train" else TINY.n_test_real
            assert manifest["counts"][gen][split] == {"ai": n, "nature": n}
            for cls in ("ai", "nature"):
                assert len(list((out / gen / split / cls).glob("*.png"))) == n
        info = manifest["generators"][gen]
        assert info["params"] > 0 and np.isfinite(info["psnr_db"]) and info["upsampling"]
        assert info["weights"] == "pinned"
    log = out.with_name(out.name + "-build_log.json")  # beside the build: timings would change its DVC hash
    assert set(json.loads(log.read_text())["generators"]) == set(TINY.generators)
    assert not (out / "build_log.json").exists()
    assert not list(out.parent.glob("mg.*")), "temp/old siblings must be gone after a build"


def test_images_are_rgb_png_of_the_right_size(built: tuple[Path, dict]) -> None:
    out, _ = built
    for path in out.rglob("*.png"):
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (TINY.image_size, TINY.image_size)), path


def test_photos_never_cross_splits(built: tuple[Path, dict]) -> None:
    out, manifest = built
    assert manifest["splits"] == {
        "train": list(TINY.train_photos),
        "validation": list(TINY.val_photos),
        "test": list(TINY.test_photos),
    }
    train_groups = {_group(p) for p in out.glob("*/train/*/*.png")}
    test_groups = {_group(p) for p in out.glob("*/val/*/*.png")}
    assert train_groups == set(TINY.train_photos) | set(TINY.val_photos)
    assert test_groups == set(TINY.test_photos)
    assert {"motorcycle_left", "motorcycle_right"} <= test_groups


def test_fakes_mirror_reals_and_differ(built: tuple[Path, dict]) -> None:
    out, _ = built
    for split_dir in out.glob("*/*"):
        reals = sorted(p.name for p in (split_dir / "nature").glob("*.png"))
        assert reals == sorted(p.name for p in (split_dir / "ai").glob("*.png"))
        for name in reals[:3]:
            real = np.asarray(Image.open(split_dir / "nature" / name))
            fake = np.asarray(Image.open(split_dir / "ai" / name))
            assert not np.array_equal(real, fake), split_dir / name


def test_real_crops_are_native_resolution_pixels(built: tuple[Path, dict]) -> None:
    out, _ = built
    photo = load_photos()["coffee"]
    crop = np.asarray(Image.open(next(out.glob("vae8/train/nature/coffee__*.png"))))
    size = crop.shape[0]
    candidates = np.argwhere((photo[: 1 - size, : 1 - size] == crop[0, 0]).all(axis=-1))
    assert any(np.array_equal(photo[y : y + size, x : x + size], crop) for y, x in candidates)


def test_same_seed_same_bytes_and_other_seed_differs(built: tuple[Path, dict], tmp_path: Path) -> None:
    out, manifest = built
    torch_state = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    calls: list[tuple[str, int, int]] = []
    # Built in two spawned worker processes, unlike the fixture: the bytes must not depend on that.
    again = build_minigen(tmp_path / "again", TINY, workers=2, progress=lambda *a: calls.append(a))
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == torch_state
    # one progress task per job: a pinned generator's splits are separate jobs, so they run in parallel
    assert {(task, done) for task, done, total in calls if done == total} == {
        (f"write {g}" + (f" {split}" if len(manifest["counts"][g]) > 1 else ""), 2 * n["nature"])
        for g in TINY.generators for split, n in manifest["counts"][g].items()
    }
    assert again == manifest
    assert (tmp_path / "again" / MANIFEST_NAME).read_bytes() == (out / MANIFEST_NAME).read_bytes()
    for rel in ("vae8/train/ai/astronaut__0000.png", "tconv/val/ai/flower__0000.png"):
        assert (tmp_path / "again" / rel).read_bytes() == (out / rel).read_bytes()

    # another seed: one generator is enough to see that the bytes change (a whole second build is not needed)
    build_minigen(tmp_path / "other", replace(TINY, seed=1, generators=("vae8",)), workers=1)
    rel = "vae8/train/ai/astronaut__0000.png"
    assert (tmp_path / "other" / rel).read_bytes() != (out / rel).read_bytes()


def test_reused_build_is_not_rebuilt(built: tuple[Path, dict]) -> None:
    out, manifest = built
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    calls: list[tuple[str, int, int]] = []
    assert build_minigen(out, TINY, progress=lambda *a: calls.append(a)) == manifest
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_interrupted_build_is_not_mistaken_for_complete(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "mg"
    stale = tmp_path / f"mg.tmp-{dead.pid}"
    (stale / "vae8" / "val" / "ai").mkdir(parents=True)
    (stale / MANIFEST_NAME).write_text(json.dumps({"version": 1}))

    calls: list[tuple[str, int, int]] = []
    cfg = replace(UNPINNED, generators=("tconv", "vae8"))
    manifest = build_minigen(out, cfg, progress=lambda *a: calls.append(a), workers=1)
    assert (out / MANIFEST_NAME).exists() and manifest["config"]["generators"] == ["tconv", "vae8"]
    assert not stale.exists(), "a dead build's temp dir is cleaned up"
    assert ("train vae8", cfg.ae_steps, cfg.ae_steps) in calls  # not pinned: trained here
    assert manifest["generators"]["vae8"]["weights"].startswith("trained here")
    assert any(task == "write tconv" and done == total for task, done, total in calls)

    # A tree that lost files is not reused; a different config replaces the old build.
    next(out.glob("tconv/val/ai/*.png")).unlink()
    calls.clear()
    assert build_minigen(out, cfg, progress=lambda *a: calls.append(a), workers=1) == manifest
    assert calls, "incomplete tree must be rebuilt"
    smaller = replace(cfg, generators=("vae8",))
    build_minigen(out, smaller, workers=1)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["vae8"]


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("not minigen")
    with pytest.raises(FileExistsError):
        build_minigen(tmp_path, TINY)
    assert (tmp_path / "mine.txt").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"val_photos": ("coffee", "china")}, "both"),
        ({"train_photos": ("astronaut", "motorcycle_right"), "test_photos": ("motorcycle_left",)}, "same split"),
        ({"generators": ("tconv",)}, "not in generators"),
        ({"generators": ("gan", "vae8")}, "unknown generators"),
        ({"image_size": 100}, "multiple of 8"),
        ({"test_photos": ("lena",)}, "unknown photo"),
    ],
)
def test_config_validation(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MinigenConfig(**change)


def test_load_photos() -> None:
    photos = load_photos()
    assert len(photos) == 9
    for name, img in photos.items():
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and min(img.shape[:2]) >= 256, name


_CAPS = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "sse": {"ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"},
}
_BUILD = (
    "import sys, json; from dataclasses import replace; from sep_bench.data.minigen import MinigenConfig, "
    "build_minigen; import torch; torch.set_num_threads(int(sys.argv[2])); "
    "m = build_minigen(sys.argv[1], MinigenConfig(image_size=48, n_train_real=4, n_val_real=2, n_test_real=4), "
    "workers=1); print(json.dumps([m['pixels_sha256'], torch.backends.cpu.get_cpu_capability()]))"
)


def test_same_pixels_under_other_instruction_sets_and_thread_counts(tmp_path: Path) -> None:
    """The CPU's vector instruction set (oneDNN, MKL and ATen's dispatch capped, as on an older CPU) and the thread
    count change float kernels; with pinned weights and exact integer-grid inference the pixels stay the same."""
    import os

    digests = {}
    for (cap, env), threads in zip(_CAPS.items(), (1, 2, 1)):
        out = subprocess.run([sys.executable, "-c", _BUILD, str(tmp_path / cap), str(threads)], capture_output=True,
                             text=True, env={**os.environ, **env}, check=True).stdout
        digest, capability = json.loads(out.strip().splitlines()[-1])
        digests[cap] = digest
        if cap != "native":
            assert capability in ("AVX2", "DEFAULT", "NO AVX"), capability  # the cap took effect
    assert len(set(digests.values())) == 1, digests


def test_unpinned_training_settings_train_here_and_are_recorded(tmp_path: Path) -> None:
    cfg = replace(UNPINNED, generators=("vae8",), n_train_real=4, n_val_real=2, n_test_real=2)
    manifest = build_minigen(tmp_path / "mg", cfg, workers=1)
    assert manifest["generators"]["vae8"]["weights"].startswith("trained here")


def test_tampered_build_is_rebuilt_and_a_foreign_digest_fails_loudly(built: tuple[Path, dict], tmp_path: Path,
                                                                      monkeypatch) -> None:
    import shutil

    import yaml
    from typer.testing import CliRunner

    from sep_bench.cli import app

    out, manifest = built
    copy = tmp_path / "data/prepared/tiny"
    shutil.copytree(out, copy)
    victim = next(copy.glob("tconv/val/ai/*.png"))
    pixels = np.asarray(Image.open(victim)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(victim)
    assert build_minigen(copy, TINY, workers=1)["pixels_sha256"] == manifest["pixels_sha256"]  # rebuilt, not reused
    assert np.asarray(Image.open(victim))[0, 0].tolist() != pixels[0, 0].tolist()

    monkeypatch.chdir(tmp_path)
    cfg = {"seed": 0, "image_size": TINY.image_size, "n_train_real": TINY.n_train_real,
           "n_val_real": TINY.n_val_real, "n_test_real": TINY.n_test_real}
    params = {"profile": "tiny", "run": {"detectors": ["npr"]}, "detectors": {"npr": {}}, "profiles": {"tiny": {
        "data": {"source": "minigen", "layout": "genimage", "train_generators": ["vae8"],
                 "test_generators": list(TINY.generators), "minigen": {**cfg, "digest": "0" * 64}}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    res = CliRunner().invoke(app, ["data", "prepare"])
    assert res.exit_code != 0 and "not the pinned one" in res.output and manifest["pixels_sha256"] in res.output
    params["profiles"]["tiny"]["data"]["minigen"]["digest"] = manifest["pixels_sha256"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    res = CliRunner().invoke(app, ["data", "prepare"])
    assert res.exit_code == 0 and "matches params.yaml" in res.output, res.output
