"""Open questions: answer normalization, span extraction, matching."""
from __future__ import annotations

import pandas as pd
import pytest

from ember_utils import eval as E

# ============================================================================ open answers


@pytest.mark.parametrize("text,expected", [
    ("The Burrow", "burrow"),
    ("  J.K. Rowling!! ", "j k rowling"),
    ("Hermione   Granger.", "hermione granger"),
    ("Élan vital", "elan vital"),
    ("an apple a day", "apple day"),
])
def test_normalize_answer(text, expected):
    assert E.normalize_answer(text) == expected


@pytest.mark.parametrize("gen,span", [
    (" Hermione Granger\nQuestion: who else?", "Hermione Granger"),
    ("\n\n Ron. Then Harry said", "Ron."),
    (" Mr. Weasley works there. Yes", "Mr. Weasley works there."),  # 'Mr.' (< 3 letters) does not end it
    (" Hogwarts. It is a school.", "Hogwarts."),
    (" J.K. Rowling wrote it. Later", "J.K. Rowling wrote it."),
    ("", ""),
])
def test_answer_span(gen, span):
    assert E.answer_span(gen) == span


@pytest.mark.parametrize("gen,answers,ok", [
    (" Hermione Granger\nQuestion: Who is Ron?", ["Hermione"], True),
    (" hermione granger.", ["Hermione Granger"], True),
    (" The Burrow", ["the Burrow"], True),
    (" J. K. Rowling", ["J.K. Rowling"], True),
    (" Ronald", ["Ron"], False),                          # whole words only
    (" Harry\nQuestion: Hermione", ["Hermione"], False),  # only the first line counts
    (" The author. Hermione is", ["Hermione"], False),    # only the first sentence counts
    (" 1945", ["1945"], True),
    ("", ["x"], False),
])
def test_answer_matches(gen, answers, ok):
    assert E.answer_matches(gen, answers) is ok


def test_score_open_frame(tiny_bridge):
    df = pd.DataFrame({"id": ["o1", "o2"], "question": ["Who?", "Where?"], "answers": [["Harry"], ["Rome"]]})
    out = E.score_open(tiny_bridge, df, max_new_tokens=4)
    assert list(out.columns) == ["id", "generation", "answer_span", "correct", "token_ids"]
    assert out["correct"].dtype == bool
    with pytest.raises(ValueError, match="answers"):
        E.score_open(tiny_bridge, df.drop(columns="answers"))
