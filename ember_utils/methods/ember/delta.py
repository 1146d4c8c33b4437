"""Choosing δ for an EMBER edit: sweep the grid on the train split, pick by the rule, report on test."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ...eval.metrics import GATE, selection_score
from .edit import EmbeddingEdit

__all__ = ["DELTA_GRID", "DeltaSweep", "select_delta", "sweep_delta"]

DELTA_GRID: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 200.0)


def select_delta(table: pd.DataFrame, base_specificity: float = 1.0, base_coherence: float = 1.0,
                 gate: float = GATE) -> tuple[float | None, pd.DataFrame]:
    """Pick δ from a sweep table with columns ``delta, efficacy, specificity, coherence`` (train split).

    Each δ gets :func:`~ember_utils.eval.metrics.selection_score` (0 below the gates, else the harmonic mean
    of efficacy, specificity and coherence). The best score wins, ties go to the smaller δ; if every δ scores
    0 there is no edit (returns ``None``). Returns (δ or None, table with ``passes_gates``/``score``).
    """
    needed = {"delta", "efficacy", "specificity", "coherence"}
    missing = needed - set(table.columns)
    if missing:
        raise ValueError(f"Sweep table lacks columns {sorted(missing)}; it needs {sorted(needed)}.")
    if len(table) == 0:
        raise ValueError("Empty sweep table.")
    t = table.copy()
    for col in ("efficacy", "specificity", "coherence"):
        if t[col].isna().any():
            raise ValueError(f"Sweep table column {col!r} has NaN values.")
    t["passes_gates"] = (t["specificity"] >= gate * base_specificity) & (t["coherence"] >= gate * base_coherence)
    t["score"] = np.array([selection_score(e, s, c, gate, base_specificity, base_coherence)
                           for e, s, c in zip(t["efficacy"], t["specificity"], t["coherence"])], dtype=float)
    t = t.sort_values("delta", kind="stable").reset_index(drop=True)
    if (t["score"] <= 0).all():
        return None, t
    best = t["score"].max()
    chosen = float(t.loc[t["score"] == best, "delta"].min())
    return chosen, t


@dataclass
class DeltaSweep:
    """Result of a δ sweep: the per-δ table (train split) and the chosen δ (``None`` = no edit)."""

    table: pd.DataFrame
    chosen_delta: float | None
    edit: EmbeddingEdit | None

    def summary(self) -> str:
        if self.chosen_delta is None:
            return "No δ passed the specificity/coherence gates: no edit is made."
        row = self.table.loc[self.table["delta"] == self.chosen_delta].iloc[0]
        return (f"chosen δ = {self.chosen_delta:g} (train: efficacy {row.efficacy:.3f}, specificity "
                f"{row.specificity:.3f}, coherence {row.coherence:.3f}, score {row.score:.3f})")


def sweep_delta(model: Any, edit: EmbeddingEdit, evaluator: Any, grid: Sequence[float] = DELTA_GRID,
                gate: float = GATE, progress: bool = True, *, reuse_unaffected: bool = True,
                reference: Any = None) -> DeltaSweep:
    """Evaluate ``edit`` at every δ of ``grid`` with ``evaluator`` (which must use the train split), then
    choose δ with :func:`select_delta`. The model is left unedited.

    ``evaluator`` must have been built on ``model``. With ``reuse_unaffected`` (default) the evaluator
    re-measures only inputs that contain an edited token; the rest is copied from ``reference`` (default: the
    baseline; pass the base method's result when the edit is applied on top of another state).
    """
    if getattr(evaluator, "split", "train") != "train":
        raise ValueError(f"Choose δ on the train split; the evaluator uses split={evaluator.split!r}.")
    if getattr(evaluator, "model", model) is not model:
        raise ValueError("The evaluator was built on a different model than the one passed to sweep_delta.")
    if len(grid) == 0:
        raise ValueError("Empty δ grid.")
    if edit.applied:
        raise ValueError("The edit is applied; revert it before sweeping.")
    rows = []
    for delta in tqdm(list(grid), desc="δ sweep", disable=not progress):
        candidate = edit.with_delta(delta)
        res = evaluator.evaluate(candidate, name=f"delta={delta:g}", reuse=reuse_unaffected, reference=reference)
        m = res.metrics
        rows.append({"delta": float(delta), **{k: m[k] for k in ("efficacy", "specificity", "coherence",
                                                                     "acc_concept", "acc_similar", "acc_general",
                                                                     "acc_open", "perplexity")},
                     **{k: m[k] for k in ("remeasured_fraction", "seconds") if k in m}})
    chosen, table = select_delta(pd.DataFrame(rows), gate=gate)
    return DeltaSweep(table, chosen, edit.with_delta(chosen) if chosen is not None else None)
