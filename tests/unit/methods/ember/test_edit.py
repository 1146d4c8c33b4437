"""The reversible embedding edit: apply/revert, state errors, save/load, build."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ember_utils.methods.ember.edit import EditStateError, EmbeddingEdit, build_edit
from ember_utils.state import StateError
from helpers.tiny_models import tiny_bridge_and_hf
from helpers.toy_data import planted_codes


def _edit_for(bridge, ids=(5, 7, 9), seed=0):
    g = torch.Generator().manual_seed(seed)
    return EmbeddingEdit(torch.tensor(ids), torch.randn(len(ids), bridge.cfg.d_model, generator=g), delta=2.0)


def test_edit_apply_revert_is_bit_exact_and_touches_only_its_rows():
    bridge, hf, _ = tiny_bridge_and_hf()
    W_E0, W_U0 = bridge.W_E.detach().clone(), bridge.W_U.detach().clone()
    edit = _edit_for(bridge)
    edit.apply(bridge)
    changed = (bridge.W_E != W_E0).any(dim=1).nonzero().flatten().tolist()
    assert changed == [5, 7, 9]
    assert torch.equal(bridge.W_U, W_U0)
    assert torch.allclose(bridge.W_E[5], W_E0[5] - 2.0 * edit.directions[0])
    edit.revert(bridge)
    assert torch.equal(bridge.W_E, W_E0)


def test_edit_state_errors():
    bridge, _, _ = tiny_bridge_and_hf()
    edit = _edit_for(bridge)
    with pytest.raises(StateError, match="not applied"):
        edit.revert(bridge)
    with edit.applied_to(bridge):
        with pytest.raises(StateError, match="already applied"):
            edit.apply(bridge)
    assert not edit.applied
    with pytest.raises(EditStateError, match="vocabulary has"):
        EmbeddingEdit(torch.tensor([10_000]), torch.zeros(1, bridge.cfg.d_model)).apply(bridge)


def test_edit_context_manager_reverts_on_error():
    bridge, _, _ = tiny_bridge_and_hf()
    W_E0 = bridge.W_E.detach().clone()
    edit = _edit_for(bridge)
    with pytest.raises(RuntimeError):
        with edit.applied_to(bridge):
            raise RuntimeError("boom")
    assert torch.equal(bridge.W_E, W_E0)


def test_edit_rejects_bad_input():
    with pytest.raises(ValueError, match="delta must be"):
        EmbeddingEdit(torch.tensor([1]), torch.zeros(1, 4), delta=-1)
    with pytest.raises(ValueError, match="delta must be"):
        EmbeddingEdit(torch.tensor([1]), torch.zeros(1, 4), delta=float("nan"))
    with pytest.raises(ValueError, match="one row per token"):
        EmbeddingEdit(torch.tensor([1, 2]), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="duplicates"):
        EmbeddingEdit(torch.tensor([1, 1]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        EmbeddingEdit(torch.tensor([1]), torch.full((1, 4), float("nan")))


def test_edit_save_load_round_trip_gives_identical_logits(tmp_path):
    bridge, _, _ = tiny_bridge_and_hf()
    edit = _edit_for(bridge)
    edit.tokens, edit.meta = ["a", "b", "c"], {"concept": "harry_potter"}
    path = edit.save(tmp_path / "edit.safetensors")
    loaded = EmbeddingEdit.load(path)
    assert loaded.delta == edit.delta and loaded.tokens == edit.tokens and loaded.meta == edit.meta
    tokens = bridge.to_tokens("Harry Potter is a wizard at Hogwarts")
    with edit.applied_to(bridge):
        a = bridge(tokens)
    with loaded.applied_to(bridge):
        b = bridge(tokens)
    assert torch.equal(a, b)
    (tmp_path / "junk.safetensors").write_bytes(b"not a patch")
    with pytest.raises(ValueError, match="not a readable edit patch"):
        EmbeddingEdit.load(tmp_path / "junk.safetensors")


def test_build_edit_only_concept_only_tokens():
    G, vocab = planted_codes()
    G[60, 0] = 1.0  # a neutral-only token loading on the concept atom must not be edited
    F = torch.randn(6, 8)
    edit = build_edit(G, F, vocab, [0])
    assert set(edit.token_ids.tolist()) == set(range(20))
    assert torch.allclose(edit.directions[0], torch.as_tensor(G[0, 0]) * F[0])
    with pytest.raises(ValueError, match="already in V′"):
        build_edit(G, F, vocab, [0], extra_token_ids=[3], extra_codes=np.zeros((1, 6)))
    extra = build_edit(G, F, vocab, [0], extra_token_ids=[500], extra_codes=np.ones((1, 6)))
    assert 500 in extra.token_ids.tolist()
    with pytest.raises(ValueError, match="No atoms selected"):
        build_edit(G, F, vocab, [])


# ---------------------------------------------------------------- δ selection
