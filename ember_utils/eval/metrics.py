"""The erasure metrics, from raw accuracies, perplexities and fluencies of a state and of the unedited model.

* normalized accuracy = clip((acc − 0.25) / (acc_base − 0.25), 0, 1); NaN when acc_base ≤ chance.
* efficacy = 1 − normalized concept accuracy.
* specificity = harmonic mean(normalized general accuracy, normalized similar-domain accuracy).
* coherence = harmonic mean(ppl_term, fluency_term): ppl_term = min(1, ppl_base / ppl) on held-out neutral
  sentences; fluency_term = min(1, exp(f − f_base)), f the mean per-token log-likelihood that the *unedited*
  model gives the state's greedy generations on the coherence prompts (f_base: its own generations). Both
  are perplexity ratios capped at 1.
* score = harmonic mean(efficacy, specificity, coherence) (0 if any term is 0).
* selection score: the score, or 0 when specificity or coherence falls below :data:`GATE` × the unedited
  model's value.
"""
from __future__ import annotations

import math
import warnings

CHANCE = 0.25


def normalized_accuracy(acc: float, acc_base: float, chance: float = CHANCE) -> float:
    """(acc − chance) / (acc_base − chance), clipped to [0, 1]; NaN (with a warning) if acc_base ≤ chance."""
    for name, v in (("acc", acc), ("acc_base", acc_base)):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return float("nan")
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}.")
    if acc_base - chance <= 0:
        warnings.warn(f"Unedited accuracy {acc_base:.3f} is not above chance {chance}: normalized accuracy undefined.",
                      stacklevel=2)
        return float("nan")
    return float(min(1.0, max(0.0, (acc - chance) / (acc_base - chance))))


def harmonic_mean(*values: float) -> float:
    """Harmonic mean of values in [0, 1]: 0 if any value is 0, NaN if any is NaN."""
    if not values:
        raise ValueError("harmonic_mean needs at least one value.")
    vals = [float(v) for v in values]
    if any(math.isnan(v) for v in vals):
        return float("nan")
    if any(v < 0 for v in vals):
        raise ValueError(f"harmonic_mean needs non-negative values, got {vals}.")
    if any(v == 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def coherence_terms(ppl: float, ppl_base: float, fluency: float, fluency_base: float) -> dict[str, float]:
    """``ppl_term`` = min(1, ppl_base/ppl); ``fluency_term`` = min(1, exp(fluency − fluency_base)) (mean token
    log-likelihoods under the unedited model); ``coherence`` = their harmonic mean."""
    for name, v in (("ppl", ppl), ("ppl_base", ppl_base)):
        if not v > 0:
            raise ValueError(f"{name} must be a positive number, got {v}.")
    ppl_term = min(1.0, ppl_base / ppl)
    flu_term = min(1.0, math.exp(fluency - fluency_base))
    return {"ppl_term": ppl_term, "fluency_term": flu_term, "coherence": harmonic_mean(ppl_term, flu_term)}


def compute_metrics(acc: dict[str, float], base: dict[str, float], chance: float = CHANCE) -> dict[str, float]:
    """EMBER metrics from raw measurements.

    ``acc`` and ``base`` are dicts with ``concept``, ``similar``, ``general`` (MC accuracies), ``perplexity``
    and ``fluency`` (mean token log-likelihood of generations under the unedited model) for the evaluated
    and the unedited model.
    """
    norm = {k: normalized_accuracy(acc[k], base[k], chance) for k in ("concept", "similar", "general")}
    efficacy = 1.0 - norm["concept"]
    specificity = harmonic_mean(norm["general"], norm["similar"])
    coh = coherence_terms(acc["perplexity"], base["perplexity"], acc["fluency"], base["fluency"])
    return {
        "norm_concept": norm["concept"],
        "norm_similar": norm["similar"],
        "norm_general": norm["general"],
        "efficacy": efficacy,
        "specificity": specificity,
        **coh,
        "score": harmonic_mean(efficacy, specificity, coh["coherence"]),
    }


#: A δ (or any erasure setting) is rejected when specificity or coherence falls below GATE × the unedited model's.
GATE = 0.9


def selection_score(efficacy: float, specificity: float, coherence: float, gate: float = GATE,
                    base_specificity: float = 1.0, base_coherence: float = 1.0) -> float:
    """Selection score of an erasure setting: 0 if specificity < ``gate``·base or coherence < ``gate``·base
    (the unedited model has 1 on both), else the harmonic mean of efficacy, specificity and coherence."""
    if any(math.isnan(v) for v in (efficacy, specificity, coherence)):
        return float("nan")
    if specificity < gate * base_specificity or coherence < gate * base_coherence:
        return 0.0
    return harmonic_mean(efficacy, specificity, coherence)
