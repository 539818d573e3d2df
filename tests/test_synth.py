"""`sep-bench data synth`: trees with the real datasets' shape (layout, names, sizes, formats, bad files)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from sep_bench.acquire.synth import AIGC, GENIMAGE, SynthError, expected_images, synth_tree
from sep_bench.data.images import DecodeError, decode_image
from sep_bench.data.layouts import read_layout
from tests.conftest import REPO


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_genimage_shape_formats_and_known_bad_files(tmp_path):
    out = tmp_path / "genimage"
    summary = synth_tree("genimage", out, n_train=4, n_test=3, scale=0.25)
    assert sorted(p.name for p in out.iterdir()) == sorted(g.name for g in GENIMAGE)
    samples = read_layout(out, "genimage")
    assert len(samples) == summary.images == expected_images("genimage", 4, 3)
    assert Counter(s.split for s in samples)["train"] == 2 * 4 + 7 * 2 * 3
    # fakes: PNG at each generator's size (scaled); ADM's suffix is .PNG as in the real archives
    for g in GENIMAGE:
        fakes = sorted((out / g.name / "val" / "ai").iterdir())
        assert all(f.suffix == g.fake_suffix for f in fakes)
        with Image.open(fakes[0]) as im:
            assert (im.format, im.size) == ("PNG", (g.fake_size // 4, g.fake_size // 4))
    # reals: JPEGs in grayscale, CMYK and RGB, several sizes
    modes = Counter()
    for real in (out / "imagenet_ai_0419_sdv4" / "train" / "nature").iterdir():
        with Image.open(real) as im:
            assert im.format == "JPEG"
            modes[im.mode] += 1
    assert set(modes) == {"L", "CMYK", "RGB"}
    # the known defects: zero-byte PNGs in ADM and GLIDE, an unreadable SD v1.5 nature JPEG; each is a decode skip
    bad = {Path(d.split(": ")[0]) for d in summary.defects}
    assert {p.parts[-4] for p in bad} == {"imagenet_ai_0508_adm", "imagenet_glide", "imagenet_ai_0424_sdv5"}
    for p in bad:
        with pytest.raises(DecodeError):
            decode_image(p)
    good = [s for s in samples if Path(s.path) not in bad]
    assert all(decode_image(s.path).ndim == 3 for s in good[:: max(1, len(good) // 20)])


def test_aigcbench_test_tree_and_progan_training_set(tmp_path):
    out, train = tmp_path / "aigcbench", tmp_path / "progan_train"
    synth_tree("aigcbench", out, n_train=2, n_test=1, scale=0.125)
    samples = read_layout(out, "aigcbench")
    assert {s.generator for s in samples} == {g.name for g in AIGC}
    assert len(samples) == sum(2 * max(1, len(g.classes)) for g in AIGC)
    assert (out / "progan" / "car" / "1_fake").is_dir() and (out / "DALLE2" / "0_real").is_dir()
    assert sorted(p.name for p in train.iterdir()) == ["car", "cat", "chair", "horse"]
    assert len(list((train / "cat" / "0_real").iterdir())) == 2


def test_same_arguments_same_bytes_and_no_overwrite(tmp_path):
    synth_tree("genimage", tmp_path / "a", n_train=2, n_test=1, scale=0.125, seed=3)
    synth_tree("genimage", tmp_path / "b", n_train=2, n_test=1, scale=0.125, seed=3)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    with pytest.raises(SynthError, match="not an empty folder"):
        synth_tree("genimage", tmp_path / "a", n_train=2, n_test=1)
    with pytest.raises(SynthError, match="unknown dataset"):
        synth_tree("imagenet", tmp_path / "c")
    with pytest.raises(SynthError, match="scale"):
        synth_tree("genimage", tmp_path / "d", scale=0)


def test_cli_writes_the_tree_and_refuses_a_full_folder(tmp_path):
    from sep_bench.cli import app

    runner = CliRunner()
    args = ["data", "synth", "--like", "genimage", "--out", str(tmp_path / "g"), "--n-train", "2", "--n-test", "1",
            "--scale", "0.125", "--params", str(REPO / "params.yaml")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "never a result" in first.output and "data prepare --profile genimage" in first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "not an empty folder" in again.output
