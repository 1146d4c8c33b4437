"""Token bypass: respellings hold no edited id in the scorer's own tokens, questions the edit does not reach are
left out, and on the tiny model an edit that breaks a name loses accuracy that the respelling gives back."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ember_utils.attacks.token_bypass import (
    STRATEGIES,
    best_bypass,
    bypass_questions,
    bypass_text,
    edit_token_ids,
    offending_words,
    respell,
    token_bypass_attack,
)
from ember_utils.eval._hf import _encode_cont, _encode_prompt
from ember_utils.eval.mc import MC_PROMPT_TEMPLATE
from ember_utils.state import StackedState
from helpers.states import MLPWeightNoise, noise_edit
from helpers.tiny_models import bpe_tokenizer
from helpers.toy_data import toy_concept_and_common, toy_frame


@pytest.fixture(scope="module")
def tok():
    return bpe_tokenizer()


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_respell_candidates():
    assert respell("Hogwarts", "lowercase") == ["hogwarts"]
    assert respell("wizard", "lowercase") == []  # nothing to change: the strategy does not apply
    assert respell("Hogwarts", "uppercase") == ["HOGWARTS"]
    assert respell("Hogwarts", "hyphenated")[0] == "Hogw-arts"
    assert all("-" in c and c.replace("-", "") == "Hogwarts" for c in respell("Hogwarts", "hyphenated"))
    assert respell("Harry", "spaced_letters") == ["H a r r y"]
    data = {"Hogwarts": {"misspelling": "Hogwartz", "translation": "Poudlard", "language": "French"}}
    assert respell("Hogwarts", "translation", data) == ["Poudlard"]
    assert respell("Hogwarts", "misspelling", data) == ["Hogwartz"]
    assert respell("Hermione", "translation", data) == []
    with pytest.raises(ValueError, match="Unknown strategy"):
        respell("Harry", "rot13")


def test_offending_words_ignore_the_space_before_a_word(tok):
    edited = frozenset(ids(tok, " Hogwarts"))
    words = offending_words(tok, "Who teaches at Hogwarts today?", edited, prefix="Question: ")
    assert [w for _, _, w in words] == ["Hogwarts"]
    assert offending_words(tok, "The cat sat on the mat.", edited) == []


def test_bypass_text_replaces_only_offending_words(tok):
    edited = frozenset(ids(tok, " Hogwarts"))
    new, changes = bypass_text(tok, "Who teaches at Hogwarts today?", edited, "uppercase", prefix="Question: ")
    assert new == "Who teaches at HOGWARTS today?" and changes == ["Hogwarts→HOGWARTS"]
    assert not edited & set(ids(tok, "Question: " + new))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_clean_questions_hold_no_edited_id_where_the_scorer_looks(tok, strategy):
    qs = toy_frame()
    edited = frozenset(ids(tok, " Hogwarts") + ids(tok, " Pot") + ids(tok, "Har"))
    spellings = {"Hogwarts": {"misspelling": "Hogwartz", "translation": "Poudlard", "language": "French"},
                 "Harry": {"misspelling": "Harrie"}}
    out = bypass_questions(tok, qs, edited, strategy, spellings)
    assert len(out) == len(qs) and out["affected"].sum() == 1  # only the Hogwarts question is reached
    for _, r in out.iterrows():
        seen = set(_encode_prompt(tok, MC_PROMPT_TEMPLATE.format(question=r["question"])))
        for o in r["options"]:
            seen |= set(_encode_cont(tok, f" {o}"))
        assert r["clean"] == (not edited & seen)
    untouched = out[~out["affected"]]
    assert (untouched["question"] == untouched["original_question"]).all()
    assert (untouched["changes"] == "").all()


def test_a_strategy_that_cannot_help_is_not_clean(tok):
    qs = toy_frame([("Which wizard is the headmaster?", ["harry", "ron", "the cat", "a dog"], 0)])
    edited = frozenset(ids(tok, " wizard"))
    out = bypass_questions(tok, qs, edited, "lowercase")  # ' wizard' is lower case already
    assert bool(out["affected"].iloc[0]) and not bool(out["clean"].iloc[0])


def test_bad_input(tok):
    with pytest.raises(ValueError, match="No edited token ids"):
        bypass_questions(tok, toy_frame(), [], "uppercase")
    with pytest.raises(ValueError, match="empty"):
        bypass_questions(tok, toy_frame()[0:0], [1], "uppercase")
    with pytest.raises(ValueError, match="exactly once"):
        bypass_questions(tok, toy_frame(), [1], "uppercase", prompt_template="Q: {question} {question}")


def test_edit_token_ids_finds_the_edit_inside_a_stack(tiny_bridge):
    edit = noise_edit(tiny_bridge, [5, 7])
    assert edit_token_ids(StackedState(MLPWeightNoise(), edit)) == {5, 7}
    assert edit_token_ids(MLPWeightNoise()) == frozenset() and edit_token_ids(None) == frozenset()


def test_attack_on_the_tiny_model(tiny_bridge):
    """A large random edit of the Hogwarts token breaks the answer to its question; uppercase spelling avoids the
    edited id, so the edited model answers like the unedited model again."""
    tok = tiny_bridge.tokenizer
    concept, _ = toy_concept_and_common(tiny_bridge)
    edited = frozenset(ids(tok, " Hogwarts"))
    edit = noise_edit(tiny_bridge, sorted(edited), scale=50.0)
    table = token_bypass_attack(tiny_bridge, concept, edited, {"unedited": None, "EMBER": edit},
                                strategies=("uppercase", "translation"), tables=("mc",), n_boot=200)
    assert set(table["state"]) == {"unedited", "EMBER"} and set(table["strategy"]) == {"uppercase", "translation"}
    up = table[(table["strategy"] == "uppercase")].set_index("state")
    assert (up["n_affected"] == 1).all() and (up["n_clean"] == 1).all()
    # the respelled question carries no edited id, so the edit cannot change its answer
    assert up.loc["EMBER", "accuracy"] == up.loc["unedited", "accuracy"] == up.loc["EMBER", "unedited_accuracy"]
    assert np.isclose(up.loc["EMBER", "regained"], up.loc["EMBER", "accuracy"] - up.loc["EMBER", "original_accuracy"])
    tr = table[table["strategy"] == "translation"]
    assert (tr["n_clean"] == 0).all() and tr["accuracy"].isna().all()  # no spellings data: nothing to score
    best = best_bypass(table, "EMBER", min_clean=1)
    assert best["strategy"] == "uppercase"
    assert best_bypass(table, "EMBER", min_clean=5)["strategy"] is None


def test_one_state_per_call_with_a_shared_memo_equals_one_call(tiny_bridge):
    """The experiment attacks rows one call at a time and shares the unedited model's respelled scores through
    ``unedited_memo``: the table is the same as one call over every state, and the memo is filled once."""
    concept, _ = toy_concept_and_common(tiny_bridge)
    edited = frozenset(ids(tiny_bridge.tokenizer, " Hogwarts"))
    edit = noise_edit(tiny_bridge, sorted(edited), scale=50.0)
    kw = dict(strategies=("uppercase", "hyphenated"), tables=("mc",), n_boot=200)
    together = token_bypass_attack(tiny_bridge, concept, edited, {"unedited": None, "EMBER": edit}, **kw)
    memo: dict = {}
    apart = pd.concat([token_bypass_attack(tiny_bridge, concept, edited, {name: s}, unedited_memo=memo, **kw)
                       for name, s in (("unedited", None), ("EMBER", edit))], ignore_index=True)
    order = ["state", "strategy"]
    pd.testing.assert_frame_equal(together.sort_values(order).reset_index(drop=True),
                                  apart.sort_values(order).reset_index(drop=True))
    assert len(memo) == (together.drop_duplicates("strategy")["n_clean"] > 0).sum()


def test_an_edit_that_reaches_nothing_changes_nothing(tiny_bridge):
    concept, _ = toy_concept_and_common(tiny_bridge)
    table = token_bypass_attack(tiny_bridge, concept, [tiny_bridge.cfg.d_vocab - 1], {"unedited": None},
                                strategies=("uppercase",), tables=("mc",))
    assert isinstance(table, pd.DataFrame) and (table["n_affected"] == 0).all()


@pytest.mark.real_model
def test_respelled_test_questions_hold_no_id_of_the_committed_edit(real_bridge):
    """The default model's tokenizer, the committed Harry Potter edit and the concept's spellings data: every
    question the attack keeps is free of edited ids where the scorer looks, and most affected ones are kept."""
    from ember_utils.data import load_concept
    from ember_utils.methods.ember.edit import EmbeddingEdit
    from ember_utils.paths import results_dir

    tok = real_bridge.tokenizer
    concept = load_concept("harry_potter")
    edited = EmbeddingEdit.load(results_dir("gemma-3-270m", "harry_potter") / "edit_seed0.safetensors").touched_tokens
    for strategy in ("uppercase", "misspelling", "translation"):
        out = bypass_questions(tok, concept.split("mc", "test"), edited, strategy, concept.spellings)
        kept = out[out["affected"] & out["clean"]]
        assert len(kept) >= 20, strategy
        for _, r in kept.iterrows():
            seen = set(_encode_prompt(tok, MC_PROMPT_TEMPLATE.format(question=r["question"])))
            for o in r["options"]:
                seen |= set(_encode_cont(tok, f" {o}"))
            assert not edited & seen, (strategy, r["question"])
