"""The learning check: a detector below its bar on its training generator fails, unless exempt with a reason; a
lowered bar (with its reason) stays above chance and still fails a broken path."""

import math

import pytest
import yaml

from sep_bench.protocol import LearningCheck, ProtocolError, load_params
from sep_bench.report.learning import learning_rows, summary_line, write_learning
from tests.conftest import tiny_params


def _m(detector, vae8, **extra):
    return {"detector": detector, "generators": {"vae8": {"acc": vae8}, "tconv": {"acc": 0.5}}, **extra}


CHECK = LearningCheck(min_acc=0.85, exempt={"frozen": "random tower"},
                      lowered={"slow": {"min_acc": 0.65, "why": "plateaus at 80%"},
                               "broken": {"min_acc": 0.65, "why": "plateaus at 80%"}})


def test_pass_fail_exempt_lowered_and_seed_mean(tmp_path):
    metrics = [_m("good", 0.90), _m("good", 0.84), _m("bad", 0.60), _m("frozen", 0.50), _m("slow", 0.80),
               _m("broken", 0.55), _m("nparr", 0.99, released={"sha256": "x"})]
    row_of = {"good": "good", "bad": "bad", "frozen": "frozen†", "slow": "slow", "broken": "broken",
              "nparr": "nparr‡"}
    rows = {r["key"]: r for r in learning_rows(metrics, row_of, ["vae8"], CHECK)}
    assert math.isclose(rows["good"]["acc"], 0.87) and rows["good"]["verdict"] == "pass"
    assert rows["bad"]["verdict"] == "FAIL" and rows["frozen"]["verdict"] == "exempt"
    assert rows["slow"]["verdict"] == "pass" and rows["slow"]["bar"] == 0.65  # 80% < 85%, but above its own bar
    assert rows["broken"]["verdict"] == "FAIL"  # a lowered bar still catches a broken path
    assert "nparr" not in rows  # evaluation-only rows are not trained here
    files, line = write_learning(metrics, row_of, ["vae8"], CHECK, "mini", tmp_path / "mini_learning")
    text = files[0].read_text()
    assert "| bad " in text and "FAIL" in text and "`frozen`: random tower" in text and "85%" in text
    assert "`slow` 65%: plateaus at 80%" in text and "bar (%)" in text
    assert line.startswith("learning check (mini): 2 pass, 2 fail (bad, broken), 1 exempt, lowered bar: slow 65%")
    assert summary_line([], "mini").startswith("learning check (mini): 0 pass, 0 fail")


def test_without_a_check_no_row_passes_or_fails(tmp_path):
    files, line = write_learning([_m("good", 0.9)], {"good": "good"}, ["vae8"], None, "genimage",
                                 tmp_path / "genimage_learning")
    assert line == "" and "n/a" in files[0].read_text() and "bar (%)" not in files[0].read_text()


@pytest.mark.parametrize("check, match", [
    ({"exempt": {"nope": "why"}}, "learning_check.exempt names"),
    ({"lowered": {"nope": {"min_acc": 0.7, "why": "x"}}}, "learning_check.lowered names"),
    ({"lowered": {"npr": {"min_acc": 0.9, "why": "x"}}}, "not below min_acc"),
    ({"lowered": {"npr": {"min_acc": 0.5, "why": "x"}}}, "greater than 0.5"),
    ({"lowered": {"npr": {"min_acc": 0.7, "why": ""}}}, "at least 1 character"),
    ({"exempt": {"npr": "why"}, "lowered": {"npr": {"min_acc": 0.7, "why": "x"}}}, "both exempt and lowered"),
])
def test_bad_learning_checks_are_refused(tmp_path, check, match):
    params = tiny_params(tmp_path)
    params["profiles"]["tiny"]["learning_check"] = {"min_acc": 0.85, **check}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ProtocolError, match=match):
        load_params(path)
