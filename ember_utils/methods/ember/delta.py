"""Choosing δ for an EMBER edit: sweep the grid on train questions and the neutral validation split, pick by
the rule, report on test.

The rule (:func:`select_delta`):

* **gates on every term, with noise**: specificity, coherence and each of their terms (normalized general,
  similar-domain and other-sense accuracy, the other-sense sentence term, the neutral perplexity and fluency
  terms, seamlessness) must reach ``gate`` × the unedited value, so the collapse of one term cannot hide in an
  average. A δ *fails* a gate when the upper end of the term's 95 % paired bootstrap interval lies below it —
  the data say clearly that it is below — so a point estimate just under the gate, within the noise of a few
  flipped questions, does not fail;
* **the smallest δ within noise of the best**: among the δ that pass, the score (harmonic mean of efficacy,
  specificity and coherence) of the best δ minus its bootstrap standard error is the bar, and the smallest δ
  whose score reaches it wins (the one-standard-error rule of cross-validation: noise in the score does not
  push δ up). If none passes there is no edit;
* a choice at either end of the grid is **not identified** (the best δ may lie beyond it): the sweep extends
  the grid in that direction (``max_extensions`` steps of the grid's end ratio) and reports the choice as
  not identified if it is still at the edge.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ...eval.metrics import GATE, harmonic_mean
from .edit import EmbeddingEdit

__all__ = ["DELTA_GRID", "DeltaSweep", "select_delta", "sweep_delta", "gate_failures", "grid_edge"]

DELTA_GRID: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 200.0)
#: Terms gated besides specificity and coherence themselves (when the sweep table has them).
GATED_TERMS = ("norm_general", "norm_similar", "norm_other_sense", "other_sense_text_term", "ppl_term",
               "fluency_term", "seamlessness")
#: Columns of the sweep table copied from each evaluation (when the evaluator measured them).
SWEEP_COLUMNS = tuple(dict.fromkeys(("score_se", *(f"{t}{s}" for t in GATED_TERMS for s in ("", "_hi")),
                 "efficacy", "efficacy_lo", "efficacy_hi", "specificity", "specificity_lo", "specificity_hi",
                 "coherence", "coherence_lo", "coherence_hi", "seamlessness", "seamlessness_lo", "seamlessness_hi",
                 "efficacy_indirect", "acc_concept", "acc_concept_lo", "acc_concept_hi", "acc_indirect",
                 "acc_similar", "acc_other_sense", "acc_general", "acc_open", "perplexity", "other_sense_text_term",
                 "lost_concept", "mcnemar_p_concept", "remeasured_fraction", "seconds")))


def select_delta(table: pd.DataFrame, base_specificity: float = 1.0, base_coherence: float = 1.0,
                 gate: float = GATE) -> tuple[float | None, pd.DataFrame]:
    """Pick δ from a sweep table with columns ``delta, efficacy, specificity, coherence`` (train split) and,
    when present, the upper ends of the intervals (``specificity_hi``, ``coherence_hi``, ``<term>_hi`` for
    :data:`GATED_TERMS`; without them the point estimates are gated) and ``score_se`` (without it the best
    score wins outright). See the module docstring for the rule.

    Returns (δ or None, the table sorted by δ with ``passes_gates``, ``failed_gates``, ``score`` and ``chosen``).
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
    bases = {"specificity": base_specificity, "coherence": base_coherence}
    terms = ["specificity", "coherence"] + [k for k in GATED_TERMS if k in t.columns]
    interval = all(f"{k}_hi" in t.columns for k in terms)
    failed = [gate_failures(row, gate, bases, use_intervals=interval) for row in t.to_dict(orient="records")]
    t["gate_rule"] = "interval" if interval else "point"
    t["failed_gates"] = ["+".join(f) for f in failed]
    t["passes_gates"] = [not f for f in failed]
    t["score"] = np.array([harmonic_mean(e, s, c) if ok else 0.0 for e, s, c, ok in
                           zip(t["efficacy"], t["specificity"], t["coherence"], t["passes_gates"])], dtype=float)
    t = t.sort_values("delta", kind="stable").reset_index(drop=True)
    if (t["score"] <= 0).all():
        return None, t.assign(chosen=False, score_bar=np.nan)
    best = int(t["score"].idxmax())
    se = float(t.loc[best, "score_se"]) if "score_se" in t.columns and t.loc[best, "score_se"] == t.loc[best, "score_se"] else 0.0
    bar = float(t.loc[best, "score"]) - se
    chosen = float(t.loc[(t["score"] >= bar) & t["passes_gates"], "delta"].min())
    return chosen, t.assign(chosen=t["delta"] == chosen, score_bar=bar)


def gate_failures(metrics: Mapping[str, Any], gate: float = GATE, bases: Mapping[str, float] | None = None,
                  use_intervals: bool = True) -> list[str]:
    """The gated terms (specificity, coherence, :data:`GATED_TERMS`) that fail for one result or sweep row: the
    upper end of the term's interval (``<term>_hi``; the estimate itself without ``use_intervals`` or when there
    is no interval) lies below ``gate`` × its unedited value (``bases``, default 1). Missing or NaN terms (undefined
    for this concept) are not gated."""
    bases = bases or {}
    out = []
    for k in ("specificity", "coherence", *GATED_TERMS):
        v = metrics.get(k)
        if v is None or v != v:
            continue
        upper = metrics.get(f"{k}_hi", v) if use_intervals else v
        if upper is not None and upper < gate * bases.get(k, 1.0):
            out.append(k)
    return out


def grid_edge(chosen: float | None, grid: Sequence[float]) -> str | None:
    """'upper' / 'lower' when ``chosen`` is the largest / smallest δ of ``grid`` (not identified), else None."""
    if chosen is None or len(grid) < 2:
        return None
    if chosen >= max(grid):
        return "upper"
    if chosen <= min(grid):
        return "lower"
    return None


@dataclass
class DeltaSweep:
    """Result of a δ sweep: the per-δ table (train split), the chosen δ (``None`` = no edit) and whether
    the choice is identified (not at an edge of the evaluated grid)."""

    table: pd.DataFrame
    chosen_delta: float | None
    edit: EmbeddingEdit | None
    edge: str | None = None

    @property
    def identified(self) -> bool:
        return self.chosen_delta is not None and self.edge is None

    def summary(self) -> str:
        if self.chosen_delta is None:
            return "No δ passed the specificity/coherence gates: no edit is made."
        row = self.table.loc[self.table["delta"] == self.chosen_delta].iloc[0]
        text = (f"chosen δ = {self.chosen_delta:g} (train: efficacy {row.efficacy:.3f}, specificity "
                f"{row.specificity:.3f}, coherence {row.coherence:.3f}, score {row.score:.3f})")
        if self.edge:
            text += (f"; not identified: it is the {self.edge} end of the grid "
                     f"[{self.table['delta'].min():g}, {self.table['delta'].max():g}]")
        return text


def _check_train_only(evaluator: Any) -> None:
    split = getattr(evaluator, "split", "train")
    if split != "train":
        raise ValueError(f"Choose δ on the train split; the evaluator uses split={split!r}.")
    test_parts = sorted(p for p, s in getattr(evaluator, "splits", {}).items() if s == "test")
    if test_parts:
        raise ValueError(f"The δ sweep must not read a test split, but the evaluator's parts {test_parts} read "
                         "'test' (build it with split='train'; neutral text then defaults to 'validation').")


def sweep_delta(model: Any, edit: EmbeddingEdit, evaluator: Any, grid: Sequence[float] = DELTA_GRID,
                gate: float = GATE, progress: bool = True, *, reuse_unaffected: bool = True,
                reference: Any = None, max_extensions: int = 0) -> DeltaSweep:
    """Evaluate ``edit`` at every δ of ``grid`` with ``evaluator`` (train questions, neutral validation text;
    a test split anywhere is an error), then choose δ with :func:`select_delta`. When the choice is at an end
    of the grid, up to ``max_extensions`` more δ are tried beyond it (×/÷ the ratio of the grid's last two
    values). The model is left unedited.

    ``evaluator`` must have been built on ``model``. With ``reuse_unaffected`` (default) the evaluator
    re-measures only inputs that contain an edited token; the rest is copied from ``reference`` (default: the
    baseline; pass the base method's result when the edit is applied on top of another state).
    """
    _check_train_only(evaluator)
    if getattr(evaluator, "model", model) is not model:
        raise ValueError("The evaluator was built on a different model than the one passed to sweep_delta.")
    if len(grid) == 0:
        raise ValueError("Empty δ grid.")
    if edit.applied:
        raise ValueError("The edit is applied; revert it before sweeping.")
    rows: list[dict[str, Any]] = []

    def run(deltas: Sequence[float]) -> None:
        for delta in tqdm(list(deltas), desc="δ sweep", disable=not progress):
            res = evaluator.evaluate(edit.with_delta(delta), name=f"delta={delta:g}", reuse=reuse_unaffected,
                                     reference=reference)
            rows.append({"delta": float(delta), **{k: res.metrics[k] for k in SWEEP_COLUMNS if k in res.metrics}})

    run(sorted(grid))
    chosen, table = select_delta(pd.DataFrame(rows), gate=gate)
    for _ in range(max_extensions):
        evaluated = sorted(r["delta"] for r in rows)
        edge = grid_edge(chosen, evaluated)
        if edge is None or len(evaluated) < 2:
            break
        nxt = (evaluated[-1] * evaluated[-1] / evaluated[-2] if edge == "upper"
               else evaluated[0] * evaluated[0] / evaluated[1])
        run([nxt])
        chosen, table = select_delta(pd.DataFrame(rows), gate=gate)
    edge = grid_edge(chosen, list(table["delta"]))
    return DeltaSweep(table, chosen, edit.with_delta(chosen) if chosen is not None else None, edge)
