"""Why a row differs from the committed reference: every factor that differs, ranked by whether it can change
that row's bits.

A row's numbers are a function of its inputs: the benchmark's pixels (data digest), the protocol (protocol hash),
the code the row's stages read (the hashes DVC records in ``dvc.lock`` for the code paths of ``train@<row>-<seed>``
and ``evaluate@<row>-<seed>``), the library versions, and - unless training is bit-exact across machines - the
CPU's kernels (the CPU, and the capability ATen dispatches to) and the thread count. `factors` lists each of these that differs between the reference and this
run; each carries `can_change_bits`:

- a code commit that changed no file the row's stages read is NOT a cause (it is listed, marked so);
- a different CPU is a cause when deterministic training is off, when it is on but either machine lacks AVX2
  (the deterministic mode pins ATen's AVX2 kernels only there), or when the vendors differ (measured: the mode
  does not give the same weights on an Intel and an AMD CPU); with it on, both AVX2 and the same vendor it is
  listed as "possible" (ranked after everything that certainly changes the bits);
- everything else that differs can change the bits.

`likely_cause` names the highest-ranked factors that can change the bits, and says what else differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from sep_bench.io import read_yaml

__all__ = ["Factor", "factors", "likely_cause", "code_hashes", "recorded_stages"]

#: rank order (lower first) of the factors that can change a row's bits
_RANK = {"data": 0, "protocol": 1, "code": 2, "libraries": 3, "deterministic mode": 4, "threads": 5, "cpu": 6,
         "torch dispatch": 7}  # (another CPU usually brings another dispatch: the CPU is named first)
_CODE_ROOTS = ("sep_bench/", "baselines/")


@dataclass(frozen=True)
class Factor:
    name: str
    reference: str
    this_run: str
    cause: str  # "yes" | "possible" | "no"
    note: str = ""

    def describe(self) -> str:
        text = f"{self.name} ({self.reference} -> {self.this_run})"
        return f"{text}: {self.note}" if self.note else text


def recorded_stages(lock: Path) -> dict:
    """{stage: record} of `lock` (``dvc.lock``; `sep_bench.io.read_yaml`: libyaml, parsed once per process while
    unchanged; read-only); {} when unreadable."""
    try:
        return (read_yaml(lock) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return {}


def code_hashes(recorded: dict, stages: list[str]) -> dict[str, str]:
    """{code path: hash} of the project-code dependencies DVC recorded for `stages` (`recorded_stages`)."""
    out = {}
    for stage in stages:
        for dep in (recorded.get(stage) or {}).get("deps", []):
            if str(dep.get("path", "")).startswith(_CODE_ROOTS):
                out[dep["path"]] = str(dep.get("md5") or dep.get("hash") or "")
    return out


def _code_factor(ref: dict, run: dict, ref_row: dict, run_row: dict) -> Factor | None:
    ref_code, run_code = ref.get("code") or "?", run.get("code") or "?"
    a, b = ref_row.get("code_deps"), run_row.get("code_deps")
    if a is not None and b is not None:
        changed = sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))
        if changed:
            shown = ", ".join(changed[:4]) + ("..." if len(changed) > 4 else "")
            return Factor("code", ref_code, run_code, "yes", f"files this row reads changed: {shown}")
        if ref_code != run_code:
            return Factor("code", ref_code, run_code, "no", "no file this row's stages read changed")
        return None
    if ref_code != run_code:  # no record of the row's code: the commit is all there is to go by
        return Factor("code", ref_code, run_code, "yes", "the row's code files were not recorded")
    return None


#: why another CPU vendor changes the bits even with deterministic training on both machines (issue 29): NPR's mini
#: training with deterministic: true gave weights e2874739... on an Intel Xeon and d8762af5... on an AMD EPYC
#: (results/benchmarks/cross_isa.json); benchmarks/determinism_probe.py --compare finds the first op that differs
_VENDOR_MEASURED = ("another CPU vendor: deterministic training was measured not to give the same weights across "
                    "vendors (benchmarks/determinism_probe.py --compare names the first differing op)")


def _cpu(machine: dict) -> str:
    isa = "/".join(machine.get("isa", []))
    return f"{machine.get('vendor') or '?'} {machine.get('cpu') or '?'} [{isa}]"


def _cpu_factor(rm: dict, nm: dict) -> Factor | None:
    keys = ("vendor", "cpu", "isa", "arch")
    if all(rm.get(k) == nm.get(k) for k in keys):
        return None
    both_det = rm.get("deterministic") is True and nm.get("deterministic") is True
    both_avx2 = "avx2" in rm.get("isa", []) and "avx2" in nm.get("isa", [])
    if both_det and both_avx2 and rm.get("vendor") != nm.get("vendor"):
        return Factor("cpu", _cpu(rm), _cpu(nm), "yes", _VENDOR_MEASURED)
    if both_det and both_avx2:
        return Factor("cpu", _cpu(rm), _cpu(nm), "possible",
                      "deterministic training pins the AVX2 kernels on both; measured to hold across instruction "
                      "set caps of one CPU, not across CPU models")
    why = "deterministic training off: kernels differ per CPU" if not both_det else "no AVX2 on one machine"
    return Factor("cpu", _cpu(rm), _cpu(nm), "yes", why)


def factors(ref: dict, run: dict, ref_row: dict, run_row: dict) -> list[Factor]:
    """Every factor that differs between the reference and this run for one row, causes first, ranked."""
    found: list[Factor] = []
    if ref.get("data_digest") and run.get("data_digest") and ref["data_digest"] != run["data_digest"]:
        found.append(Factor("data", ref["data_digest"][:12], run["data_digest"][:12], "yes"))
    if ref_row.get("protocol_hash") != run_row.get("protocol_hash"):
        found.append(Factor("protocol", str(ref_row.get("protocol_hash")), str(run_row.get("protocol_hash")), "yes"))
    code = _code_factor(ref, run, ref_row, run_row)
    rm, nm = ref.get("machine", {}), run.get("machine", {})
    rv, nv = rm.get("versions", {}), nm.get("versions", {})
    changed = [p for p in sorted(set(rv) | set(nv)) if rv.get(p) != nv.get(p)]
    if changed:
        found.append(Factor("libraries", ", ".join(f"{p} {rv.get(p)}" for p in changed),
                            ", ".join(f"{p} {nv.get(p)}" for p in changed), "yes"))
    if rm.get("deterministic") != nm.get("deterministic") and "deterministic" in rm and "deterministic" in nm:
        found.append(Factor("deterministic mode", str(rm["deterministic"]), str(nm["deterministic"]), "yes"))
    if rm.get("threads") != nm.get("threads"):
        found.append(Factor("threads", str(rm.get("threads")), str(nm.get("threads")), "yes"))
    ra, na = rm.get("torch_cpu_capability"), nm.get("torch_cpu_capability")
    if ra and na and ra != na:  # ATen's vectorised kernels (the CPU's, or capped by ATEN_CPU_CAPABILITY)
        found.append(Factor("torch dispatch", ra, na, "yes", "ATen ran other vectorised kernels"))
    found += [f for f in (code, _cpu_factor(rm, nm)) if f is not None]
    order = {"yes": 0, "possible": 1, "no": 2}
    return sorted(found, key=lambda f: (order[f.cause], _RANK[f.name]))


def likely_cause(found: list[Factor]) -> str:
    """One line: the ranked causes, then what else differs and why it is not a cause."""
    causes = [f.describe() for f in found if f.cause == "yes"]
    possible = [f.describe() for f in found if f.cause == "possible"]
    others = [f.describe() for f in found if f.cause == "no"]
    if causes:
        text = "; ".join(causes)
    elif possible:
        text = "possibly " + "; ".join(possible)
    else:
        text = "unknown: same data, protocol, code, libraries and CPU"
    if causes and possible:
        text += "; possibly " + "; ".join(possible)
    if others:
        text += "; not a cause: " + "; ".join(others)
    return text
