"""The vocabulary slice V′ and its token labels."""
from __future__ import annotations

import pytest

from ember_utils.methods.ember.vocab import CONCEPT, NEUTRAL, SHARED, build_vocab_slice, is_generic_token
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


@pytest.mark.parametrize("token,generic", [
    (" (", True), (");", True), (").", True), ('",', True), (" 1997", True), ("\n\n", True), (" etc", True),
    (" thereby", True), (" respectively", False), (" The", True), (" wizard", False), ("Hogwarts", False),
    (" Potter", False), ("▁the", True),
])
def test_generic_tokens(token, generic):
    assert is_generic_token(token) is generic


def test_punctuation_and_function_words_are_never_concept_only():
    tok = word_tokenizer(["the wizard ( and ) ; castle thereby owl", "the cat sat on the mat"])
    concept = ["the wizard ( castle ) ; thereby", "wizard owl"]
    neutral = ["the cat sat on the mat"]
    vs = build_vocab_slice(tok, concept, neutral)
    labels = dict(zip(vs.tokens, vs.labels))
    assert labels["wizard"] == CONCEPT and labels["owl"] == CONCEPT and labels["castle"] == CONCEPT
    for t in ("(", ")", ";", "thereby"):
        assert labels[t] == SHARED, t  # occurs only in the concept corpus, but is never concept-specific
    raw = dict(zip(*[build_vocab_slice(tok, concept, neutral, generic_is_shared=False).__getattribute__(a)
                     for a in ("tokens", "labels")]))
    assert raw["("] == CONCEPT  # the corpus-only rule alone would have called it concept-only
