"""WeightPatch (exact revert, save/load) and the composition order: EMBER first, the base method trained on the
edited model, the stack applied edit-first."""
from __future__ import annotations

import pytest
import torch

from ember_utils.methods.compose import train_on_top
from ember_utils.methods.weight_patch import WeightPatch, named_parameters_plain
from ember_utils.state import StackedState
from helpers.states import noise_edit

IDS = torch.tensor([[2, 40, 41, 42, 43, 44]])
NAME = "model.layers.1.mlp.down_proj.weight"


def test_weight_patch_applies_reverts_exactly_and_round_trips(fresh_tiny_bridge, tmp_path):
    W = named_parameters_plain(fresh_tiny_bridge)[NAME]
    orig = W.detach().clone()
    patch = WeightPatch({NAME: orig + 1.0})
    with torch.no_grad():
        base = fresh_tiny_bridge(IDS).clone()
    with patch.applied_to(fresh_tiny_bridge), torch.no_grad():
        assert torch.equal(W, orig + 1.0)
        changed = fresh_tiny_bridge(IDS).clone()
    assert torch.equal(W, orig)
    loaded = WeightPatch.load(patch.save(tmp_path / "p.safetensors"))
    with loaded.applied_to(fresh_tiny_bridge), torch.no_grad():
        assert torch.equal(fresh_tiny_bridge(IDS), changed)
    with torch.no_grad():
        assert torch.equal(fresh_tiny_bridge(IDS), base)
    with pytest.raises(Exception, match="does not have"):
        WeightPatch({"model.layers.9.mlp.down_proj.weight": orig}).apply(fresh_tiny_bridge)


def test_base_method_is_trained_on_the_edited_model_and_stacked_after_the_edit(fresh_tiny_bridge):
    bridge = fresh_tiny_bridge
    W_E = bridge.original_model.get_input_embeddings().weight
    unedited = W_E.detach().clone()
    edit = noise_edit(bridge, [40, 41])
    seen = {}

    def train(model):
        seen["rows"] = model.original_model.get_input_embeddings().weight[[40, 41]].detach().clone()
        seen["applied"] = edit.applied
        W = named_parameters_plain(model)[NAME]
        return WeightPatch({NAME: W.detach() * 0.5}), "info"

    stack, info = train_on_top(bridge, edit, train)
    assert info == "info" and seen["applied"]
    with edit.applied_to(bridge):
        edited_rows = W_E[[40, 41]].detach().clone()
    assert torch.equal(seen["rows"], edited_rows) and not torch.equal(seen["rows"], unedited[[40, 41]])
    assert torch.equal(W_E, unedited)  # the edit is reverted after training
    assert isinstance(stack, StackedState) and stack.states[0] is edit and isinstance(stack.states[1], WeightPatch)
    order = []

    def recording(state):
        original = state._apply

        def apply(model):
            order.append(type(state).__name__)
            original(model)
        return apply

    for s in stack.states:
        s._apply = recording(s)
    with stack.applied_to(bridge):
        pass
    assert order == ["EmbeddingEdit", "WeightPatch"]
    assert torch.equal(W_E, unedited)
    with pytest.raises(ValueError, match="already applied"):
        with edit.applied_to(bridge):
            train_on_top(bridge, edit, train)
