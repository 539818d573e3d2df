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
    assert checks["c"].status == "outside spread" and "instruction set" in checks["c"].cause
    assert checks["gone"].status == "missing" and checks["new"].status == "missing"
    line = rp.verdict_line("mini", list(checks.values()))
    assert line.startswith("NOT reproduced: 3 of 5 rows") and "c" in line


def test_cause_order_data_then_protocol_then_code_then_versions():
    ref = _run({"a": _row(80.0, logits="A")})
    assert "different data" in rp.compare(ref, _run({"a": _row(81.0, logits="X")}, digest="d2"))[0].cause
    assert "different protocol" in rp.compare(ref, _run({"a": _row(81.0, "p2", "X")}))[0].cause
    assert "commit c1, this run from c2" in rp.compare(ref, _run({"a": _row(81.0, logits="X")}, code="c2"))[0].cause
    other = _run({"a": _row(81.0, logits="X")}, machine=_machine(torch="2.15.0"))
    assert "torch 2.14.1 -> 2.15.0" in rp.compare(ref, other)[0].cause


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
