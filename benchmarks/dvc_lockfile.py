"""DVC's per-stage lockfile update, plain against sep_bench.dvc_lockfile's fast one, on this checkout's dvc.lock.

    python benchmarks/dvc_lockfile.py [--repeat 5] [--out results/benchmarks/dvc_lockfile.json]

After every stage ``dvc repro`` reads the whole dvc.lock, replaces the stage's entry and writes it back. This times
that read-modify-write (DVC's ``modify_yaml`` against the fast one, on copies of the lockfile, best of
`--repeat`), prints the ratio, and what it adds up to over the run's stages; then checks that canonicalizing the
fast result gives DVC's bytes back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _update_seconds(modify, lock: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        with modify(lock) as data:
            stages = data["stages"]
            name = next(iter(stages))
            stages[name] = dict(stages[name])   # what DVC does: the stage's new entry replaces the old one
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/dvc_lockfile.json")
    args = parser.parse_args()

    import dvc.dvcfile
    from dvc.utils.serialize import modify_yaml

    from sep_bench import dvc_lockfile

    with tempfile.TemporaryDirectory() as tmp:
        plain_lock, fast_lock = Path(tmp) / "plain" / "dvc.lock", Path(tmp) / "fast" / "dvc.lock"
        for lock in (plain_lock, fast_lock):
            lock.parent.mkdir()
            shutil.copy(ROOT / "dvc.lock", lock)
        plain = _update_seconds(modify_yaml, plain_lock, args.repeat)
        dvc_lockfile.install()
        fast = _update_seconds(dvc.dvcfile.modify_yaml, fast_lock, args.repeat)
        dvc_lockfile.canonicalize(fast_lock)
        same = fast_lock.read_bytes() == plain_lock.read_bytes()
    import yaml

    n_stages = len(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "lockfile_bytes": (ROOT / "dvc.lock").stat().st_size,
        "stages": n_stages,
        "plain_seconds_per_update": round(plain, 3),
        "fast_seconds_per_update": round(fast, 3),
        "ratio": round(plain / fast, 1),
        "saved_seconds_per_run": round((plain - fast) * n_stages, 1),
        "canonical_bytes_identical": same,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"lockfile update ({record['lockfile_bytes'] / 1e3:.0f} KB): plain {plain:.2f} s, fast {fast:.2f} s "
          f"(x{record['ratio']}); over {n_stages} stages: {record['saved_seconds_per_run']:.0f} s saved; "
          f"canonical bytes identical: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
