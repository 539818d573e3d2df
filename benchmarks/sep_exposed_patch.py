"""What does SEP's exposed patch carry of the training generator's trace on minigen, and can a probe read it?

    python benchmarks/sep_exposed_patch.py [--out results/benchmarks/sep_exposed_patch.json]

SEP's mini row plateaus near 80% ACC on vae8 (results/benchmarks/mini_recipes.json), below the learning check's
85%. This script asks whether the patch or the classifier is the limit. For SEP's own patch choice (`choose_patch`,
the mini recipe: 64 candidates in training, 256 at evaluation) and for a random patch of the same size, over the
prepared vae8 images (training photos -> the test photos, as the learning check):

- ``abs_diff``: mean |real - fake| (grey levels) between a real image's patch and its reconstruction's patch at the
  same position (minigen's fakes are reconstructions of the reals, so the pairs are aligned);
- ``texture``: per-class medians of four statistics of the patch's grey level (mean |Laplacian|, its std,
  mean |vertical|, mean |horizontal| difference);
- ``probe``: a standardised logistic regression fitted on the training photos' patches and scored on the test
  photos', on the texture statistics, on colour (per-channel mean and std), and on both.

The data stage must have run (``data/prepared/mini``). Numbers depend only on the images and the seeds here.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mini import ROOT  # noqa: E402


def texture_stats(patch: np.ndarray) -> np.ndarray:
    g = patch.astype(float).mean(2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return np.array([np.abs(lap).mean(), lap.std(), np.abs(np.diff(g, axis=0)).mean(),
                     np.abs(np.diff(g, axis=1)).mean()])


def colour_stats(patch: np.ndarray) -> np.ndarray:
    p = patch.astype(float)
    return np.r_[p.mean((0, 1)), p.std((0, 1))]


def patches(split_dir: Path, train: bool, mode: str, cfg) -> dict:
    """Per image of both classes: texture and colour statistics of the chosen patch, the label, |real - fake|."""
    from sep_bench.baselines.sep import choose_patch

    size = cfg.patch_size
    out = {"texture": [], "colour": [], "label": [], "abs_diff": []}
    names = sorted(p.name for p in (split_dir / "nature").glob("*.png"))
    for k, name in enumerate(names):
        pair = {lab: np.asarray(Image.open(split_dir / d / name).convert("RGB")) for lab, d in ((0, "nature"), (1, "ai"))}
        for label, img in pair.items():
            rng = np.random.default_rng(k)
            if mode == "exposed":
                _, y, x = choose_patch(cfg, img, rng, train=train)
            else:
                y, x = (int(rng.integers(0, n - size + 1)) for n in img.shape[:2])
            patch, other = img[y:y + size, x:x + size], pair[1 - label][y:y + size, x:x + size]
            out["texture"].append(texture_stats(patch))
            out["colour"].append(colour_stats(patch))
            out["label"].append(label)
            out["abs_diff"].append(float(np.abs(patch.astype(float) - other.astype(float)).mean()))
    return {k: np.array(v) for k, v in out.items()}


def probe(train: dict, test: dict, features: list[str]) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr, xte = (np.hstack([d[f] for f in features]) for d in (train, test))
    scale = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=5000).fit(scale.transform(xtr), train["label"])
    return {"train_acc": round(float(clf.score(scale.transform(xtr), train["label"])), 4),
            "test_acc": round(float(clf.score(scale.transform(xte), test["label"])), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared/mini")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/sep_exposed_patch.json")
    args = parser.parse_args()
    from sep_bench.protocol import load_params, resolve
    from sep_bench.baselines.sep import SEPConfig

    spec = resolve(load_params(ROOT / "params.yaml"), "sep", "mini")  # SEP's mini recipe, as training gets it
    generator = spec.profile.data.train_generators[0]
    cfg = SEPConfig(**spec.recipe.model)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "generator": generator,
              "sep_mini_model": cfg.model_dump()}
    for mode in ("exposed", "random"):
        train = patches(args.data / generator / "train", True, mode, cfg)
        test = patches(args.data / generator / "val", False, mode, cfg)
        result[mode] = {
            "abs_diff": {"train": round(float(train["abs_diff"].mean()), 2), "test": round(float(test["abs_diff"].mean()), 2)},
            "texture_median": {split: {cls: np.round(np.median(d["texture"][d["label"] == c], 0), 2).tolist()
                                       for c, cls in ((0, "real"), (1, "fake"))}
                               for split, d in (("train", train), ("test", test))},
            "probe": {name: probe(train, test, feats) for name, feats in
                      (("texture", ["texture"]), ("colour", ["colour"]), ("both", ["texture", "colour"]))},
        }
        print(f"{mode:8s} |real-fake| train {result[mode]['abs_diff']['train']:5.2f} test "
              f"{result[mode]['abs_diff']['test']:5.2f}; probe test ACC " + ", ".join(
                  f"{k} {v['test_acc']:.3f}" for k, v in result[mode]["probe"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
