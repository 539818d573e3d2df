"""The format control under each alignment rule: does `formatonly` fall to chance on mini once both classes are
re-encoded alike?

    python benchmarks/format_alignment.py [--rules jpeg95,down0.5+jpeg95,...] [--seeds 0,1,2]

`formatonly` reads JPEG quantisation traces only (baselines/formatonly.py), so its ACC above 50% under an alignment
is format the alignment left behind. Two settings per rule, each trained from scratch in a working folder with this
checkout's prepared mini data (benchmarks/_mini.py) and evaluated on *all* test images (variant_subset off):

- ``eval_only``: trained on the images as stored (the pipeline's formatonly), evaluated with ``eval.align: rule``
  (the ``aligned`` variant of its evaluation), as the report's format table does;
- ``train_and_eval``: trained with ``train.align: rule`` too, so the head can learn whatever trace the alignment
  leaves (a leak that a classifier trained on aligned data can still read is a leak, even when the clean-trained
  head happens to be confused by it).

``jpeg`` (the real images' own quality) needs real JPEG files; mini's reals are PNG, so it is recorded as not
applicable there. Writes ``results/benchmarks/format_alignment.json``; docs/protocols.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info  # noqa: E402
from _mini import KERNEL_VARS, ROOT, workdir  # noqa: E402

DETECTOR = "formatonly"
DEFAULT_RULES = "jpeg95,jpeg75,jpeg50,down0.5+jpeg95,down0.75+jpeg95,blur1+jpeg95,down0.5+jpeg75"


def _run(work: Path, command: str, seed: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARS} | {"HF_HUB_OFFLINE": "1"}
    sep_bench = str(Path(sys.executable).with_name("sep-bench"))
    proc = subprocess.run([sep_bench, command, "--detector", DETECTOR, "--seed", str(seed), "--no-track"], cwd=work,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _accs(metrics: dict) -> dict:
    return {k: round(100.0 * metrics["mean"][k], 2) for k in ("acc", "real_acc", "fake_acc")} | {
        "n_images": metrics.get("n_images")}


def _case(tmp: Path, rule: str, train_rule: str, seed: int) -> dict:
    """Train formatonly with train.align `train_rule`, evaluate with eval.align `rule` on every test image."""
    work = workdir(tmp / f"{train_rule}__{rule}__{seed}".replace("+", "_"), [DETECTOR], {
        "profiles.mini.eval.align": rule, "profiles.mini.eval.variant_subset": None,
        "profiles.mini.train.align": train_rule, f"detectors.{DETECTOR}.overrides.mini.eval.perturbations": []})
    t0 = time.perf_counter()
    _run(work, "train", seed)
    _run(work, "evaluate", seed)
    out = work / f"results/robustness/mini/{DETECTOR}/seed{seed}"
    aligned = json.loads((out / "aligned.json").read_text())
    clean = json.loads((work / f"results/metrics/mini/{DETECTOR}/seed{seed}.json").read_text())
    return {"clean": _accs(clean), "aligned": _accs(aligned), "applied": aligned["align"],
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default=DEFAULT_RULES, help="comma-separated alignment names (engine.align)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/format_alignment.json")
    args = parser.parse_args()
    if not (ROOT / "data/prepared/mini").is_dir():
        sys.exit("no prepared mini data in this checkout: run `sep-bench data prepare` (profile mini) first")
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    records = [{"rule": "jpeg", "applicable": False,
                "reason": "mini's real images are PNG files: there is no real JPEG quality to read (use jpeg<q>)"}]
    with tempfile.TemporaryDirectory(prefix="sep-bench-format-") as tmp:
        for rule in rules:
            for setting, train_rule in (("eval_only", "none"), ("train_and_eval", rule)):
                runs = [_case(Path(tmp), rule, train_rule, s) | {"seed": s} for s in seeds]
                mean = round(sum(r["aligned"]["acc"] for r in runs) / len(runs), 2)
                record = {"rule": rule, "setting": setting, "train_align": train_rule, "aligned_acc_mean": mean,
                          "runs": runs}
                records.append(record)
                print(json.dumps({k: record[k] for k in ("rule", "setting", "aligned_acc_mean")}), flush=True)
    report = {"benchmark": "format_alignment", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/format_alignment.py", *sys.argv[1:]]),
              "profile": "mini", "detector": DETECTOR, "seeds": seeds,
              "loadavg": [round(x, 2) for x in os.getloadavg()], "machine": machine_info(),
              "records": records}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
