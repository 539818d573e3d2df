"""What `formatonly`'s features can separate on mini, per source photograph, with and without alignment.

    python benchmarks/format_probe.py [--rules none,jpeg95,down0.75+jpeg95]

The mini test reals come from three photographs with different compression histories (docs/protocols.md#mini):
``flower`` (sklearn, a JPEG at quality 96 before it was shipped), ``grace_hopper`` (matplotlib, quality 80) and
the two ``motorcycle`` views (skimage stereo pair, PNG: never JPEG-compressed); the fakes are the five generators'
reconstructions of the same photographs' crops. For each photograph and alignment rule, a logistic regression on
the control's 35 fixed features (`baselines.formatonly.format_features` of the `luma_view`, exactly what the
control's head sees) is scored by 5-fold cross-validation on the real and fake test crops of that photograph
(the first 60 of each class, all five generators). Accuracy well above 50% on ``motorcycle``, a photograph without
any compression history, means the features also read something other than compression there (a generation
trace), so the control cannot be expected to reach chance on mini by any re-encoding.

Writes ``results/benchmarks/format_probe.json``; docs/protocols.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mini import ROOT  # noqa: E402

GENERATORS = ("vae8", "tconv", "nearest", "bilinear", "pixelshuffle")
PHOTOS = {"flower": "JPEG q96 before shipping", "grace_hopper": "JPEG q80 before shipping",
          "motorcycle": "PNG, never JPEG-compressed"}
PER_CLASS = 60


def features(paths: list[Path], align) -> np.ndarray:
    import torch
    from PIL import Image

    from sep_bench.baselines.formatonly import format_features, luma_view

    view = luma_view(128)  # the mini recipe's crop_size
    rows = []
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB"))
        if align is not None:
            img = align(img)
        with torch.no_grad():
            rows.append(format_features(view(img, None)["luma"][None])[0].numpy())
    return np.stack(rows)


def probe(rule: str, photo: str) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from sep_bench.engine.align import resolve_alignment

    align = resolve_alignment(rule).function()
    base = ROOT / "data/prepared/mini"
    real = [p for g in GENERATORS for p in sorted((base / g / "val/nature").glob(f"{photo}*"))][:PER_CLASS]
    fake = [p for g in GENERATORS for p in sorted((base / g / "val/ai").glob(f"{photo}*"))][:PER_CLASS]
    x = np.concatenate([features(real, align), features(fake, align)])
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    scores = cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=5)
    return {"rule": rule, "photo": photo, "history": PHOTOS[photo], "n_real": len(real), "n_fake": len(fake),
            "cv_acc": round(100.0 * float(scores.mean()), 1), "cv_acc_folds": [round(100.0 * s, 1) for s in scores]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="none,jpeg95,down0.75+jpeg95")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/format_probe.json")
    args = parser.parse_args()
    if not (ROOT / "data/prepared/mini").is_dir():
        sys.exit("no prepared mini data in this checkout: run `sep-bench data prepare` (profile mini) first")
    records = []
    for rule in [r.strip() for r in args.rules.split(",") if r.strip()]:
        for photo in PHOTOS:
            records.append(probe(rule, photo))
            print(json.dumps(records[-1]), flush=True)
    report = {"benchmark": "format_probe", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/format_probe.py", *sys.argv[1:]]),
              "loadavg": [round(x, 2) for x in os.getloadavg()], "records": records}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
