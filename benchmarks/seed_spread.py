"""The seed-to-seed spread of every learning row of a profile (default mini): each detector trained and evaluated
with several seeds, exactly as the DVC stages run it, and the spread of its Mean ACC over the seeds.

    python benchmarks/seed_spread.py [--detectors sep,npr] [--seeds 0,1,2] [--workdir DIR] [--out PATH]

The default run trains one seed per row (``run.seeds: [0]``): a row's Mean ACC is then one draw, and the table's
ranking means something only where two rows differ by more than the seed-to-seed spread. Three seeds in the
default run would triple its time; this script measures the spread once, and the report
(`sep_bench.report.spread`) states it beside each row of ``results/tables/<profile>_acc.md``.

Steps:
1. ``git clone`` of this repository's HEAD into ``--workdir`` (default ``$TMPDIR/sep-bench-seed-spread/<commit>``;
   uncommitted changes are NOT included: commit first). The clone reuses this checkout's ``.venv`` (a symbolic
   link) and PYTHONPATH puts the clone's sources first, as ``benchmarks/pipeline.py`` does. The committed
   metrics, predictions and robustness files of the profile are removed from the clone, so every figure here is
   computed in this run.
2. ``sep-bench data prepare``, then per detector ``sep-bench reconstruct --detector D`` and per seed
   ``sep-bench train --detector D --seed S`` and ``sep-bench evaluate --detector D --seed S`` (the commands of
   dvc.yaml's stages; a seed outside ``run.seeds`` needs no override: ``--seed`` is the run's seed).
3. Each run's Mean ACC and per-generator ACC (percent) from its metrics file; per detector the mean, the sample
   standard deviation over the seeds that finished, min..max, whether seed 0 equals the committed row
   (``results/metrics/<profile>/<D>/seed0.json`` at HEAD, per generator), the protocol hash of every seed, and the
   seconds of each command.

Robust and resumable: a failed command is recorded (its step and the end of its output) and the others go on;
a run recorded as finished in ``--workdir`` is not run again, a recorded failure is tried again (an interrupted
run resumes with the same command; training itself resumes from its checkpoint). The JSON report is rewritten after every run, so a partial
measurement is never lost. Progress goes to stdout, each command's output to ``--workdir/logs``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, clone_sources, write_report

ROOT = REPO_ROOT
RESULT_KINDS = ("metrics", "predictions", "robustness")


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def prepare_clone(workdir: Path, commit: str, profile: str) -> Path:
    """The clone at `commit` (created once; reused by a resumed run) without the profile's committed results."""
    clone = workdir / "clone"
    if clone.is_dir():
        have = _git("rev-parse", "HEAD", cwd=clone)
        if have != commit:
            raise SystemExit(f"{clone} is at {have[:12]}, HEAD is {commit[:12]}: give another --workdir or remove it")
        return clone
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", commit], cwd=clone, check=True)
    for kind in RESULT_KINDS:
        shutil.rmtree(clone / "results" / kind / profile, ignore_errors=True)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    return clone


class Runner:
    """Runs `sep-bench` commands in the clone with this checkout's environment; each command's output to a log.

    `warm`: as `sep-bench pipeline` does, one warm server (`sep_bench.warm`) imports torch & co. once and each
    command runs in a forked child of it (the same command, arguments, working directory and environment), which
    saves the seconds of imports per command; without it every command starts a fresh interpreter."""

    def __init__(self, clone: Path, logs: Path, warm: bool = True, omp_passive: bool = False):
        from sep_bench.warm import WarmServer

        self.clone, self.logs = clone, logs
        self.exe = str(ROOT / ".venv/bin/sep-bench")
        env = {"HF_HUB_OFFLINE": "1", **os.environ, "PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}",
               **clone_sources(clone)}
        if omp_passive:  # waiting OpenMP threads sleep instead of spinning: same threads, same numbers
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        self.server = WarmServer(env, logs / "warm-server.log") if warm else None
        self.env = self.server.env if self.server else env
        logs.mkdir(parents=True, exist_ok=True)
        if self.server:
            self.server.start()

    def close(self) -> None:
        if self.server:
            self.server.stop()

    def __call__(self, tag: str, *args: str) -> dict:
        """{"ok", "seconds", "error" (the end of the output, on failure)}; never raises for a failed command."""
        t0 = time.perf_counter()
        proc = subprocess.run([self.exe, *args], cwd=self.clone, env=self.env, capture_output=True, text=True)
        seconds = round(time.perf_counter() - t0, 1)
        text = proc.stdout + proc.stderr
        (self.logs / f"{tag}.log").write_text(text)
        out = {"ok": proc.returncode == 0, "seconds": seconds}
        if proc.returncode != 0:
            out["error"] = f"exit {proc.returncode}: " + text.strip()[-1500:]
        return out


def acc_of(metrics: dict) -> tuple[float, dict[str, float]]:
    """(Mean ACC, {generator: ACC}) in percent, from one evaluation's metrics file."""
    per = {g: round(100 * r["acc"], 4) for g, r in metrics["generators"].items()}
    return round(100 * metrics["mean"]["acc"], 4), per


def committed_row(profile: str, detector: str, commit: str) -> dict | None:
    """The committed seed-0 metrics the table's row comes from (at `commit`), or None when there is none."""
    try:
        return json.loads(_git("show", f"{commit}:results/metrics/{profile}/{detector}/seed0.json"))
    except (subprocess.CalledProcessError, json.JSONDecodeError):
        return None


def run_seed(run: Runner, clone: Path, profile: str, detector: str, seed: int) -> dict:
    """Train and evaluate one (detector, seed); the record of the run (ACC or the failed step)."""
    load_before = list(os.getloadavg())
    rec: dict = {"seed": seed, "loadavg_before": [round(x, 2) for x in load_before]}
    for step in ("train", "evaluate"):
        res = run(f"{detector}-seed{seed}-{step}", step, "--detector", detector, "--seed", str(seed))
        rec[f"{step}_seconds"] = res["seconds"]
        if not res["ok"]:
            return {**rec, "ok": False, "failed_step": step, "error": res["error"]}
    metrics = json.loads((clone / "results/metrics" / profile / detector / f"seed{seed}.json").read_text())
    mean, per = acc_of(metrics)
    return {**rec, "ok": True, "mean_acc": mean, "generators": per, "protocol_hash": metrics["protocol_hash"]}


def summarise(detector: str, records: list[dict], committed: dict | None, recon: dict | None) -> dict:
    """Per-seed Mean ACC, mean, sample std, min..max and the seed-0 sanity check of one detector."""
    done = [r for r in records if r.get("ok")]
    means = [r["mean_acc"] for r in done]
    out: dict = {
        "seeds": [r["seed"] for r in done],
        "mean_acc_per_seed": {str(r["seed"]): r["mean_acc"] for r in done},
        "generators_per_seed": {str(r["seed"]): r["generators"] for r in done},
        "protocol_hash_per_seed": {str(r["seed"]): r["protocol_hash"] for r in done},
        "mean": round(statistics.fmean(means), 4) if means else None,
        "std": round(statistics.stdev(means), 4) if len(means) >= 2 else None,
        "min": min(means) if means else None,
        "max": max(means) if means else None,
        "failed": [{k: r[k] for k in ("seed", "failed_step", "error") if k in r} for r in records if not r.get("ok")],
        "reconstruct": recon,
        "runs": records,
        "wall_seconds": round(sum(r.get("train_seconds", 0) + r.get("evaluate_seconds", 0) for r in records)
                              + (recon or {}).get("seconds", 0), 1),
    }
    seed0 = next((r for r in done if r["seed"] == 0), None)
    if committed is None or seed0 is None:
        out["seed0_equals_committed"] = None
    else:
        _, per = acc_of(committed)
        out["seed0_equals_committed"] = per == seed0["generators"]
        out["committed_protocol_hash"] = committed["protocol_hash"]
    return out


def _load_record(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _save_record(path: Path, rec: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1) + "\n")
    return rec


def measure_detector(run: Runner, clone: Path, records: Path, args, detector: str, commit: str) -> dict:
    """One detector: its reconstruction stage once, then every seed (skipping the seeds already recorded)."""
    recon_path = records / detector / "reconstruct.json"
    recon = _load_record(recon_path)
    if recon is None or not recon["ok"]:  # a failure recorded by an earlier invocation is tried again
        recon = _save_record(recon_path, run(f"{detector}-reconstruct", "reconstruct", "--detector", detector))
    runs = []
    for seed in args.seeds:
        path = records / detector / f"seed{seed}.json"
        rec = _load_record(path)
        if rec is not None and rec.get("ok"):
            print(f"  {detector} seed {seed}: recorded, Mean ACC {rec['mean_acc']:.2f}", flush=True)
        elif not recon["ok"]:
            rec = {"seed": seed, "ok": False, "failed_step": "reconstruct", "error": recon.get("error", "")}
        else:
            rec = _save_record(path, run_seed(run, clone, args.profile, detector, seed))
            state = f"Mean ACC {rec['mean_acc']:.2f}" if rec["ok"] else f"FAILED at {rec['failed_step']}"
            print(f"  {detector} seed {seed}: {state} (train {rec.get('train_seconds', '-')} s, evaluate "
                  f"{rec.get('evaluate_seconds', '-')} s)", flush=True)
        runs.append(rec)
    return summarise(detector, runs, committed_row(args.profile, detector, commit), recon)


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", default=None, help="comma-separated subset of run.detectors (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--profile", default=None, help="params.yaml profile (default: params.yaml's `profile`)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="the clone and the per-run records (default: $TMPDIR/sep-bench-seed-spread/<commit>)")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/seed_spread.json")
    parser.add_argument("--cold", action="store_true", help="start every command normally, without the warm server")
    parser.add_argument("--omp-passive", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE for the commands: on a CPU shared with other work, OpenMP "
                             "threads that spin while waiting for a descheduled peer burn the cores; the thread count "
                             "and so every number stay the same")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if len(args.seeds) < 2:
        raise SystemExit("--seeds: give at least two seeds (a spread needs two)")
    return args


def _protocol(args: argparse.Namespace) -> tuple[str, list[str]]:
    """(profile, detectors to measure), checked against params.yaml."""
    from sep_bench.protocol import load_params

    params = load_params(ROOT / "params.yaml")
    profile = args.profile or params.profile
    detectors = list(params.run.detectors)
    if args.detectors:
        wanted = [d.strip() for d in args.detectors.split(",") if d.strip()]
        unknown = sorted(set(wanted) - set(detectors))
        if unknown:
            raise SystemExit(f"--detectors: not in run.detectors: {', '.join(unknown)}")
        detectors = [d for d in detectors if d in wanted]
    return profile, detectors


def by_committed_mean(profile: str, detectors: list[str], commit: str) -> list[str]:
    """`detectors`, the highest committed Mean ACC first (the rows whose ranking the table's marks claim are
    measured first, so an interrupted measurement has them); rows without a committed result last."""
    def key(d: str) -> float:
        row = committed_row(profile, d, commit)
        return -row["mean"]["acc"] if row else 1.0

    return sorted(detectors, key=key)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    args.profile, detectors = _protocol(args)
    commit = _git("rev-parse", "HEAD")
    workdir = args.workdir or Path(tempfile.gettempdir()) / "sep-bench-seed-spread" / commit[:12]
    clone = prepare_clone(workdir, commit, args.profile)
    detectors = by_committed_mean(args.profile, detectors, commit)
    print(f"seed spread of {len(detectors)} detector(s), seeds {args.seeds}, profile {args.profile}, "
          f"commit {commit[:12]}; clone {clone}", flush=True)
    run = Runner(clone, workdir / "logs", warm=not args.cold, omp_passive=args.omp_passive)
    try:
        measure_all(run, clone, workdir, args, detectors, commit)
    finally:
        run.close()


def measure_all(run: Runner, clone: Path, workdir: Path, args, detectors: list[str], commit: str) -> None:
    """The data stage, then every detector (the report rewritten after each)."""
    records = workdir / "records"
    t0 = time.perf_counter()
    data = _load_record(records / "data.json")
    if data is None or not data["ok"]:
        data = _save_record(records / "data.json", run("data", "data", "prepare"))
    if not data["ok"]:
        raise SystemExit(f"sep-bench data prepare failed (log: {workdir / 'logs/data.log'}):\n{data['error']}")
    print(f"data prepare: {data['seconds']} s", flush=True)
    results: dict[str, dict] = {}
    for i, detector in enumerate(detectors, 1):
        print(f"[{i}/{len(detectors)}] {detector}", flush=True)
        results[detector] = s = measure_detector(run, clone, records, args, detector, commit)
        if s["std"] is not None:
            print(f"  {detector}: Mean ACC {s['mean']:.2f} +- {s['std']:.2f} over seeds {s['seeds']} "
                  f"(range {s['min']:.2f}..{s['max']:.2f}); seed 0 = committed row: {s['seed0_equals_committed']}",
                  flush=True)
        payload = {"profile": args.profile, "seeds": args.seeds, "commit": commit, "data_seconds": data["seconds"],
                   "wall_seconds": round(data["seconds"] + sum(r["wall_seconds"] for r in results.values()), 1),
                   "elapsed_seconds_this_invocation": round(time.perf_counter() - t0, 1),
                   "complete": i == len(detectors), "order": detectors, "warm_start": not args.cold,
                   "detectors": results}
        write_report(args.out, "seed_spread", args, None, payload)


if __name__ == "__main__":
    main()
