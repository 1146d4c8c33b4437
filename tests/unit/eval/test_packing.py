"""Shared-prefix packing: branch log-probabilities equal a full forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ember_utils import eval as E


def test_branch_logprobs_equal_full_forward(tiny_bridge):
    tok = tiny_bridge.tokenizer
    hf = tiny_bridge.original_model
    rng = np.random.default_rng(0)
    items = []
    for n_prefix, lens in [(1, [1]), (3, [1, 2, 5]), (12, [4, 1]), (20, [9]), (2, [3, 3, 3, 3])]:
        prefix = [tok.bos_token_id] + rng.integers(4, len(tok), n_prefix - 1).tolist()
        items.append((prefix, [rng.integers(4, len(tok), n).tolist() for n in lens]))
    out = E.branch_logprobs(tiny_bridge, items, max_row_tokens=16, batch_tokens=40, head_chunk=3)
    with torch.no_grad():
        for (prefix, branches), got in zip(items, out):
            for br, lp in zip(branches, got):
                ids = torch.tensor([prefix + br])
                ref = torch.log_softmax(hf(input_ids=ids).logits[0].float(), -1)[len(prefix) - 1:-1]
                ref = ref[torch.arange(len(br)), torch.tensor(br)].numpy()
                np.testing.assert_allclose(lp, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="empty prefix"):
        E.branch_logprobs(tiny_bridge, [([], [[5]])])
    with pytest.raises(ValueError, match="non-empty branch"):
        E.branch_logprobs(tiny_bridge, [([2], [[]])])
