"""Size-bucketed evaluation batches, loader settings, and the training loader reused across epochs."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from sep_bench.data.buckets import FEATURES, UNKNOWN_SIZE, BucketBatchSampler, header_size, size_keys
from sep_bench.data.dataset import EpochSampler, ViewDataset, collate_by_shape
from sep_bench.data.layouts import Sample
from sep_bench.detectors import get_detector
from sep_bench.engine.inference import run_inference
from sep_bench.engine.runtime import make_loader
from sep_bench.protocol import LoaderSpec, ProtocolError, validate_model
from sep_bench.weights import WeightsSource

SIZES = [(40, 48), (33, 37), (64, 64), (48, 40)]  # (height, width); one odd size (trimmed by the NPR residual)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """22 images in 4 sizes, interleaved, with an unreadable file and a missing one among them."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(22):
        h, w = SIZES[(i * 7) % 4 if i % 3 else i % 4]
        path = root / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(str(path), i % 2, "g", "test"))
    (root / "broken.png").write_bytes(b"not an image")
    samples.insert(5, Sample(str(root / "broken.png"), 1, "g", "test"))
    samples.insert(13, Sample(str(root / "missing.png"), 0, "g", "test"))
    return samples


@pytest.fixture(scope="module")
def npr_full_image():
    spec = get_detector("npr")
    cfg = spec.make_config({"crop_size": 32, "train_resize": None, "eval_crop_size": None, "layers": [1, 1]})
    torch.manual_seed(0)
    return spec.build(cfg, WeightsSource.none()).eval(), spec.views(cfg, False, False)


def _infer(model, view, samples, **kw):
    kw = {"seed": 0, "num_workers": 0, "device": torch.device("cpu"), "max_pixels": 10**8, **kw}
    return run_inference(model, samples, view, **kw)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bucketed_batches_give_the_logits_of_batch_size_one(mixed_folder, npr_full_image, num_workers):
    model, view = npr_full_image
    one = _infer(model, view, mixed_folder, batch_size=1, bucket_by_size=False)
    shapes: set[tuple] = set()
    calls: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, args: shapes.add(tuple(args[0]["image"].shape)))
    try:
        bucketed = _infer(model, view, mixed_folder, batch_size=4, num_workers=num_workers, on_batch=calls.append)
    finally:
        hook.remove()
    assert np.isfinite(one.logits).sum() == 22
    np.testing.assert_allclose(bucketed.logits, one.logits, rtol=1e-5, atol=1e-6)  # NaN at the same places
    assert [(s["path"], s["skip"]) for s in bucketed.skipped] == [(s["path"], s["skip"]) for s in one.skipped]
    assert sorted(s["skip"] for s in bucketed.skipped) == ["missing", "not_an_image"]
    assert {s[2:] for s in shapes} == set(SIZES) and max(s[0] for s in shapes) == 4  # real batches, full images
    assert sum(calls) == len(mixed_folder)


def test_mixed_sizes_in_one_batch_are_split_not_stacked(mixed_folder, npr_full_image, monkeypatch):
    """A batch whose headers lied (here: every header claims one size) is split by view shape."""
    import sep_bench.data.buckets as buckets

    model, view = npr_full_image
    one = _infer(model, view, mixed_folder, batch_size=1, bucket_by_size=False)
    monkeypatch.setattr(buckets, "header_size", lambda path, max_pixels: (8, 8))
    lied = _infer(model, view, mixed_folder, batch_size=8)
    unbucketed = _infer(model, view, mixed_folder, batch_size=8, bucket_by_size=False)
    for res in (lied, unbucketed):
        np.testing.assert_allclose(res.logits, one.logits, rtol=1e-5, atol=1e-6)
        assert len(res.skipped) == 2


def test_collate_by_shape_groups_in_first_seen_order_and_keeps_skips():
    def item(i, h):
        return {"views": {"image": torch.full((3, h, 4), float(i))}, "label": i % 2, "index": i}

    items = [item(0, 4), {"skip": "corrupt", "detail": "", "path": "x", "index": 1}, item(2, 6), item(3, 4)]
    batches = collate_by_shape(items)
    assert [b.indices.tolist() for b in batches] == [[0, 3], [2]]
    assert [len(b.skipped) for b in batches] == [1, 0]
    only_skips = collate_by_shape(items[1:2])
    assert len(only_skips) == 1 and len(only_skips[0]) == 0 and len(only_skips[0].skipped) == 1


def test_bucket_batch_sampler_is_deterministic_and_complete():
    keys = [(2, 2), (3, 3), (2, 2), UNKNOWN_SIZE, (2, 2), (3, 3), (2, 2), FEATURES]
    batches = list(BucketBatchSampler(keys, 2))
    assert batches == [[0, 2], [1, 5], [3], [4, 6], [7]]
    assert list(BucketBatchSampler(keys, 2)) == batches and len(BucketBatchSampler(keys, 2)) == 5


def test_header_size_reads_no_pixels_and_never_fails(tmp_path):
    img = np.zeros((30, 50, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: decode_image returns 50 x 30
    Image.fromarray(img).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(img).save(tmp_path / "plain.png")
    (tmp_path / "text.png").write_text("hello")
    os.mkfifo(tmp_path / "fifo.png")  # must not block
    assert header_size(tmp_path / "rotated.jpg", 10**8) == (50, 30)
    assert header_size(tmp_path / "plain.png", 10**8) == (30, 50)
    assert header_size(tmp_path / "plain.png", 100) is None  # decode_image refuses it as too large
    for name in ("text.png", "fifo.png", "missing.png"):
        assert header_size(tmp_path / name, 10**8) is None
    paths = [str(tmp_path / n) for n in ("plain.png", "text.png", "rotated.jpg")]
    assert size_keys(paths, 10**8, skip={2}) == [(30, 50), UNKNOWN_SIZE, FEATURES]


def test_epoch_sampler_carries_the_epoch_to_the_views(tiny_tree):
    samples = [Sample(str(p), 1, "g1", "train") for p in sorted((tiny_tree / "g1/train/ai").glob("*.png"))[:6]]
    spec = get_detector("npr")
    view = spec.views(spec.make_config({"crop_size": 16, "train_resize": None}), True, True)
    dataset = ViewDataset(samples, view, seed=0, max_pixels=10**8)
    sampler = EpochSampler(lambda epoch: np.random.default_rng(epoch).permutation(len(samples)))
    sampler.set_epoch(3, start=2)
    keys = list(sampler)
    assert len(keys) == len(sampler) == 4 and all(epoch == 3 for _, epoch in keys)
    at_epoch_3 = ViewDataset(samples, view, seed=0, max_pixels=10**8, epoch=3)
    for position, epoch in keys:
        assert torch.equal(dataset[(position, epoch)]["views"]["image"], at_epoch_3[position]["views"]["image"])


def test_loader_settings_reach_the_dataloader(tiny_tree):
    dataset = ViewDataset([], None, seed=0, max_pixels=1)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    default = make_loader(dataset, 4, 2, cpu)
    assert (default.pin_memory, default.persistent_workers, default.prefetch_factor) == (False, True, 4)
    assert make_loader(dataset, 4, 2, cuda).pin_memory is True  # auto: pinned for CUDA
    custom = make_loader(dataset, 4, 2, cuda, settings=LoaderSpec(pin_memory=False, persistent_workers=False,
                                                                  prefetch_factor=2))
    assert (custom.pin_memory, custom.persistent_workers, custom.prefetch_factor) == (False, False, 2)
    no_workers = make_loader(dataset, 4, 0, cpu)
    assert no_workers.persistent_workers is False and no_workers.prefetch_factor is None
    with pytest.raises(ProtocolError, match=r"profiles.p.loader.pin_memory: Input should be 'auto', True or False"):
        validate_model(LoaderSpec, {"pin_memory": "sometimes"}, prefix="profiles.p.loader.")
    with pytest.raises(ProtocolError, match=r"profiles\.p\.loader\.prefetch: unknown key; allowed: train_workers, eval_workers, pin_memory"):
        validate_model(LoaderSpec, {"prefetch": 2}, prefix="profiles.p.loader.")


def test_training_with_persistent_workers_matches_in_process_loading(workdir):
    """One training loader for all epochs: with persistent workers the epoch still reaches every sample's views."""
    from safetensors.torch import load_file

    from sep_bench.engine.train import train
    from sep_bench.protocol import load_params, resolve

    def run(out, **over):
        spec = resolve(load_params(workdir / "params.yaml", {"profiles.tiny.train.epochs": 2, **over}), "npr")
        train(spec, workdir / out)
        return load_file(workdir / out / "last.safetensors")

    base = run("inline")
    workers = run("workers", **{"profiles.tiny.loader.train_workers": 2, "profiles.tiny.loader.eval_workers": 2,
                                "profiles.tiny.loader": {"persistent_workers": True}})
    model_keys = [k for k in base if k.startswith("model.")]
    assert model_keys and all(torch.equal(base[k], workers[k]) for k in model_keys)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_one_pass_over_every_variant_equals_one_pass_per_variant(mixed_folder, npr_full_image, num_workers):
    """The clean image and each perturbation, from one decode per image, give each separate pass's logits and
    skips (views of equal shape share a forward batch across variants)."""
    from sep_bench.data.perturb import parse_perturbation
    from sep_bench.engine.inference import infer_variants, inference_loader

    model, view = npr_full_image
    names = ["none", "jpeg75", "blur1+down0.5", "down0.5"]
    separate = [_infer(model, view, mixed_folder, batch_size=4, perturb=parse_perturbation(n)) for n in names]
    loader = inference_loader(mixed_folder, view, seed=0, batch_size=8, num_workers=num_workers,
                              device=torch.device("cpu"), max_pixels=10**8,
                              variants=[parse_perturbation(n) for n in names])
    seen = []
    together = infer_variants(model, loader, len(mixed_folder), len(names), device=torch.device("cpu"),
                              on_batch=seen.append)
    assert sum(seen) == len(mixed_folder)  # progress counts images, not views
    for name, one, joint in zip(names, separate, together):
        assert np.array_equal(one.kept, joint.kept), name
        np.testing.assert_allclose(joint.logits[joint.kept], one.logits[one.kept], rtol=0, atol=1e-5, err_msg=name)
        assert [(s["index"], s["skip"]) for s in joint.skipped] == [(s["index"], s["skip"]) for s in one.skipped]
