"""Text and continuation log-likelihoods and perplexity."""
from __future__ import annotations

import math

import pytest
import torch

from ember_utils import eval as E


def test_perplexity_matches_naive(tiny_bridge):
    texts = ["The cat sat on the mat.", "Harry Potter is a wizard.", "Water boils at one hundred degrees."]
    tok, hf = tiny_bridge.tokenizer, tiny_bridge.original_model
    total, n = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok(t).input_ids])
            lp = torch.log_softmax(hf(input_ids=ids).logits[0].float(), -1)[:-1]
            total += lp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item()
            n += ids.shape[1] - 1
    assert E.perplexity(tiny_bridge, texts, max_row_tokens=12) == pytest.approx(math.exp(-total / n), rel=1e-5)
    df = E.text_logprobs(tiny_bridge, texts)
    assert df["n_tokens"].sum() == n
    with pytest.raises(ValueError):
        E.perplexity(tiny_bridge, [])
    with pytest.raises(ValueError, match="Empty"):
        E.perplexity(tiny_bridge, ["  "])




def test_continuation_logprobs_consistent_with_text_logprobs(tiny_bridge):
    tok = tiny_bridge.tokenizer
    ids = tok("The quick brown fox jumps over the lazy dog.").input_ids
    lp = E.continuation_logprobs(tiny_bridge, [ids[:4]], [ids[4:]])[0]
    full = E.text_logprobs(tiny_bridge, ["The quick brown fox jumps over the lazy dog."])
    first = E.continuation_logprobs(tiny_bridge, [ids[:1]], [ids[1:4]])[0]
    assert lp.sum() + first.sum() == pytest.approx(full["logprob"][0], abs=1e-4)
    with pytest.raises(ValueError):
        E.continuation_logprobs(tiny_bridge, [ids], [])
