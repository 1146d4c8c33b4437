"""Intervals: the bootstrap agrees with the analytic binomial interval; paired intervals and McNemar's test."""
from __future__ import annotations

import numpy as np
import pytest

from ember_utils.eval.intervals import bootstrap_interval, mcnemar_test, paired_bootstrap_interval, wilson_interval


@pytest.mark.parametrize("k,n", [(39, 70), (12, 35), (74, 117)])
def test_bootstrap_matches_the_wilson_interval(k, n):
    correct = np.r_[np.ones(k), np.zeros(n - k)]
    est, lo, hi = bootstrap_interval(correct, n_boot=20000, seed=1)
    w_lo, w_hi = wilson_interval(k, n)
    assert est == pytest.approx(k / n)
    assert lo == pytest.approx(w_lo, abs=0.025) and hi == pytest.approx(w_hi, abs=0.025)
    assert hi - lo == pytest.approx(w_hi - w_lo, rel=0.12)


def test_wilson_known_value():
    lo, hi = wilson_interval(50, 100)  # p = 0.5, n = 100: 0.5 ± 0.0963 (z = 1.96)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


def test_paired_interval_is_narrower_than_unpaired_when_answers_agree():
    rng = np.random.default_rng(0)
    before = rng.random(200) < 0.6
    after = before.copy()
    after[:10] = False  # the edit flips a few answers
    d, lo, hi = paired_bootstrap_interval(after, before, seed=0)
    assert d == pytest.approx(after.mean() - before.mean()) and lo <= d <= hi < 0
    ua = bootstrap_interval(after)[2] - bootstrap_interval(after)[1]
    assert hi - lo < ua  # pairing removes the shared question difficulty
    with pytest.raises(ValueError, match="same questions"):
        paired_bootstrap_interval(after[:5], before)


def test_mcnemar():
    before = np.array([1] * 20 + [0] * 10, dtype=bool)
    after = before.copy()
    after[:9] = False
    r = mcnemar_test(before, after)
    assert r["right_to_wrong"] == 9 and r["wrong_to_right"] == 0 and r["p_value"] == pytest.approx(2 * 0.5 ** 9)
    assert mcnemar_test(before, before)["p_value"] == 1.0


def test_interval_errors():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1, 0], level=1.5)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)
