"""The δ rule on hand-made sweep tables."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from ember_utils.methods.ember.delta import select_delta, sweep_delta
from helpers.tiny_models import tiny_bridge_and_hf


def test_select_delta_on_hand_made_table():
    table = pd.DataFrame({
        "delta":       [0.5, 1.0, 2.0, 5.0, 10.0],
        "efficacy":    [0.1, 0.5, 0.5, 0.9, 1.0],
        "specificity": [1.0, 0.95, 0.95, 0.85, 0.5],   # δ=5 and 10 fail the 0.9 gate
        "coherence":   [1.0, 0.97, 0.97, 0.99, 0.9],
    })
    delta, scored = select_delta(table)
    assert delta == 1.0  # δ=1 and δ=2 tie -> the smaller
    assert scored.loc[scored["delta"] == 5.0, "score"].item() == 0
    expected = 3 / (1 / 0.5 + 1 / 0.95 + 1 / 0.97)
    assert scored.loc[scored["delta"] == 1.0, "score"].item() == pytest.approx(expected)


def test_select_delta_coherence_gate_and_no_edit():
    table = pd.DataFrame({"delta": [1.0, 2.0], "efficacy": [0.9, 1.0], "specificity": [0.95, 0.95],
                          "coherence": [0.5, 0.89]})
    delta, scored = select_delta(table)
    assert delta is None and (scored["score"] == 0).all()
    with pytest.raises(ValueError, match="lacks columns"):
        select_delta(table.drop(columns="coherence"))


class _FakeResult:
    def __init__(self, metrics):
        self.metrics = metrics


class _FakeEvaluator:
    """Efficacy grows with δ; specificity collapses beyond δ=5 — measured from the real edited weights."""

    split = "train"

    def __init__(self, model, token_id):
        self.model, self.token_id, self.base = model, token_id, model.W_E[token_id].detach().clone()
        self.calls = []

    def evaluate(self, state, name=None, reuse=True, reference=None):
        self.calls.append(sorted(state.touched_tokens) if reuse else None)
        with state.applied_to(self.model):
            moved = (self.model.W_E[self.token_id] - self.base).norm().item()
        eff = min(1.0, moved / 10)
        spec = 1.0 if moved <= 5 * self.scale else 0.5
        return _FakeResult({"efficacy": eff, "specificity": spec, "coherence": 1.0, "acc_concept": 0.0,
                            "acc_similar": 0.0, "acc_general": 0.0, "acc_open": 0.0, "perplexity": 1.0})


def test_sweep_delta_picks_by_rule_and_leaves_model_unedited():
    from ember_utils.methods.ember.edit import EmbeddingEdit

    bridge, _, _ = tiny_bridge_and_hf()
    direction = torch.zeros(1, bridge.cfg.d_model)
    direction[0, 0] = 1.0
    edit = EmbeddingEdit(torch.tensor([5]), direction)
    ev = _FakeEvaluator(bridge, 5)
    ev.scale = 1.0
    W0 = bridge.W_E.detach().clone()
    sweep = sweep_delta(bridge, edit, ev, grid=[1, 2, 5, 10], progress=False)
    assert torch.equal(bridge.W_E, W0)
    assert sweep.chosen_delta == 5 and sweep.edit.delta == 5
    assert list(sweep.table.delta) == [1, 2, 5, 10] and sweep.table.score.iloc[-1] == 0
    assert ev.calls == [[5]] * 4  # each candidate is a state that declares its edited tokens
    sweep_delta(bridge, edit, ev, grid=[1], progress=False, reuse_unaffected=False)
    assert ev.calls[-1] is None
    with pytest.raises(ValueError, match="different model"):
        sweep_delta(tiny_bridge_and_hf()[0], edit, ev, grid=[1])
    ev.split = "test"
    with pytest.raises(ValueError, match="train split"):
        sweep_delta(bridge, edit, ev, grid=[1])
