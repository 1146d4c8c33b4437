"""Item-level comparisons of two evaluated states (before/after tables for the chapters).

Each function takes two :class:`~ember_utils.eval.measurements.EvalResult` objects of the same evaluator (so
their items line up) and returns a table with one row per item.
"""
from __future__ import annotations

import pandas as pd

from .measurements import EvalResult

__all__ = ["flipped_questions", "open_answer_changes", "neutral_change_by_topic", "generation_changes"]


def _check_pair(before: EvalResult, after: EvalResult) -> None:
    for name, r in (("before", before), ("after", after)):
        if not isinstance(r, EvalResult):
            raise TypeError(f"{name} must be an EvalResult, got {type(r).__name__}.")


def flipped_questions(before: EvalResult, after: EvalResult, questions: pd.DataFrame,
                      which: str = "concept") -> pd.DataFrame:
    """Per MC question of set ``which``: its text, whether it was right before and after, and ``flip``
    ('right → wrong', 'wrong → right' or '')."""
    _check_pair(before, after)
    mc0 = before.mc[before.mc["set"] == which].set_index("id")
    mc1 = after.mc[after.mc["set"] == which].set_index("id")
    if len(mc0) == 0:
        raise ValueError(f"No MC set {which!r} in the results (sets: {sorted(set(before.mc['set']))}).")
    if set(mc0.index) != set(mc1.index):
        raise ValueError("before and after were measured on different questions; use results of one evaluator.")
    out = pd.DataFrame({"question": questions.set_index("id").loc[mc0.index, "question"],
                        "before": mc0["correct"].astype(bool), "after": mc1.loc[mc0.index, "correct"].astype(bool)})
    out["flip"] = ""
    out.loc[out.before & ~out.after, "flip"] = "right → wrong"
    out.loc[~out.before & out.after, "flip"] = "wrong → right"
    return out


def open_answer_changes(before: EvalResult, after: EvalResult, questions: pd.DataFrame) -> pd.DataFrame:
    """Per open question: the question, the generation and correctness before and after."""
    _check_pair(before, after)
    if len(before.open) == 0 or len(after.open) == 0:
        raise ValueError("Open questions were not measured (measure_open=False) in one of the results.")
    b = before.open.set_index("id")
    a = after.open.set_index("id").loc[b.index]
    return pd.DataFrame({"question": questions.set_index("id").loc[b.index, "question"],
                         "unedited": b["generation"], "ok before": b["correct"].astype(bool),
                         "edited": a["generation"], "ok after": a["correct"].astype(bool)})


def neutral_change_by_topic(before: EvalResult, after: EvalResult, neutral: pd.DataFrame) -> pd.DataFrame:
    """Per held-out neutral sentence: its topic, tokens, log-likelihood and the change after the edit
    (``delta_logprob``), sorted by the change (most hurt first)."""
    _check_pair(before, after)
    nb, na = before.measurements.neutral, after.measurements.neutral
    if nb is None or na is None or len(nb) != len(na):
        raise ValueError("Both results need their per-sentence neutral log-likelihoods (same evaluator).")
    topic = neutral.drop_duplicates("text").set_index("text")["topic"]
    out = nb[["text", "n_tokens", "logprob"]].reset_index(drop=True).copy()
    out["delta_logprob"] = na["logprob"].to_numpy() - nb["logprob"].to_numpy()
    out["topic"] = out["text"].map(topic)
    return out.sort_values("delta_logprob", kind="stable").reset_index(drop=True)


def generation_changes(before: EvalResult, after: EvalResult) -> pd.DataFrame:
    """Per coherence prompt: both generations, their fluency under the unedited model and the drop."""
    _check_pair(before, after)
    g = before.generations[["prompt", "generation", "base_logprob"]].rename(
        columns={"generation": "unedited", "base_logprob": "fluency before"}).reset_index(drop=True)
    g["edited"] = after.generations["generation"].to_numpy()
    g["fluency after"] = after.generations["base_logprob"].to_numpy()
    g["drop"] = g["fluency before"] - g["fluency after"]
    return g.sort_values("drop", ascending=False, kind="stable").reset_index(drop=True)
