"""benchmarks/determinism_probe.py: the first differing op of two probes, and the probe of a real (tiny) training
step: the same bits in two processes, and with deterministic training the same weights under two instruction-set
caps of oneDNN and MKL.

The verdict's factor ranking on synthetic pairs (a differing CPU with deterministic training off is named first; a
commit that changed no file the row reads is not a cause) is tested in tests/test_reproduced.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import determinism_probe as probe
from tests.conftest import REPO, tiny_params

OP_KINDS_IN_STEP_ORDER = ["input", "forward", "forward", "loss", "grad", "param_grad", "weights"]


def _ops(**changed: str) -> list[list[str]]:
    """A synthetic step: [kind, name, sha256, shape] per op, in recording order; `changed` maps a name to another
    digest."""
    names = ["batch", "model.conv1", "model.fc", "loss", "model.fc[0]", "fc.weight", "fc.weight"]
    return [[kind, name, changed.get(f"{kind}:{name}", f"{i:064x}"), "float32[2]"]
            for i, (kind, name) in enumerate(zip(OP_KINDS_IN_STEP_ORDER, names))]


def _probe_file(path: Path, detectors: dict[str, list], cpu: str = "AMD EPYC") -> Path:
    path.write_text(json.dumps({"machine": {"cpu": {"model": cpu}, "torch_cpu_capability": "AVX2"},
                                "detectors": {d: {"ops": ops} for d, ops in detectors.items()}}))
    return path


def _compare(tmp_path, a: dict, b: dict, cpu_b: str = "AMD EPYC") -> int:
    """`--compare` of two synthetic probe files: its exit status (the lines go to stdout)."""
    return probe.main(["--compare", str(_probe_file(tmp_path / "a.json", a)),
                       str(_probe_file(tmp_path / "b.json", b, cpu_b))])


def test_compare_names_the_first_differing_op_in_step_order(tmp_path, capsys):
    # the weights and the conv output differ: the conv (a forward op) comes first
    b = _ops(**{"forward:model.conv1": "f" * 64, "weights:fc.weight": "e" * 64})
    rc = _compare(tmp_path, {"npr": _ops(), "sep": _ops()}, {"npr": b, "sep": _ops()}, "Intel Xeon")
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert out[0].startswith("npr: op 1 of 7: forward model.conv1 float32[2]") and "2 ops differ in all" in out[0]
    assert out[1] == "sep: identical"
    assert any(line.startswith("  tag cpu.model: AMD EPYC | Intel Xeon") for line in out)


def test_compare_orders_by_kind_not_by_file_position(tmp_path, capsys):
    """Gradients are compared after the loss even if a file lists them first; only the loss differs here."""
    a = _ops()
    b = _ops(**{"loss:loss": "d" * 64})
    rc = _compare(tmp_path, {"x": [a[4], *a[:4], *a[5:]]}, {"x": b})
    assert rc == 1 and capsys.readouterr().out.startswith("x: op 3 of 7: loss loss")


def test_compare_identical_missing_and_different_structure(tmp_path, capsys):
    assert _compare(tmp_path, {"npr": _ops()}, {"npr": _ops()}) == 0
    assert capsys.readouterr().out.strip() == "npr: identical"
    assert _compare(tmp_path, {"npr": _ops(), "sep": _ops()}, {"npr": _ops()}) == 1
    assert "sep: only in A" in capsys.readouterr().out
    other = _ops()
    other[2][1] = "model.head"
    assert _compare(tmp_path, {"npr": _ops()}, {"npr": other}) == 1
    assert "op 2: the steps ran different ops (forward model.fc vs forward model.head)" in capsys.readouterr().out
    assert _compare(tmp_path, {"npr": _ops()}, {"npr": _ops()[:-1]}) == 1
    assert "one step ran more ops (7 vs 6)" in capsys.readouterr().out


def test_compare_refuses_a_file_that_is_not_a_probe(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("[1, 2]")
    good = _probe_file(tmp_path / "a.json", {"npr": _ops()})
    assert probe.main(["--compare", str(good), str(tmp_path / "bad.json")]) == 2
    assert "is not a readable probe file" in capsys.readouterr().err


def _run_probes(tmp_path: Path, runs: dict[str, tuple[dict[str, str], tuple[str, ...]]]) -> dict[str, dict]:
    """{name: probe file} of the probe of the tiny project under each (extra environment, arguments), the runs
    side by side (the digests do not depend on the load)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(probe.DISPATCH_ENV_PREFIXES)}
    procs = {name: subprocess.Popen([sys.executable, str(REPO / "benchmarks/determinism_probe.py"), "--params",
                                     str(tmp_path / "params.yaml"), "--no-dispatch", "--out",
                                     str(tmp_path / f"{name}.json"), *args], cwd=tmp_path,
                                    env=env | extra | {"HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
             for name, (extra, args) in runs.items()}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}: {out[-2000:]}"
    return {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in runs}


@pytest.fixture
def tiny_project(tmp_path, tiny_tree) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(tiny_tree)))
    return tmp_path


def test_the_probe_of_one_step_is_the_same_in_two_processes(tiny_project, capsys):
    runs = _run_probes(tiny_project, {"a": ({}, ()), "b": ({}, ())})
    a, b = runs["a"], runs["b"]
    ops = a["detectors"]["npr"]["ops"]
    kinds = [o[0] for o in ops]
    assert kinds[0] == "input" and kinds[-1] == "weights"
    assert all(a["detectors"]["npr"]["counts"][k] > 0 for k in probe.KINDS)
    assert ["forward", "model.conv1"] in [o[:2] for o in ops] and ["loss", "loss"] in [o[:2] for o in ops]
    assert a["machine"]["deterministic"] is False and a["machine"]["threads"] >= 1
    assert probe.main(["--compare", str(tiny_project / "a.json"), str(tiny_project / "b.json")]) == 0
    assert b["detectors"]["npr"]["weights_sha256"] == a["detectors"]["npr"]["weights_sha256"]
    assert capsys.readouterr().out.startswith("npr: identical")


def test_deterministic_training_gives_the_same_weights_under_two_instruction_set_caps(tiny_project):
    """oneDNN off and MKL_CBWR=COMPATIBLE (the deterministic mode): capping oneDNN at SSE4.1 and MKL at SSE4.2
    changes nothing, bit for bit (ATen's kernels stay pinned to AVX2 by the mode, where the CPU has AVX2)."""
    caps = {"ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    runs = _run_probes(tiny_project, {"native": ({}, ("--deterministic", "on")),
                                      "capped": (caps, ("--deterministic", "on"))})
    native, capped = runs["native"], runs["capped"]
    assert native["machine"]["deterministic"] is True and native["machine"]["mkldnn"]["enabled"] is False
    assert native["machine"]["env"]["MKL_CBWR"] == "COMPATIBLE"
    assert capped["machine"]["env"]["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    first = probe.first_difference(native["detectors"]["npr"]["ops"], capped["detectors"]["npr"]["ops"])
    assert first is None, first
