"""Every full recipe through the stage commands on a synthetic tree: CPU seconds and peak memory per command.

    python benchmarks/full_recipes.py [--profile genimage|aigcbench|all] [--detectors sep,npr,...]
                                      [--budget ci] [--timeout-s 900] [--work DIR] [--no-warm]
                                      [--out results/benchmarks/full_recipes.json] [--doc/--no-doc]

For each profile (default ``all``: genimage for every detector of ``run.detectors``, aigcbench for
``AIGCBENCH_DETECTORS``) a scratch folder gets this checkout's params.yaml with the overrides a user's
``dvc exp run -S`` would give (`scratch_overrides`: the profile, the run budget, ``pretrained: false``), a tree
from `sep_bench.acquire.synth` (the real set's shape and known bad files, random pixels) and the data stage
(``sep-bench data prepare``). Then, per detector, the stage commands exactly as dvc.yaml writes them
(`stage_commands`: ``reconstruct`` where the recipe has a diffusion reconstruction, ``train``, ``evaluate``),
each in a fork of one warm server per profile (`sep_bench.warm`, as ``sep-bench pipeline`` runs its stages: the
imports are paid once per profile, recorded as ``warm_server``; ``--no-warm``: a fresh interpreter per command),
measured by ``os.wait4`` of that process: wall seconds, CPU seconds (user + sys) and peak resident memory
(``ru_maxrss``; a fork's counts the server's imported modules it maps). A failing command is recorded with its
last error line and the detector's later commands are not run; the other detectors go on. A command past
``--timeout-s`` is killed and recorded as such.

Every recipe is the FULL one of its profile (full-size models, the recipe's batch size and views) with random
weights; the run budget (default ``ci``, params.yaml ``budgets.ci``) caps only steps, images and the images and
generators of the extra evaluations. The figures say what CI pays per detector, not what a GPU run costs
(benchmarks/gpu_acceptance.py). `tests/test_full_recipes.py` runs the same function per detector.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from _mini import set_dotted  # noqa: E402

#: the aigcbench recipes the group runs besides every genimage recipe (issue #32)
AIGCBENCH_DETECTORS = ("sep", "npr", "univfd", "cnnspot")
PROFILES = ("genimage", "aigcbench")
DEFAULT_BUDGET = "ci"
SEED = 0

#: the synthetic tree per profile: training images per class, test images per generator (and class folder) and
#: class. GenImage's 2 test images per class are the fewest that hold every known bad file of the real set (the
#: zero-byte PNGs of ADM and GLIDE, the unreadable SD v1.5 JPEG) beside a readable image; budgets.ci uses all.
SYNTH = {"genimage": {"n_train": 8, "n_test": 2}, "aigcbench": {"n_train": 4, "n_test": 1}}

#: the CPU seconds (reconstruct + train + evaluate, as measured under `DEFAULT_BUDGET`) CI spends on full recipes:
#: what is left of CI's 25 minutes on 2 cores after the rest of the suite (pytest's --durations list in every log)
CI_CPU_BUDGET_S = 400.0

#: the skip budget of the synthetic tree: a bad file is a quarter of its generator's clean test images, and half of
#: them under an extra evaluation that covers its generator (variant_subset 1: one image per class; budget smoke)
SYNTH_MAX_SKIP_FRACTION = 0.5


def scratch_overrides(profile: str, budget: str, work: Path) -> dict:
    """The params.yaml values the scratch run sets (as `dvc exp run -S KEY=VALUE` would): the profile, the run
    budget, no pretrained weights (offline), a validation slice the tiny tree can fill, the synthetic tree's skip
    budget, no loader processes (speed only: a small CI machine), MLflow in the scratch folder."""
    p = f"profiles.{profile}"
    return {"profile": profile, "budget": budget, f"{p}.pretrained": False, f"{p}.data.val.fraction": 0.25,
            f"{p}.data.max_skip_fraction": SYNTH_MAX_SKIP_FRACTION, f"{p}.loader.train_workers": 0,
            f"{p}.loader.eval_workers": 0, "tracking.uri": f"sqlite:///{work / 'mlflow.db'}"}


def stage_commands(dvc_yaml: Path, detector: str, seed: int, launcher: str = "") -> dict[str, list[str]]:
    """The commands of the stages reconstruct, train and evaluate for one matrix item, from dvc.yaml's ``cmd``."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name in ("reconstruct", "train", "evaluate"):
        cmd = stages[name]["cmd"].replace("${item.detector}", detector).replace("${item.seed}", str(seed))
        out[name] = shlex.split(cmd.replace("${launcher}", launcher))
    return out


# ---- one measured child process ----------------------------------------------------------------------------------

_ERROR = re.compile(r"(error|exception|traceback|killed)", re.I)


def last_error_line(log: str) -> str:
    """The line that says why a command failed: the last one naming an error, else the last non-empty line."""
    lines = [ln.strip() for ln in log.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if _ERROR.search(ln) and not ln.startswith("File ")]
    return (errors or lines or ["(no output)"])[-1][:500]


@contextlib.contextmanager
def _deadline(timeout_s: float, kill: Callable[[], None]) -> Iterator[threading.Event]:
    """Calls `kill` once `timeout_s` seconds have passed inside the block; the event says whether it did."""
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        try:
            kill()
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout_s, expire)
    timer.start()
    try:
        yield timed_out
    finally:
        timer.cancel()


def _record(cmd: list[str], t0: float, code: int, usage: dict, timed_out: bool, timeout_s: float,
            log_path: Path) -> dict:
    """One command's record from its exit status and `usage` (``user_s``, ``sys_s``, ``peak_rss_kib``); a failure
    carries ``error`` (the timeout, ``usage["lost"]``, or the log's last error line)."""
    rec = {"cmd": shlex.join(cmd), "exit": code, "wall_s": round(time.perf_counter() - t0, 2),
           "cpu_s": round(usage["user_s"] + usage["sys_s"], 2), "user_s": round(usage["user_s"], 2),
           "sys_s": round(usage["sys_s"], 2), "peak_rss_mib": round(usage["peak_rss_kib"] / 1024, 1)}
    if timed_out:
        rec["timeout_s"] = timeout_s
        rec["error"] = f"killed after the {timeout_s:.0f} s timeout"
    elif code != 0:
        rec["error"] = usage.get("lost") or last_error_line(log_path.read_text(errors="replace"))
    return rec


def run_measured(cmd: list[str], cwd: Path, env: dict, log_path: Path, timeout_s: float) -> dict:
    """Run `cmd` as a child in its own process group; its wall and CPU seconds and peak RSS (``os.wait4``).
    Past `timeout_s` the group is killed and the record says so."""
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with _deadline(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL)) as timed_out:
            _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return _record(cmd, t0, code, {"user_s": usage.ru_utime, "sys_s": usage.ru_stime,
                                   "peak_rss_kib": usage.ru_maxrss}, timed_out.is_set(), timeout_s, log_path)


def run_warm(server, cmd: list[str], cwd: Path, log_path: Path, timeout_s: float) -> dict | None:
    """`cmd` (a ``sep-bench`` command) in a fork of the warm `server` (`sep_bench.warm`: the imports done once,
    as ``sep-bench pipeline`` runs its stages), measured by the server's ``os.wait4`` of the child: the record of
    `run_measured` with ``warm: true``. None when the server declines (then run it cold)."""
    from sep_bench import warm

    t0 = time.perf_counter()
    with open(log_path, "wb") as log, open(os.devnull, "rb") as null:
        started = warm.request(cmd[1:], server.env[warm.ENV], cwd=str(cwd), env=server.env,
                               fds=[null.fileno(), log.fileno(), log.fileno()])
    if started is None:
        return None
    sock, pid = started
    with _deadline(timeout_s, lambda: os.kill(pid, signal.SIGKILL)) as timed_out:
        try:
            report = warm.exit_report(sock)
        except ConnectionError as err:
            report = {"exit": 1, "user_s": 0.0, "sys_s": 0.0, "peak_rss_kib": 0, "lost": str(err)}
    rec = _record(cmd, t0, report["exit"], report, timed_out.is_set(), timeout_s, log_path)
    return {**rec, "warm": True}


# ---- the scratch folder of one profile ---------------------------------------------------------------------------


class Workspace:
    """A scratch project folder of one profile: params.yaml, the synthetic tree (prepared), the child environment,
    the tree's known bad files among the test images and the data stage's measured record. (A plain class: the
    docs renderer loads this script without registering it as a module, which dataclasses need.)"""

    def __init__(self, root: Path, profile: str, budget: str, env: dict, bad_test_files: list[str]) -> None:
        self.root, self.profile, self.budget, self.env = root, profile, budget, env
        self.bad_test_files = bad_test_files
        self.data_stage: dict = {}
        self.warm = None  # a ready sep_bench.warm.WarmServer when the commands run warm (`start_warm`)

    def start_warm(self, timeout_s: float = 300.0) -> dict:
        """Run the stage commands in forks of one warm server from now on (`run_warm`); the server's import
        seconds (paid once), or ``ready: false`` when it did not come up (the commands then start cold)."""
        from sep_bench.warm import WarmServer, summary

        server = WarmServer(self.env, self.logs / "warm-server.log")
        if not server.wait_ready(timeout_s):
            server.stop()
            return {"ready": False, "log": (self.logs / "warm-server.log").read_text()[-500:]}
        self.warm = server
        return {"ready": True, "import_seconds": summary(self.logs / "warm-server.log")["import_seconds"]}

    def close(self) -> None:
        if self.warm is not None:
            self.warm.stop()
            self.warm = None

    def run(self, cmd: list[str], log_path: Path, timeout_s: float) -> dict:
        """One stage command, warm when the workspace has a server that accepts it, else a fresh process."""
        rec = run_warm(self.warm, cmd, self.root, log_path, timeout_s) if self.warm is not None else None
        return rec if rec is not None else run_measured(cmd, self.root, self.env, log_path, timeout_s)

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def metrics_path(self, detector: str) -> Path:
        return self.root / "results" / "metrics" / self.profile / detector / f"seed{SEED}.json"


def child_env(root: Path) -> dict:
    """The stage commands' environment: this interpreter's scripts first, offline hub, no inherited DVC/MLflow
    run context, no kernel switches (as `_mini` leaves them out)."""
    from _mini import KERNEL_VARS

    drop = {"DVC_ROOT", "DVC_STAGE", "MLFLOW_TRACKING_URI", "SEP_BENCH_PARENT_RUN_ID", *KERNEL_VARS}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true", "TERM": "dumb", "COLUMNS": "160"}


def make_workspace(root: Path, profile: str, budget: str = DEFAULT_BUDGET, params_src: Path | None = None,
                   timeout_s: float = 900.0) -> Workspace:
    """`root` (absent or empty) with params.yaml (`scratch_overrides`), the synthetic tree, and the data stage run."""
    from sep_bench.acquire.synth import synth_tree

    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((params_src or C.REPO_ROOT / "params.yaml").read_text())
    for dotted, value in scratch_overrides(profile, budget, root).items():
        set_dotted(params, dotted, value)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    data = params["profiles"][profile]["data"]
    train_out = root / data["train_root"] if data.get("train_root") else None
    summary = synth_tree(profile, root / data["root"], train_out=train_out, **SYNTH[profile])
    test_split = "val" if profile == "genimage" else ""
    bad = sorted(_relative(root, d.split(": ")[0]) for d in summary.defects
                 if not test_split or f"/{test_split}/" in d)
    ws = Workspace(root, profile, budget, child_env(root), bad)
    ws.logs.mkdir(exist_ok=True)
    ws.data_stage = run_measured(["sep-bench", "data", "prepare"], root, ws.env, ws.logs / "data.log", timeout_s)
    if ws.data_stage["exit"] != 0:
        raise RuntimeError(f"{profile}: the data stage failed: {ws.data_stage['error']}")
    return ws


def _relative(root: Path, path: str) -> str:
    """`path` relative to the scratch folder (the stage commands record paths relative to their working folder)."""
    p = Path(path)
    return str(p.resolve().relative_to(root.resolve()) if p.is_absolute() else p)


def needs_reconstruction(ws: Workspace, detector: str) -> bool:
    """Whether `detector`'s recipe under the workspace's profile has a diffusion reconstruction (DIRE, DRCT), as
    benchmarks/gpu_acceptance.py resolves it."""
    import gpu_acceptance as GA

    spec = GA.load_offline_specs(ws.root / "params.yaml", ws.profile, [detector])[detector]
    return GA.recon_config_of(*C.detector_config(spec)) is not None


# ---- one detector ------------------------------------------------------------------------------------------------


def run_detector(ws: Workspace, detector: str, timeout_s: float = 900.0) -> dict:
    """The stage commands of `detector` in `ws`, each measured; then what its metrics file says (images, skips).
    Never raises for a failing command: the record carries ``error`` (``<stage>: <last error line>``)."""
    commands = stage_commands(C.REPO_ROOT / "dvc.yaml", detector, SEED)
    if not needs_reconstruction(ws, detector):
        del commands["reconstruct"]
    result: dict = {"commands": {}}
    for stage, cmd in commands.items():
        rec = ws.run(cmd, ws.logs / f"{detector}-{stage}.log", timeout_s)
        result["commands"][stage] = rec
        if rec["exit"] != 0:
            result["error"] = f"{stage}: {rec['error']}"
            break
    done = result["commands"].values()
    result["cpu_s"] = round(sum(r["cpu_s"] for r in done), 2)
    result["wall_s"] = round(sum(r["wall_s"] for r in done), 2)
    result["peak_rss_mib"] = max(r["peak_rss_mib"] for r in done)
    if "error" not in result:
        result.update(metrics_summary(ws, detector))
    return result


def metrics_summary(ws: Workspace, detector: str) -> dict:
    """Images evaluated, the skips recorded (count, reasons, files), the Mean ACC of the clean evaluation, the extra
    evaluations written and the subset they saw (``variant_subset`` of their baseline, ``clean_subset.json``)."""
    path = ws.metrics_path(detector)
    if not path.is_file():
        return {"error": f"evaluate: exit 0 but no metrics file {path.relative_to(ws.root)}"}
    m = json.loads(path.read_text())
    files = sorted(_relative(ws.root, f["path"]) for f in m["skipped_files"])
    robustness = ws.root / "results" / "robustness" / ws.profile / detector / f"seed{SEED}"
    variants = sorted(p.stem for p in robustness.glob("*.json") if p.stem != "clean_subset")
    subset = robustness / "clean_subset.json"
    return {"n_images": m["n_images"], "budget": m.get("budget"), "mean_acc": m["mean"]["acc"],
            "skipped": m["skipped"], "skipped_files": files, "variants": variants,
            "variant_subset": json.loads(subset.read_text()).get("variant_subset") if subset.is_file() else None}


# ---- the acceptance command (issue #32): dvc exp run over NPR and SEP to the report -------------------------------

#: the acceptance command, verbatim
ACCEPTANCE = ["dvc", "exp", "run", "-S", "profile=genimage", "-S", "run.detectors=[npr,sep]", "-S", "budget=smoke",
              "-S", "profiles.genimage.pretrained=false"]
#: what the synthetic tree needs besides (as tests/test_real_pipeline.py): a validation slice it can fill, its skip
#: budget (a key params.yaml does not list: `+` adds it), no loader processes on a small machine (speed only)
ACCEPTANCE_TREE = ["-S", "profiles.genimage.data.val.fraction=0.25",
                   "-S", f"+profiles.genimage.data.max_skip_fraction={SYNTH_MAX_SKIP_FRACTION}",
                   "-S", "profiles.genimage.loader.train_workers=0", "-S", "profiles.genimage.loader.eval_workers=0"]


def run_acceptance(work: Path, timeout_s: float) -> dict:
    """In a copy of this checkout (committed in a new git repository): `data synth --like genimage`, `data prepare`,
    then `ACCEPTANCE` + `ACCEPTANCE_TREE`, measured; whether the report was written and which .dvc files changed."""
    sys.path.insert(0, str(C.REPO_ROOT))
    from tests.stage_deps import GIT_ENV, copy_worktree

    clone = work / "clone"
    clone.mkdir(parents=True)
    copy_worktree(clone)
    for stale in ("results/metrics/genimage", "results/predictions/genimage", "dvc.lock"):
        subprocess.run(["rm", "-rf", str(clone / stale)], check=True)
    env = {**child_env(clone), **GIT_ENV}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(cmd, cwd=clone, env=env, check=True, capture_output=True)
    out: dict = {"command": shlex.join(ACCEPTANCE), "synthetic_tree_settings": shlex.join(ACCEPTANCE_TREE)}
    for name, cmd in (("synth", ["sep-bench", "data", "synth", "--like", "genimage"]),
                      ("prepare", ["sep-bench", "data", "prepare", "--profile", "genimage"]),
                      ("dvc_exp_run", ACCEPTANCE + ACCEPTANCE_TREE)):
        out[name] = run_measured(cmd, clone, env, work / f"acceptance-{name}.log", timeout_s)
        if out[name]["exit"] != 0:
            break
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone, env=env,
                            capture_output=True, text=True).stdout
    out["report_written"] = (clone / "results/tables/genimage_acc.md").is_file()
    out["dvc_files_changed"] = [ln[3:] for ln in status.splitlines() if ln.endswith(".dvc")]
    out["stage_seconds"] = {str(p.relative_to(clone)): json.loads(p.read_text()).get("seconds")
                            for p in sorted(clone.glob("runs/genimage/*/seed*/*-timing.json"))}
    return out


# ---- where SEP's evaluation time goes --------------------------------------------------------------------------


def sep_breakdown(params: Path, budget: str = "smoke", batch: int = 4, repeats: int = 2) -> dict:
    """CPU seconds and FLOPs per evaluation view of SEP's full genimage recipe (random init), split into the view
    (decode + exposed-patch search + crop), the classifier input (SRM, GBCSA, DWT branch, up-sampling to
    ``classifier_size``) and the ResNet on it; and the views one evaluation under `budget` computes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import gpu_acceptance as GA
    from sep_bench.protocol import load_params, resolve

    spec = GA.load_offline_specs(params, "genimage", ["sep"])["sep"]
    det, cfg = C.detector_config(spec)
    model = GA.build_on(det, cfg, "cpu", 0).eval()
    paths = C.make_image_set(batch, 512, log=lambda _: None)
    view = det.views(cfg, False, False)
    C.prebuilt_views(paths, view, 1, 0, spec.profile.data.max_image_pixels)  # warm-up: numba's first call
    t0 = time.process_time()
    views = C.prebuilt_views(paths, view, batch, 0, spec.profile.data.max_image_pixels)
    view_s = (time.process_time() - t0) / batch
    with torch.no_grad():
        model(views)  # warm-up
        marks = {"input": [], "total": []}
        for _ in range(repeats):
            t0 = time.process_time()
            model.classifier_input(views)
            marks["input"].append(time.process_time() - t0)
            t0 = time.process_time()
            model(views)
            marks["total"].append(time.process_time() - t0)
        with FlopCounterMode(display=False) as total:
            model(views)
        with FlopCounterMode(display=False) as head:
            model.classifier_input(views)
    per = {k: min(v) / batch for k, v in marks.items()}
    capped = resolve(load_params(params, {"budget": budget, "profiles.genimage.pretrained": False}), "sep", "genimage")
    ev, data = capped.recipe.eval, capped.profile.data
    n_gen = len(data.test_generators)
    extra = len(ev.perturbations) + (ev.align != "none") + sum(r in ("center_crop", "resize") for r in ev.preprocess)
    views_n = n_gen * data.max_test_images_per_generator + extra * n_gen * 2 * ev.variant_subset
    per_view = view_s + per["total"]
    return {"budget": budget, "classifier_size": cfg.classifier_size, "backbone": cfg.backbone,
            "cpu_s_per_view": {"view": round(view_s, 3), "classifier_input": round(per["input"], 3),
                               "resnet": round(per["total"] - per["input"], 3), "total": round(per_view, 3)},
            "gflops_per_view": {"classifier_input": round(head.get_total_flops() / batch / 1e9, 1),
                                "total": round(total.get_total_flops() / batch / 1e9, 1)},
            "evaluation_views": views_n,
            "evaluation_cpu_s": round(views_n * per_view, 1),
            "arithmetic": f"{n_gen} generators x {data.max_test_images_per_generator} clean + {extra} extra "
                          f"evaluations x {n_gen} generators x 2 classes x {ev.variant_subset} = {views_n} views x "
                          f"{per_view:.3f} CPU s", "torch_threads": torch.get_num_threads()}


# ---- the run -----------------------------------------------------------------------------------------------------


def totals(runs: dict) -> dict:
    """Sums over every detector and profile run: CPU and wall seconds, the largest peak, what failed."""
    flat = [(p, d, r) for p, by_det in runs.items() for d, r in by_det.items()]
    return {"runs": len(flat), "failed": [f"{p}/{d}" for p, d, r in flat if "error" in r],
            "cpu_s": round(sum(r["cpu_s"] for _, _, r in flat), 1),
            "wall_s": round(sum(r["wall_s"] for _, _, r in flat), 1),
            "peak_rss_mib": max((r["peak_rss_mib"] for _, _, r in flat), default=0.0)}


def plan(args) -> dict[str, list[str]]:
    """profile -> detectors to run, in the order given."""
    from sep_bench.protocol import load_params

    every = list(load_params(args.params).run.detectors)
    chosen = {"genimage": every if args.detectors is None else args.detectors,
              "aigcbench": args.aigcbench_detectors}
    unknown = [d for names in chosen.values() for d in names if d not in every]
    if unknown:
        raise SystemExit(f"--detectors: {unknown} are not in run.detectors of {args.params}")
    profiles = PROFILES if args.profile == "all" else (args.profile,)
    return {prof: chosen[prof] for prof in profiles if chosen[prof]}


def budget_caps(params_path: Path, budget: str) -> dict:
    from sep_bench.protocol import load_params

    return load_params(params_path, {"budget": budget}).run_budget().model_dump()


def write(args, runs: dict, started: list[float], data_stages: dict, extras: dict) -> dict:
    payload = {**{k: v or None for k, v in extras.items()},
               "budget": {"name": args.budget, "caps": budget_caps(args.params, args.budget)},
               "synth": SYNTH, "overrides": {p: {k: v for k, v in scratch_overrides(p, args.budget, Path("<work>"))
                                                 .items() if not k.startswith("tracking")} for p in runs},
               "loadavg_start": started, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
               "data_stage": data_stages, "runs": runs, "totals": totals(runs)}
    C.write_report(args.out, "full_recipes", args, None, payload)
    return payload


def merge_reports(out: Path, sources: list[Path]) -> None:
    """Copy the ``acceptance`` and ``sep_breakdown`` sections and the detector runs of `sources` (reports of this
    script, e.g. made beside or after the main run) into the report `out`, noting where each came from."""
    report = json.loads(out.read_text())
    for src in sources:
        other = json.loads(src.read_text())
        origin = {"command": other["command"], "date": other["date"], "loadavg_start": other["loadavg_start"],
                  "commit": other["machine"]["git"]}
        for key in ("acceptance", "sep_breakdown"):
            if other.get(key):
                report[key] = other[key]
                report.setdefault("merged", {})[key] = origin
        for profile, by_det in other.get("runs", {}).items():
            for det, run in by_det.items():
                report["runs"].setdefault(profile, {})[det] = {**run, "measured_by": origin}
            report.setdefault("data_stage", {}).setdefault(profile, other["data_stage"][profile])
    report["totals"] = totals(report["runs"])
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"merged {', '.join(map(str, sources))} into {out}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="all", choices=[*PROFILES, "all"])
    parser.add_argument("--detectors", default=None, type=lambda s: [d.strip() for d in s.split(",") if d.strip()],
                        help="genimage recipes to run, comma-separated, in this order (default: run.detectors)")
    parser.add_argument("--aigcbench-detectors", default=list(AIGCBENCH_DETECTORS),
                        type=lambda s: [d.strip() for d in s.split(",") if d.strip()],
                        help=f"aigcbench recipes to run (default {','.join(AIGCBENCH_DETECTORS)}; '' for none)")
    parser.add_argument("--budget", default=DEFAULT_BUDGET, help="params.yaml budgets.<name> (default ci)")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per command (default 900)")
    parser.add_argument("--warm", action=argparse.BooleanOptionalAction, default=True,
                        help="run the commands in forks of one warm server per profile, as `sep-bench pipeline` runs "
                             "its stages (default; the imports are paid once and not in the CPU seconds)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--acceptance", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the acceptance command (dvc exp run over npr and sep) in a copy of the checkout")
    parser.add_argument("--sep-breakdown", action="store_true",
                        help="also measure where SEP's evaluation time goes (per view: view, classifier input, ResNet)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="REPORT",
                        help="run nothing: copy the acceptance and sep_breakdown sections of these reports into --out")
    parser.add_argument("--params", type=Path, default=C.REPO_ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=C.REPO_ROOT / "results" / "benchmarks" / "full_recipes.json")
    parser.add_argument("--doc", action=argparse.BooleanOptionalAction, default=None,
                        help="re-render the docs blocks (default: when --out is the committed file)")
    args = parser.parse_args(argv)
    if args.doc is None:
        args.doc = args.out.resolve() == (C.REPO_ROOT / "results/benchmarks/full_recipes.json").resolve()
    return args


def main(argv=None) -> None:
    import tempfile

    args = parse_args(argv)
    started = [round(x, 2) for x in os.getloadavg()]
    work = (args.work or Path(tempfile.mkdtemp(prefix="sep-bench-full-recipes-"))).resolve()
    if args.merge:
        merge_reports(args.out, args.merge)
        if args.doc:
            C.render_docs()
        return
    todo = plan(args)
    acceptance: dict = {}
    extras = {"acceptance": acceptance,
              "sep_breakdown": sep_breakdown(args.params) if args.sep_breakdown else None}
    thread = None
    if args.acceptance:  # beside the recipe runs (its wall time shares the machine with them; CPU seconds do not)
        def accept() -> None:
            acceptance.update(run_acceptance(work / "acceptance", args.timeout_s * 4), beside_recipe_runs=bool(todo))

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
    runs: dict = {}
    data_stages: dict = {}
    for profile, names in todo.items():
        ws = make_workspace(work / profile, profile, args.budget, args.params, args.timeout_s)
        data_stages[profile] = ws.data_stage
        if args.warm:
            extras.setdefault("warm_server", {})[profile] = ws.start_warm()
        runs[profile] = {}
        try:
            for name in names:
                runs[profile][name] = run_detector(ws, name, args.timeout_s)
                print(row_text(profile, name, runs[profile][name]), flush=True)
                write(args, runs, started, data_stages, extras)
        finally:
            ws.close()
    if thread is not None:
        thread.join()
    payload = write(args, runs, started, data_stages, extras)
    t = payload["totals"]
    print(f"{t['runs']} runs, {t['cpu_s']} CPU s, {t['wall_s']} wall s, peak {t['peak_rss_mib']} MiB; "
          f"failed: {', '.join(t['failed']) or 'none'}; scratch folder {work}")
    if acceptance:
        print(acceptance_sentence(acceptance))
    if args.doc:
        C.render_docs()


def ci_group(report: dict, budget_s: float = CI_CPU_BUDGET_S) -> set[tuple[str, str]]:
    """(profile, detector) of the cheapest recipes that finished in `report` under `DEFAULT_BUDGET`, as many as
    `budget_s` CPU seconds hold: the ones `make test` runs (tests/test_full_recipes.py). A recipe that failed, timed
    out or was not measured is never in it."""
    if report["budget"]["name"] != DEFAULT_BUDGET:
        return set()
    done = sorted((r["cpu_s"], p, d) for p, by_det in report["runs"].items() for d, r in by_det.items()
                  if "error" not in r)
    chosen, spent = set(), 0.0
    for cpu_s, profile, detector in done:
        if spent + cpu_s > budget_s:
            break
        chosen.add((profile, detector))
        spent += cpu_s
    return chosen


def row_text(profile: str, detector: str, r: dict) -> str:
    cells = " ".join(f"{stage} {c['cpu_s']:.0f}/{c['wall_s']:.0f}s {c['peak_rss_mib']:.0f}MiB"
                     for stage, c in r["commands"].items())
    return f"{profile:9s} {detector:10s} {cells}" + (f"  FAILED {r['error']}" if "error" in r else "")


# ---- the docs block (scripts/docs_figures.py BLOCKS["full-recipes"]) ---------------------------------------------


def _cell(rec: dict | None) -> str:
    if rec is None:
        return "-"
    text = f"{rec['cpu_s']:.0f} s / {rec['peak_rss_mib'] / 1024:.1f} GiB"
    return text if rec["exit"] == 0 else f"{text} (**{'timeout' if 'timeout_s' in rec else 'failed'}**)"


#: why DIRE's and DRCT's recipes are left out of a CPU measurement (stated, not measured)
RECONSTRUCTION_NOTE = ("DIRE's and DRCT's recipes first reconstruct every image the budget keeps with a full-size "
                       "Stable Diffusion model (DIRE: 20 DDIM inversion and 20 reconstruction steps; DRCT: 50 guided "
                       "inpainting steps), which this script does not run on CPU; `benchmarks/gpu_acceptance.py` "
                       "runs them on a GPU.")


def _every_recipe() -> dict[str, list[str]]:
    """profile -> the recipes this script measures by default (every detector of run.detectors for genimage)."""
    from sep_bench.protocol import load_params

    return {"genimage": list(load_params(C.REPO_ROOT / "params.yaml").run.detectors),
            "aigcbench": list(AIGCBENCH_DETECTORS)}


def _ci_sentence(report: dict) -> str:
    group = ci_group(report)
    spent = sum(report["runs"][p][d]["cpu_s"] for p, d in group)
    names = ", ".join(f"{p}/{d}" for p, d in sorted(group)) or "none"
    return (f"`make test` runs the cheapest recipes that fit CI's {CI_CPU_BUDGET_S:.0f} CPU seconds for full recipes "
            f"(`ci_group`): {len(group)} of the {sum(map(len, report['runs'].values()))} measured, {spent:.0f} CPU s "
            f"({names}); the others run with `python -m pytest tests/test_full_recipes.py -m full_recipes`.")


def _warm_sentence(report: dict) -> str:
    servers = report.get("warm_server") or {}
    ready = {p: w["import_seconds"] for p, w in servers.items() if w.get("ready")}
    if not ready:
        return " Each command started a fresh interpreter (its imports are in its CPU seconds)."
    paid = ", ".join(f"{p} {s:.0f} s" for p, s in ready.items())
    return (f" The commands ran in forks of one warm server per profile, as `sep-bench pipeline` runs its stages: "
            f"the imports were paid once ({paid} of wall time) and are not in the rows.")


def doc_block(report: dict) -> str:
    """Per profile and detector: CPU seconds and peak memory of each stage command, from full_recipes.json."""
    t, m = report["totals"], report["machine"]
    caps = ", ".join(f"{k} {v}" for k, v in report["budget"]["caps"].items() if v is not None)
    commit = (m["git"]["commit"] or "?")[:7] + (" with uncommitted changes" if m["git"].get("dirty") else "")
    lines = [f"Measured {report['date'][:10]} (commit {commit}) on {m['cpu_model']}, "
             f"{m['cpu_cores']} cores, load average {report['loadavg_start'][0]:.1f} at the start: "
             f"{t['runs']} runs, **{t['cpu_s'] / 60:.1f} CPU-minutes** and {t['wall_s'] / 60:.1f} minutes of wall "
             f"time in all, the largest peak {t['peak_rss_mib'] / 1024:.1f} GiB; budget `{report['budget']['name']}` "
             f"({caps}); failed: {', '.join(t['failed']) or 'none'}.{_warm_sentence(report)}", "",
             "| profile | detector | reconstruct (CPU / peak) | train (CPU / peak) | evaluate (CPU / peak) | "
             "wall s | skipped files | measured (load average) |", "|---|---|---|---|---|---|---|---|"]
    for profile, by_det in report["runs"].items():
        for det, r in by_det.items():
            c = r["commands"]
            skipped = r.get("skipped", {}).get("count", "-")
            lines.append(f"| {profile} | {det} | {_cell(c.get('reconstruct'))} | {_cell(c.get('train'))} | "
                         f"{_cell(c.get('evaluate'))} | {r['wall_s']:.0f} | {skipped} | {_measured(report, r)} |")
    missing = [f"{p}/{d}" for p, names in _every_recipe().items() for d in names if d not in report["runs"].get(p, {})]
    if missing:
        lines += ["", f"Not measured: {', '.join(missing)}."
                  + (f" {RECONSTRUCTION_NOTE}" if any(m.endswith(("/dire", "/drct")) for m in missing) else "")]
    if any(r.get("measured_by") for by_det in report["runs"].values() for r in by_det.values()):
        lines += ["", "Some rows come from later runs of this script, merged with `--merge`: the last column gives "
                      "each row's date and the load average at the start of its run. The totals above sum every row."]
    busy = report["loadavg_start"][0] > m["cpu_cores"]
    lines += ["", "A timeout's CPU seconds are what the command had used when it was killed (a lower bound)."
              + (" The wall times are of a machine shared with other jobs (load average above its core count): "
                 "compare the CPU seconds." if busy else "")]
    lines += ["", _ci_sentence(report)]
    if report.get("sep_breakdown"):
        lines += ["", sep_sentence(report["sep_breakdown"])]
    if report.get("acceptance"):
        lines += ["", acceptance_sentence(report["acceptance"])]
    return "\n".join(lines)


def _measured(report: dict, run: dict) -> str:
    """'2026-12-07 (5.7)': when the row was measured and the load average at the start of its run (a merged row
    carries its own run's: on a busy machine the CPU seconds grow too, not only the wall time)."""
    origin = run.get("measured_by") or report
    return f"{origin['date'][:10]} ({origin['loadavg_start'][0]:.1f})"


def sep_sentence(b: dict) -> str:
    c, g = b["cpu_s_per_view"], b["gflops_per_view"]
    return (f"Where SEP's evaluation time goes (full genimage recipe, random weights, {b['torch_threads']} threads): "
            f"per evaluated view {c['total']:.2f} CPU s, of which the view (decoding, the exposed-patch search, the "
            f"crop) {c['view']:.3f} s, the classifier input (SRM, GBCSA, the DWT branch, up-sampling the patch to "
            f"{b['classifier_size']} px) {c['classifier_input']:.2f} s and the {b['backbone']} on that "
            f"{b['classifier_size']} px input {c['resnet']:.2f} s ({g['total']:.0f} GFLOPs per view, "
            f"{g['classifier_input']:.1f} of them before the ResNet). Under budget `{b['budget']}` one evaluation "
            f"computes {b['arithmetic']} = {b['evaluation_cpu_s'] / 60:.1f} CPU-minutes: the cost of SEP's own "
            f"method (a ResNet on a {b['classifier_size']} px input per view), not of the harness.")


def acceptance_sentence(a: dict) -> str:
    run = a.get("dvc_exp_run")
    if run is None:
        failed = next(k for k in ("synth", "prepare") if a[k]["exit"] != 0)
        return f"The acceptance command did not start: `{failed}` failed ({a[failed]['error']})."
    state = ("ended with the report" if run["exit"] == 0 and a["report_written"] else
             f"did **not** end with the report ({run.get('error', 'no report written')})")
    changed = ", ".join(a["dvc_files_changed"]) or "none"
    return (f"The acceptance command `{a['command']}` (with `{a['synthetic_tree_settings']}` for the synthetic tree "
            f"of `sep-bench data synth --like genimage`) {state} after {run['wall_s'] / 60:.1f} minutes "
            f"({run['cpu_s'] / 60:.1f} CPU-minutes, peak {run['peak_rss_mib'] / 1024:.1f} GiB"
            + ("; it ran beside the recipe runs, which shared the machine's cores" if a.get("beside_recipe_runs")
               else "") + f"); .dvc files changed: {changed}.")


if __name__ == "__main__":
    main()
