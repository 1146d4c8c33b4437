"""Batched greedy generation."""
from __future__ import annotations

import pytest
import torch

from ember_utils import eval as E


def test_generate_greedy_batched_equals_single(tiny_bridge):
    prompts = ["The cat", "Harry Potter is a wizard who studies at", "Describe your ideal weekend.\n"]
    p_ids, batched = E.generate_greedy(tiny_bridge, prompts, max_new_tokens=6, batch_size=3)
    for p, g, pid in zip(prompts, batched, p_ids):
        _, single = E.generate_greedy(tiny_bridge, [p], max_new_tokens=6)
        assert single[0] == g
        assert pid[0] == tiny_bridge.tokenizer.bos_token_id
        assert 1 <= len(g) <= 6
    # manual greedy decoding agrees
    hf = tiny_bridge.original_model
    ids = list(p_ids[1])
    with torch.no_grad():
        for _ in range(len(batched[1])):
            ids.append(int(hf(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert ids[len(p_ids[1]):] == batched[1]
    with pytest.raises(ValueError):
        E.generate_greedy(tiny_bridge, prompts, max_new_tokens=0)
    # n-gram blocking: no bigram of prompt + continuation repeats
    p_ids, blocked = E.generate_greedy(tiny_bridge, prompts[:2], max_new_tokens=12, no_repeat_ngram_size=2)
    for pid, g in zip(p_ids, blocked):
        seq = pid + g
        grams = [tuple(seq[i:i + 2]) for i in range(len(seq) - 1)]
        assert len(grams) == len(set(grams))
