"""The frozen-backbone feature cache: computed once, reused across runs, invalidated by content or preprocessing."""

import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sep_bench.engine.train import train
from sep_bench.protocol import load_params, resolve

UNIVFD_TINY = {"arch": "tiny-vit-768", "image_size": 32, "crop_size": 32, "train_resize": None}


def _spec(workdir, root, cache=True, **model):
    over = {
        "profiles.tiny.data.root": str(root),
        "profiles.tiny.train.epochs": 2,
        "profiles.tiny.train.feature_cache": cache,
        "run.detectors": ["univfd"],
        "detectors.univfd": {"model": {**UNIVFD_TINY, **model}, "optim": {"name": "adamw", "lr": 1e-3}},
    }
    return resolve(load_params(workdir / "params.yaml", over), "univfd")


def _computed(text):
    m = re.findall(r"feature cache: (\d+) train \+ (\d+) validation features computed", text)
    return tuple(map(int, m[-1]))


def test_cache_is_reused_and_invalidated(workdir, tiny_tree, tmp_path, caplog):
    caplog.set_level("INFO")
    data = tmp_path / "data"
    shutil.copytree(tiny_tree, data)
    train(_spec(workdir, data), workdir / "a")
    assert _computed(caplog.text) == (24, 8)
    train(_spec(workdir, data), workdir / "b")
    assert _computed(caplog.text) == (0, 0)
    wa, wb = load_file(workdir / "a" / "best.safetensors"), load_file(workdir / "b" / "best.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    victim = next((data / "g1" / "train" / "ai").glob("p0__*.png"))
    pixels = np.asarray(Image.open(victim)).copy()
    pixels[0, 0] ^= 255
    Image.fromarray(pixels).save(victim)  # new content, same name
    train(_spec(workdir, data), workdir / "c")
    assert _computed(caplog.text) == (1, 0)
    train(_spec(workdir, data, fc_init_std=0.01), workdir / "d")  # another model config: another key
    assert _computed(caplog.text) == (24, 8)


def test_cache_needs_a_frozen_backbone(workdir):
    spec = resolve(load_params(workdir / "params.yaml", {"profiles.tiny.train.feature_cache": True}), "npr")
    with pytest.raises(ValueError, match="npr has no frozen backbone"):
        train(spec, workdir / "x")
