"""formatonly, the format-bias control: its features see JPEG quantisation traces and nothing else; on a synthetic benchmark whose
reals are JPEGs and fakes PNGs (same content distribution) it separates the classes, and after format alignment
it is at chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sep_bench.baselines.formatonly import N_FEATURES, format_features, luma_view
from sep_bench.data.perturb import jpeg
from sep_bench.detectors import get_detector
from sep_bench.protocol import ProtocolError, load_params, resolve
from sep_bench.weights import WeightsSource, parse_pretrained

SIZE = 64


def _content(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """Smooth random content with mild noise: the same distribution for both classes."""
    base = rng.normal(128, 40, (size // 4, size // 4, 3)).clip(0, 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC), dtype=np.float64)
    return (img + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)


def make_format_biased_tree(root: Path, n: int = 32, quality: int = 90, seed: int = 0) -> Path:
    """GenImage layout whose only class difference is the format: nature = JPEG (quality 90), ai = PNG."""
    rng = np.random.default_rng(seed)
    for gen, splits in (("g1", ("train", "val")), ("g2", ("val",))):
        for split in splits:
            for cls in ("nature", "ai"):
                d = root / gen / split / cls
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    img = Image.fromarray(_content(rng))
                    if cls == "nature":
                        img.save(d / f"p{i % 4}__{i:03d}.jpg", quality=quality)
                    else:
                        img.save(d / f"p{i % 4}__{i:03d}.png")
    return root


def _params(root: Path) -> dict:
    return {
        "profile": "fmt",
        "run": {"detectors": ["formatonly"], "seeds": [0]},
        "profiles": {"fmt": {
            "data": {"source": "external", "layout": "genimage", "root": str(root), "train_generators": ["g1"],
                     "test_generators": ["g1", "g2"],
                     "val": {"group_pattern": "^(?P<group>p[0-9])__", "groups": ["p3"]}},
            "train": {"epochs": 30, "batch_size": 12, "feature_cache": True},
            "eval": {"batch_size": 32},
            "device": "cpu",
        }},
        "detectors": {"formatonly": {"model": {"crop_size": SIZE, "hidden": 16},
                                     "optim": {"name": "adam", "lr": 1e-2}}},
    }


def test_features_shape_and_head_contract():
    spec = get_detector("formatonly")
    cfg = spec.make_config({"crop_size": SIZE})
    model = spec.build(cfg, WeightsSource.none())
    assert model.frozen_features and spec.provenance == "paper"
    rng = np.random.default_rng(0)
    view = spec.views(cfg, True, True)
    views = {"luma": torch.stack([view(_content(rng), rng)["luma"] for _ in range(4)])}
    assert views["luma"].shape == (4, 1, SIZE, SIZE)
    feats = model.forward_features(views)
    assert feats.shape == (4, N_FEATURES) and torch.isfinite(feats).all() and not feats.requires_grad
    logits = model(views)
    assert logits.shape == (4,)
    model.loss(logits, torch.tensor([0.0, 1.0, 0.0, 1.0])).backward()
    assert all(p.grad is not None for p in model.trainable_parameters())
    with pytest.raises(ProtocolError, match="no pretrained part"):
        spec.build(cfg, parse_pretrained(True, "x"))


def test_quantisation_traces_are_read_wherever_a_crop_puts_the_grid_and_not_from_periodic_patterns():
    rng = np.random.default_rng(1)
    img = jpeg(_content(rng, 96), 50)
    plain = format_features(luma_view(96)(img, rng)["luma"][None])
    shifted = format_features(luma_view(88)(img[3:91, 5:93], rng)["luma"][None])  # the grid moved by (3, 5)
    png = format_features(luma_view(96)(_content(rng, 96), rng)["luma"][None])
    # the lowest AC frequencies sit on their quantisation lattice, on the shifted crop too (grid located)
    assert plain[0, :5].mean() > 0.7 and shifted[0, :5].mean() > 0.7 and png[0, :5].mean() < 0.3
    # an 8x nearest up-sampling has block edges exactly on an 8 x 8 grid, but no quantised coefficient
    blocks = np.kron(rng.integers(0, 255, (12, 12, 3)), np.ones((8, 8, 1))) + rng.normal(0, 3, (96, 96, 3))
    periodic = format_features(luma_view(96)(blocks.clip(0, 255).astype(np.uint8), rng)["luma"][None])
    assert periodic[0, :5].mean() < 0.3


def _run(tmp_path: Path, tree: Path, name: str, **overrides) -> tuple[dict, dict]:
    """Train and evaluate formatonly under `overrides`; (train.json, clean metrics with ``perturbed``)."""
    import json

    from sep_bench.engine.evaluate import evaluate
    from sep_bench.engine.train import train

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(tree)))
    spec = resolve(load_params(tmp_path / "params.yaml", overrides), "formatonly")
    out = tmp_path / name
    result = train(spec, out / "train")
    metrics = evaluate(spec, result.best_checkpoint, out / "m.json", out / "p.parquet", robustness_dir=out / "rob")
    return json.loads((out / "train" / "train.json").read_text()), metrics


def test_separates_jpeg_real_png_fake_and_is_at_chance_after_alignment(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # the feature cache lives under runs/
    tree = make_format_biased_tree(tmp_path / "data")
    _, biased = _run(tmp_path, tree, "biased", **{"profiles.fmt.eval.align": "jpeg"})
    assert biased["mean"]["acc"] >= 0.9  # the format alone tells the classes apart
    aligned = biased["perturbed"]["aligned"]
    # eval.align: jpeg read the real test images' quality; every image now looks like a real JPEG to it
    assert aligned["align"] == {"align": "jpeg", "applied": "jpeg90",
                                "source": "median of 64 real JPEGs (qualities 90..90)"}
    assert 0.4 <= aligned["mean"]["acc"] <= 0.6 and aligned["mean"]["real_acc"] > 0.8
    assert aligned["mean"]["fake_acc"] < 0.2

    # the "unbiased" protocol: training and test images aligned -> nothing left to learn from
    summary, unbiased = _run(tmp_path, tree, "unbiased", **{"profiles.fmt.train.align": "jpeg",
                                                             "profiles.fmt.eval.align": "jpeg"})
    assert summary["align"]["applied"] == "jpeg90"
    assert 0.35 <= unbiased["perturbed"]["aligned"]["mean"]["acc"] <= 0.65
