"""The edit as hooks equals the edit as a weight change, on every preset architecture."""
from __future__ import annotations

import pytest
import torch

from ember_utils.methods.ember.edit import EmbeddingEdit
from ember_utils.methods.ember.hooks import edit_hooks
from helpers.tiny_models import PRESET_ARCHITECTURES, boot_bridge_as, bpe_tokenizer


@pytest.mark.parametrize("hf_id", sorted(PRESET_ARCHITECTURES))
def test_hook_edit_equals_weight_edit(hf_id):
    tok = bpe_tokenizer()
    bridge = boot_bridge_as(hf_id, PRESET_ARCHITECTURES[hf_id](len(tok)), tok)
    tokens = bridge.to_tokens("Harry Potter went to Hogwarts with Harry")
    ids = sorted(set(tokens[0, 1:3].tolist()))
    edit = EmbeddingEdit(torch.tensor(ids), torch.randn(len(ids), bridge.cfg.d_model, generator=torch.Generator().manual_seed(0)),
                         delta=2.0)
    with torch.inference_mode():
        plain = bridge(tokens)
        hooked = bridge.run_with_hooks(tokens, fwd_hooks=edit_hooks(edit, bridge))
        with edit.applied_to(bridge):
            weights = bridge(tokens)
    assert not torch.allclose(plain, weights, atol=1e-3)  # the edit does something
    torch.testing.assert_close(hooked, weights, atol=2e-4, rtol=1e-4)
    with edit.applied_to(bridge), pytest.raises(ValueError, match="applied"):
        edit_hooks(edit, bridge)
