"""Preprocessing audit: each detector's evaluation input here against the authors' code, on two photographs.

    python benchmarks/preprocessing_audit.py --official-root /tmp/official [--doc docs/preprocessing.md]

`--official-root` holds checkouts of the authors' repositories, one folder per repository named ``<owner>+<name>``
(see benchmarks/_official_preprocessing.py for the folders and files; the code often has no licence: keep it out
of this repository). For every detector of params.yaml, the model input of this harness's evaluation view (the
``genimage`` recipe, i.e. the official configuration) is compared with the input the authors' preprocessing gives
(`_official_preprocessing.TABLE`) on a non-square photograph (397 x 512, skimage ``rocket`` cropped, never
resampled) and a square one (512 x 512, skimage ``astronaut``): shapes, max and mean absolute difference of the
float32 tensors. Patch detectors are compared at the same random candidate positions (see that module).

Writes ``results/benchmarks/preprocessing_audit.json`` (`--out`) with the repository commit and the sha256 of every
official file compared, and renders docs/preprocessing.md from it (`--doc`; the facts columns are `FACTS` below).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _official_preprocessing import TABLE, TRAIN_RESIZE, Official  # noqa: E402
from _preprocessing_facts import FACTS, render  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def photographs() -> dict[str, dict]:
    import skimage.data

    return {
        "nonsquare": {"source": "skimage.data.rocket()[15:412, 64:576] (a crop, no resampling)",
                      "image": np.ascontiguousarray(skimage.data.rocket()[15:412, 64:576])},
        "square": {"source": "skimage.data.astronaut() (512 x 512)",
                   "image": np.ascontiguousarray(skimage.data.astronaut())},
    }


def _config(name: str):
    from sep_bench.detectors import get_detector
    from sep_bench.protocol import load_params, resolve

    det = get_detector(name)
    return det, det.make_config(resolve(load_params(ROOT / "params.yaml"), name, profile="genimage").recipe.model)


def train_resize(name: str, repo: Path, photos: dict) -> dict | None:
    """The deterministic resize before the training crop, the authors' vs ours (uint8, grey levels), or None."""
    if name not in TRAIN_RESIZE:
        return None
    from sep_bench.data import transforms as tr

    official, mine = TRAIN_RESIZE[name]
    _, cfg = _config(name)
    out = {}
    for label, photo in photos.items():
        a, b = np.asarray(official(repo, photo["image"])), np.asarray(mine(cfg, photo["image"], tr))
        rec = {"official_shape": list(a.shape), "ours_shape": list(b.shape)}
        if a.shape == b.shape:
            d = np.abs(a.astype(np.int16) - b.astype(np.int16))
            rec |= {"max_abs": int(d.max()), "mean_abs": float(d.mean())}
        out[label] = rec
    return out


def ours(name: str, img: np.ndarray) -> dict[str, torch.Tensor]:
    """This harness's evaluation view of `img` under the genimage recipe (plus LOTA's in-model normalisation)."""
    det, cfg = _config(name)
    out = dict(det.views(cfg, False, False)(img, np.random.default_rng(0)))
    if name == "lota":  # the view up-samples the patch (cv2.resize); the normalisation runs in LOTA.forward_features
        from sep_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        up = out["patch"]
        out["patch_256"] = (up - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return out


def _git_commit(repo: Path) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and len(commit) == 40 else None


def provenance(root: Path, off: Official) -> dict:
    """Where the comparison's facts come from: commit, files with sha256, and whether every anchor is there."""
    repo = root / off.repo
    files, text = [], ""
    for rel in off.files:
        f = repo / rel
        if f.is_file():
            data = f.read_bytes()
            files.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest()})
            text += data.decode("utf-8", errors="replace")
        else:
            files.append({"path": rel, "sha256": None})
    missing = [a for a in off.anchors if a not in text]
    source = repo / "SOURCE.txt"
    return {"repo": off.repo.replace("+", "/", 1), "commit": _git_commit(repo),
            "source_note": source.read_text().strip() if source.is_file() else None,
            "files": files, "anchors_missing": missing}


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per input name of the official side `a`: shapes and the max / mean absolute difference from `b`."""
    out = {}
    for key, x in a.items():
        y = b.get(key)
        rec = {"official_shape": list(x.shape), "ours_shape": None if y is None else list(y.shape)}
        if y is not None and tuple(x.shape) == tuple(y.shape):
            d = (x.float() - y.float()).abs()
            rec |= {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
                    "value_range": [float(x.min()), float(x.max())]}
        out[key] = rec
    return out


def audit_one(name: str, root: Path, photos: dict) -> dict:
    off = TABLE[name]
    rec = {"detector": name}
    if off.repo is None:
        return rec | {"official": None, "measured": None}
    rec["official"] = provenance(root, off)
    if not (root / off.repo).is_dir():
        return rec | {"measured": None, "error": f"{root / off.repo} not found"}
    if rec["official"]["anchors_missing"]:
        return rec | {"measured": None, "error": "the official files no longer contain the mirrored calls"}
    absent = [m for m in off.needs if importlib.util.find_spec(m) is None]
    if absent:
        return rec | {"measured": None, "error": f"not measured: the authors' call needs {', '.join(absent)} "
                                                 "(opencv-python-headless), which is not installed"}
    measured = {}
    for label, photo in photos.items():
        img = photo["image"]
        try:
            official = off.fn(root / off.repo, img)
        except (ValueError, RuntimeError) as e:  # the authors' code itself fails on this image
            measured[label] = {"official_error": f"{type(e).__name__}: {e}"}
            continue
        measured[label] = compare(official, ours(name, img))
    return rec | {"measured": measured, "train_resize": train_resize(name, root / off.repo, photos)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-root", type=Path, required=True, help="folder of <owner>+<name> checkouts")
    parser.add_argument("--detectors", default="", help="comma-separated subset (default: all in params.yaml)")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/preprocessing_audit.json")
    parser.add_argument("--doc", type=Path, default=None, help="also render this markdown file from the results")
    args = parser.parse_args()
    if not args.official_root.is_dir():
        sys.exit(f"--official-root {args.official_root}: not a folder")
    names = [n for n in args.detectors.split(",") if n] or list(TABLE)
    unknown = [n for n in names if n not in TABLE]
    if unknown:
        sys.exit(f"no official preprocessing entry for {', '.join(unknown)}")
    torch.set_num_threads(1)
    photos = photographs()
    rows = []
    for name in names:
        rows.append(audit_one(name, args.official_root, photos) | {"facts": FACTS[name]})
        print(json.dumps({"detector": name, "measured": rows[-1].get("measured"), "error": rows[-1].get("error")}),
              flush=True)
    report = {"benchmark": "preprocessing_audit", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/preprocessing_audit.py", *sys.argv[1:]]),
              "photographs": {k: {"source": v["source"], "shape": list(v["image"].shape)} for k, v in photos.items()},
              "versions": {"torch": torch.__version__, "torchvision": __import__("torchvision").__version__,
                           "pillow": __import__("PIL").__version__, "opencv": _cv2_version()},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    if args.doc:
        args.doc.write_text(render(report))
        print(f"wrote {args.doc}")


def _cv2_version() -> str | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2.__version__


if __name__ == "__main__":
    main()
