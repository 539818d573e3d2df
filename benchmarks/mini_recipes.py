"""Choose a detector's mini recipe by measuring: train + clean evaluation under candidate overrides.

    python benchmarks/mini_recipes.py sep [--set detectors.sep.overrides.mini.train.epochs=5 ...] [--label x]

The default run requires every detector that can learn to reach 85% ACC on its own training generator (vae8)
within a per-detector budget of time. Each call trains the detector from scratch in a working folder (this
checkout's prepared mini data, params.yaml plus the overrides, the clean test set only) and appends the training
and evaluation seconds, the vae8 ACC and the Mean ACC to ``results/benchmarks/mini_recipes.json``, so the recipe
chosen for params.yaml is written down with the alternatives it was measured against (quote the load average:
figures taken on a busy machine are not timings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mini import ROOT, train_and_evaluate, workdir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detector")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                        help="dotted params.yaml key and YAML value, e.g. detectors.sep.overrides.mini.train.epochs=5")
    parser.add_argument("--label", default="", help="a name for this candidate")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/mini_recipes.json")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    with tempfile.TemporaryDirectory(prefix="sep-bench-recipe-") as tmp:
        case = train_and_evaluate(workdir(Path(tmp), [args.detector], overrides), args.detector)
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "detector": args.detector,
              "label": args.label, "overrides": overrides, "loadavg": [round(x, 2) for x in os.getloadavg()],
              **{k: case[k] for k in ("train_seconds", "evaluate_seconds", "train_generator_acc", "mean_acc")}}
    history = json.loads(args.out.read_text()) if args.out.is_file() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([*history, record], indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
