"""Reproduced vs committed: does this run give the committed reference results of the same profile?

The committed reference (``results/reference/<profile>.json``, written by ``sep-bench reproduced
--update-reference`` from a finished run) holds, per table row and seed: the Mean ACC, the protocol hash, the
sha256 of the fake logits (so "bit-identical" is a fact, not a rounding coincidence), plus the data digest, the
commit of the code, the library versions and the machine (CPU model, instruction set) the results came from, and
the stated cross-machine spread of each row.

`compare` reads this run's metrics and predictions and classifies every row, digests first:

- ``bit-identical``: the same fake logits AND (where both record them) the same trained weights, bit for bit;
- ``within spread``: |this Mean - reference Mean| <= the row's stated spread (in ACC points);
- ``outside spread``: with every factor that differs, ranked by whether it can change that row's bits
  (`sep_bench.report.verdict`): data digest, protocol hash, the code files the row's stages read (DVC's hashes in
  ``dvc.lock``; a commit that changed none of them is not a cause), library versions, deterministic mode,
  threads, CPU (vendor, model, instruction sets);
- ``missing``: in the reference but not in this run (or the other way round).

The verdict line (`verdict_line`) is what ``make pipeline`` prints last.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from sep_bench import paths
from sep_bench.hostinfo import cpu_flags, cpu_model, cpu_vendor, usable_cores
from sep_bench.report.verdict import code_hashes, factors, likely_cause, recorded_stages

__all__ = ["REFERENCE_DIR", "RowCheck", "machine_info", "snapshot", "write_reference", "compare", "verdict_line",
           "write_tables"]

REFERENCE_DIR = paths.REFERENCE_DIR
_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "scipy", "timm", "open-clip-torch", "transformers",
             "diffusers", "numba")
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_tile", "asimd", "sve")
#: The stated spread (ACC points) of a row nobody measured: none. A spread is stated only from measurements (seeds,
#: instruction-set caps: ``--spread``); without one, a row that is not bit-identical is within it only with the
#: same Mean, and the reference says "not measured" rather than a 0 that would read as "expected".
DEFAULT_SPREAD = None
#: what "the code" of a run is, for the reference's commit (+changes when these differ from it)
CODE_PATHS = ("sep_bench", "baselines", "pyproject.toml", "requirements.lock", "params.yaml", "dvc.yaml")


#: torch's dispatch facts of this machine, cached: importing torch costs seconds, and the no-op `make pipeline` prints
#: the verdict (a stale entry is never used: `_torch_facts_key`)
TORCH_FACTS_CACHE = Path(".dvc/tmp/sep-bench-torch-facts.json")
_TORCH_ENV = ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _torch_facts_key() -> str:
    """What the facts depend on: the CPU, the cores this process may use, torch's version and the variables that
    cap its dispatch or its threads."""
    cores = usable_cores()
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "?"
    env = {k: os.environ.get(k) for k in _TORCH_ENV}
    key = [cpu_model(), cpu_vendor(), sorted(cpu_flags()), cores, torch_version, env, platform.machine()]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def _live_torch_facts() -> dict:
    import torch

    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def _torch_facts() -> dict:
    """{torch_cpu_capability, threads}: from the cache when its key matches, else from torch (and cached). A
    process that has imported torch asks it (its own settings, e.g. set_num_threads, may differ) and caches nothing."""
    if "torch" in sys.modules:
        return _live_torch_facts()
    key = _torch_facts_key()
    try:
        cached = json.loads(TORCH_FACTS_CACHE.read_text())
        if cached.get("key") == key:
            return cached["facts"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    facts = _live_torch_facts()
    if TORCH_FACTS_CACHE.parent.parent.is_dir():  # only inside a DVC project (.dvc/): never creates one
        try:
            TORCH_FACTS_CACHE.parent.mkdir(exist_ok=True)
            TORCH_FACTS_CACHE.write_text(json.dumps({"key": key, "facts": facts}))
        except OSError:
            pass  # a read-only checkout: no cache, the same facts
    return facts


def machine_info(deterministic: bool | None = None) -> dict:
    """CPU vendor, model, instruction-set flags, the CPU capability torch dispatches to, threads, the profile's
    deterministic mode and library versions."""
    flags = cpu_flags()
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {
        "cpu": cpu_model(),
        "vendor": cpu_vendor(),
        "deterministic": deterministic,
        "arch": platform.machine(),
        "isa": sorted(f for f in _ISA_FLAGS if f in flags),
        **_torch_facts(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _data_digest(profile: str) -> str | None:
    manifest = paths.prepared_dir(profile) / "minigen.json"
    try:
        return json.loads(manifest.read_text()).get("pixels_sha256")
    except (OSError, ValueError):
        return None


def _logits_sha256(predictions: Path) -> str | None:
    try:
        df = pd.read_parquet(predictions, columns=["path", "fake_logit"])
    except (OSError, ValueError, KeyError):
        return None
    df = df.sort_values("path", kind="stable")
    h = hashlib.sha256("\n".join(df["path"]).encode())
    h.update(np.ascontiguousarray(df["fake_logit"].to_numpy(np.float64)).tobytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _row_stages(row: str, seed: str) -> list[str]:
    return [f"train@{row}-{seed}", f"evaluate@{row}-{seed}", f"evaluate_released@{row}-{seed}"]


def snapshot(profile: str, deterministic: bool | None = None) -> dict:
    """This run's results: {rows: {row: {seed: {mean_acc, protocol_hash, logits_sha256, weights_sha256,
    code_deps}}}, data_digest, machine, code}. `code_deps`: the hashes DVC recorded (``dvc.lock``) for the code the
    row's stages read."""
    rows: dict[str, dict[str, dict]] = {}
    recorded = recorded_stages(Path("dvc.lock"))
    for metrics_file in sorted(paths.metrics_dir(profile).glob("*/seed*.json")):
        m = json.loads(metrics_file.read_text())
        row, seed = metrics_file.parent.name, metrics_file.stem.removeprefix("seed")
        pred = paths.predictions_path(profile, row, int(seed))
        rows.setdefault(row, {})[seed] = {
            "mean_acc": round(100 * m["mean"]["acc"], 4),
            "protocol_hash": m.get("protocol_hash"),
            "logits_sha256": _logits_sha256(pred),
            "weights_sha256": _file_sha256(paths.train_dir(profile, row, int(seed)) / "best.safetensors"),
            "code_deps": code_hashes(recorded, _row_stages(row, seed)),
        }
    from sep_bench.tracking import git_state

    git = git_state(Path("."), CODE_PATHS)  # a run rewrites results/ and dvc.lock: those are not code
    code = git["git.commit"][:12] + ("+changes" if git["git.dirty"] == "true" else "")
    return {"profile": profile, "data_digest": _data_digest(profile), "machine": machine_info(deterministic),
            "code": code, "rows": rows}


def write_reference(profile: str, spreads: dict[str, float] | None = None, note: str = "",
                    deterministic: bool | None = None) -> Path:
    """Commit-ready reference of the current results (``results/reference/<profile>.json``)."""
    snap = snapshot(profile, deterministic)
    old = _read(REFERENCE_DIR / f"{profile}.json") or {}
    keep = old.get("spread_acc_points", {})
    snap["spread_acc_points"] = {row: (spreads or {}).get(row, keep.get(row, DEFAULT_SPREAD)) for row in snap["rows"]}
    snap["spread_note"] = note or old.get("spread_note", "")
    out = REFERENCE_DIR / f"{profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(snap, indent=2, sort_keys=True) + "\n")
    return out


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class RowCheck:
    row: str
    seed: str
    reference: float | None
    reproduced: float | None
    status: str  # bit-identical | within spread | outside spread | missing
    cause: str = ""
    top_cause: str = ""  # the name of the highest-ranked differing factor (the verdict line groups rows by it)

    @property
    def diff(self) -> float | None:
        if self.reference is None or self.reproduced is None:
            return None
        return round(self.reproduced - self.reference, 4)


def _same_bits(a: dict, b: dict) -> bool:
    """The same logits, and the same weights where both sides recorded them (released rows have none)."""
    if not a.get("logits_sha256") or a["logits_sha256"] != b.get("logits_sha256"):
        return False
    return not (a.get("weights_sha256") and b.get("weights_sha256")) or a["weights_sha256"] == b["weights_sha256"]


def compare(reference: dict, run: dict) -> list[RowCheck]:
    """Classify every (row, seed) of the reference and of this run (see the module docstring)."""
    spreads = reference.get("spread_acc_points", {})
    checks = []
    ref_rows, run_rows = reference.get("rows", {}), run.get("rows", {})
    for row in sorted(set(ref_rows) | set(run_rows)):
        for seed in sorted(set(ref_rows.get(row, {})) | set(run_rows.get(row, {}))):
            a, b = ref_rows.get(row, {}).get(seed), run_rows.get(row, {}).get(seed)
            if a is None or b is None:
                where = "this run" if b is None else "the reference"
                checks.append(RowCheck(row, seed, a and a["mean_acc"], b and b["mean_acc"], "missing",
                                       f"not in {where}"))
                continue
            check = RowCheck(row, seed, a["mean_acc"], b["mean_acc"], "")
            found = factors(reference, run, a, b)
            cause = likely_cause(found)
            check.top_cause = f"{found[0].name} differs" if found else "unknown"
            if _same_bits(a, b):
                check.status = "bit-identical"
            elif abs(check.diff) <= (spreads.get(row) or 0.0) + 1e-9:
                check.status = "within spread"
                check.cause = cause if check.diff else ""
            else:
                check.status, check.cause = "outside spread", cause
            checks.append(check)
    return checks


def verdict_line(profile: str, checks: list[RowCheck], reference_found: bool = True) -> str:
    if not reference_found:
        return (f"reproduced vs committed ({profile}): no committed reference (results/reference/{profile}.json); "
                "nothing to compare")
    n = len(checks)
    bad = [c for c in checks if c.status in ("outside spread", "missing")]
    same = sum(c.status == "bit-identical" for c in checks)
    within = sum(c.status == "within spread" for c in checks)
    if not bad:
        detail = f"{same} of {n} rows bit-identical" + (f", {within} within the stated spread" if within else "")
        return f"reproduced: {detail} (committed reference results/reference/{profile}.json)"
    causes = sorted({c.top_cause or c.cause for c in bad})
    return (f"NOT reproduced: {len(bad)} of {n} rows differ from the committed reference "
            f"({', '.join(f'{c.row}' for c in bad[:6])}{'...' if len(bad) > 6 else ''}); likely cause: "
            f"{'; '.join(causes)}. Details: results/tables/{profile}_reproduced.md")


def write_tables(profile: str, deterministic: bool | None = None) -> tuple[str, list[Path]]:
    """``results/tables/<profile>_reproduced.{md,csv}`` and the verdict line."""
    reference = _read(REFERENCE_DIR / f"{profile}.json")
    run = snapshot(profile, deterministic)
    checks = compare(reference, run) if reference else []
    line = verdict_line(profile, checks, reference is not None)
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    df = pd.DataFrame([{"row": c.row, "seed": c.seed, "reference Mean": fmt(c.reference),
                        "this run Mean": fmt(c.reproduced), "diff": fmt(c.diff), "status": c.status,
                        "likely cause": c.cause} for c in checks])
    md = [f"# Reproduced vs committed ({profile})", "", line, ""]
    if reference:
        m = reference.get("machine", {})
        md += [f"Reference machine: {m.get('cpu')} ({m.get('arch')}; {'/'.join(m.get('isa', []))}; torch dispatch "
               f"{m.get('torch_cpu_capability')}; {m.get('threads')} threads); torch "
               f"{m.get('versions', {}).get('torch')}; benchmark digest {reference.get('data_digest')}.",
               f"This machine: {run['machine']['cpu']} ({run['machine']['arch']}; {'/'.join(run['machine']['isa'])};"
               f" torch dispatch {run['machine']['torch_cpu_capability']}; {run['machine']['threads']} threads);"
               f" benchmark digest {run['data_digest']}.", ""]
        if reference.get("spread_note"):
            md += [f"Stated spread: {reference['spread_note']}", ""]
        md += [df.to_markdown(index=False) if len(df) else "(no rows)", ""]
    out_md = paths.TABLES_DIR / f"{profile}_reproduced.md"
    out_csv = paths.TABLES_DIR / f"{profile}_reproduced.csv"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(md))
    df.to_csv(out_csv, index=False)
    return line, [out_md, out_csv]
