"""The default run's time budget: `dvc repro` of the default profile in a fresh clone, then a second no-op run.

    python benchmarks/pipeline.py [--env] [--out results/benchmarks/pipeline.json]
    python benchmarks/pipeline.py --incremental-only CLONE [--quick]   # step 3b alone, in a finished clone
    python benchmarks/pipeline.py --noop-only CLONE                     # step 3 alone, in a finished clone

Steps, each timed with a wall clock:
1. ``git clone`` of this repository's HEAD into a temporary folder (the working tree's uncommitted changes are
   NOT included: commit first). The clone reuses this checkout's ``.venv`` (a symbolic link), so step 2 measures
   the pipeline, not the installation; ``--env`` measures the installation separately (step 4). The clone's own
   sources run (`_common.clone_sources`: PYTHONPATH, and a link for the detector modules, which the editable
   install maps to this checkout).
2. ``sep-bench pipeline`` (``dvc repro`` with per-stage timing) in the clone: every stage's seconds, the total,
   and the budget check (goal: at most 600 s on 2 CPU cores, data stage included).
3. the same command again with nothing changed: DVC must find every stage up to date (goal: under 5 s).
3b. one detector's module edited (a comment appended to ``baselines/<--edit>.py``, default NPR; then SEP's
   ``baselines/sep.py``) and the command again: which stages rerun and how long it takes (goal: that detector's stages and the report only, under a
   minute), then the edit undone and the command once more (the same stages back to the committed state);
   likewise one line appended to the download code (``sep_bench/acquire/download.py``): no stage may rerun.
4. with ``--env``: ``scripts/setup-env.sh`` into a fresh ``.venv`` of another clone, once with uv (the default)
   and once with ``SEP_BENCH_INSTALLER=pip``, from the same lock (both with warm package caches if this machine
   has them; say so when you quote them), and whether each environment equals the lock exactly.

Writes ``results/benchmarks/pipeline.json`` (per-stage seconds, totals, goals, machine) and prints a summary.
The README's timing sentence is generated from that file by ``python benchmarks/pipeline.py --readme`` (which then
renders every figure of README.md and docs/ with ``scripts/render_docs.py``, as ``make docs`` does).
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
import tempfile
import time
from contextlib import nullcontext
from typing import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import clone_sources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"cold_seconds": 600.0, "noop_seconds": 5.0, "incremental_seconds": 60.0}
README_MARK = ("<!-- pipeline-timing:start -->", "<!-- pipeline-timing:end -->")


def _run(cmd: list[str], cwd: Path, env: dict | None = None, log: Path | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(text)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-4000:]}")
    return seconds, text


def _stage_times(clone: Path) -> dict[str, float]:
    return json.loads((clone / ".dvc/tmp/sep-bench-stage-times.json").read_text())


def _clone(dest: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True)
    return dest


_STAGE_LINE = re.compile(r"^\[stage \d+/\d+\] (\S+) ")


def _stages_run(text: str) -> list[str]:
    """The stages `sep-bench pipeline` reports starting (its own progress lines, not DVC's console text)."""
    return [m.group(1) for m in map(_STAGE_LINE.match, text.splitlines()) if m]


def edit_rerun(clone: Path, run: Callable[[str], tuple[float, str]], rel: str) -> dict:
    """`edit_once`, then the command once more with the edit undone (back to the committed state)."""
    result = edit_once(clone, run, rel)
    back, _ = run(f"undo-{Path(rel).stem}")
    return {**result, "undo_seconds": round(back, 1)}


def edited_files(detector: str) -> list[str]:
    """What step 3b edits, one at a time: `detector`'s module, SEP's module, the download code."""
    return list(dict.fromkeys([f"baselines/{detector}.py", "baselines/sep.py", "sep_bench/acquire/download.py"]))


def pipeline_stage_kinds(clone: Path) -> dict[str, int]:
    """{stage kind: number of stages} of the pipeline in `clone` (`dvc stage list`: every stage of dvc.yaml, run or
    found up to date)."""
    names = subprocess.run([str(ROOT / ".venv/bin/dvc"), "stage", "list", "--name-only"], cwd=clone,
                           capture_output=True, text=True, check=True).stdout.split()
    kinds: dict[str, int] = {}
    for name in names:
        kinds[name.split("@")[0]] = kinds.get(name.split("@")[0], 0) + 1
    return dict(sorted(kinds.items()))


def pipeline_times(workdir: Path, edit: str | None = "npr") -> dict:
    clone = _clone(workdir / "clone")
    (clone / ".venv").symlink_to(ROOT / ".venv")
    sep_bench = str(ROOT / ".venv/bin/sep-bench")
    env = {"PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}", **clone_sources(clone)}
    cold, text = _run([sep_bench, "pipeline"], clone, env, workdir / "cold.log")
    stages = _stage_times(clone)
    verdict = next((ln for ln in reversed(text.splitlines()) if "reproduced" in ln), "")
    warm = next((ln for ln in reversed(text.splitlines()) if ln.startswith("warm start:")), "")
    noop, noop_text = _run([sep_bench, "pipeline"], clone, env, workdir / "noop.log")

    def rerun(tag: str) -> tuple[float, str]:
        return _run([sep_bench, "pipeline"], clone, env, workdir / f"{tag}.log")

    edits = [edit_rerun(clone, rerun, rel) for rel in edited_files(edit)] if edit else []
    groups: dict[str, float] = {}
    for name, secs in stages.items():
        kind = name.split("@")[0]
        groups[kind] = round(groups.get(kind, 0.0) + secs, 2)
    return {
        "cold_seconds": round(cold, 1),
        "noop_seconds": round(noop, 2),
        "noop_all_up_to_date": "0 stage(s) run" in noop_text,
        "stages": stages,
        "by_kind": groups,
        "n_stages": len(stages),
        "pipeline_stages": pipeline_stage_kinds(clone),
        "verdict": verdict,
        "warm_start": warm,
        "edits": edits,
    }


def _lock_matches(venv: Path) -> bool:
    out = subprocess.run([str(venv / "bin/python"), "-m", "pip", "freeze", "--exclude-editable"],
                         capture_output=True, text=True).stdout
    norm = lambda s: re.sub(r"[-_.]+", "-", s.strip().lower())  # noqa: E731
    have = {norm(line) for line in out.splitlines() if "==" in line}
    want = {norm(line) for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    return want <= have and not {h for h in have if h.split("==")[0] not in {w.split("==")[0] for w in want}
                                 and not h.startswith(("pip==", "sep-bench=="))}


def env_times(workdir: Path) -> dict:
    out = {}
    for installer in ("uv", "pip"):
        clone = _clone(workdir / f"env-{installer}")
        seconds, _ = _run(["bash", "scripts/setup-env.sh"], clone, {"SEP_BENCH_INSTALLER": installer})
        out[installer] = {"seconds": round(seconds, 1), "lock_exact": _lock_matches(clone / ".venv")}
        shutil.rmtree(clone, ignore_errors=True)
    return out


def machine() -> dict:
    from sep_bench.hostinfo import cpu_flags, cpu_model

    isa = "AVX-512" if "avx512f" in cpu_flags() else "AVX2" if "avx2" in cpu_flags() else "no AVX2"
    return {"cpu": cpu_model(), "isa": isa, "cpus": os.cpu_count(), "platform": platform.platform(),
            "loadavg": os.getloadavg()}


def _load_words(m: dict) -> str:
    """'; load average 0.6 at the start, 7.1 at the end' (1-minute averages; another job's work shows here)."""
    if "loadavg_end" not in m:
        return ""
    return f"; load average {m['loadavg'][0]:.1f} at the start, {m['loadavg_end'][0]:.1f} at the end"


def _cpu_words(m: dict) -> str:
    """'AMD EPYC, AVX2' (the instruction set where the file records it)."""
    return f"{m['cpu']}, {m['isa']}" if m.get("isa") else m["cpu"]


def readme_sentence(result: dict) -> str:
    p = result["pipeline"]
    kinds = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(p["by_kind"].items(), key=lambda kv: -kv[1]))
    env = result.get("env")
    env_txt = (f"Setting up `.venv` took {env['uv']['seconds']:.0f} s with uv ({env['pip']['seconds']:.0f} s with "
               "pip, the same lock). ") if env else ""
    met = result.get("met", {})
    goal = {k: "" if k not in met else (": met" if met[k] else ": NOT met") for k in ("cold", "noop")}
    verdict = p.get("verdict", "").split(";")[0]
    return (f"{env_txt}On {result['machine']['cpus']} CPU cores ({_cpu_words(result['machine'])}{_load_words(result['machine'])}) the pipeline took "
            f"{p['cold_seconds'] / 60:.1f} minutes from a fresh clone ({_ran_words(p)}: {kinds}; goal "
            f"{GOALS['cold_seconds'] / 60:.0f} minutes{goal['cold']}) and a second run with nothing changed "
            f"{p['noop_seconds']:.1f} s (goal {GOALS['noop_seconds']:.0f} s{goal['noop']}; measured by "
            f"`python benchmarks/pipeline.py` at commit {result.get('commit', '?')[:7]}, {result['date'][:10]}"
            f"{f'; that run: {verdict}' if verdict else ''}).{_edits_sentence(p.get('edits', []))}")


def _ran_words(p: dict) -> str:
    """'47 of 66 stages ran' (the others were up to date: an evaluation whose training gave the committed weights
    bit for bit keeps the outputs the clone came with); older files without the total: '47 stages'."""
    total = sum((p.get("pipeline_stages") or {}).values())
    return f"{p['n_stages']} of {total} stages ran" if total else f"{p['n_stages']} stages"


def incremental_sentence(result: dict) -> str:
    """The README's sentence on an edit's rerun, from results/benchmarks/pipeline_incremental.json."""
    m = result["machine"]
    return (f"Editing one module of a finished run ({m['cpus']} CPU cores, {_cpu_words(m)}, load average "
            f"{m['loadavg'][0]:.1f} at the start; `python benchmarks/pipeline.py --incremental-only` at commit "
            f"{result['commit'][:7]}, {result['date'][:10]}):{_edits_sentence(result['edits']).removeprefix(' In the finished clone,')} "
            f"Goal (only the edited detector's stages and the report, the NPR edit within "
            f"{GOALS['incremental_seconds']:.0f} s; nothing for the download code): "
            f"{'met' if result['met'] else 'NOT met'}.")


def _incremental_met(edits: list[dict], detector: str) -> bool:
    """Each detector module's edit reran only that detector's stages and the report (`detector`'s within a
    minute); the download code's edit reran none."""
    own = [e for e in edits if e["edited"].startswith("baselines/")]
    download = [e for e in edits if e["edited"].startswith("sep_bench/acquire/")]
    only_own = all(s == "report" or s.split("@", 1)[-1].rsplit("-", 1)[0] == Path(e["edited"]).stem
                   for e in own for s in e["stages"])
    timed = [e for e in own if Path(e["edited"]).stem == detector]
    return only_own and bool(timed) and all(e["seconds"] <= GOALS["incremental_seconds"] for e in timed) and not any(
        e["stages"] for e in download)


def _edits_sentence(edits: list[dict]) -> str:
    parts = []
    for e in edits:
        stages = ", ".join(e["stages"]) if e["stages"] else "no stage"
        parts.append(f"after editing `{e['edited']}` it reran {len(e['stages'])} stage(s) ({stages}) in "
                     f"{e['seconds']:.0f} s")
    return (" In the finished clone, " + "; ".join(parts) + ".") if parts else ""


def write_readme(result: dict, readme: Path = ROOT / "README.md") -> bool:
    text = readme.read_text()
    start, end = README_MARK
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{readme_sentence(result)}\n{end}{tail}")
    return True


def edit_once(clone: Path, run: Callable[[str], tuple[float, str]], rel: str) -> dict:
    """Append a comment to `rel` in the finished `clone`, rerun, undo the edit without rerunning (a scratch clone:
    the next edit's run also reruns what this one's undo invalidates, so edit the download code first)."""
    target = clone / rel
    original = target.read_bytes()
    target.write_bytes(original + b"\n# edited by benchmarks/pipeline.py\n")
    try:
        seconds, text = run(f"edit-{Path(rel).stem}")
    finally:
        target.write_bytes(original)
    return {"edited": rel, "seconds": round(seconds, 1), "stages": _stages_run(text)}


def incremental_only(clone: Path, edit: str, quick: bool = False) -> None:
    env = {"PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}", **clone_sources(clone)}
    logs = Path(tempfile.mkdtemp(prefix="sep-bench-incremental-"))
    started = machine()

    def rerun(tag: str) -> tuple[float, str]:
        return _run([str(ROOT / ".venv/bin/sep-bench"), "pipeline"], clone, env, logs / f"{tag}.log")

    if quick:  # the download code, then the one detector; no undo runs
        edits = [edit_once(clone, rerun, rel) for rel in ("sep_bench/acquire/download.py", f"baselines/{edit}.py")]
    else:
        edits = [edit_rerun(clone, rerun, rel) for rel in edited_files(edit)]
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": started,
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True,
                                       text=True).stdout.strip(),
              "goals": GOALS, "edits": edits, "met": _incremental_met(edits, edit), "quick": quick}
    out = ROOT / "results/benchmarks/pipeline_incremental.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


NOOP_RUNS = 3


def noop_only(clone: Path) -> None:
    """Step 3 alone, in a finished clone of this commit: one run to bring it up to date (its stages are recorded),
    then `NOOP_RUNS` runs with nothing changed; writes results/benchmarks/pipeline_noop.json."""
    env = {"PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}", **clone_sources(clone)}
    logs = Path(tempfile.mkdtemp(prefix="sep-bench-noop-"))
    started = machine()
    sep_bench = str(ROOT / ".venv/bin/sep-bench")
    seconds, text = _run([sep_bench, "pipeline"], clone, env, logs / "update.log")
    update = {"seconds": round(seconds, 1), "stages": _stages_run(text)}
    runs = []
    for i in range(NOOP_RUNS):
        seconds, text = _run([sep_bench, "pipeline"], clone, env, logs / f"noop-{i}.log")
        runs.append({"seconds": round(seconds, 2), "all_up_to_date": "0 stage(s) run" in text,
                     "verdict": next((ln for ln in reversed(text.splitlines()) if "reproduced" in ln), "")})
    started["loadavg_end"] = os.getloadavg()
    worst = max(r["seconds"] for r in runs)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": started, "goals": GOALS,
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True,
                                       text=True).stdout.strip(),
              "update": update, "noop_runs": runs, "noop_seconds_max": worst,
              "met": worst < GOALS["noop_seconds"] and all(r["all_up_to_date"] for r in runs)}
    out = ROOT / "results/benchmarks/pipeline_noop.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(noop_sentence(result))


def noop_sentence(result: dict) -> str:
    """The sentence on the no-op run, from results/benchmarks/pipeline_noop.json."""
    m = result["machine"]
    times = ", ".join(f"{r['seconds']:.1f} s" for r in result["noop_runs"])
    return (f"With nothing changed, `make pipeline` in a finished clone took {times} ({len(result['noop_runs'])} "
            f"runs; {m['cpus']} CPU cores, {_cpu_words(m)}{_load_words(m)}; goal {GOALS['noop_seconds']:.0f} s: "
            f"{'met' if result['met'] else 'NOT met'}; `python benchmarks/pipeline.py --noop-only` at commit "
            f"{result['commit'][:7]}, {result['date'][:10]}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="store_true", help="also time the environment set-up (uv vs pip)")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/pipeline.json")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the clone (results/, dvc.lock, logs) in this folder instead of deleting it")
    parser.add_argument("--readme", action="store_true", help="only regenerate the README sentence from --out (and every docs figure)")
    parser.add_argument("--edit", default="npr", help="the detector whose module the incremental step edits")
    parser.add_argument("--no-edits", action="store_true",
                        help="skip step 3b (measure it later with --incremental-only in the --keep clone)")
    parser.add_argument("--quick", action="store_true",
                        help="with --incremental-only: edit the download code, then --edit's module; no undo runs")
    parser.add_argument("--incremental-only", type=Path, default=None, metavar="CLONE",
                        help="only step 3b, in CLONE (a finished run of this commit, e.g. a --keep folder's clone); "
                             "writes results/benchmarks/pipeline_incremental.json")
    parser.add_argument("--noop-only", type=Path, default=None, metavar="CLONE",
                        help="only step 3, in CLONE (a finished run, e.g. a --keep folder's clone, at this commit): "
                             "writes results/benchmarks/pipeline_noop.json")
    args = parser.parse_args()
    if args.noop_only:
        noop_only(args.noop_only)
        return
    if args.readme:
        ok = write_readme(json.loads(args.out.read_text()))
        print("README updated" if ok else f"README has no {README_MARK[0]} marker")
        if args.out.resolve() == (ROOT / "results/benchmarks/pipeline.json").resolve():
            # the docs pages quote the same sentence: render every figure from the committed results
            subprocess.run([sys.executable, str(ROOT / "scripts/render_docs.py")], check=True)
        return
    if args.incremental_only:
        incremental_only(args.incremental_only, args.edit, args.quick)
        return
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
    with (nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory(prefix="sep-bench-pipeline-")) as tmp:
        result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "goals": GOALS,
                  "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True).stdout.strip(),
                  "pipeline": pipeline_times(Path(tmp), None if args.no_edits else args.edit)}
        result["machine"]["loadavg_end"] = os.getloadavg()  # other work on the machine shows here
        if args.env:
            result["env"] = env_times(Path(tmp))
    p = result["pipeline"]
    result["met"] = {"cold": p["cold_seconds"] <= GOALS["cold_seconds"], "noop": p["noop_seconds"] < GOALS["noop_seconds"],
                     "incremental": _incremental_met(p["edits"], args.edit) if p["edits"] else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in p.items() if k != "stages"}, indent=2))
    for name, secs in sorted(p["stages"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:40s} {secs:8.1f} s")
    if "env" in result:
        print("env:", result["env"])
    print("goals met:", result["met"])
    print(readme_sentence(result))


if __name__ == "__main__":
    sys.exit(main())
