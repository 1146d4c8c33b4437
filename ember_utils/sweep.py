"""Choosing δ for an EMBER edit: sweep the grid on the train split, pick by the rule, report on test (DESIGN §3.6)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
from tqdm.auto import tqdm

from .edit import DELTA_GRID, EmbeddingEdit, select_delta

__all__ = ["DeltaSweep", "sweep_delta"]


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
                gate: float = 0.9, progress: bool = True, *, reuse_unaffected: bool = True,
                reference: Any = None) -> DeltaSweep:
    """Evaluate ``edit`` at every δ of ``grid`` with ``evaluator`` (which should use the train split), then
    choose δ with :func:`~ember_utils.edit.select_delta`. The model is left unedited.

    With ``reuse_unaffected`` (default) only inputs that contain an edited token are re-measured per δ; all
    other results are copied from ``reference`` (default: the evaluator's baseline; pass the base method's
    result when the edit is applied on top of e.g. LoRA). This is exact because the edit changes nothing
    else (see :meth:`~ember_utils.evaluate.Evaluator.evaluate`, which spot-checks it).
    """
    if getattr(evaluator, "split", "train") != "train":
        raise ValueError(f"Choose δ on the train split; the evaluator uses split={evaluator.split!r}.")
    if len(grid) == 0:
        raise ValueError("Empty δ grid.")
    if edit.applied:
        raise ValueError("The edit is applied; revert it before sweeping.")
    rows = []
    for delta in tqdm(list(grid), desc="δ sweep", disable=not progress):
        candidate = edit.with_delta(delta)
        reuse = dict(edited_tokens=candidate.token_ids, reference=reference) if reuse_unaffected else {}
        res = evaluator.evaluate(candidate.applied_to(model), name=f"delta={delta:g}", **reuse)
        m = res.metrics
        rows.append({"delta": float(delta), **{k: m[k] for k in ("efficacy", "specificity", "coherence",
                                                                     "acc_concept", "acc_similar", "acc_general",
                                                                     "acc_open", "perplexity")},
                     **{k: m[k] for k in ("remeasured_fraction", "seconds") if k in m}})
    chosen, table = select_delta(pd.DataFrame(rows), gate=gate)
    return DeltaSweep(table, chosen, edit.with_delta(chosen) if chosen is not None else None)
