"""Multiple-choice scoring: packed (fast) and naive (reference), and accuracy."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from ._hf import _device, _encode_cont, _encode_prompt, _inference, _progress, _resolve
from .packing import branch_logprobs

MC_PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
MC_OPTION_TEMPLATE = " {option}"


def _questions_frame(questions: Any) -> pd.DataFrame:
    df = questions if isinstance(questions, pd.DataFrame) else pd.DataFrame(list(questions))
    missing = [c for c in ("question", "options") if c not in df.columns]
    if missing:
        raise ValueError(f"MC questions need columns 'question' and 'options' (and usually 'answer'); missing {missing}.")
    if len(df) == 0:
        raise ValueError("No questions to score (empty table).")
    return df.reset_index(drop=True)


def _normalize_scores(lp: np.ndarray, option_text: str, normalization: str) -> float:
    if normalization == "tokens":
        return float(lp.mean())
    if normalization == "sum":
        return float(lp.sum())
    if normalization == "chars":
        return float(lp.sum() / max(1, len(option_text)))
    raise ValueError(f"Unknown normalization {normalization!r}; use 'tokens', 'chars' or 'sum'.")


def _mc_frame(df: pd.DataFrame, scores: list[list[float]]) -> pd.DataFrame:
    n_opt = max(len(s) for s in scores)
    out = pd.DataFrame({c: df[c].values for c in ("id", "split", "subject") if c in df.columns})
    pred = np.array([int(np.argmax(s)) for s in scores])
    out["predicted"] = pred
    if "answer" in df.columns:
        out["answer"] = df["answer"].astype(int).values
        out["correct"] = out["predicted"] == out["answer"]
    for k in range(n_opt):
        out[f"score_{k}"] = [s[k] if k < len(s) else np.nan for s in scores]
    return out


def _mc_items(df: pd.DataFrame, tok: Any, prompt_template: str, option_template: str):
    items = []
    for q, opts in zip(df["question"], df["options"]):
        if len(opts) < 2:
            raise ValueError(f"Question {q!r} has fewer than 2 options.")
        items.append((_encode_prompt(tok, prompt_template.format(question=q)),
                      [_encode_cont(tok, option_template.format(option=o)) for o in opts]))
    return items


def score_mc(
    model: Any,
    questions: Any,
    *,
    tokenizer: Any = None,
    prompt_template: str = MC_PROMPT_TEMPLATE,
    option_template: str = MC_OPTION_TEMPLATE,
    normalization: str = "tokens",
    max_row_tokens: int = 512,
    batch_tokens: int = 2048,
    progress: bool = False,
) -> pd.DataFrame:
    """Score multiple-choice questions with the packed, prefix-sharing scorer (see module docstring).

    Args:
        questions: DataFrame (or records) with ``question``, ``options`` and optionally ``answer``,
            ``id``, ``split``, ``subject``.
    Returns:
        One row per question: ``id``, ``split``, ``subject`` (those present), ``predicted``, ``answer``,
        ``correct`` and ``score_0..score_3`` (normalized option log-likelihoods).
    """
    hf, tok = _resolve(model, tokenizer)
    df = _questions_frame(questions)
    items = _mc_items(df, tok, prompt_template, option_template)
    lps = branch_logprobs(hf, items, max_row_tokens=max_row_tokens, batch_tokens=batch_tokens, progress=progress)
    scores = [[_normalize_scores(lp, str(o), normalization) for lp, o in zip(lp_q, opts)]
              for lp_q, opts in zip(lps, df["options"])]
    return _mc_frame(df, scores)


def score_mc_naive(
    model: Any,
    questions: Any,
    *,
    tokenizer: Any = None,
    prompt_template: str = MC_PROMPT_TEMPLATE,
    option_template: str = MC_OPTION_TEMPLATE,
    normalization: str = "tokens",
    progress: bool = False,
) -> pd.DataFrame:
    """Reference scorer: one full-logits forward of ``prompt + option`` per option, one at a time.

    Same tokens, templates and output as :func:`score_mc`; slow (no prefix sharing, logits everywhere).
    Used in tests and the benchmark to check the fast scorer.
    """
    hf, tok = _resolve(model, tokenizer)
    df = _questions_frame(questions)
    items = _mc_items(df, tok, prompt_template, option_template)
    device = _device(hf)
    scores = []
    with _inference(hf):
        for (prefix, branches), opts in _progress(zip(items, df["options"]), progress, total=len(items), desc="naive"):
            row = []
            for toks, o in zip(branches, opts):
                ids = torch.tensor([list(prefix) + list(toks)], device=device)
                logits = hf(input_ids=ids, use_cache=False).logits[0].float()
                logp = torch.log_softmax(logits[len(prefix) - 1:-1], dim=-1)
                lp = logp[torch.arange(len(toks)), torch.tensor(toks, device=device)].double().cpu().numpy()
                row.append(_normalize_scores(lp, str(o), normalization))
            scores.append(row)
    return _mc_frame(df, scores)


def mc_accuracy(scored: pd.DataFrame) -> float:
    """Fraction of correct predictions in a :func:`score_mc` table (NaN when empty)."""
    if len(scored) == 0:
        return float("nan")
    return float(scored["correct"].mean())

