"""Seamlessness: does a model still write fluent English when it continues text about the concept?

An erased model should not know the facts, but it should not derail either (ELM's criterion). Each greedy
continuation of a concept prompt gets three scores, none of which rewards talking about the concept:

* ``fluency``: mean per-token log-likelihood of the continuation under the *unedited* model, read after a
  fixed neutral prefix (:data:`NEUTRAL_PREFIX`) instead of the concept prompt, so a continuation is not
  credited for following the concept prompt (and an off-topic but fluent continuation is not punished).
* ``repetition``: share of the continuation's token n-grams (n = 3) that already occurred earlier in it
  (0 = no repeats; a loop approaches 1).
* ``word_share``: share of its alphabetic words that are common English words (``wordfreq`` Zipf frequency
  ≥ :data:`MIN_ZIPF`; 0 for a continuation without words). Token salad falls here.

A state's seamlessness compares the means with the unedited model's on the same prompts: the harmonic mean
of ``min(1, exp(f − f₀))``, ``min(1, (1 − r)/(1 − r₀))`` and ``min(1, w/w₀)`` (:func:`seamlessness_terms`).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._hf import _encode_prompt, _resolve
from .likelihood import continuation_logprobs
from .metrics import harmonic_mean

__all__ = ["NEUTRAL_PREFIX", "MIN_ZIPF", "REPETITION_N", "repetition_rate", "real_word_share",
           "score_continuations", "score_texts", "seamlessness_terms"]

#: What the unedited model reads before a continuation when its fluency is scored.
NEUTRAL_PREFIX = "Here is a short passage of ordinary English text.\n\n"
#: A word counts as English when its Zipf frequency (log10 of occurrences per billion words) is at least this:
#: about once in three million words, which keeps rare real words and drops most stray sub-word pieces.
MIN_ZIPF = 3.0
REPETITION_N = 3
#: Fluency given to an empty continuation (a model that stops at once does not continue the text).
EMPTY_FLUENCY = -20.0
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


def repetition_rate(token_ids: Sequence[int], n: int = REPETITION_N) -> float:
    """Share of the n-grams of ``token_ids`` that occurred earlier in the sequence (0 when shorter than n + 1)."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}.")
    ids = list(token_ids)
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if len(grams) < 2:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def real_word_share(text: str, min_zipf: float = MIN_ZIPF, lang: str = "en") -> float:
    """Share of the alphabetic words of ``text`` whose ``wordfreq`` Zipf frequency is ≥ ``min_zipf`` (0 if none)."""
    from wordfreq import zipf_frequency

    words = _WORD.findall(text)
    if not words:
        return 0.0
    return sum(zipf_frequency(w.lower(), lang) >= min_zipf for w in words) / len(words)


def score_continuations(model: Any, continuations: Sequence[Sequence[int]], *, tokenizer: Any = None,
                        prefix: str = NEUTRAL_PREFIX, n: int = REPETITION_N, min_zipf: float = MIN_ZIPF,
                        batch_tokens: int = 2048) -> pd.DataFrame:
    """Per continuation (token ids, without the prompt): ``generation`` (text), ``n_tokens``, ``fluency``,
    ``repetition``, ``word_share``. ``model`` should be the *unedited* model. An end-of-sequence token at
    the end is not scored; an empty continuation gets fluency −inf → scored as the worst (``-20``)."""
    hf, tok = _resolve(model, tokenizer)
    prefix_ids = _encode_prompt(tok, prefix)
    eos = {tok.eos_token_id} if getattr(tok, "eos_token_id", None) is not None else set()
    body = [list(c[:-1]) if len(c) and c[-1] in eos else list(c) for c in continuations]
    idx = [i for i, b in enumerate(body) if b]
    flu = np.full(len(body), EMPTY_FLUENCY)
    if idx:
        lps = continuation_logprobs(hf, [prefix_ids] * len(idx), [body[i] for i in idx], batch_tokens=batch_tokens)
        for i, lp in zip(idx, lps):
            flu[i] = float(lp.mean())
    texts = [tok.decode(b, skip_special_tokens=True) for b in body]
    return pd.DataFrame({"generation": texts, "n_tokens": [len(b) for b in body], "fluency": flu,
                         "repetition": [repetition_rate(b, n) for b in body],
                         "word_share": [real_word_share(t, min_zipf) for t in texts]})


def score_texts(model: Any, texts: Sequence[str], *, tokenizer: Any = None, **kwargs: Any) -> pd.DataFrame:
    """:func:`score_continuations` for fixed strings (each tokenized without ``<bos>``)."""
    hf, tok = _resolve(model, tokenizer)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    return score_continuations(hf, ids, tokenizer=tok, **kwargs)


def seamlessness_terms(fluency: float, repetition: float, word_share: float, fluency_base: float,
                       repetition_base: float, word_share_base: float) -> dict[str, float]:
    """The three terms against the unedited model (each capped at 1) and ``seamlessness``, their harmonic mean."""
    flu = min(1.0, math.exp(fluency - fluency_base))
    rep = 1.0 if repetition <= repetition_base else (1.0 - repetition) / max(1e-12, 1.0 - repetition_base)
    rep = max(0.0, min(1.0, rep))
    words = 1.0 if word_share >= word_share_base else word_share / word_share_base
    return {"seamless_fluency_term": flu, "seamless_repetition_term": rep, "seamless_word_term": words,
            "seamlessness": harmonic_mean(flu, rep, words)}
