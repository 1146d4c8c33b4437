"""Run profiles: how much data and how many steps a chapter, the runner or an evaluation uses.

``FULL`` is what results come from; ``FAST`` shrinks everything for smoke runs (CI, a first look on a slow
machine). Numbers measured in FAST mode are noisy and are never reported as results.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["RunProfile", "FULL", "FAST", "run_profile"]


@dataclass(frozen=True)
class RunProfile:
    """Sizes of one kind of run.

    Attributes:
        name: ``"full"`` or ``"fast"``.
        eval_limits: items per evaluation part (seeded random subsets; a missing key = all items) and the
            generation lengths ``gen_max_new_tokens`` / ``open_max_new_tokens`` (upper bounds).
        factorization: keyword arguments that cap the sparse factorization (e.g. ``max_iter``).
        delta_grid: the δ grid, or ``None`` for the method's full grid.
        delta_extensions: how many δ the sweep may add beyond an end of the grid when the choice lands there.
    """

    name: str
    eval_limits: Mapping[str, int] = field(default_factory=dict)
    factorization: Mapping[str, Any] = field(default_factory=dict)
    delta_grid: tuple[float, ...] | None = None
    delta_extensions: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_limits", MappingProxyType(dict(self.eval_limits)))
        object.__setattr__(self, "factorization", MappingProxyType(dict(self.factorization)))


FULL = RunProfile("full")
FAST = RunProfile(
    "fast",
    eval_limits={
        "mc": 16,                  # concept MC questions
        "indirect_mc": 8,          # the concept's facts without its names
        "collateral_mc": 8,        # other-sense MC questions
        "collateral_sentences": 16,  # other-sense sentences (perplexity)
        "prompts": 4,              # seamlessness prompts (concept openings)
        "similar_mc": 8,           # similar-domain MC questions
        "general_mc": 16,          # general-knowledge MC questions
        "open": 8,                 # open questions
        "neutral": 48,             # held-out neutral sentences for perplexity
        "coherence_prompts": 4,    # coherence prompts
        "gen_max_new_tokens": 16,  # tokens generated per coherence prompt
        "seamless_max_new_tokens": 16,  # tokens generated per seamlessness prompt
        "open_max_new_tokens": 8,  # tokens generated per open answer
    },
    factorization={"max_iter": 60, "patience": 20},
    delta_grid=(1.0, 10.0, 100.0),
    delta_extensions=0,
)


def run_profile(fast: bool) -> RunProfile:
    """``FAST`` if ``fast`` else ``FULL``."""
    return FAST if fast else FULL
