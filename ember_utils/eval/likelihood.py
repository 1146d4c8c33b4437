"""Log-likelihood of texts and of continuations after prompts; perplexity."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._hf import _encode_prompt, _resolve
from .packing import branch_logprobs


def _text_items(tok: Any, texts: Sequence[str]) -> list[tuple[list[int], list[list[int]]]]:
    items = []
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"Empty or non-string text {t!r}.")
        ids = _encode_prompt(tok, t)
        if len(ids) < 2:
            raise ValueError(f"Text {t!r} is too short to score (needs ≥1 token after <bos>).")
        items.append((ids[:1], [ids[1:]]))
    return items


def text_logprobs(model: Any, texts: Sequence[str], *, tokenizer: Any = None, max_row_tokens: int = 512,
                  batch_tokens: int = 2048, progress: bool = False) -> pd.DataFrame:
    """Log-likelihood of each text (every token after ``<bos>``): columns ``n_tokens``, ``logprob`` (sum)."""
    hf, tok = _resolve(model, tokenizer)
    lps = branch_logprobs(hf, _text_items(tok, texts), max_row_tokens=max_row_tokens,
                          batch_tokens=batch_tokens, progress=progress)
    return pd.DataFrame({"text": list(texts), "n_tokens": [len(lp[0]) for lp in lps],
                         "logprob": [float(lp[0].sum()) for lp in lps]})


def perplexity(model: Any, texts: Sequence[str], *, tokenizer: Any = None, **kwargs: Any) -> float:
    """Token-weighted perplexity exp(−Σ log p / Σ tokens) over ``texts`` (each scored after ``<bos>``)."""
    if len(texts) == 0:
        raise ValueError("No texts for perplexity.")
    return _token_perplexity(text_logprobs(model, texts, tokenizer=tokenizer, **kwargs))


def _token_perplexity(scored: pd.DataFrame) -> float:
    """exp(−Σ logprob / Σ n_tokens) of a :func:`text_logprobs` table."""
    return float(math.exp(-scored["logprob"].sum() / scored["n_tokens"].sum()))


def continuation_logprobs(model: Any, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                          **kwargs: Any) -> list[np.ndarray]:
    """Per-token log p(continuation | prompt) for token-id lists (e.g. scoring generations)."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations.")
    lps = branch_logprobs(model, [(list(p), [list(c)]) for p, c in zip(prompts, continuations)], **kwargs)
    return [lp[0] for lp in lps]

