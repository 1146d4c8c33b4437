"""Chapter 2 exercises: the factorization's error measure and reading a token's code."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._check import ExerciseFailed, as_array, call, compare, passed

__all__ = ["check_relative_error", "check_top_atoms"]


def check_relative_error(fn: Callable[[Any, Any, Any], float], X: Any, codes: Any, atoms: Any) -> bool:
    """``fn(X, codes, atoms)`` → ‖X − G F‖_F / ‖X‖_F, the relative reconstruction error of rows ``X`` (n × d)
    from codes ``G`` (n × K) and atoms ``F`` (K × d)."""
    name = "relative reconstruction error"
    Xa, G, F = (as_array(a, name, w) for a, w in ((X, "X"), (codes, "codes"), (atoms, "atoms")))
    resid = np.linalg.norm(Xa - G @ F)
    expected = resid / np.linalg.norm(Xa)
    got = call(fn, name, X, codes, atoms)
    compare(name, "the error", got, expected, atol=1e-4, rtol=1e-4,
            mistakes={"square the ratio (the loss itself, not its square root)": expected ** 2,
                      "forget to divide by ‖X‖": resid,
                      "average the per-row errors instead of one Frobenius ratio":
                          np.mean(np.linalg.norm(Xa - G @ F, axis=1) / np.linalg.norm(Xa, axis=1).clip(1e-12))})
    return passed(name, f"{float(expected):.4f}")


def check_top_atoms(fn: Callable[[Any, int, int], Any], codes: Any, row: int, k: int = 3) -> bool:
    """``fn(codes, row, k)`` → the ``k`` atom indices with the largest |code| in ``row``, largest first."""
    name = "top atoms of a token"
    G = as_array(codes, name, "codes")
    if not 0 <= row < G.shape[0]:
        raise ValueError(f"row {row} is outside the {G.shape[0]} rows of codes.")
    expected = np.argsort(-np.abs(G[row]), kind="stable")[:k]
    got = as_array(call(fn, name, codes, row, k), name, "the atom indices").astype(int).ravel()
    if len(got) != k:
        raise ExerciseFailed(f"{name}: return {k} atom indices, got {len(got)}.")
    if not np.allclose(np.abs(G[row, got]), np.abs(G[row, expected])):
        if np.array_equal(got, np.argsort(-G[row], kind="stable")[:k]):
            raise ExerciseFailed(f"{name}: you sorted by the signed code; a large negative code is a strong use of "
                                 "the atom too — sort by |code|.")
        if np.array_equal(np.sort(got), np.sort(expected)):
            raise ExerciseFailed(f"{name}: the right atoms in the wrong order; put the largest |code| first.")
        raise ExerciseFailed(f"{name}: got atoms {got.tolist()}, expected {expected.tolist()} (|codes| "
                             f"{np.round(np.abs(G[row, expected]), 4).tolist()}).")
    return passed(name, f"row {row}: atoms {expected.tolist()}")
