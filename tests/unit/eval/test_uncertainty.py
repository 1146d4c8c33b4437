"""Intervals of every metric: the accuracy interval agrees with the analytic binomial one, pairing narrows
the interval of a difference, the metric intervals bracket the estimate, and flips are counted."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ember_utils.eval.intervals import wilson_interval
from ember_utils.eval.measurements import Measurements
from ember_utils.eval.metrics import compute_metrics
from ember_utils.eval.uncertainty import flip_tests, named_breakdown, paired_metric_intervals


def _meas(correct: dict[str, np.ndarray], neutral_lp: np.ndarray, gen_lp: np.ndarray) -> Measurements:
    mc = pd.concat([pd.DataFrame({"set": s, "correct": c.astype(bool)}) for s, c in correct.items()],
                   ignore_index=True)
    neutral = pd.DataFrame({"text": "t", "n_tokens": 10, "logprob": neutral_lp})
    gens = pd.DataFrame({"base_logprob": gen_lp})
    ppl = float(np.exp(-neutral.logprob.sum() / neutral.n_tokens.sum()))
    return Measurements("m", mc, pd.DataFrame({"correct": []}), ppl, gens, 0.0, neutral=neutral)


def _sets(rng, n, p):
    return {s: (rng.random(n) < p[s]) for s in ("concept", "similar", "general")}


def test_accuracy_interval_matches_the_wilson_interval_and_pairing_narrows_differences():
    rng = np.random.default_rng(0)
    n = 400
    base_sets = {"concept": np.r_[np.ones(240), np.zeros(160)], "similar": rng.random(n) < 0.7,
                 "general": rng.random(n) < 0.6}
    after_sets = dict(base_sets, concept=base_sets["concept"].copy())
    after_sets["concept"][:40] = 0  # 40 of the 240 right answers lost: 0.60 → 0.50
    lp = -rng.uniform(20, 40, 50)
    base, after = _meas(base_sets, lp, -rng.uniform(1, 3, 20)), _meas(after_sets, lp, -rng.uniform(1, 3, 20))
    iv = paired_metric_intervals(after, base, n_boot=4000, seed=1)
    w_lo, w_hi = wilson_interval(200, n)
    assert iv["acc_concept_lo"] == pytest.approx(w_lo, abs=0.01) and iv["acc_concept_hi"] == pytest.approx(w_hi, abs=0.01)
    # paired: only the 40 flipped answers vary between draws, so the difference is tighter than the accuracy
    assert iv["d_acc_concept_lo"] < -0.1 < iv["d_acc_concept_hi"] < 0
    assert iv["d_acc_concept_hi"] - iv["d_acc_concept_lo"] < 0.7 * (iv["acc_concept_hi"] - iv["acc_concept_lo"])
    assert iv["d_acc_concept"] == pytest.approx(-0.1)
    assert iv["d_acc_similar_lo"] == iv["d_acc_similar_hi"] == 0.0  # unchanged answers: no uncertainty in the change
    m = compute_metrics(after.raw(), base.raw())
    for k in ("efficacy", "specificity", "coherence", "score"):
        assert iv[f"{k}_lo"] <= m[k] + 1e-12 and m[k] - 1e-12 <= iv[f"{k}_hi"], k
    assert iv["efficacy_lo"] > 0  # a real loss of 40 answers is not within noise
    with pytest.raises(ValueError, match="different items"):
        paired_metric_intervals(after, _meas(_sets(rng, 10, {"concept": .5, "similar": .5, "general": .5}), lp,
                                             -np.ones(20)))


def test_flip_tests_and_named_breakdown():
    rng = np.random.default_rng(1)
    sets = {"concept": np.r_[np.ones(20), np.zeros(10)], "similar": np.ones(8), "general": np.ones(8)}
    after = dict(sets, concept=sets["concept"].copy())
    after["concept"][:9] = 0
    lp = -np.ones(5)
    f = flip_tests(_meas(after, lp, lp), _meas(sets, lp, lp))
    assert (f["lost_concept"], f["gained_concept"]) == (9, 0) and f["mcnemar_p_concept"] == pytest.approx(2 * 0.5 ** 9)
    assert f["mcnemar_p_similar"] == 1.0
    named = np.zeros(30, dtype=bool)
    named[:12] = True  # the 9 lost answers are all on questions with an edited token
    b = named_breakdown(after["concept"], sets["concept"], named)
    assert b["n_concept_named"] == 12 and b["acc_concept_named"] == pytest.approx(3 / 12)
    assert b["base_acc_concept_unnamed"] == b["acc_concept_unnamed"] and b["concept_drop_share_unnamed"] == 0.0
    assert np.isnan(named_breakdown(sets["concept"], sets["concept"], named)["concept_drop_share_unnamed"])
    with pytest.raises(ValueError, match="paired"):
        named_breakdown(after["concept"][:5], sets["concept"], named)
    del rng


def test_paired_difference_between_two_states():
    from ember_utils.eval.uncertainty import paired_difference_intervals

    rng = np.random.default_rng(2)
    n = 300
    base_sets = {"concept": np.r_[np.ones(180), np.zeros(120)], "similar": rng.random(n) < 0.7,
                 "general": rng.random(n) < 0.6}
    a_sets = dict(base_sets, concept=base_sets["concept"].copy())
    a_sets["concept"][:30] = 0  # A loses 30 right answers
    b_sets = dict(a_sets, concept=a_sets["concept"].copy())
    b_sets["concept"][30:75] = 0  # B loses 45 more
    lp, glp = -rng.uniform(20, 40, 50), -rng.uniform(1, 3, 20)
    base, a, b = (_meas(s, lp, glp) for s in (base_sets, a_sets, b_sets))
    d = paired_difference_intervals(a, b, base, n_boot=1000)
    assert d["diff_acc_concept"] == pytest.approx(-45 / n)
    assert d["diff_acc_concept_hi"] < 0 and d["diff_efficacy_lo"] > 0  # B erases more, and not within noise
    assert d["diff_specificity"] == pytest.approx(0.0, abs=1e-12) and d["diff_specificity_lo"] == d["diff_specificity_hi"]
    same = paired_difference_intervals(a, a, base, n_boot=200)
    assert all(same[f"diff_{m}"] == 0 for m in ("acc_concept", "efficacy", "coherence"))
    with pytest.raises(ValueError, match="different items"):
        paired_difference_intervals(a, _meas(_sets(rng, 10, {"concept": .5, "similar": .5, "general": .5}), lp, glp),
                                    base)
