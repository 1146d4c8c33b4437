"""Chapter 6 exercises: how far relearning moved an edited row back, and regained accuracy normalized."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._check import call, compare, passed

__all__ = ["check_recovered_fraction", "check_normalized_regained"]


def check_recovered_fraction(fn: Callable[[Any, Any, Any], Any], original_rows: torch.Tensor,
                             edited_rows: torch.Tensor, after_rows: torch.Tensor) -> bool:
    """``fn(original_rows, edited_rows, after_rows)`` → per row, the fraction of the way from the edited value
    back to the original that relearning moved it, measured along the edit: ⟨after − edited, original − edited⟩
    / ‖original − edited‖² (1 = undone, 0 = not moved, negative = pushed further away)."""
    name = "recovered fraction"
    o, e, a = (x.detach().float().cpu() for x in (original_rows, edited_rows, after_rows))
    back, moved = o - e, a - e
    size2 = (back * back).sum(1).clamp_min(1e-24)
    expected = (moved * back).sum(1) / size2
    got = call(fn, name, o.clone(), e.clone(), a.clone())
    compare(name, "the fractions", got, expected, atol=1e-4, rtol=1e-3, mistakes={
        "divide by ‖original − edited‖ instead of its square (that is a length, not a fraction)":
            (moved * back).sum(1) / size2.sqrt(),
        "use the ratio of lengths ‖after − edited‖ / ‖original − edited‖ (any movement counts, even sideways)":
            moved.norm(dim=1) / size2.sqrt(),
        "measure from the original instead of from the edited row": ((a - o) * back).sum(1) / size2})
    return passed(name, f"{len(expected)} rows, median {float(expected.median()):.3g}")


def check_normalized_regained(fn: Callable[[float, float, float], float], acc_after: float, acc_unedited: float,
                              chance: float = 0.25) -> bool:
    """``fn(acc_after, acc_unedited, chance)`` → the share of the unedited model's above-chance accuracy that an
    attack brings back: (after − chance) / (unedited − chance)."""
    name = "normalized regained accuracy"
    cases = [(0.25, 0.6), (0.6, 0.6), (0.4, 0.7)]
    if abs(acc_unedited - chance) > 1e-9:  # at chance there is nothing to regain: the share is undefined
        cases.insert(0, (acc_after, acc_unedited))
    for after, unedited in cases:
        expected = (after - chance) / (unedited - chance)
        got = call(fn, name, after, unedited, chance)
        compare(name, f"the value for after = {after:.3f}, unedited = {unedited:.3f}", got, expected, atol=1e-6,
                rtol=1e-6, mistakes={"forget to subtract chance (a model guessing at random would regain a share)":
                                     after / unedited,
                                     "subtract chance from the numerator only": (after - chance) / unedited})
    if len(cases) == 3:
        return passed(name, "3 cases (the chapter's unedited accuracy is at chance, so its share is undefined)")
    return passed(name, f"{(acc_after - chance) / (acc_unedited - chance):.3f} on the chapter's numbers "
                        f"({len(cases)} cases)")
