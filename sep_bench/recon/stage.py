"""The reconstruction stage: run a `ReconConfig` over the images a detector needs, once per image content.

Layout (``out`` = ``data/recon/<profile>/<detector>``, next to ``data/prepared/<profile>``)::

    out/manifest.json                 pipeline, weights, settings (what produced the results; no run statistics:
                                      this folder is a dependency of training, so it holds no clock or count that
                                      changes between runs; they go to MLflow and the console)
    out/index.json                    image path -> sha256 of its bytes (so readers need not re-hash)
    out/<config key>/<sha[:2]>/<sha>.rec.png    the reconstruction (DIRE: at image_size; DRCT: cropped size)
    out/<config key>/<sha[:2]>/<sha>.dire.png   DIRE only: |x - x_rec| * 255 / 2

Results are keyed by the image content hash and by the config key (`ReconConfig.key`), so identical images are
computed once, a settings change never mixes results, and a second run computes nothing. Each result is written
atomically (temporary file, then rename) right after its batch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

from sep_bench import paths
from sep_bench.recon.config import ReconConfig

__all__ = ["ROOT", "out_dir", "result_paths", "file_sha256", "run_reconstruction", "write_manifest", "resolve_dtype"]

log = logging.getLogger(__name__)
ROOT = paths.RECON_DIR


def out_dir(profile: str, detector: str) -> Path:
    return ROOT / profile / detector


def result_paths(out: Path, cfg: ReconConfig, sha: str) -> dict[str, Path]:
    base = out / cfg.key() / sha[:2]
    paths = {"rec": base / f"{sha}.rec.png"}
    if cfg.method == "ddim-inversion":
        paths["dire"] = base / f"{sha}.dire.png"
    return paths


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_dtype(cfg: ReconConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, cfg.dtype)


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)


def _remove_stale_tmp(out: Path) -> None:
    """Temporary files of interrupted runs (their writer pid is gone); a live concurrent run's are kept."""
    for tmp in out.rglob("*.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            pass


def _prune(out: Path, cfg: ReconConfig, keep: set[str]) -> int:
    """Delete results that no current image or setting needs (other config keys, images whose content changed),
    so the stage output is exactly the current inputs' reconstructions. Returns the number of files removed."""
    import shutil

    removed = 0
    for d in out.iterdir():
        if d.is_dir() and d.name != cfg.key():
            removed += sum(1 for _ in d.rglob("*.png"))
            shutil.rmtree(d)
    key_dir = out / cfg.key()
    if key_dir.is_dir():
        for f in key_dir.rglob("*.png"):
            if f.name.split(".", 1)[0] not in keep:
                f.unlink()
                removed += 1
    return removed


def _index(paths: Iterable[str], out: Path) -> dict[str, str]:
    """path -> sha256, reusing the previous index when size and mtime are unchanged."""
    old = {}
    idx_file = out / "index.json"
    if idx_file.exists():
        old = json.loads(idx_file.read_text()).get("files", {})
    index = {}
    for p in paths:
        st = os.stat(p)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        prev = old.get(p)
        index[p] = {"sha256": prev["sha256"], "stamp": stamp} if prev and prev.get("stamp") == stamp \
            else {"sha256": file_sha256(p), "stamp": stamp}
    out.mkdir(parents=True, exist_ok=True)
    tmp = idx_file.with_name(f"index.json.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"files": index}, sort_keys=True))
    os.replace(tmp, idx_file)
    return {p: v["sha256"] for p, v in index.items()}


def run_reconstruction(
    cfg: ReconConfig,
    image_paths: list[str],
    out: Path,
    *,
    device: torch.device | str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    model=None,
) -> dict:
    """Reconstruct every image of `image_paths` not yet in `out`; returns counts and timings.

    `model`: a prebuilt `DiffusionModel` (tests); default: ``build_model(cfg)``, only when something is missing.
    """
    from sep_bench.data.images import decode_image
    from sep_bench.recon.ddim import dire_batch, inpaint_batch

    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype(cfg, device)
    t0 = time.perf_counter()
    if out.exists():
        _remove_stale_tmp(out)
    shas = _index(image_paths, out)
    todo: dict[str, str] = {}  # sha -> one path with that content
    for p, sha in shas.items():
        if sha not in todo and not all(q.exists() for q in result_paths(out, cfg, sha).values()):
            todo[sha] = p
    unique = len(set(shas.values()))
    stats = {"images": len(image_paths), "unique": unique, "cached": unique - len(todo), "computed": 0,
             "seconds": 0.0, "seconds_per_image": None, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
             "pruned": _prune(out, cfg, set(shas.values()))}
    if not todo:
        return stats
    if model is None:
        from sep_bench.recon.models import build_model

        model = build_model(cfg)
    model.to(device, dtype)
    # group by the size the batch runs at (DIRE: one size; DRCT: the padded size of each image)
    groups: dict[tuple, list[tuple[str, str]]] = defaultdict(list)
    for sha, p in todo.items():
        if cfg.method == "ddim-inversion":
            shape: tuple = (cfg.image_size,)
        else:
            with Image.open(p) as im:
                w, h = im.size
            shape = (-(-min(h, cfg.max_size) // 8) * 8, -(-min(w, cfg.max_size) // 8) * 8)
        groups[shape].append((sha, p))
    done, t_run = 0, time.perf_counter()
    for items in groups.values():
        for i in range(0, len(items), cfg.batch_size):
            batch = items[i:i + cfg.batch_size]
            imgs = [decode_image(p) for _, p in batch]
            if cfg.method == "ddim-inversion":
                rec, dire = dire_batch(model, cfg, imgs, device, dtype)
                for (sha, _), r, d in zip(batch, rec, dire):
                    paths = result_paths(out, cfg, sha)
                    _save_png(d, paths["dire"])
                    _save_png(r, paths["rec"])
            else:
                for (sha, _), r in zip(batch, inpaint_batch(model, cfg, imgs, device)):
                    _save_png(r, result_paths(out, cfg, sha)["rec"])
            done += len(batch)
            if progress is not None:
                progress(f"reconstruct ({cfg.method}, {cfg.arch})", done, len(todo))
    stats["computed"] = done
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    stats["seconds_per_image"] = round((time.perf_counter() - t_run) / max(done, 1), 4)
    return stats


def write_manifest(out: Path, cfg: ReconConfig | None, detector: str, description: str = "") -> dict:
    """``out/manifest.json``: what produced the results (or that the detector needs no reconstruction)."""
    from importlib.metadata import version

    if cfg is None:
        manifest = {"detector": detector, "needed": False}
    else:
        manifest = {
            "detector": detector, "needed": True, "config": cfg.model_dump(), "config_key": cfg.key(),
            "pipeline": description or cfg.arch, "tiny_random_weights": cfg.tiny, "weights": cfg.weights,
            "diffusers": version("diffusers"), "torch": torch.__version__,
        }
        manifest["config"] = cfg.record()
        if cfg.random_init:
            manifest.update(weights=None, random_weights=True)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"manifest.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / "manifest.json")
    return manifest
