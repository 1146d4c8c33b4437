"""Chapter 5 exercises: the ELM target distribution and the loss that trains the model towards it."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._check import ExerciseFailed, call, compare, passed

__all__ = ["check_elm_target", "check_soft_cross_entropy"]


@torch.inference_mode()
def check_elm_target(fn: Callable[..., Any], base_logits: torch.Tensor, expert_logits: torch.Tensor,
                     novice_logits: torch.Tensor, eta: float = 20.0, top_k: int = 50) -> bool:
    """``fn(base_logits, expert_logits, novice_logits, eta, top_k)`` → ``(indices, probs)``: per position the
    top-k tokens of the frozen model without a prefix and q ∝ p₀ · (p_novice / p_expert)^η over them (aligned
    positions × vocab logits in, positions × k out); compared with :func:`ember_utils.methods.elm.target.elm_target`."""
    from ..methods.elm.target import elm_target

    name = "ELM target"
    idx, expected = elm_target(base_logits, expert_logits, novice_logits, eta, top_k=top_k)
    got = call(fn, name, base_logits.clone(), expert_logits.clone(), novice_logits.clone(), eta, top_k)
    if not (isinstance(got, tuple) and len(got) == 2):
        raise ExerciseFailed(f"{name}: return (indices, probs), got {type(got).__name__}.")
    got_idx, got_probs = got
    compare(name, "the candidate token ids", got_idx, idx, atol=0, rtol=0)
    _, swapped = elm_target(base_logits, novice_logits, expert_logits, eta, top_k=top_k)

    def over_k(logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits.float(), -1).gather(-1, idx)

    no_base = torch.softmax(eta * (over_k(novice_logits) - over_k(expert_logits)), -1)
    compare(name, "the target probabilities", got_probs, expected, atol=1e-4, rtol=1e-3, mistakes={
        "swap expert and novice (that steers towards the concept, not away from it)": swapped,
        "leave out the frozen model's own log-probabilities (q must stay close to p₀)": no_base,
        "return the frozen model's distribution without the guidance term": torch.softmax(over_k(base_logits), -1)})
    return passed(name, f"{expected.shape[0]} positions × top-{expected.shape[1]} tokens at η = {eta:g}")


def check_soft_cross_entropy(fn: Callable[[Any, Any, Any], Any], logits: torch.Tensor, indices: torch.Tensor,
                             probs: torch.Tensor) -> bool:
    """``fn(logits, indices, probs)`` → mean over positions of −Σ_j q_j log p(token_j), with p the softmax over
    the whole vocabulary of ``logits`` (positions × vocab) and the target q given on ``indices`` (positions × k)."""
    from ..methods.elm.target import soft_cross_entropy

    name = "soft cross-entropy"
    with torch.no_grad():
        expected = soft_cross_entropy(logits, indices, probs)
        logp = torch.log_softmax(logits.float(), -1).gather(-1, indices)
        over_k = torch.log_softmax(logits.float().gather(-1, indices), -1)
    got = call(fn, name, logits.clone(), indices.clone(), probs.clone())
    compare(name, "the loss", got, expected, atol=1e-4, rtol=1e-4, mistakes={
        "normalize over the k candidates only (the rest of the vocabulary must keep its share of p)":
            -(probs * over_k).sum(-1).mean(),
        "sum over positions instead of averaging": -(probs * logp).sum(),
        "forget the minus sign": (probs * logp).sum(-1).mean()})
    return passed(name, f"{float(expected):.4f} over {logits.shape[0]} positions")
