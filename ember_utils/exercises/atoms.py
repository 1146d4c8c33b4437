"""Chapter 3 exercises: the atom score (concept-to-neutral ratio of mean |code|) and its purity."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..methods.ember.vocab import CONCEPT, NEUTRAL, SHARED
from ._check import as_array, call, compare, passed

__all__ = ["check_atom_ratio", "check_atom_purity"]


def _masks(vocab: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return vocab.mask(CONCEPT), vocab.mask(NEUTRAL), vocab.mask(SHARED)


def check_atom_ratio(fn: Callable[[Any, Any, Any], Any], codes: Any, vocab: Any) -> bool:
    """``fn(codes, concept_mask, neutral_mask)`` → one ratio per atom: mean |code| over concept-only tokens
    divided by mean |code| over neutral-only tokens; compared with ``score_atoms(codes, vocab)['ratio']``."""
    from ..methods.ember.atoms import _ratios, score_atoms

    name = "atom ratio"
    G = as_array(codes.to_dense() if hasattr(codes, "to_dense") else codes, name, "codes")
    cm, nm, sm = _masks(vocab)
    expected = score_atoms(G, vocab)["ratio"].to_numpy()
    got = call(fn, name, G, cm, nm)
    with np.errstate(divide="ignore", invalid="ignore"):
        compare(name, "the ratios", got, expected, atol=1e-6, rtol=1e-5, mistakes={
            "average the signed codes (a negative code uses the atom as much as a positive one: take |code|)":
                G[cm].mean(0) / G[nm].mean(0),
            "divide neutral by concept": 1 / expected,
            "count shared tokens as neutral": _ratios(np.abs(G), cm, nm | sm),
            "use the share of active tokens instead of the mean |code|":
                (G[cm] != 0).mean(0) / (G[nm] != 0).mean(0)})
    top = int(np.nanargmax(np.where(np.isfinite(expected), expected, -1)))
    return passed(name, f"{len(expected)} atoms; the highest finite ratio is atom {top} ({expected[top]:.2f})")


def check_atom_purity(fn: Callable[[Any, Any], Any], codes: Any, vocab: Any) -> bool:
    """``fn(codes, concept_mask)`` → per atom, the share of its total |code| mass on concept-only tokens."""
    from ..methods.ember.atoms import score_atoms

    name = "atom purity"
    G = as_array(codes.to_dense() if hasattr(codes, "to_dense") else codes, name, "codes")
    cm, _, _ = _masks(vocab)
    expected = score_atoms(G, vocab)["purity"].to_numpy()
    A = np.abs(G)
    with np.errstate(divide="ignore", invalid="ignore"):
        got = call(fn, name, G, cm)
        compare(name, "the purities", got, expected, atol=1e-6, rtol=1e-5, mistakes={
            "use signed codes": np.nan_to_num(G[cm].sum(0) / G.sum(0)),
            "count active tokens instead of |code| mass": (A[cm] > 0).sum(0) / (A > 0).sum(0).clip(1)})
    return passed(name, f"mean purity {float(np.mean(expected)):.3f} over {len(expected)} atoms")
