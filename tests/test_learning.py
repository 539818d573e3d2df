"""The learning check: a detector below min_acc on its training generator fails, unless exempt with a reason."""

import math

from sep_bench.report.learning import learning_rows, summary_line, write_learning


def _m(detector, vae8, **extra):
    return {"detector": detector, "generators": {"vae8": {"acc": vae8}, "tconv": {"acc": 0.5}}, **extra}


def test_pass_fail_exempt_and_seed_mean(tmp_path):
    metrics = [_m("good", 0.90), _m("good", 0.84), _m("bad", 0.60), _m("frozen", 0.50),
               _m("nparr", 0.99, released={"sha256": "x"})]
    row_of = {"good": "good", "bad": "bad", "frozen": "frozen†", "nparr": "nparr‡"}
    rows = {r["key"]: r for r in learning_rows(metrics, row_of, ["vae8"], 0.85, {"frozen": "random tower"})}
    assert math.isclose(rows["good"]["acc"], 0.87) and rows["good"]["verdict"] == "pass"
    assert rows["bad"]["verdict"] == "FAIL" and rows["frozen"]["verdict"] == "exempt"
    assert "nparr" not in rows  # evaluation-only rows are not trained here
    files, line = write_learning(metrics, row_of, ["vae8"], 0.85, {"frozen": "random tower"}, "mini",
                                 tmp_path / "mini_learning")
    text = files[0].read_text()
    assert "| bad " in text and "FAIL" in text and "`frozen`: random tower" in text and "85%" in text
    assert line.startswith("learning check (mini): 1 pass, 1 fail (bad), 1 exempt")
    assert summary_line([], "mini").startswith("learning check (mini): 0 pass, 0 fail")


def test_exempt_names_must_be_detectors(tmp_path):
    import pytest
    import yaml

    from sep_bench.protocol import ProtocolError, load_params
    from tests.conftest import tiny_params

    params = tiny_params(tmp_path)
    params["profiles"]["tiny"]["learning_check"] = {"min_acc": 0.85, "exempt": {"nope": "why"}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ProtocolError, match="learning_check.exempt names"):
        load_params(path)
