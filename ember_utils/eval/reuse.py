"""Reuse of unaffected inputs: a state that only changes the input embeddings of some tokens computes exactly
what its reference computes on every input without those tokens, so only the other inputs are re-run.

:func:`plan_reuse` works out from the state alone whether this holds (its ``touched_tokens``); the evaluator
then re-measures the affected items, copies the rest and spot-checks one unaffected item per part.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models import embeddings_tied
from .measurements import EvalResult, Measurements

__all__ = ["ReusePlan", "plan_reuse", "touched"]


@dataclass(frozen=True)
class ReusePlan:
    """What an evaluation may copy: the reference measurements and the token ids the state changes."""

    ref: Measurements
    edited: frozenset[int]


def touched(edited: frozenset[int], token_sets: Iterable[set[int]]) -> np.ndarray:
    """Boolean mask: which inputs (token-id sets) contain at least one of ``edited``."""
    return np.array([not edited.isdisjoint(t) for t in token_sets], dtype=bool)


def plan_reuse(hf: Any, state: Any, reference: EvalResult, known: list[EvalResult]) -> ReusePlan | None:
    """A :class:`ReusePlan` for measuring ``state`` against ``reference`` (one of ``known``, the evaluator's
    baseline and results), or ``None`` when everything must be measured: the state is not a
    :class:`~ember_utils.state.ModelState`, may change any input relative to the reference's state, or the
    model ties its input and output embeddings (an embedding edit then changes every output)."""
    from ..state import ModelState

    if not any(reference is r for r in known):
        raise ValueError("reference must be this evaluator's baseline or one of its results (the inputs must "
                         "be the same); got an EvalResult measured elsewhere.")
    if not isinstance(state, ModelState):
        return None
    ids = state.touched_tokens_since(reference.state)
    if ids is None:
        return None
    if embeddings_tied(hf):
        return None
    n_vocab = hf.get_input_embeddings().weight.shape[0]
    bad = sorted(i for i in ids if not 0 <= i < n_vocab)
    if bad:
        raise ValueError(f"The state touches token ids outside the vocabulary [0, {n_vocab}): {bad[:5]}.")
    return ReusePlan(reference.measurements, frozenset(ids))
