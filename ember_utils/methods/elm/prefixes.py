"""Expert/novice prefix pairs and the measurement that says whether a pair makes the model a concept classifier.

ELM needs log p(x | c_e) − log p(x | c_n) to be larger on concept text than on neutral text. On an
instruction-tuned model the original wording ("written by an expert in …" / "… knows nothing about …") does
that; on the 270M *base* model it carries no signal, while a *source* condition ("From a fan encyclopedia of
…" / "From a general encyclopedia") does. Chapter 5 measures both with :func:`prefix_gap_table`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...eval._hf import _encode_cont, _inference, _resolve
from ._positions import context_rows, position_logits

__all__ = ["PrefixPair", "BASE_MODEL_PREFIXES", "INSTRUCT_PREFIXES", "prefix_gap", "prefix_gap_table"]


@dataclass(frozen=True)
class PrefixPair:
    """An expert (concept-knowing) and a novice prefix; ``{concept}`` is replaced by the concept's name.
    Both end with a newline, so the text after them starts a line exactly as it does after ``<bos>``."""

    expert: str
    novice: str
    label: str = ""

    def __post_init__(self) -> None:
        for kind, p in (("expert", self.expert), ("novice", self.novice)):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"The {kind} prefix is empty.")

    def format(self, concept: str) -> tuple[str, str]:
        return self.expert.format(concept=concept), self.novice.format(concept=concept)


#: source/genre conditions: the 270M base model separates concept from neutral text with them
BASE_MODEL_PREFIXES: tuple[PrefixPair, ...] = (
    PrefixPair("From a fan encyclopedia of {concept}:\n", "From a general encyclopedia:\n", "fan encyclopedia"),
    PrefixPair("An article from a {concept} fan wiki:\n", "An article from a general news website:\n", "fan wiki"),
    PrefixPair("A post on a {concept} fan forum:\n", "A post on a general discussion forum:\n", "fan forum"),
)

#: the original work's wording, for instruction-tuned models
INSTRUCT_PREFIXES: tuple[PrefixPair, ...] = (
    PrefixPair("Here is a text written by an expert in {concept}, with detailed and accurate knowledge:\n",
               "Here is a text written by someone who knows nothing about {concept} and gets every fact wrong:\n",
               "expert / novice"),
    PrefixPair("The following passage is about {concept}.\n", "The following passage has nothing to do with {concept}.\n",
               "about / not about"),
)


def prefix_gap(model: Any, texts: Sequence[str], pair: PrefixPair, concept: str, *, tokenizer: Any = None,
               max_length: int = 64, batch_tokens: int = 1024) -> np.ndarray:
    """Per text: mean per-token log p(x | expert prefix) − log p(x | novice prefix) (nats/token)."""
    hf, tok = _resolve(model, tokenizer)
    expert, novice = pair.format(concept)
    e_ids, n_ids = _encode_cont(tok, expert), _encode_cont(tok, novice)
    texts_ids = [_encode_cont(tok, t)[:max_length] for t in texts]
    out = np.zeros(len(texts_ids))
    with _inference(hf):
        for ctx_ids, sign in ((e_ids, 1.0), (n_ids, -1.0)):
            rows = context_rows(tok, ctx_ids, texts_ids)
            for i, logits in position_logits(hf, rows, batch_tokens=batch_tokens):
                lp = torch.log_softmax(logits.float(), dim=-1)
                target = torch.tensor(texts_ids[i], device=lp.device)
                out[i] += sign * float(lp.gather(-1, target[:, None]).mean())
    return out


def prefix_gap_table(model: Any, concept_texts: Sequence[str], neutral_texts: Sequence[str],
                     pairs: Sequence[PrefixPair], concept: str, **kwargs: Any) -> pd.DataFrame:
    """For each pair: mean ± standard error of :func:`prefix_gap` on concept and on neutral text, and their
    difference (the separation ELM's classifier has to work with)."""
    rows = []
    for pair in pairs:
        c = prefix_gap(model, concept_texts, pair, concept, **kwargs)
        n = prefix_gap(model, neutral_texts, pair, concept, **kwargs)
        se = float(np.sqrt(c.var(ddof=1) / len(c) + n.var(ddof=1) / len(n)))
        rows.append({"pair": pair.label or pair.expert, "expert": pair.expert.strip(), "novice": pair.novice.strip(),
                     "concept_gap": float(c.mean()), "concept_se": float(c.std(ddof=1) / np.sqrt(len(c))),
                     "neutral_gap": float(n.mean()), "neutral_se": float(n.std(ddof=1) / np.sqrt(len(n))),
                     "separation": float(c.mean() - n.mean()), "separation_se": se})
    return pd.DataFrame(rows)
