"""A small pipeline on a local SLURM cluster against the same stages run locally: wall time, per-job overhead,
and whether the cluster leaves exactly what a local ``dvc repro`` leaves.

    scripts/slurm-local.sh start && python benchmarks/cluster.py [--out results/benchmarks/cluster.json]
    python benchmarks/cluster.py --doc      # docs/cluster.md's figures from the results file

The pipeline (the same in tests/test_cluster.py, which imports this module): two cheap detectors that learn (NPR,
CNNSpot), one seed, no selection stage, on a shrunken mini profile (the pinned minigen generators, fewer and
smaller images; 3 epochs, so a training can be preempted after its first epoch's checkpoint):
data -> reconstruct -> train@npr-0, train@cnnspot-0 -> evaluate@npr-0, evaluate@cnnspot-0 -> report.

Steps: two copies of this working tree (tracked and untracked-not-ignored files, each its own git repository)
share nothing but the virtual environment. In copy A, ``dvc repro`` (the local reference). In copy B,
``sep-bench cluster submit``; once ``train@npr-0`` has written ``last.safetensors`` its job is requeued
(``scontrol requeue``: what SLURM does to a preempted job with PreemptMode=REQUEUE); SLURM starts it again
once its requeue hold ends, and it resumes; then every job must complete. (The preemption comes after an epoch's checkpoint:
resumed from a mid-epoch checkpoint, the weights are bit-identical too, but the torch RNG state saved in
``last.safetensors`` is not: the resumed epoch's data loader draws its base seed from the global RNG once more.) Compared: the ``dvc.lock`` entries of every stage, the
tables (byte for byte), ``dvc status`` of B, and B's MLflow runs (one parent, the stage runs nested under it).

Measured: wall time local vs cluster (submit to the last job's end), and the overhead per job: the cluster's
summed job run time minus the local stages' summed time, per job (scheduling, a cold start of DVC and the
stage command per job, lock waits). Both sides start every stage command cold (plain ``dvc repro``, no warm start).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import clone_sources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DETECTORS = ("npr", "cnnspot")
PREEMPT_STAGE = "train@npr-0"
STAGES = ("data", *(f"reconstruct@{d}" for d in DETECTORS),
          *(f"{k}@{d}-0" for k in ("train", "evaluate") for d in DETECTORS), "report")
GIT_ENV = {"GIT_AUTHOR_NAME": "sep-bench", "GIT_AUTHOR_EMAIL": "sep-bench@localhost",
           "GIT_COMMITTER_NAME": "sep-bench", "GIT_COMMITTER_EMAIL": "sep-bench@localhost"}


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 1800) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}) in {cwd}:\n{res.stdout[-3000:]}\n"
                           f"{res.stderr[-3000:]}")
    return res.stdout + res.stderr


def shrink(params: dict) -> dict:
    """The small pipeline's params: two detectors, one seed, no selection, small minigen, resumable training."""
    params["run"].update(detectors=list(DETECTORS), seeds=[0], selection=[])
    mini = params["profiles"]["mini"]
    mini["data"]["minigen"] = {"seed": 0, "image_size": 48, "n_train_real": 24, "n_val_real": 8, "n_test_real": 8}
    mini["train"].update(epochs=3, batch_size=8)
    mini["eval"].update(variant_subset=4)
    over = params["detectors"]
    over["npr"]["overrides"]["mini"]["model"] = {"crop_size": 32, "train_resize": None, "layers": [1, 1]}
    over["cnnspot"]["overrides"]["mini"]["model"] = {"backbone": "resnet18", "crop_size": 32, "train_resize": None}
    params["cluster"] = {"default": {"cpus": 1, "time": "00:30:00"}}
    return params


def make_copy(dest: Path, source: Path = ROOT) -> dict:
    """A copy of `source`'s working tree at `dest` (its own git repository, shrunken params); the environment."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=source,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        if (source / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / f, dest / f)
    params = shrink(yaml.safe_load((dest / "params.yaml").read_text()))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stale in ("results/metrics", "results/predictions", "results/robustness", "results/selection",
                  "results/tables", "results/plots", "dvc.lock"):
        target = dest / stale
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    # the report stage depends on results/selection/<profile>, which no stage writes when run.selection is empty
    (dest / "results/selection/mini").mkdir(parents=True)
    env = {**os.environ, **GIT_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for var in ("DVC_ROOT", "DVC_STAGE", "MLFLOW_TRACKING_URI", "SEP_BENCH_PIPELINE_ID", "SEP_BENCH_PARENT_RUN_ID"):
        env.pop(var, None)
    run(["git", "init", "-q"], dest, env)
    env.update(clone_sources(dest))  # the copy's own sources, its detector modules included (after git init: the
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):  # link is kept out of the commit)
        run(cmd, dest, env)
    return env


def run_local(dest: Path, env: dict) -> dict:
    """`dvc repro` in `dest`: total seconds and each stage's seconds (from the order DVC prints them in)."""
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro"], cwd=dest, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    stages: dict[str, float] = {}
    current, t0 = None, start
    for line in proc.stdout:
        if m := re.match(r"Running stage '([^']+)'", line):
            now = time.perf_counter()
            if current:
                stages[current] = round(now - t0, 2)
            current, t0 = m.group(1), now
    if proc.wait() != 0:
        raise RuntimeError(f"dvc repro failed in {dest}")
    total = time.perf_counter() - start
    if current:
        stages[current] = round(time.perf_counter() - t0, 2)
    return {"seconds": round(total, 2), "stages": stages}


def _scontrol(*args: str) -> str:
    res = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"scontrol {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def preempt(dest: Path, job: str, stage_dir: Path, log, timeout_s: float = 900) -> dict:
    """Requeue `job` once it is running and has checkpointed its first epoch (``last.json`` at epoch 1, step 0)
    and not finished. SLURM itself starts it again: it holds a requeued job (Reason=BeginTime) until the old
    attempt's credential has expired (scripts/slurm-local.sh: ``AuthInfo=cred_expire=10``) and then schedules
    it; nothing here releases it earlier (a job launched inside that window dies with "Job credential revoked")."""
    from sep_bench.cluster.status import TERMINAL, job_states

    last = stage_dir / "last.json"
    deadline = time.monotonic() + timeout_s
    while True:
        state = job_states([job]).get(job)
        if state and state.state == "RUNNING" and _position(last) == {"epoch": 1, "step": 0}:
            _scontrol("requeue", job)
            at = time.monotonic()
            log(f"preempted {PREEMPT_STAGE} (job {job}) with scontrol requeue after its epoch-1 checkpoint")
            break
        if (state and state.state in TERMINAL) or time.monotonic() > deadline:
            raise RuntimeError(f"job {job} ended (or never ran) before it could be preempted: {state}")
        time.sleep(0.05)
    held = None
    while True:  # until SLURM has started the second attempt (or it ended)
        state = job_states([job]).get(job)
        if state and state.state == "PENDING" and held is None:
            held = state.reason
            log(f"requeued: job {job} PENDING (reason {state.reason}, restarts {state.restarts})")
        if state and state.restarts >= 1 and state.state != "PENDING" and held is not None:
            waited = round(time.monotonic() - at, 2)
            log(f"job {job} {state.state} again {waited} s after its requeue (started by SLURM)")
            return {"job": job, "restarted_after_s": waited, "reason": held}
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job} did not start again after its requeue: {state}")
        time.sleep(0.2)


def _position(last_json: Path) -> dict | None:
    try:
        return json.loads(last_json.read_text()).get("position")
    except (OSError, ValueError, AttributeError):
        return None


def _seconds(runtime: str) -> float | None:
    """SLURM's [D-]HH:MM:SS -> seconds."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})", runtime or "")
    if not m:
        return None
    d, h, mi, s = (int(x or 0) for x in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)


def run_cluster(dest: Path, env: dict, log, timeout_s: float = 1500) -> dict:
    """`sep-bench cluster submit` in `dest`, one preemption of the NPR training, then wait for every job."""
    from sep_bench.cluster.status import wait
    from sep_bench.cluster.submit import load_submission

    start = time.perf_counter()
    out = run(["sep-bench", "cluster", "submit"], dest, env)
    submit_s = time.perf_counter() - start
    sub = load_submission(dest)
    log(f"submitted in {submit_s:.1f} s: " + ", ".join(f"{s}={j}" for s, j in sub.jobs.items()))
    log("job groups: " + "; ".join(f"{g['job']} {g['kind']} x{len(g['stages'])} {g['dependency'] or ''}".strip()
                                   for g in sub.groups))
    preemption = preempt(dest, sub.jobs[PREEMPT_STAGE], dest / "runs/mini/npr/seed0/train", log)
    states = wait(sub, timeout_s=timeout_s, poll_s=1.0)
    wall = time.perf_counter() - start
    for stage, st in states.items():
        log(f"{stage}: job {st.job} {st.state} attempts {st.restarts + 1} run time {st.elapsed} exit {st.exit_code}")
    logs = "".join(p.read_text(errors="replace") for p in sorted((sub.folder / "logs").glob("*.out")))
    return {"seconds": round(wall, 2), "submit_seconds": round(submit_s, 2), "submit_output": out,
            "jobs": sub.jobs, "groups": sub.groups, "parent_run_id": sub.parent_run_id, "preemption": preemption,
            "states": {s: vars(st) for s, st in states.items()},
            "job_seconds": {s: _seconds(st.elapsed) for s, st in states.items()}, "logs": logs}


# ---- comparison with the local run -------------------------------------------------------------------------------

# Fields and table columns that are measurements of the machine (time, throughput, memory), not results: they
# differ between any two runs, local or not. Everything else must be identical.
MEASURED_KEYS = {"seconds", "images_per_s", "peak_memory_mib"}
MEASURED_COLUMNS = {"img/s", "Mem (MiB)"}
MEASURED_FILES = {"mini_acc_vs_cost.png", "mini_acc_vs_cost.svg"}  # ACC against img/s and memory


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in MEASURED_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _same_file(a: Path, b: Path) -> str | None:
    """None if `a` and `b` are byte-identical; "measured" if they are JSON differing only in measured fields;
    else a description of the difference."""
    if a.read_bytes() == b.read_bytes():
        return None
    if a.parent.name == "tables":
        return _table_verdict(a, b)
    if a.name in MEASURED_FILES:
        return "measured"
    if a.suffix == ".json":
        try:
            if _strip(json.loads(a.read_text())) == _strip(json.loads(b.read_text())):
                return "measured"
        except json.JSONDecodeError:
            pass
    return f"{a.name} differs"


def _same_path(a: Path, b: Path) -> str | None:
    if a.is_dir() and b.is_dir():
        fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        if fa != fb:
            return f"different files: {sorted(set(map(str, fa)) ^ set(map(str, fb)))[:5]}"
        verdicts = [_same_file(a / f, b / f) for f in fa]
        bad = [v for v in verdicts if v not in (None, "measured")]
        return bad[0] if bad else ("measured" if "measured" in verdicts else None)
    if a.is_file() and b.is_file():
        return _same_file(a, b)
    return "missing on one side"


def compare_locks(local: Path, cluster: Path, stages=STAGES) -> dict:
    """Per stage: the dvc.lock entries of the two workspaces, equal or not (a path whose hash differs counts as
    equal only when its content differs in measured fields alone, and is listed under `measured`)."""
    la = yaml.safe_load((local / "dvc.lock").read_text())["stages"]
    lb = yaml.safe_load((cluster / "dvc.lock").read_text())["stages"]
    out = {"equal": True, "stages": {}, "measured": []}
    for stage in stages:
        ea, eb = la.get(stage), lb.get(stage)
        problems = [] if ea and eb else [f"missing in {'local' if not ea else 'cluster'} dvc.lock"]
        for key in ("cmd", "params"):
            if ea and eb and ea.get(key) != eb.get(key):
                problems.append(f"{key} differs")
        for section in ("deps", "outs"):
            pa = {d["path"]: d for d in (ea or {}).get(section, [])}
            pb = {d["path"]: d for d in (eb or {}).get(section, [])}
            if set(pa) != set(pb):
                problems.append(f"{section} paths differ: {sorted(set(pa) ^ set(pb))}")
            for path in sorted(set(pa) & set(pb)):
                if pa[path] == pb[path]:
                    continue
                verdict = _same_path(local / path, cluster / path)
                if verdict == "measured":
                    out["measured"].append(f"{stage} {section} {path}")
                else:
                    problems.append(f"{section} {path}: {verdict or 'hash differs, files equal'}")
        out["stages"][stage] = problems or "equal"
        out["equal"] &= not problems
    return out


def _rows(path: Path) -> list[list[str]]:
    """A table file's lines as cells (markdown: |, LaTeX: &, CSV: the csv module); prose lines are one cell."""
    import csv
    import io

    text = path.read_text()
    if path.suffix == ".csv":
        return list(csv.reader(io.StringIO(text)))
    sep = "|" if path.suffix == ".md" else "&"
    return [[c.strip().removesuffix("\\\\").strip() for c in line.split(sep)] for line in text.splitlines()]


def _table_verdict(a: Path, b: Path) -> str | None:
    """None: byte-identical; "measured": only cells of measured columns (img/s, Mem) differ; else what differs."""
    if a.read_bytes() == b.read_bytes():
        return None
    ra, rb = _rows(a), _rows(b)
    if len(ra) != len(rb):
        return f"{a.name}: {len(ra)} vs {len(rb)} lines"
    header: list[str] = []
    for x, y in zip(ra, rb):
        if MEASURED_COLUMNS & set(x):
            header = x
        if x == y:
            continue
        diff = [i for i, (p, q) in enumerate(zip(x, y)) if p != q]
        if len(x) != len(y) or any(i >= len(header) or header[i] not in MEASURED_COLUMNS for i in diff):
            return f"{a.name}: {' | '.join(x)[:200]} vs {' | '.join(y)[:200]}"
    return "measured"


def compare_tables(local: Path, cluster: Path) -> dict:
    """Every file of results/tables: byte-identical, or (the tables with cost columns) identical except the cells
    of measured columns."""
    out: dict[str, list[str]] = {"identical": [], "measured_cells_only": [], "different": []}
    names = sorted({p.name for p in (local / "results/tables").iterdir()}
                   | {p.name for p in (cluster / "results/tables").iterdir()})
    for name in names:
        a, b = local / "results/tables" / name, cluster / "results/tables" / name
        verdict = _table_verdict(a, b) if a.is_file() and b.is_file() else "missing on one side"
        key = {None: "identical", "measured": "measured_cells_only"}.get(verdict, "different")
        out[key].append(name if key != "different" else verdict)
    return out


def mlflow_runs(root: Path) -> dict:
    """The MLflow runs of `root`'s sqlite store: parents, and the stage runs nested under them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sep-bench/mini")
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    parents = [r for r in runs if r.data.tags.get("sep_bench.kind") == "pipeline"]
    stage_runs = [r for r in runs if r.data.tags.get("sep_bench.kind") in ("train", "evaluate")
                  and r.data.tags.get("sep_bench.perturbation", "none") == "none"]
    default = client.get_experiment_by_name("Default")
    return {"parents": [(r.info.run_id, r.info.status) for r in parents],
            "runs_in_default": len(client.search_runs([default.experiment_id])) if default else 0,
            "stage_runs": sorted((r.info.run_name, r.info.status, r.data.tags.get("mlflow.parentRunId", ""))
                                 for r in stage_runs),
            "experiments": [e.name for e in client.search_experiments()]}


def dvc_status(root: Path, env: dict) -> tuple[dict, str]:
    """(`dvc status --json dvc.yaml`: the pipeline stages that are not up to date, `dvc status` as printed)."""
    return json.loads(run(["dvc", "status", "--json", "dvc.yaml"], root, env) or "{}"), run(["dvc", "status"], root,
                                                                                          env)


def overhead(local: dict, cluster: dict) -> dict:
    """Per stage: the cluster job's run time (SLURM, 1 s resolution) minus the same stage's time in `dvc repro`;
    the mean over the stages that ran once (the preempted one ran twice)."""
    per = {s: round(cluster["job_seconds"][s] - local["stages"][s], 2) for s in local["stages"]
           if cluster["job_seconds"].get(s) is not None}
    once = [v for s, v in per.items() if s != PREEMPT_STAGE]
    return {"per_stage_seconds": per, "mean_seconds_per_job": round(sum(once) / len(once), 2) if once else None,
            "n_jobs": len(cluster["groups"]),
            "note": "job run time includes DVC's start and lock wait and a cold start of the stage command; "
                    "jobs of one array ran side by side on the same cores"}




def doc_block(report: dict) -> str:
    """The measured sentence of docs/cluster.md, from a results/benchmarks/cluster.json report."""
    local, cluster, chain = report["local"], report["cluster"], report["overhead_chain"]
    tables = report["tables"]
    return (f"local `dvc repro` {local['seconds']:.0f} s, the cluster {cluster['seconds']:.0f} s from submission "
            f"to the last job's end (submission itself {cluster['submit_seconds']:.0f} s; "
            f"{len(cluster['groups'])} jobs, "
            f"one preempted and resumed; load average {report['loadavg_at_start']['local']:.1f} at the local "
            f"run's start and {report['loadavg_at_start']['cluster']:.1f} at the cluster run's, from other work on "
            f"this {report['machine']['cpus']}-core machine). Overhead per job, measured alone on a chain of "
            f"{chain['stages']} trivial stages: {chain['overhead_seconds_per_job']:.1f} s (local `dvc repro` "
            f"{chain['local_seconds']:.1f} s, as jobs {chain['cluster_seconds']:.1f} s). `dvc.lock` entries equal to "
            f"the local run's: {'all' if report['dvc_lock']['equal'] else 'NOT all'} "
            f"({len(report['dvc_lock']['measured'])} paths differ in measured times only); tables: "
            f"{len(tables['identical'])} byte-identical, {len(tables['measured_cells_only'])} identical except the "
            f"img/s and memory cells, {len(tables['different'])} different ({report['date'][:10]}, commit "
            f"{report['commit'][:7]}).")


def write_doc() -> None:
    """docs/cluster.md's block (and every other generated figure) from the results files: scripts/render_docs.py,
    whose ``cluster-timing`` block is `doc_block` of results/benchmarks/cluster.json."""
    subprocess.run([sys.executable, str(ROOT / "scripts/render_docs.py")], check=True)


def chain_overhead(base: Path, n: int = 5) -> dict:
    """Per-job overhead alone: a chain of `n` trivial stages (each copies its input), `dvc repro` locally against
    one job per stage (each waiting for the one before), in two fresh DVC repositories."""
    from sep_bench.cluster.status import wait
    from sep_bench.cluster.submit import submit
    from sep_bench.protocol import load_params

    dvc = str(Path(sys.executable).parent / "dvc")
    stages = {f"s{i}": {"cmd": f"cp {'seed' if i == 0 else f'f{i - 1}'} f{i}",
                        "deps": ["seed" if i == 0 else f"f{i - 1}"], "outs": [f"f{i}"]} for i in range(n)}
    env = {**os.environ, **GIT_ENV}
    times = {}
    for side in ("local", "cluster"):
        repo = base / f"chain-{side}"
        repo.mkdir()
        run(["git", "init", "-q"], repo, env)
        run([dvc, "init", "-q"], repo, env)
        (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
        (repo / "seed").write_text("x")
        start = time.perf_counter()
        if side == "local":
            run([dvc, "repro"], repo, env)
        else:
            params = load_params(ROOT / "params.yaml", overrides={"cluster.default.time": "00:05:00"})
            states = wait(submit(repo, params, dvc=dvc, track=False), timeout_s=600, poll_s=0.2)
            if any(st.state != "COMPLETED" for st in states.values()):
                raise RuntimeError(f"chain jobs did not all complete: {states}")
        times[side] = time.perf_counter() - start
    return {"stages": n, "local_seconds": round(times["local"], 2), "cluster_seconds": round(times["cluster"], 2),
            "overhead_seconds_per_job": round((times["cluster"] - times["local"]) / n, 2),
            "note": "cluster: planning (dvc dag, dvc status), sbatch, then each job starts after the one before "
                    "(afterok) and runs `dvc --wait-for-lock repro --single-item`; local: one `dvc repro`"}


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "cluster.json")
    ap.add_argument("--keep", action="store_true", help="keep the two workspaces (printed)")
    ap.add_argument("--doc", action="store_true", help="only render docs/cluster.md's figures (and every other generated block) from results/benchmarks/cluster.json")
    args = ap.parse_args()
    if args.doc:
        write_doc()
        return
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        raise SystemExit("no SLURM cluster answers: run scripts/slurm-local.sh start first")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    base = Path(tempfile.mkdtemp(prefix="sep-bench-cluster-"))
    events: list[str] = []

    def log(msg: str) -> None:
        events.append(msg)
        print(msg, flush=True)

    local_dir, cluster_dir = base / "local", base / "cluster"
    local_dir.mkdir(), cluster_dir.mkdir()
    env_a, env_b = make_copy(local_dir), make_copy(cluster_dir)
    chain = chain_overhead(base)
    log(f"chain of {chain['stages']} trivial stages: local {chain['local_seconds']} s, cluster "
        f"{chain['cluster_seconds']} s: {chain['overhead_seconds_per_job']} s per job")
    load = {"local": os.getloadavg()[0]}
    local = run_local(local_dir, env_a)
    log(f"local dvc repro: {local['seconds']} s {local['stages']}")
    load["cluster"] = os.getloadavg()[0]
    cluster = run_cluster(cluster_dir, env_b, log)
    pending, printed = dvc_status(cluster_dir, env_b)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "loadavg": list(os.getloadavg()), "slurm": subprocess.run(["sinfo", "-V"], capture_output=True,
                                                                              text=True).stdout.strip()},
        "commit": commit,  # at the start (the code that ran)
        "pipeline": list(STAGES),
        "local": local,
        "cluster": {k: v for k, v in cluster.items() if k not in ("logs", "submit_output")},
        "overhead": overhead(local, cluster),
        "overhead_chain": chain,
        "loadavg_at_start": load,
        "dvc_status_pipeline": pending,
        "dvc_lock": compare_locks(local_dir, cluster_dir),
        "tables": compare_tables(local_dir, cluster_dir),
        "mlflow": mlflow_runs(cluster_dir),
        "resumed": "resuming npr" in cluster["logs"],
        "events": events,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"local {local['seconds']} s, cluster {cluster['seconds']} s (submit {cluster['submit_seconds']} s), "
          f"overhead {report['overhead']['mean_seconds_per_job']} s per job; dvc.lock equal: "
          f"{report['dvc_lock']['equal']}; tables different: {report['tables']['different']}; -> {args.out}")
    write_doc()
    if args.keep:
        print(f"workspaces: {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
