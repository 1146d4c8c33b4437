"""The vocabulary slice V′ of a concept: tokens that occur in the concept or neutral corpus, with labels.

A token is *concept-only* if it occurs only in the concept corpus, *neutral-only* if only in the neutral
corpus, and *shared* if in both. Special tokens (bos, eos, pad, ...) are excluded. Punctuation, formatting,
numbers and function words are never concept-specific, whatever the corpora say (concept text in a register
the neutral corpus lacks would otherwise make ' (', ');' or ' thereby' "concept-only"): such a token that
occurs only in the concept corpus is labelled *shared*, so it is never edited.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

__all__ = ["CONCEPT", "NEUTRAL", "SHARED", "VocabSlice", "build_vocab_slice", "count_tokens", "is_generic_token"]

CONCEPT, NEUTRAL, SHARED = "concept-only", "neutral-only", "shared"


@dataclass
class VocabSlice:
    """Token ids of V′ (sorted), their labels and occurrence counts in each corpus."""

    token_ids: np.ndarray
    labels: np.ndarray
    concept_counts: np.ndarray
    neutral_counts: np.ndarray
    tokens: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    def mask(self, label: str) -> np.ndarray:
        """Boolean mask over V′ for one label."""
        if label not in (CONCEPT, NEUTRAL, SHARED):
            raise ValueError(f"Unknown label {label!r}; use one of {CONCEPT!r}, {NEUTRAL!r}, {SHARED!r}.")
        return self.labels == label

    def ids_with_label(self, label: str) -> np.ndarray:
        """Token ids that carry ``label``."""
        return self.token_ids[self.mask(label)]

    def position_of(self) -> dict[int, int]:
        """Map token id -> row index in V′."""
        return {int(t): i for i, t in enumerate(self.token_ids)}

    def summary(self) -> pd.Series:
        """Counts per label."""
        return pd.Series({lab: int(self.mask(lab).sum()) for lab in (CONCEPT, SHARED, NEUTRAL)}, name="tokens")

    def to_frame(self) -> pd.DataFrame:
        """One row per token: id, decoded string, label, counts in each corpus."""
        return pd.DataFrame({
            "token_id": self.token_ids,
            "token": self.tokens if self.tokens else [""] * len(self),
            "label": self.labels,
            "concept_count": self.concept_counts,
            "neutral_count": self.neutral_counts,
        })


def count_tokens(tokenizer: Any, texts: Iterable[str], where: str = "corpus") -> Counter:
    """Occurrence counts of token ids over ``texts`` (no special tokens added)."""
    counts: Counter = Counter()
    n = 0
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{where}[{i}] must be a string, got {type(text).__name__}.")
        counts.update(tokenizer(text, add_special_tokens=False)["input_ids"])
        n += 1
    if n == 0:
        raise ValueError(f"The {where} is empty: give at least one sentence.")
    return counts


def is_generic_token(token: str) -> bool:
    """True for tokens that can never be concept-specific: whitespace, punctuation, symbols and numbers (no
    letter at all), and English function words (scikit-learn's stop-word list, e.g. ' the', ' thereby', ' etc')."""
    core = token.strip().strip("▁Ġ").strip()
    if not any(ch.isalpha() for ch in core):
        return True
    return core.lower().strip(".,;:!?'\"()[]") in ENGLISH_STOP_WORDS


def build_vocab_slice(tokenizer: Any, concept_texts: Sequence[str], neutral_texts: Sequence[str],
                      generic_is_shared: bool = True) -> VocabSlice:
    """Build V′ from a concept corpus and a neutral corpus (special tokens removed). With
    ``generic_is_shared`` (default) a concept-only token that :func:`is_generic_token` is labelled shared."""
    c_counts = count_tokens(tokenizer, concept_texts, "concept corpus")
    n_counts = count_tokens(tokenizer, neutral_texts, "neutral corpus")
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = np.array(sorted((set(c_counts) | set(n_counts)) - special), dtype=np.int64)
    if ids.size == 0:
        raise ValueError("The corpora contain no non-special tokens.")
    cc = np.array([c_counts.get(int(t), 0) for t in ids], dtype=np.int64)
    nc = np.array([n_counts.get(int(t), 0) for t in ids], dtype=np.int64)
    labels = np.where((cc > 0) & (nc > 0), SHARED, np.where(cc > 0, CONCEPT, NEUTRAL))
    tokens = [tokenizer.decode([int(t)]) for t in ids]
    if generic_is_shared:
        generic = np.array([is_generic_token(t) for t in tokens], dtype=bool)
        labels = np.where((labels == CONCEPT) & generic, SHARED, labels)
    return VocabSlice(token_ids=ids, labels=labels, concept_counts=cc, neutral_counts=nc, tokens=tokens)
