import numpy as np
import pandas as pd
import pytest

from sep_bench.engine.metrics import binary_metrics, summarize_predictions


def test_known_answers():
    labels = np.array([0, 0, 1, 1])
    logits = np.array([-2.0, 0.5, 1.0, -0.1])  # one real wrong, one fake wrong
    m = binary_metrics(labels, logits)
    assert m["acc"] == 0.5 and m["real_acc"] == 0.5 and m["fake_acc"] == 0.5
    assert m["auc"] == pytest.approx(0.75)  # pairs (real, fake) ranked right: 3 of 4
    assert m["ap"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert m["n"] == 4 and m["n_real"] == 2


def test_threshold_is_zero_logit_and_fake_is_positive():
    m = binary_metrics(np.array([1, 1, 0]), np.array([0.0, 1e-6, -1e-6]))
    assert m["fake_acc"] == 0.5 and m["real_acc"] == 1.0  # logit 0 is not fake (p = 0.5 is not > 0.5)


def test_one_class_has_no_ap_and_non_finite_logits_refused():
    m = binary_metrics(np.array([1, 1]), np.array([1.0, -1.0]))
    assert m["ap"] is None and m["auc"] is None and m["real_acc"] is None
    with pytest.raises(ValueError, match="non-finite"):
        binary_metrics(np.array([0, 1]), np.array([np.nan, 1.0]))


def test_mean_is_unweighted_over_generators():
    preds = pd.DataFrame({
        "generator": ["a"] * 2 + ["b"] * 4,
        "label": [0, 1, 0, 1, 0, 1],
        "fake_logit": [-1, 1, 1, -1, 1, -1],  # a: acc 1.0; b: acc 0.0
    })
    s = summarize_predictions(preds, ["a", "b"])
    assert s["generators"]["a"]["acc"] == 1.0 and s["generators"]["b"]["acc"] == 0.0
    assert s["mean"]["acc"] == 0.5
    with pytest.raises(ValueError, match="no predictions for test generator 'c'"):
        summarize_predictions(preds, ["a", "c"])


def test_eer_is_interpolated_between_the_bracketing_roc_points():
    # reals -1, 0.3; fakes 0.3, 1.0 (a tie): ROC (0, 0) (0, .5) (.5, 1) (1, 1); FNR - FPR goes .5 -> -.5 on the
    # diagonal segment (0, .5) -> (.5, 1), so FPR = FNR at its middle: EER = 0.25
    m = binary_metrics(np.array([0, 0, 1, 1]), np.array([-1.0, 0.3, 0.3, 1.0]))
    assert m["eer"] == pytest.approx(0.25)
    assert m["auc"] == pytest.approx(3.5 / 4)  # the tied pair counts one half
    assert m["fpr_at_tpr95"] == pytest.approx(0.5)  # TPR 1 is first reached at FPR 0.5
    assert m["tpr_at_fpr1"] == pytest.approx(0.5) and m["tpr_at_fpr5"] == pytest.approx(0.5)
    assert m["acc"] == 0.75 and m["tpr"] == m["fake_acc"] == 1.0 and m["tnr"] == m["real_acc"] == 0.5
    assert m["one_class"] is None


def test_eer_at_a_roc_point_and_operating_points_of_a_graded_curve():
    from sep_bench.engine.metrics import equal_error_rate

    # the first example's ROC passes through (FPR .5, TPR .5): FNR = FPR = .5 exactly at a point
    assert binary_metrics(np.array([0, 0, 1, 1]), np.array([-2.0, 0.5, 1.0, -0.1]))["eer"] == pytest.approx(0.5)
    # hand-made curve: FNR - FPR = .6, .2, -.2 at FPR 0, .1, .3: crossing halfway between the 2nd and 3rd point
    assert equal_error_rate(np.array([0.0, 0.1, 0.3, 1.0]), np.array([0.4, 0.7, 0.9, 1.0])) == pytest.approx(0.2)
    # 100 reals at -1..-0.01 and 20 fakes: 19 above every real, 1 below all of them
    labels = np.r_[np.zeros(100), np.ones(20)]
    logits = np.r_[-np.arange(1, 101) / 100, np.full(19, 1.0), [-2.0]]
    m = binary_metrics(labels, logits)
    assert m["tpr_at_fpr1"] == pytest.approx(0.95) and m["tpr_at_fpr5"] == pytest.approx(0.95)
    assert m["fpr_at_tpr95"] == 0.0  # TPR 19/20 = 0.95 before any real
    assert m["eer"] == pytest.approx(0.05, abs=0.005)


def test_one_class_generator_is_reported_as_such_not_as_zero():
    m = binary_metrics(np.array([1, 1]), np.array([1.0, -1.0]))
    assert m["one_class"] == "fake" and m["acc"] == 0.5 and m["tpr"] == 0.5
    for k in ("ap", "auc", "eer", "fpr_at_tpr95", "tpr_at_fpr1", "tpr_at_fpr5", "real_acc", "tnr"):
        assert m[k] is None
    preds = pd.DataFrame({"generator": ["a"] * 4 + ["only_fake"] * 2, "label": [0, 0, 1, 1, 1, 1],
                          "fake_logit": [-1.0, 0.3, 0.3, 1.0, 1.0, -1.0]})
    s = summarize_predictions(preds, ["a", "only_fake"])
    assert s["one_class"] == {"only_fake": "fake"}
    assert s["mean"]["acc"] == pytest.approx((0.75 + 0.5) / 2)
    assert s["mean"]["auc"] is None and s["mean"]["eer"] is None  # undefined on one generator: no Mean
    assert s["mean_defined"]["auc"] == {"value": pytest.approx(0.875), "n": 1}
