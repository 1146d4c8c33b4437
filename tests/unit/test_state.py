"""The model-state interface: apply/revert bookkeeping, stacking order and rollback, touched tokens, save/load."""
from __future__ import annotations

import pytest
import torch

from ember_utils.methods.ember.edit import EmbeddingEdit
from ember_utils.state import ALL_TOKENS, StackedState, StateError
from helpers.states import MLPWeightNoise, noise_edit
from helpers.tiny_models import tiny_bridge_and_hf


@pytest.fixture
def bridge():
    return tiny_bridge_and_hf()[0]


def _weights(bridge):
    return {k: v.detach().clone() for k, v in bridge.original_model.state_dict().items()}


def _same(bridge, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in bridge.original_model.state_dict().items())


def test_apply_revert_bookkeeping(bridge):
    edit = noise_edit(bridge, [5, 7])
    with pytest.raises(StateError, match="not applied"):
        edit.revert()
    edit.apply(bridge)
    with pytest.raises(StateError, match="already applied"):
        edit.apply(bridge)
    with pytest.raises(StateError, match="different model"):
        edit.revert(tiny_bridge_and_hf()[0])
    edit.revert()
    assert not edit.applied


def test_stack_applies_in_order_reverts_exactly_and_reports_tokens(bridge):
    before = _weights(bridge)
    below, edit = MLPWeightNoise(layer=0), noise_edit(bridge, [5, 7])
    stack = StackedState(below, edit)
    assert stack.touched_tokens is ALL_TOKENS
    assert stack.touched_tokens_since(below) == frozenset({5, 7})
    assert stack.touched_tokens_since(None) is ALL_TOKENS
    assert stack.touched_tokens_since(edit) is ALL_TOKENS  # not a prefix of the stack
    assert stack.touched_tokens_since(stack) is ALL_TOKENS  # nothing on top
    assert StackedState(noise_edit(bridge, [1]), noise_edit(bridge, [2])).touched_tokens == frozenset({1, 2})
    with stack.applied_to(bridge):
        assert below.applied and edit.applied and not _same(bridge, before)
    assert not below.applied and not edit.applied and _same(bridge, before)
    nested = StackedState(StackedState(below), edit)
    assert nested.states == (below, edit)
    with pytest.raises(ValueError, match="twice"):
        StackedState(edit, edit)
    with pytest.raises(TypeError, match="ModelState"):
        StackedState(edit, object())


def test_stack_rolls_back_when_a_state_fails_to_apply(bridge):
    before = _weights(bridge)
    good = noise_edit(bridge, [5])
    bad = EmbeddingEdit(torch.tensor([10_000]), torch.zeros(1, bridge.cfg.d_model))  # outside the vocabulary
    with pytest.raises(StateError, match="vocabulary has"):
        StackedState(good, bad).apply(bridge)
    assert not good.applied and _same(bridge, before)


def test_stack_save_load_round_trip(bridge, tmp_path):
    stack = StackedState(noise_edit(bridge, [5, 7], seed=1), noise_edit(bridge, [9], seed=2))
    path = stack.save(tmp_path / "stack")
    with pytest.raises(FileExistsError):
        stack.save(path)
    loaded = StackedState.load(path)
    assert [type(s) for s in loaded.states] == [EmbeddingEdit, EmbeddingEdit]
    ids = torch.tensor([[2, 5, 7, 9]])
    with stack.applied_to(bridge):
        a = bridge(ids)
    with loaded.applied_to(bridge):
        b = bridge(ids)
    assert torch.equal(a, b)
    (path / "stack.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="ember-stack-v1"):
        StackedState.load(path)
    with pytest.raises(FileNotFoundError):
        StackedState.load(tmp_path / "missing")
