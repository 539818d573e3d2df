import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sep_bench.data.images import DecodeError, decode_image
from sep_bench.data.layouts import LayoutError, read_layout, summarize
from sep_bench.data.splits import evaluation_samples, training_samples
from sep_bench.data.transforms import center_crop, random_crop, sample_rng
from sep_bench.protocol import DataSpec, ProtocolError


def _png(path: Path, size=(8, 6), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)


def test_genimage_layout_nested_one_level_deeper(tmp_path):
    for split in ("train", "val"):
        for cls in ("ai", "nature"):
            _png(tmp_path / "stable_diffusion_v_1_4" / "imagenet_ai_0419_sdv4" / split / cls / "a.png")
    _png(tmp_path / "imagenet_glide" / "val" / "ai" / "b.PNG")
    (tmp_path / "imagenet_glide" / "val" / "ai" / "notes.txt").write_text("x")
    samples = read_layout(tmp_path, "genimage")
    assert summarize(samples) == {
        "imagenet_ai_0419_sdv4": {"train": {"real": 1, "fake": 1}, "val": {"real": 1, "fake": 1}},
        "imagenet_glide": {"val": {"real": 0, "fake": 1}},
    }
    assert {s.label for s in samples if "/ai/" in s.path} == {1}


def test_aigcbench_layouts_flat_and_per_class(tmp_path):
    _png(tmp_path / "progan" / "car" / "0_real" / "a.png")
    _png(tmp_path / "progan" / "cat" / "1_fake" / "b.png")
    _png(tmp_path / "ADM" / "0_real" / "c.png")
    _png(tmp_path / "ADM" / "1_fake" / "d.png")
    s = summarize(read_layout(tmp_path, "aigcbench"))
    assert s == {"ADM": {"test": {"real": 1, "fake": 1}}, "progan": {"test": {"real": 1, "fake": 1}}}


def test_plain_folder_layout(tmp_path):
    _png(tmp_path / "real" / "a.jpg")
    _png(tmp_path / "fake" / "b.png")
    assert summarize(read_layout(tmp_path, "folder")) == {tmp_path.name: {"test": {"real": 1, "fake": 1}}}


def test_layout_errors_are_clear(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        read_layout(tmp_path / "missing", "genimage")
    with pytest.raises(LayoutError, match="no images found"):
        read_layout(tmp_path, "genimage")
    with pytest.raises(LayoutError, match="unknown layout"):
        read_layout(tmp_path, "coco")


def test_readers_do_not_follow_links_out_of_the_root(tmp_path):
    outside = tmp_path / "outside.png"
    _png(outside)
    root = tmp_path / "root"
    _png(root / "real" / "in.png")
    (root / "fake").mkdir()
    os.symlink(outside, root / "fake" / "escape.png")
    os.symlink(root / "real", root / "fake" / "loop")  # a directory link: never walked
    paths = [Path(s.path).name for s in read_layout(root, "folder")]
    assert paths == ["in.png"]


@pytest.mark.parametrize(
    "mode, size",
    [("L", (9, 7)), ("RGBA", (9, 7)), ("P", (9, 7)), ("CMYK", (9, 7)), ("LA", (9, 7)), ("I;16", (9, 7)), ("1", (9, 7))],
)
def test_every_mode_decodes_to_rgb_uint8(tmp_path, mode, size):
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img = Image.new(mode, size)
    if mode == "I;16":
        img = Image.fromarray(np.full((7, 9), 40000, dtype=np.uint16))
    img.save(path)
    arr = decode_image(path)
    assert arr.shape == (7, 9, 3) and arr.dtype == np.uint8
    if mode == "I;16":
        assert arr.max() == 40000 >> 8  # scaled, not clipped to 255


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "not_an_image"), (b"hello, not a jpeg", "not_an_image")],
)
def test_unreadable_files_raise_decode_error_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(DecodeError) as err:
        decode_image(path)
    assert err.value.reason == reason


def test_truncated_png_and_bomb_limit(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError) as err:
        decode_image(path)
    assert err.value.reason == "corrupt"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(DecodeError) as err:
        decode_image(path, max_pixels=99 * 100)
    assert err.value.reason == "too_large"


def test_splits_hold_out_groups_and_test_generators(tiny_tree):
    data = DataSpec(
        source="external", root=str(tiny_tree), train_generators=["g1"], test_generators=["g1", "g2"],
        val={"group_pattern": "^(?P<group>p[0-9])__", "groups": ["p3"]},
    )
    train, val = training_samples(tiny_tree, data)
    assert val and all(Path(s.path).name.startswith("p3__") for s in val)
    assert not any(Path(s.path).name.startswith("p3__") for s in train)
    assert all(s.split == "train" for s in train + val)
    test = evaluation_samples(tiny_tree, data)
    assert [s.generator for s in test] == sorted(s.generator for s in test)  # grouped in test_generators order
    assert {s.split for s in test} == {"val"}
    capped = evaluation_samples(tiny_tree, data.model_copy(update={"max_test_images_per_generator": 4}))
    assert len(capped) == 8 and sum(s.label for s in capped) == 4
    with pytest.raises(ProtocolError, match=r"test generator\(s\) \['g9'\] not found .* present: g1, g2"):
        evaluation_samples(tiny_tree, data.model_copy(update={"test_generators": ["g9"]}))


def test_hash_fraction_split_is_deterministic(tiny_tree):
    data = DataSpec(source="external", root=str(tiny_tree), train_generators=["g1"], test_generators=["g2"],
                    val={"fraction": 0.3})
    a = training_samples(tiny_tree, data)
    b = training_samples(tiny_tree, data)
    assert a == b and 0 < len(a[1]) < len(a[0])


def test_transforms_are_pure_functions_of_the_rng():
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    a = random_crop(img, 32, sample_rng(1, 5, 2))
    b = random_crop(img, 32, sample_rng(1, 5, 2))
    c = random_crop(img, 32, sample_rng(1, 6, 2))
    assert np.array_equal(a, b) and a.shape == (32, 32, 3)
    assert not np.array_equal(a, c)
    small = center_crop(img[:10, :10], 16)  # padded like torchvision CenterCrop
    assert small.shape == (16, 16, 3) and small[0, 0].sum() == 0
