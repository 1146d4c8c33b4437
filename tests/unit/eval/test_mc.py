"""Multiple-choice scoring: the packed scorer against the naive reference."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ember_utils import eval as E
from helpers.toy_data import SCORE_COLS, toy_frame

# ============================================================================ packed scorer


def test_score_mc_matches_naive_with_packing_padding_and_sliding_window(tiny_bridge):
    qs = toy_frame()
    naive = E.score_mc_naive(tiny_bridge, qs)
    # default packing (all questions in one row) and tiny rows/batches (many rows, padding, several batches)
    for kw in ({}, {"max_row_tokens": 30, "batch_tokens": 70}, {"max_row_tokens": 1, "batch_tokens": 1}):
        fast = E.score_mc(tiny_bridge, qs, **kw)
        np.testing.assert_allclose(fast[SCORE_COLS].values, naive[SCORE_COLS].values, atol=1e-4, rtol=0)
        assert (fast["predicted"] == naive["predicted"]).all()
    # the first question (with <bos>) is longer than the sliding window, so the window is exercised
    ids = tiny_bridge.tokenizer(E.MC_PROMPT_TEMPLATE.format(question=qs["question"][0])).input_ids
    assert len(ids) > tiny_bridge.original_model.config.sliding_window


@pytest.mark.parametrize("normalization", ["sum", "chars"])
def test_score_mc_normalizations_match_naive(tiny_bridge, normalization):
    qs = toy_frame()
    fast = E.score_mc(tiny_bridge, qs, normalization=normalization)
    naive = E.score_mc_naive(tiny_bridge, qs, normalization=normalization)
    np.testing.assert_allclose(fast[SCORE_COLS].values, naive[SCORE_COLS].values, atol=1e-4, rtol=0)


def test_score_mc_output_frame(tiny_bridge):
    qs = toy_frame()
    out = E.score_mc(tiny_bridge, qs.to_dict("records"))  # records work too
    assert list(out.columns) == ["id", "split", "predicted", "answer", "correct", *SCORE_COLS]
    assert (out["predicted"] == out[SCORE_COLS].values.argmax(1)).all()
    assert (out["correct"] == (out["predicted"] == out["answer"])).all()
    assert E.mc_accuracy(out) == pytest.approx(out["correct"].mean())
    assert math.isnan(E.mc_accuracy(out.iloc[:0]))


def test_score_mc_with_hf_model_and_custom_template(tiny_bridge):
    qs = toy_frame()
    hf, tok = tiny_bridge.original_model, tiny_bridge.tokenizer
    kw = dict(prompt_template="Q: {question}\nA:", option_template=" {option}.")
    a = E.score_mc(hf, qs, tokenizer=tok, **kw)
    b = E.score_mc_naive(tiny_bridge, qs, **kw)
    np.testing.assert_allclose(a[SCORE_COLS].values, b[SCORE_COLS].values, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="tokenizer"):
        E.score_mc(hf, qs)


def test_score_mc_input_errors(tiny_bridge):
    with pytest.raises(ValueError, match="empty"):
        E.score_mc(tiny_bridge, toy_frame().iloc[:0])
    with pytest.raises(ValueError, match="missing"):
        E.score_mc(tiny_bridge, pd.DataFrame({"question": ["q"]}))
    with pytest.raises(ValueError, match="normalization"):
        E.score_mc(tiny_bridge, toy_frame(), normalization="bytes")
    with pytest.raises(TypeError):
        E.score_mc(None, toy_frame())
