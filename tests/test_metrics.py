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
