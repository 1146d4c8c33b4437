"""The erasure metrics, from raw accuracies, perplexities and fluencies of a state and of the unedited model.

* normalized accuracy = clip((acc − 0.25) / (acc_base − 0.25), 0, 1); NaN when acc_base ≤ chance.
* efficacy = 1 − normalized concept accuracy; ``efficacy_indirect`` the same on the indirect questions
  (the concept's facts asked without its names), reported next to it but not part of the score.
* specificity = harmonic mean of the normalized general, similar-domain and other-sense MC accuracies and
  ``other_sense_text_term`` = min(1, ppl_base / ppl) on the other-sense sentences (the concept's words used
  in other senses), each term present when measured.
* coherence = harmonic mean(ppl_term, fluency_term, seamlessness): ppl_term = min(1, ppl_base / ppl) on
  held-out neutral sentences; fluency_term = min(1, exp(f − f_base)), f the mean per-token log-likelihood
  that the *unedited* model gives the state's greedy generations on the neutral coherence prompts;
  seamlessness (``eval.seamlessness``) on continuations of concept prompts, when measured.
* score = harmonic mean(efficacy, specificity, coherence) (0 if any term is 0).
* selection score: the score, or 0 when specificity or coherence falls below :data:`GATE` × the unedited
  model's value.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

CHANCE = 0.25


def normalized_accuracy(acc: float, acc_base: float, chance: float = CHANCE, warn: bool = True) -> float:
    """(acc − chance) / (acc_base − chance), clipped to [0, 1]; NaN (with a warning unless ``warn`` is False) if
    acc_base ≤ chance."""
    for name, v in (("acc", acc), ("acc_base", acc_base)):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return float("nan")
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}.")
    if acc_base - chance <= 0:
        if not warn:
            return float("nan")
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
    """Erasure metrics from raw measurements of a state (``acc``) and of the unedited model (``base``).

    Required keys: ``concept``, ``similar``, ``general`` (MC accuracies), ``perplexity`` and ``fluency``.
    Optional (used when present in both): ``indirect`` and ``other_sense`` (MC accuracies),
    ``other_sense_perplexity``, and ``seamless_fluency`` / ``seamless_repetition`` / ``seamless_word_share``.
    ``specificity_terms`` / ``coherence_terms`` name the terms that entered.
    """
    from .seamlessness import seamlessness_terms

    def has(key: str) -> bool:
        return key in acc and key in base

    out: dict[str, Any] = {}
    mc_sets = ["concept", "similar", "general"] + [k for k in ("indirect", "other_sense") if has(k)]
    # the indirect set is reported only (often near chance on a small model): NaN there is expected, not a warning
    norm = {k: normalized_accuracy(acc[k], base[k], chance, warn=k != "indirect") for k in mc_sets}
    out.update({f"norm_{k}": v for k, v in norm.items()})
    out["efficacy"] = 1.0 - norm["concept"]
    if "indirect" in norm:
        out["efficacy_indirect"] = 1.0 - norm["indirect"]
    spec = {"general": norm["general"], "similar": norm["similar"]}
    if "other_sense" in norm:
        spec["other_sense"] = norm["other_sense"]
    if has("other_sense_perplexity"):
        out["other_sense_text_term"] = spec["other_sense_text"] = _ppl_term(acc["other_sense_perplexity"],
                                                                          base["other_sense_perplexity"])
    out["specificity"] = harmonic_mean(*spec.values())
    out["specificity_terms"] = "+".join(spec)
    coh = coherence_terms(acc["perplexity"], base["perplexity"], acc["fluency"], base["fluency"])
    terms = {"perplexity": coh["ppl_term"], "fluency": coh["fluency_term"]}
    out.update(ppl_term=coh["ppl_term"], fluency_term=coh["fluency_term"])
    seam_keys = ("seamless_fluency", "seamless_repetition", "seamless_word_share")
    if all(has(k) for k in seam_keys):
        seam = seamlessness_terms(*(acc[k] for k in seam_keys), *(base[k] for k in seam_keys))
        out.update(seam)
        terms["seamlessness"] = seam["seamlessness"]
    out["coherence"] = harmonic_mean(*terms.values())
    out["coherence_terms"] = "+".join(terms)
    out["score"] = harmonic_mean(out["efficacy"], out["specificity"], out["coherence"])
    return out


def _ppl_term(ppl: float, ppl_base: float) -> float:
    if not (ppl > 0 and ppl_base > 0):
        raise ValueError(f"perplexities must be positive numbers, got {ppl} and {ppl_base}.")
    return min(1.0, ppl_base / ppl)


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
