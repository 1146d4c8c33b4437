"""Chapter 4 exercises: the edit of one embedding row, and the δ rule on a sweep table."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._check import ExerciseFailed, as_array, call, compare, passed

__all__ = ["check_edit_row", "check_delta_rule", "DELTA_RULE_COLUMNS"]

#: what the reader's δ rule sees: the gates are already decided, the rule picks among the rows
DELTA_RULE_COLUMNS = ("delta", "score", "score_se", "passes_gates")


def check_edit_row(fn: Callable[[Any, Any, Any, float], Any], atoms: Any, model: Any, delta: float,
                   n_rows: int = 5) -> bool:
    """``fn(embedding_row, code_row, atom_rows, delta)`` → the edited row e − δ Σ_{k∈S} g_k f_k, where
    ``code_row`` holds the token's codes on the selected atoms S and ``atom_rows`` those atoms (|S| × d).
    ``atoms`` is the chapter's fitted pipeline (``fit_concept_atoms``); checked on the first ``n_rows`` edited
    tokens against the row the package's edit writes into the model's ``W_E`` (restored afterwards)."""
    name = "edit of one row"
    chosen, _ = atoms.atoms_to_edit()
    edit = atoms.edit(delta=delta, atoms=chosen)
    fac, sel = atoms.factorization, list(edit.meta["selected_atoms"])
    codes = fac.codes_.to_dense() if getattr(fac.codes_, "is_sparse", False) else fac.codes_
    G, F = torch.as_tensor(np.asarray(codes), dtype=torch.float32), torch.as_tensor(np.asarray(fac.atoms_),
                                                                                    dtype=torch.float32)
    row_of = {int(t): i for i, t in enumerate(atoms.vocab.token_ids)}
    W = model.W_E.detach().float().cpu().clone()
    n = min(n_rows, len(edit.token_ids))
    for i in range(n):
        tid = int(edit.token_ids[i])
        e, g = W[tid], G[row_of[tid], sel]
        shift = edit.delta * edit.directions[i].float()
        with edit.applied_to(model):
            expected = model.W_E[tid].detach().float().cpu().clone()
        got = call(fn, name, e.clone(), g.clone(), F[sel].clone(), float(edit.delta))
        compare(name, f"the edited row of token {tid}", got, expected, atol=1e-3, rtol=1e-3, mistakes={
            "add the concept direction instead of subtracting it": e + shift,
            "forget δ (the unit edit)": e - edit.directions[i].float(),
            "return the concept part instead of removing it from the row": shift,
            "remove the token's reconstruction on every atom, not only the selected ones": e - edit.delta * (G[row_of[tid]] @ F)})
    return passed(name, f"{n} rows match the package's edit at δ = {edit.delta:g}")


def _reference_rule(table: pd.DataFrame) -> float | None:
    ok = table[table["passes_gates"].astype(bool) & (table["score"] > 0)]
    if ok.empty:
        return None
    best = ok.loc[ok["score"].idxmax()]
    se = float(best["score_se"]) if best["score_se"] == best["score_se"] else 0.0
    return float(ok.loc[ok["score"] >= float(best["score"]) - se, "delta"].min())


def _cases(table: pd.DataFrame | None) -> list[tuple[str, pd.DataFrame]]:
    synthetic = pd.DataFrame({"delta": [0.5, 1, 2, 4, 8], "score": [0.30, 0.52, 0.55, 0.60, 0.0],
                              "score_se": [0.05] * 5, "passes_gates": [True, True, True, True, False]})
    cases = [("a sweep where the best score fails a gate",
              synthetic.assign(score=[0.3, 0.5, 0.55, 0.6, 0.9], passes_gates=[True, True, True, True, False])),
             ("a sweep where two δ are within one SE of the best", synthetic),
             ("a sweep where no δ passes the gates", synthetic.assign(passes_gates=False, score=0.0)),
             ("a sweep whose best row has no SE", synthetic.assign(score_se=np.nan))]
    if table is not None:
        cases.insert(0, ("the chapter's sweep", table))
    return cases


def check_delta_rule(fn: Callable[[pd.DataFrame], float | None], table: pd.DataFrame | None = None) -> bool:
    """``fn(table)`` → the chosen δ (or None): among the rows that pass the gates, the smallest δ whose score is
    within one standard error (``score_se``) of the best score. ``table`` (columns :data:`DELTA_RULE_COLUMNS`,
    e.g. ``select_delta``'s output) is checked first, then small made-up sweeps with the rule's edge cases."""
    name = "δ rule"
    if table is not None:
        missing = set(DELTA_RULE_COLUMNS) - set(table.columns)
        if missing:
            raise ValueError(f"The sweep table lacks {sorted(missing)}; it needs {list(DELTA_RULE_COLUMNS)}.")
        table = table[list(DELTA_RULE_COLUMNS)].reset_index(drop=True)
    for label, case in _cases(table):
        expected = _reference_rule(case)
        got = call(fn, name, case.copy())
        if expected is None:
            if got is not None:
                raise ExerciseFailed(f"{name}: on {label} no row passes, so the rule must make no edit (None); "
                                     f"you chose δ = {got}.")
            continue
        if got is None:
            raise ExerciseFailed(f"{name}: on {label} you returned None; the rule chooses δ = {expected:g}.")
        got = float(as_array(got, name, "δ"))
        if not np.isclose(got, expected):
            ok = case[case["passes_gates"].astype(bool)]
            failing = case.loc[~case["passes_gates"].astype(bool), "delta"].to_numpy(float)
            if np.isclose(got, failing).any():
                why = "your δ fails a gate; only rows that pass every gate can be chosen"
            elif len(ok) and np.isclose(got, float(ok.loc[ok["score"].idxmax(), "delta"])):
                why = "you took the best score; the rule takes the smallest δ within one SE of it"
            else:
                why = "check the gate filter and the one-SE bar"
            raise ExerciseFailed(f"{name}: on {label} you chose δ = {got:g}, the rule chooses {expected:g} ({why}).")
    return passed(name, f"{len(_cases(table))} sweeps, the chapter's included" if table is not None
                  else f"{len(_cases(None))} made-up sweeps")
