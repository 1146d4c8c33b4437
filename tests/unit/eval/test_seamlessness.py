"""Seamlessness: loops and token salad score low, fluent text (on or off the concept) scores high."""
from __future__ import annotations

import pytest

from ember_utils.eval.seamlessness import real_word_share, repetition_rate, score_texts, seamlessness_terms

FLUENT_OFF_TOPIC = ("The village bakery opens at six in the morning, and by seven the queue for fresh bread "
                    "usually reaches the corner of the street.")
LOOP = "the castle and the castle and the castle and the castle and the castle and the castle and the castle"
SALAD = "ingly Conse asleyqu Hogwartsch vbnm xqz ptr ovirt unsl kkj sna zzyx"


def test_repetition_rate_on_fixed_token_sequences():
    assert repetition_rate([1, 2, 3, 4, 5, 6, 7]) == 0.0
    assert repetition_rate([1, 2, 3] * 6) == pytest.approx(13 / 16)   # 16 trigrams, the first 3 are new
    assert repetition_rate([1, 2]) == 0.0
    with pytest.raises(ValueError, match="n must be"):
        repetition_rate([1, 2, 3], n=0)


def test_real_word_share_separates_english_from_salad():
    assert real_word_share(FLUENT_OFF_TOPIC) == 1.0
    assert real_word_share(SALAD) < 0.3
    assert real_word_share("1990 - 1991 ...") == 0.0   # no words at all is not English prose


def test_terms_are_capped_and_punish_each_failure():
    base = dict(fluency_base=-3.0, repetition_base=0.1, word_share_base=0.95)
    assert seamlessness_terms(-2.0, 0.0, 1.0, **base)["seamlessness"] == 1.0   # better than the unedited: capped
    loop = seamlessness_terms(-3.0, 0.9, 0.95, **base)
    salad = seamlessness_terms(-3.0, 0.1, 0.2, **base)
    garbled = seamlessness_terms(-6.0, 0.1, 0.95, **base)
    for t in (loop, salad, garbled):
        assert t["seamlessness"] < 0.5


def test_scores_on_a_tiny_model_have_the_expected_shape(tiny_bridge):
    df = score_texts(tiny_bridge, [FLUENT_OFF_TOPIC, LOOP, SALAD])
    assert list(df.columns) == ["generation", "n_tokens", "fluency", "repetition", "word_share"]
    assert df["repetition"].iloc[1] > 0.5 > df["repetition"].iloc[0]
    assert df["word_share"].iloc[2] < df["word_share"].iloc[0]


@pytest.mark.real_model
def test_real_model_separates_fluent_text_from_loops_and_salad(real_bridge):
    df = score_texts(real_bridge, [FLUENT_OFF_TOPIC, LOOP, SALAD])
    fluent, loop, salad = (df.iloc[i] for i in range(3))
    assert fluent.fluency > salad.fluency + 2.0          # the unedited model finds salad far less likely
    assert loop.repetition > 0.5 and fluent.repetition == 0.0
    score = {name: seamlessness_terms(r.fluency, r.repetition, r.word_share, fluent.fluency, fluent.repetition,
                                      fluent.word_share)["seamlessness"] for name, r in (("loop", loop), ("salad", salad))}
    assert score["loop"] < 0.5 and score["salad"] < 0.5
