"""Shared fixtures: a tiny GenImage-layout dataset and a params.yaml that trains NPR on it in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _image(rng: np.random.Generator, size: int, fake: bool) -> np.ndarray:
    """Smooth random content; fakes carry a faint 2-pixel periodic pattern (an up-sampling-like trace)."""
    base = rng.normal(128, 40, (size // 4, size // 4, 3))
    img = np.asarray(Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize((size, size), Image.BILINEAR), float)
    if fake:
        yy, xx = np.mgrid[:size, :size]
        img += 12.0 * (((yy + xx) % 2) * 2 - 1)[..., None]
    return img.clip(0, 255).astype(np.uint8)


def make_genimage_tree(root: Path, *, size: int = 40, n_train: int = 16, n_test: int = 8, seed: int = 0) -> Path:
    """g1 has train+val, g2 val only; train files are named <group>__<i> with groups p0..p3."""
    rng = np.random.default_rng(seed)
    for gen, splits in (("g1", ("train", "val")), ("g2", ("val",))):
        for split in splits:
            n = n_train if split == "train" else n_test
            for cls, fake in (("nature", False), ("ai", True)):
                d = root / gen / split / cls
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    Image.fromarray(_image(rng, size, fake)).save(d / f"p{i % 4}__{i:03d}.png")
    return root


def tiny_params(data_root: Path, **train) -> dict:
    return {
        "profile": "tiny",
        "run": {"detectors": ["npr"], "seeds": [0]},
        "tracking": {"uri": None, "experiment": "test"},
        "profiles": {
            "tiny": {
                "data": {
                    "source": "external",
                    "layout": "genimage",
                    "root": str(data_root),
                    "train_generators": ["g1"],
                    "test_generators": ["g1", "g2"],
                    "val": {"group_pattern": "^(?P<group>p[0-9])__", "groups": ["p3"]},
                },
                "train": {"epochs": 2, "batch_size": 8, **train},
                "eval": {"batch_size": 16},
                "device": "cpu",
            }
        },
        "detectors": {
            "npr": {
                "model": {"crop_size": 32, "train_resize": None, "layers": [1, 1]},
                "optim": {"name": "adam", "lr": 1e-3},
            }
        },
    }


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    return make_genimage_tree(tmp_path_factory.mktemp("tiny_genimage"))


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_tree) -> Path:
    """A temporary project folder with params.yaml for the tiny dataset; cwd is set to it."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(tiny_tree)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # project root for the MLflow DB
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def synth(tmp_path, monkeypatch):
    """A scratch working folder for report commands on synthetic results: the current directory, with no pipeline
    parent run or DVC stage inherited from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEP_BENCH_PARENT_RUN_ID", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    return tmp_path
