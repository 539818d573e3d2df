"""Choose a detector's mini recipe by measuring: train + clean evaluation under candidate overrides.

    python benchmarks/mini_recipes.py sep [--set detectors.sep.overrides.mini.train.epochs=5 ...] [--label x]

The default run requires every detector that can learn to reach 85% ACC on its own training generator (vae8)
within a per-detector budget of time. Each call trains the detector from scratch in a working folder (this
checkout's prepared mini data, params.yaml plus the overrides, the clean test set only) and appends the training
and evaluation seconds, the vae8 ACC and the Mean ACC to ``results/benchmarks/mini_recipes.json``, so the recipe
chosen for params.yaml is written down with the alternatives it was measured against (quote the load average:
figures taken on a busy machine are not timings).

``--seed N`` trains with another seed (a recipe that passes should pass for other seeds too). ``--curve`` records
the learning curve instead of one result: the training generator's test ACC after every epoch (the run uses
``train.select_on: test``, whose training trajectory is the ``select_on: val`` run's; its checkpoint choice is not
a recipe result, so the record carries the curve and the last epoch's ACC only).
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


def _value(text: str):
    """A --set value as YAML, except that "1e-4" is the number YAML 1.1 would leave as a string."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detector")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                        help="dotted params.yaml key and YAML value, e.g. detectors.sep.overrides.mini.train.epochs=5")
    parser.add_argument("--label", default="", help="a name for this candidate")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the default run's is 0)")
    parser.add_argument("--curve", action="store_true", help="record the test ACC on the training generator after "
                        "every epoch")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/mini_recipes.json")
    args = parser.parse_args()
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    run_overrides = dict(overrides)
    if args.curve:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        train_generators = params["profiles"]["mini"]["data"]["train_generators"]
        run_overrides |= {f"detectors.{args.detector}.overrides.mini.train.select_on": "test",
                          "profiles.mini.data.test_generators": train_generators}
    with tempfile.TemporaryDirectory(prefix="sep-bench-recipe-") as tmp:
        case = train_and_evaluate(workdir(Path(tmp), [args.detector], run_overrides), args.detector, seed=args.seed)
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "detector": args.detector,
              "label": args.label, "seed": args.seed, "overrides": overrides,
              "loadavg": [round(x, 2) for x in os.getloadavg()]}
    if args.curve:
        curve = [{"epoch": h["epoch"], "train_loss": round(h["train_loss"], 4), "val_acc": h.get("val_acc"),
                  "train_generator_acc": h["test"]["mean"]["acc"]} for h in case["history"]]
        record |= {"curve": curve, "last_epoch_train_generator_acc": curve[-1]["train_generator_acc"],
                   "train_seconds_with_test_passes": case["train_seconds"]}
    else:
        record |= {k: case[k] for k in ("train_seconds", "evaluate_seconds", "train_generator_acc", "mean_acc")}
    history = json.loads(args.out.read_text()) if args.out.is_file() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([*history, record], indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
