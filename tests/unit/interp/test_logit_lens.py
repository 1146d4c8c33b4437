"""Logit lens: the last layer's read-out is the model's own prediction, on every preset architecture; an
embedding edit changes what the early layers predict at the edited position."""
from __future__ import annotations

import pytest
import torch

from ember_utils.interp.logit_lens import layer_logits, logit_lens, residual_hook_names
from helpers.tiny_models import PRESET_ARCHITECTURES, boot_bridge_as, bpe_tokenizer

PROMPT = "Harry Potter went to Hogwarts"


@pytest.fixture(scope="module")
def tok():
    return bpe_tokenizer()


@pytest.mark.parametrize("hf_id", sorted(PRESET_ARCHITECTURES))
def test_last_layer_equals_the_model_logits(hf_id, tok):
    bridge = boot_bridge_as(hf_id, PRESET_ARCHITECTURES[hf_id](len(tok)), tok)
    lens = layer_logits(bridge, PROMPT)
    assert lens.shape == (bridge.cfg.n_layers, bridge.cfg.d_vocab)
    with torch.inference_mode():
        logits = bridge(bridge.to_tokens(PROMPT))[0, -1].float()
    torch.testing.assert_close(lens[-1], logits, atol=1e-4, rtol=1e-4)
    assert residual_hook_names(bridge)[-1] == f"blocks.{bridge.cfg.n_layers - 1}.hook_resid_post"


def test_logit_lens_table_and_an_edit_moves_it(tiny_bridge):
    from ember_utils.methods.ember.edit import EmbeddingEdit

    target = tiny_bridge.to_str_tokens(PROMPT, prepend_bos=False)[-1]
    table = logit_lens(tiny_bridge, PROMPT, [target, 5])
    assert list(table.columns) == ["layer", "token", "prob", "rank", "top_token"]
    assert len(table) == 2 * tiny_bridge.cfg.n_layers and table["prob"].between(0, 1).all()
    last_id = int(tiny_bridge.to_tokens(PROMPT)[0, -1])
    edit = EmbeddingEdit(torch.tensor([last_id]), 3.0 * torch.ones(1, tiny_bridge.cfg.d_model))
    before = layer_logits(tiny_bridge, PROMPT)
    with edit.applied_to(tiny_bridge):
        after = layer_logits(tiny_bridge, PROMPT)
    assert not torch.allclose(before[0], after[0])
    torch.testing.assert_close(layer_logits(tiny_bridge, PROMPT), before)  # reverted
    with pytest.raises(ValueError, match="outside the prompt"):
        layer_logits(tiny_bridge, PROMPT, position=100)
