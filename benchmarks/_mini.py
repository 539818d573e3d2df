"""Shared by the mini-profile benchmarks: a working folder with this checkout's prepared data and a params.yaml
trimmed to training plus the clean evaluation, and one detector's train + evaluate run in it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: variables that decide kernels or warm starts: a case sets them itself, never inherits them
KERNEL_VARS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "SEP_BENCH_WARM")


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def workdir(path: Path, detectors: list[str], overrides: dict[str, Any] | None = None) -> Path:
    """`path` with links to the prepared mini data and a params.yaml: clean evaluation only, no selection,
    MLflow in the folder, plus dotted-key `overrides` (e.g. ``detectors.sep.overrides.mini.train.epochs``)."""
    for sub in ("data/prepared/mini", "data/recon/mini"):
        (path / sub).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / sub).exists() and not (path / sub).exists():
            (path / sub).symlink_to(ROOT / sub)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profiles"]["mini"]["eval"].update(perturbations=[], align="none", preprocess=[], variant_subset=None)
    params["run"].update(detectors=detectors, selection=[])
    params["tracking"]["uri"] = f"sqlite:///{path / 'mlflow.db'}"
    for dotted, value in (overrides or {}).items():
        set_dotted(params, dotted, value)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_and_evaluate(work: Path, detector: str, env_extra: dict[str, str] | None = None, seed: int = 0) -> dict:
    """Train `detector` (`seed`) from scratch in `work`, evaluate it on the clean test set; seconds, digests, ACCs."""
    import pandas as pd

    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARS} | (env_extra or {}) | {"HF_HUB_OFFLINE": "1"}
    sep_bench = str(Path(sys.executable).with_name("sep-bench"))
    train = work / "runs/mini" / detector / f"seed{seed}/train"
    shutil.rmtree(train, ignore_errors=True)
    seconds = {}
    for command in ("train", "evaluate"):
        t0 = time.perf_counter()
        proc = subprocess.run([sep_bench, command, "--detector", detector, "--seed", str(seed), "--no-track"], cwd=work,
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{command} {detector} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        seconds[command] = round(time.perf_counter() - t0, 1)
    metrics = json.loads((work / f"results/metrics/mini/{detector}/seed{seed}.json").read_text())
    pred = pd.read_parquet(work / f"results/predictions/mini/{detector}/seed{seed}.parquet")
    logits = pred.sort_values("path")["fake_logit"].to_numpy(dtype="float32").tobytes()
    train_gen = yaml.safe_load((work / "params.yaml").read_text())["profiles"]["mini"]["data"]["train_generators"][0]
    return {"train_seconds": seconds["train"], "evaluate_seconds": seconds["evaluate"],
            "weights_sha256": sha256(train / "best.safetensors"), "logits_sha256": hashlib.sha256(logits).hexdigest(),
            "mean_acc": metrics["mean"]["acc"], "train_generator_acc": metrics["generators"][train_gen]["acc"],
            "history": json.loads((train / "train.json").read_text())["history"]}
