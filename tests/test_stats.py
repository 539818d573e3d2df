"""Statistics with known answers: McNemar on hand-computed tables, bootstrap CI coverage, paired matching."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from sep_bench.report.stats import (
    MEAN, acc_intervals, bootstrap_means, mcnemar, paired_comparison, seed_correctness,
)


def test_mcnemar_hand_computed():
    # b = 10, c = 2: 12 discordant pairs; P(X <= 2 | Bin(12, 1/2)) = (1 + 12 + 66) / 4096.
    exact, mid = mcnemar(10, 2)
    assert exact == pytest.approx(2 * 79 / 4096)  # 0.038574
    assert mid == pytest.approx(2 * 79 / 4096 - 66 / 4096)  # 0.022461
    assert mcnemar(2, 10) == (exact, mid)  # symmetric
    # b = 5, c = 0: exact 2 / 32; mid-p 2 * (1/32) - 1/32.
    assert mcnemar(5, 0) == pytest.approx((0.0625, 0.03125))
    assert mcnemar(0, 0) == (1.0, 1.0)
    assert mcnemar(7, 7) == (1.0, 1.0)  # balanced: no evidence at all
    for b, c in [(3, 9), (20, 31), (0, 4), (40, 41)]:
        assert mcnemar(b, c)[0] == pytest.approx(binomtest(b, b + c, 0.5).pvalue)
        assert mcnemar(b, c)[1] <= mcnemar(b, c)[0]


def test_bootstrap_of_a_proportion_has_the_binomial_spread():
    values = np.r_[np.ones(80), np.zeros(20)]
    reps = bootstrap_means(values, 20_000, np.random.default_rng(1))
    assert reps.mean() == pytest.approx(0.8, abs=0.003)
    assert reps.std() == pytest.approx(np.sqrt(0.8 * 0.2 / 100), rel=0.03)


def _frame(correct_by_gen: dict[str, np.ndarray], seed_cols: int = 1, label=None) -> pd.DataFrame:
    rows = []
    for g, correct in correct_by_gen.items():
        correct = np.atleast_2d(correct.T).T if correct.ndim == 1 else correct
        for i, row in enumerate(correct):
            rows.append({"generator": g, "path": f"{g}/{i:04d}.png", "label": i % 2 if label is None else label,
                         **{f"seed{s}": bool(row[s]) for s in range(seed_cols)}})
    return pd.DataFrame(rows)


def test_ci_coverage_of_a_known_proportion():
    rng = np.random.default_rng(0)
    p, n, trials, hits = 0.8, 200, 300, 0
    for t in range(trials):
        f = _frame({"g": rng.random(n) < p})
        iv = acc_intervals(f, ["g"], n_boot=2000, seed=t)["g"]
        hits += iv.low <= p <= iv.high
    assert 0.91 <= hits / trials <= 0.98, hits / trials


def test_intervals_are_deterministic_and_per_generator():
    rng = np.random.default_rng(3)
    f = _frame({"a": rng.random(150) < 0.7, "b": rng.random(90) < 0.9})
    one = acc_intervals(f, ["a", "b"], n_boot=1000, seed=5)
    assert one == acc_intervals(f, ["a", "b"], n_boot=1000, seed=5)
    other = acc_intervals(f, ["a", "b"], n_boot=1000, seed=6)["a"]  # another seed: the same up to resampling noise
    assert abs(other.low - one["a"].low) <= 0.02 and abs(other.high - one["a"].high) <= 0.02
    # a generator's interval does not depend on the other generators present
    assert acc_intervals(f[f.generator == "a"], ["a"], n_boot=1000, seed=5)["a"] == one["a"]
    # Mean = unweighted mean over generators, inside its interval, narrower than either generator's
    assert one[MEAN].estimate == pytest.approx((one["a"].estimate + one["b"].estimate) / 2)
    assert one[MEAN].low < one[MEAN].estimate < one[MEAN].high
    assert one[MEAN].n == 240


def test_seed_correctness_matches_by_path_and_threshold():
    base = pd.DataFrame({"path": ["x", "y", "z"], "generator": "g", "label": [0, 1, 1],
                         "fake_logit": [-1.0, 2.0, 0.0]})  # logit 0 is "real" (threshold 0.5 is exclusive)
    other = base.iloc[[2, 0]].assign(fake_logit=[5.0, 3.0])  # reordered, y missing
    f = seed_correctness({0: base, 1: other})
    assert list(f.path) == ["x", "z"]
    assert list(f.seed0) == [True, False] and list(f.seed1) == [False, True]


def test_paired_comparison_known_discordant_counts():
    # g1: 100 images; A right / B wrong on 10, A wrong / B right on 2, the rest both right.
    a = np.ones(100, bool)
    b = np.ones(100, bool)
    b[:10] = False
    a[10:12] = False
    fa = _frame({"g1": a, "g2": np.ones(50, bool)})
    fb = _frame({"g1": b, "g2": np.ones(50, bool)}).sample(frac=1.0, random_state=0)  # order must not matter
    res = paired_comparison(fa, fb, ["g1", "g2"], n_boot=4000, seed=0)
    r = res["g1"]
    assert (r.n_a_only, r.n_b_only) == (10, 2)
    assert r.diff.estimate == pytest.approx(0.08)
    assert r.p_mcnemar_mid == pytest.approx(2 * 79 / 4096 - 66 / 4096)
    assert r.p == r.p_mcnemar_mid and r.p < 0.05
    assert r.diff.low > 0  # the paired bootstrap agrees: A is better on g1
    assert res["g2"].diff.estimate == 0 and res["g2"].p == 1.0
    assert res[MEAN].diff.estimate == pytest.approx(0.04) and res[MEAN].p_mcnemar is None
    assert res[MEAN].diff.n == 150


def test_paired_comparison_several_seeds_reports_the_largest_p():
    n = 60
    a = np.ones((n, 2), bool)
    b = np.ones((n, 2), bool)
    b[:12, 0] = False  # seed 0: strong evidence for A
    b[:2, 1] = False  # seed 1: weak evidence
    res = paired_comparison(_frame({"g": a}, 2), _frame({"g": b}, 2), ["g"], n_boot=2000)["g"]
    assert res.p_mcnemar_mid == pytest.approx(mcnemar(2, 0)[1])
    assert res.diff.estimate == pytest.approx(14 / (2 * n))  # seed-averaged correctness


def test_paired_comparison_rejects_disagreeing_labels():
    fa = _frame({"g": np.ones(4, bool)})
    fb = _frame({"g": np.ones(4, bool)}, label=1)
    with pytest.raises(ValueError, match="disagree"):
        paired_comparison(fa, fb, ["g"], n_boot=100)
