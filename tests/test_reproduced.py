"""Reproduced vs committed: the verdict on synthetic pairs of results, and the files it writes."""

import json

import pandas as pd

from sep_bench.report import reproduced as rp


def _machine(isa=("avx2", "avx512f"), torch="2.14.1"):
    return {"cpu": "x", "arch": "x86_64", "isa": list(isa), "threads": 2, "torch_cpu_capability": "AVX512",
            "versions": {"torch": torch, "numpy": "2.3"}}


def _run(rows, digest="d1", machine=None, code="c1"):
    return {"data_digest": digest, "machine": machine or _machine(), "rows": rows, "code": code}


def _row(mean, phash="p1", logits="L"):
    return {"0": {"mean_acc": mean, "protocol_hash": phash, "logits_sha256": logits}}


def test_bit_identical_within_and_outside_spread_with_causes():
    ref = _run({"a": _row(80.0, logits="A"), "b": _row(70.0, logits="B"), "c": _row(60.0, logits="C"),
                "gone": _row(50.0)})
    ref["spread_acc_points"] = {"b": 1.0}
    new = _run({"a": _row(80.0, logits="A"), "b": _row(70.5, logits="B2"), "c": _row(65.0, logits="C2"),
                "new": _row(40.0)}, machine=_machine(isa=("avx2",)))
    checks = {c.row: c for c in rp.compare(ref, new)}
    assert checks["a"].status == "bit-identical" and checks["a"].diff == 0
    assert checks["b"].status == "within spread" and checks["b"].diff == 0.5
    assert checks["c"].status == "outside spread" and checks["c"].cause.startswith("cpu (")
    assert checks["gone"].status == "missing" and checks["new"].status == "missing"
    line = rp.verdict_line("mini", list(checks.values()))
    assert line.startswith("NOT reproduced: 3 of 5 rows") and "c" in line


def test_cause_order_data_then_protocol_then_code_then_versions():
    ref = _run({"a": _row(80.0, logits="A")})
    assert rp.compare(ref, _run({"a": _row(81.0, logits="X")}, digest="d2"))[0].cause.startswith("data (")
    assert rp.compare(ref, _run({"a": _row(81.0, "p2", "X")}))[0].cause.startswith("protocol (p1 -> p2)")
    code = rp.compare(ref, _run({"a": _row(81.0, logits="X")}, code="c2"))[0].cause
    assert code.startswith("code (c1 -> c2)")  # no record of the row's files: the commit is all there is
    other = _run({"a": _row(81.0, logits="X")}, machine=_machine(torch="2.15.0"))
    assert rp.compare(ref, other)[0].cause.startswith("libraries (torch 2.14.1 -> torch 2.15.0)")


def _factored(row_ref: dict, row_run: dict, machine_ref: dict, machine_run: dict, code=("c1", "c2")):
    ref = _run({"a": {"0": row_ref}}, machine=machine_ref, code=code[0])
    run = _run({"a": {"0": row_run}}, machine=machine_run, code=code[1])
    return rp.compare(ref, run)[0]


def test_a_commit_that_changed_no_file_the_row_reads_is_not_a_cause_and_the_cpu_is():
    deps = {"baselines/npr.py": "m1", "sep_bench/engine/train.py": "m2"}
    row_ref = {"mean_acc": 80.0, "protocol_hash": "p", "logits_sha256": "A", "code_deps": deps}
    row_run = {**row_ref, "mean_acc": 81.0, "logits_sha256": "B"}
    amd = {**_machine(isa=("avx2", "avx512f")), "vendor": "AuthenticAMD", "cpu": "AMD EPYC", "deterministic": False}
    intel = {**amd, "vendor": "GenuineIntel", "cpu": "Intel Xeon"}
    check = _factored(row_ref, row_run, amd, intel)
    assert check.status == "outside spread"
    assert check.cause.startswith("cpu (AuthenticAMD AMD EPYC") and "deterministic training off" in check.cause
    assert "not a cause: code (c1 -> c2): no file this row's stages read changed" in check.cause
    assert check.top_cause == "cpu differs"


def test_a_changed_file_the_row_reads_ranks_before_the_cpu():
    row_ref = {"mean_acc": 80.0, "protocol_hash": "p", "logits_sha256": "A", "code_deps": {"baselines/npr.py": "m1"}}
    row_run = {**row_ref, "mean_acc": 81.0, "logits_sha256": "B", "code_deps": {"baselines/npr.py": "m9"}}
    amd = {**_machine(), "vendor": "AuthenticAMD", "cpu": "AMD EPYC", "deterministic": False}
    intel = {**amd, "vendor": "GenuineIntel", "cpu": "Intel Xeon"}
    cause = _factored(row_ref, row_run, amd, intel).cause
    assert cause.startswith("code (c1 -> c2): files this row reads changed: baselines/npr.py; cpu (")


def test_with_deterministic_training_on_both_avx2_cpus_of_one_vendor_are_only_a_possible_cause():
    row_ref = {"mean_acc": 80.0, "protocol_hash": "p", "logits_sha256": "A", "code_deps": {}}
    row_run = {**row_ref, "mean_acc": 81.0, "logits_sha256": "B"}
    amd = {**_machine(), "vendor": "AuthenticAMD", "cpu": "AMD EPYC", "deterministic": True}
    other_amd = {**amd, "cpu": "AMD EPYC 9R14"}
    assert _factored(row_ref, row_run, amd, other_amd, code=("c1", "c1")).cause.startswith("possibly cpu (")
    # another vendor: measured to change the bits even with the mode on (issue 29: NPR on an Intel Xeon)
    intel = {**amd, "vendor": "GenuineIntel", "cpu": "Intel Xeon"}
    cause = _factored(row_ref, row_run, amd, intel, code=("c1", "c2")).cause
    assert cause.startswith("cpu (AuthenticAMD AMD EPYC") and "another CPU vendor" in cause
    assert "not a cause: code (c1 -> c2)" in cause
    old = {**intel, "isa": ["sse4_2"]}  # no AVX2: the deterministic mode cannot pin the same kernels
    assert _factored(row_ref, row_run, amd, old, code=("c1", "c1")).cause.startswith("cpu (")


def test_another_torch_dispatch_on_the_same_cpu_is_named():
    """ATEN_CPU_CAPABILITY set on one machine: same CPU, other ATen kernels."""
    row_ref = {"mean_acc": 80.0, "protocol_hash": "p", "logits_sha256": "A", "code_deps": {}}
    row_run = {**row_ref, "mean_acc": 81.0, "logits_sha256": "B"}
    capped = {**_machine(), "torch_cpu_capability": "DEFAULT"}
    check = _factored(row_ref, row_run, _machine(), capped, code=("c1", "c1"))
    assert check.cause == "torch dispatch (AVX512 -> DEFAULT): ATen ran other vectorised kernels"
    assert check.top_cause == "torch dispatch differs"
    # another CPU with another dispatch: the CPU first (deterministic training off), the dispatch after it
    intel = {**capped, "vendor": "GenuineIntel", "cpu": "Intel Xeon", "deterministic": False}
    cause = _factored(row_ref, row_run, {**_machine(), "deterministic": False}, intel, code=("c1", "c1")).cause
    assert cause.startswith("cpu (? x [avx2/avx512f] -> GenuineIntel Intel Xeon") and "; torch dispatch (" in cause


def test_same_logits_but_other_weights_is_not_bit_identical():
    row_ref = {"mean_acc": 80.0, "protocol_hash": "p", "logits_sha256": "A", "weights_sha256": "W1"}
    row_run = {**row_ref, "weights_sha256": "W2"}
    check = _factored(row_ref, row_run, _machine(), _machine(), code=("c1", "c1"))
    assert check.status == "within spread" and check.diff == 0


def test_all_identical_says_reproduced():
    ref = _run({"a": _row(80.0, logits="A"), "b": _row(70.0, logits="B")})
    line = rp.verdict_line("mini", rp.compare(ref, ref))
    assert line.startswith("reproduced: 2 of 2 rows bit-identical")


def test_reference_round_trip_from_result_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for row, logits in (("npr", [0.5, -1.0]), ("sep", [2.0, 0.25])):
        m = tmp_path / f"results/metrics/mini/{row}/seed0.json"
        m.parent.mkdir(parents=True)
        m.write_text(json.dumps({"mean": {"acc": 0.5}, "protocol_hash": "h"}))
        p = tmp_path / f"results/predictions/mini/{row}/seed0.parquet"
        p.parent.mkdir(parents=True)
        pd.DataFrame({"path": ["b.png", "a.png"], "fake_logit": logits}).to_parquet(p)
    rp.write_reference("mini", note="measured")
    # no spread measured: the reference states none, not a 0 that would read as "expected"
    assert json.loads((rp.REFERENCE_DIR / "mini.json").read_text())["spread_acc_points"] == {"npr": None, "sep": None}
    line, files = rp.write_tables("mini")
    assert line.startswith("reproduced: 2 of 2 rows bit-identical") and all(f.exists() for f in files)
    # a changed logit is no longer bit-identical, and with zero stated spread a changed Mean is outside it
    pd.DataFrame({"path": ["b.png", "a.png"], "fake_logit": [0.5, -1.5]}).to_parquet(
        tmp_path / "results/predictions/mini/npr/seed0.parquet")
    (tmp_path / "results/metrics/mini/npr/seed0.json").write_text(json.dumps({"mean": {"acc": 0.75},
                                                                             "protocol_hash": "h"}))
    line, _ = rp.write_tables("mini")
    assert line.startswith("NOT reproduced: 1 of 2 rows") and "npr" in line


def test_spread_option_sets_every_row_or_one_row():
    import pytest
    import typer

    from sep_bench.cli.report import _spreads

    assert _spreads([], ["a", "b"]) is None
    assert _spreads(["0.5"], ["a", "b"]) == {"a": 0.5, "b": 0.5}
    assert _spreads(["0.2", "b=0.5"], ["a", "b"]) == {"a": 0.2, "b": 0.5}
    with pytest.raises(typer.BadParameter):
        _spreads(["c=1"], ["a", "b"])
    with pytest.raises(typer.BadParameter):
        _spreads(["a=x"], ["a", "b"])


def test_torch_facts_are_cached_per_machine_and_recomputed_when_the_key_changes(tmp_path, monkeypatch):
    import sys

    import torch

    monkeypatch.setattr(rp, "TORCH_FACTS_CACHE", tmp_path / "tmp" / "facts.json")
    live = {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    monkeypatch.setattr(rp, "_live_torch_facts", lambda: dict(live))
    assert "torch" in sys.modules and not rp.TORCH_FACTS_CACHE.exists()
    rp.machine_info()  # a process with torch imported asks torch and caches nothing (its own settings may differ)
    assert not rp.TORCH_FACTS_CACHE.exists()
    monkeypatch.delitem(sys.modules, "torch")  # as in `make pipeline`'s process, which never imports torch
    fresh = {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    assert rp.machine_info()["threads"] == fresh["threads"]  # computed, then cached under this machine's key
    cached = json.loads((tmp_path / "tmp" / "facts.json").read_text())
    assert cached["facts"] == fresh
    (tmp_path / "tmp" / "facts.json").write_text(json.dumps({"key": cached["key"], "facts": {**fresh, "threads": 99}}))
    assert rp.machine_info()["threads"] == 99  # the key matches: torch is not asked
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a variable torch's threads follow: another key, asked again
    assert rp.machine_info()["threads"] == fresh["threads"]
    (tmp_path / "tmp" / "facts.json").write_text("{not json")
    assert rp.machine_info()["torch_cpu_capability"] == fresh["torch_cpu_capability"]


def test_code_hashes_come_from_one_parse_of_the_lock(tmp_path):
    from sep_bench.report.verdict import code_hashes, recorded_stages

    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  train@a-0:\n    deps:\n    - path: baselines/a.py\n      md5: m1\n"
                    "    - path: data/prepared/mini\n      md5: d.dir\n  evaluate@a-0:\n    deps:\n"
                    "    - path: sep_bench/engine/evaluate.py\n      md5: m2\n")
    recorded = recorded_stages(lock)
    assert code_hashes(recorded, ["train@a-0", "evaluate@a-0", "absent"]) == {
        "baselines/a.py": "m1", "sep_bench/engine/evaluate.py": "m2"}
    assert recorded_stages(tmp_path / "missing.lock") == {}
    (tmp_path / "bad.lock").write_text("stages: [unclosed\n")
    assert recorded_stages(tmp_path / "bad.lock") == {}
