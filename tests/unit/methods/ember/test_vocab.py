"""The vocabulary slice V′ and its token labels."""
from __future__ import annotations

import pytest

from ember_utils.methods.ember.vocab import CONCEPT, NEUTRAL, SHARED, build_vocab_slice
from helpers.tiny_models import word_tokenizer
from helpers.toy_data import CONCEPT_TEXTS, NEUTRAL_TEXTS

# ---------------------------------------------------------------- vocabulary slice

def test_vocab_slice_labels():
    tok = word_tokenizer()
    v = build_vocab_slice(tok, CONCEPT_TEXTS, NEUTRAL_TEXTS)
    lab = dict(zip(v.tokens, v.labels))
    assert lab["wizard"] == CONCEPT and lab["cat"] == NEUTRAL and lab["the"] == SHARED
    assert tok.bos_token_id not in v.token_ids.tolist()
    assert list(v.token_ids) == sorted(v.token_ids)
    assert v.summary().sum() == len(v)


def test_vocab_slice_rejects_empty_corpus():
    with pytest.raises(ValueError, match="concept corpus is empty"):
        build_vocab_slice(word_tokenizer(), [], NEUTRAL_TEXTS)
    with pytest.raises(TypeError, match=r"neutral corpus\[1\]"):
        build_vocab_slice(word_tokenizer(), CONCEPT_TEXTS, ["ok", 3])


# ---------------------------------------------------------------- atom scoring
