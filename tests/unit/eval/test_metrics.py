"""Metric formulas on hand-computed numbers."""
from __future__ import annotations

import math

import pytest

from ember_utils import eval as E

# ============================================================================ metric formulas


def test_normalized_accuracy():
    assert E.normalized_accuracy(0.25, 0.75) == 0.0
    assert E.normalized_accuracy(0.5, 0.75) == pytest.approx(0.5)
    assert E.normalized_accuracy(0.75, 0.75) == 1.0
    assert E.normalized_accuracy(0.9, 0.75) == 1.0   # clipped above
    assert E.normalized_accuracy(0.1, 0.75) == 0.0   # clipped below
    assert E.normalized_accuracy(0.4, 0.6, chance=0.5) == 0.0
    with pytest.warns(UserWarning, match="not above chance"):
        assert math.isnan(E.normalized_accuracy(0.3, 0.25))
    assert math.isnan(E.normalized_accuracy(float("nan"), 0.5))
    with pytest.raises(ValueError):
        E.normalized_accuracy(1.5, 0.5)


def test_harmonic_mean():
    assert E.harmonic_mean(1.0, 1.0, 1.0) == 1.0
    assert E.harmonic_mean(0.5, 1.0) == pytest.approx(2 / 3)
    assert E.harmonic_mean(0.2, 0.5, 1.0) == pytest.approx(3 / (5 + 2 + 1))
    assert E.harmonic_mean(0.0, 1.0) == 0.0
    assert math.isnan(E.harmonic_mean(float("nan"), 1.0))
    with pytest.raises(ValueError):
        E.harmonic_mean()
    with pytest.raises(ValueError):
        E.harmonic_mean(-0.1, 1.0)


def test_coherence_terms():
    c = E.coherence_terms(ppl=20.0, ppl_base=10.0, fluency=-3.0, fluency_base=-2.0)
    assert c["ppl_term"] == pytest.approx(0.5)
    assert c["fluency_term"] == pytest.approx(math.exp(-1.0))
    assert c["coherence"] == pytest.approx(2 / (2 + math.exp(1.0)))
    better = E.coherence_terms(ppl=5.0, ppl_base=10.0, fluency=-1.0, fluency_base=-2.0)
    assert better == {"ppl_term": 1.0, "fluency_term": 1.0, "coherence": 1.0}  # capped at 1
    with pytest.raises(ValueError):
        E.coherence_terms(0.0, 10.0, -1.0, -1.0)


def test_compute_metrics_hand_numbers():
    base = {"concept": 0.75, "similar": 0.65, "general": 0.45, "perplexity": 10.0, "fluency": -2.0}
    edited = {"concept": 0.35, "similar": 0.55, "general": 0.45, "perplexity": 12.5, "fluency": -2.0}
    m = E.compute_metrics(edited, base)
    assert m["norm_concept"] == pytest.approx(0.2)
    assert m["efficacy"] == pytest.approx(0.8)
    assert m["norm_similar"] == pytest.approx(0.75)
    assert m["norm_general"] == pytest.approx(1.0)
    assert m["specificity"] == pytest.approx(2 / (1 / 0.75 + 1))
    assert m["ppl_term"] == pytest.approx(0.8) and m["fluency_term"] == 1.0
    assert m["coherence"] == pytest.approx(2 / (1 / 0.8 + 1))
    assert m["score"] == pytest.approx(3 / (1 / 0.8 + 1 / m["specificity"] + 1 / m["coherence"]))
    same = E.compute_metrics(base, base)
    assert (same["efficacy"], same["specificity"], same["coherence"], same["score"]) == (0.0, 1.0, 1.0, 0.0)


def test_compute_metrics_with_collateral_indirect_and_seamlessness():
    base = {"concept": 0.75, "similar": 0.65, "general": 0.45, "perplexity": 10.0, "fluency": -2.0,
            "indirect": 0.55, "other_sense": 0.65, "other_sense_perplexity": 20.0,
            "seamless_fluency": -3.0, "seamless_repetition": 0.2, "seamless_word_share": 0.9}
    edited = {**base, "concept": 0.35, "indirect": 0.40, "other_sense": 0.45, "other_sense_perplexity": 25.0,
              "seamless_fluency": -3.0 + math.log(0.5), "seamless_repetition": 0.6, "seamless_word_share": 0.45}
    m = E.compute_metrics(edited, base)
    assert m["efficacy_indirect"] == pytest.approx(0.5)                  # 1 − (0.40−0.25)/(0.55−0.25)
    assert m["norm_other_sense"] == pytest.approx(0.5) and m["other_sense_text_term"] == pytest.approx(0.8)
    assert m["specificity"] == pytest.approx(E.harmonic_mean(1.0, 1.0, 0.5, 0.8))
    assert m["specificity_terms"] == "general+similar+other_sense+other_sense_text"
    assert m["seamless_fluency_term"] == pytest.approx(0.5)
    assert m["seamless_repetition_term"] == pytest.approx(0.4 / 0.8) and m["seamless_word_term"] == pytest.approx(0.5)
    assert m["seamlessness"] == pytest.approx(0.5)
    assert m["coherence"] == pytest.approx(E.harmonic_mean(1.0, 1.0, 0.5))
    assert m["coherence_terms"] == "perplexity+fluency+seamlessness"
    same = E.compute_metrics(base, base)
    assert (same["specificity"], same["coherence"], same["seamlessness"]) == (1.0, 1.0, 1.0)


def test_selection_score():
    assert E.selection_score(0.8, 0.95, 0.95) == pytest.approx(E.harmonic_mean(0.8, 0.95, 0.95))
    assert E.selection_score(0.8, 0.89, 1.0) == 0.0
    assert E.selection_score(0.8, 1.0, 0.85) == 0.0
    assert math.isnan(E.selection_score(float("nan"), 1.0, 1.0))


def test_indirect_set_at_chance_is_nan_without_a_warning():
    import warnings

    base = {"concept": 0.75, "similar": 0.65, "general": 0.45, "perplexity": 10.0, "fluency": -2.0, "indirect": 0.125}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = E.compute_metrics(base, base)
    assert math.isnan(m["efficacy_indirect"]) and m["efficacy"] == 0.0
    with pytest.warns(UserWarning, match="not above chance"):
        E.compute_metrics({**base, "similar": 0.2}, {**base, "similar": 0.2})
