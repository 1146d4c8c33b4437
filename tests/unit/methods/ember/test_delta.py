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


def test_interval_gate_lets_noise_pass_and_fails_clear_damage():
    table = pd.DataFrame({
        "delta":          [1.0, 10.0, 100.0],
        "efficacy":       [0.2, 0.6, 0.9],
        "specificity":    [0.97, 0.86, 0.70],
        "specificity_hi": [1.0, 0.95, 0.84],   # δ=10 below the gate in point, but within noise; δ=100 clearly below
        "coherence":      [1.0, 0.98, 0.95],
        "coherence_hi":   [1.0, 1.0, 1.0],
    })
    delta, scored = select_delta(table)
    assert list(scored["passes_gates"]) == [True, True, False] and set(scored["gate_rule"]) == {"interval"}
    assert delta == 10.0 and scored["chosen"].tolist() == [False, True, False]
    point_delta, point = select_delta(table.drop(columns=["specificity_hi", "coherence_hi"]))
    assert point_delta == 1.0 and set(point["gate_rule"]) == {"point"}


def test_choice_at_the_grid_edge_extends_the_grid_then_is_not_identified():
    from ember_utils.methods.ember.delta import grid_edge
    from ember_utils.methods.ember.edit import EmbeddingEdit

    assert grid_edge(10.0, [1, 10]) == "upper" and grid_edge(1.0, [1, 10]) == "lower"
    assert grid_edge(5.0, [1, 5, 10]) is None and grid_edge(None, [1, 10]) is None
    bridge, _, _ = tiny_bridge_and_hf()
    direction = torch.zeros(1, bridge.cfg.d_model)
    direction[0, 0] = 1.0
    edit = EmbeddingEdit(torch.tensor([5]), direction)
    ev = _FakeEvaluator(bridge, 5)
    ev.scale = 1e9  # specificity never collapses: efficacy grows up to δ = 10, then flat
    sweep = sweep_delta(bridge, edit, ev, grid=[0.5, 1, 2], progress=False, max_extensions=2)
    assert list(sweep.table["delta"]) == [0.5, 1, 2, 4, 8]  # two doublings beyond the top
    assert sweep.chosen_delta == 8 and sweep.edge == "upper" and not sweep.identified
    assert "not identified" in sweep.summary()
    ev.scale = 2 / 5  # specificity collapses above δ = 2: the choice is inside the grid after one extension
    inside = sweep_delta(bridge, edit, ev, grid=[0.5, 1], progress=False, max_extensions=3)
    assert inside.chosen_delta == 2 and inside.identified and list(inside.table["delta"]) == [0.5, 1, 2, 4]


def test_sweep_never_reads_a_test_split(fresh_tiny_bridge, monkeypatch):
    """The real Evaluator in a sweep: every table it selects from is a train or validation split."""
    import dataclasses

    from ember_utils import data as D
    from ember_utils.eval import Evaluator
    from ember_utils.methods.ember.edit import EmbeddingEdit
    from helpers.toy_data import toy_concept_and_common

    bridge = fresh_tiny_bridge
    concept, common = toy_concept_and_common(bridge)
    as_train = {t: getattr(concept, t).assign(split="train") for t in
                ("mc", "similar_mc", "indirect_mc", "open", "collateral_sentences", "collateral_mc", "prompts")}
    concept = dataclasses.replace(concept, **as_train)
    common = dataclasses.replace(common, general_mc=common.general_mc.assign(split="train"),
                                 coherence_prompts=common.coherence_prompts.assign(split="train"),
                                 neutral=common.neutral.assign(split=["validation", "test", "train"]))
    read: list[str] = []
    real = D.select_split
    monkeypatch.setattr(D, "select_split", lambda df, split: (read.append(split), real(df, split))[1])
    ev = Evaluator(bridge, concept, common, split="train", measure_open=False, gen_max_new_tokens=3,
                   seamless_max_new_tokens=3, n_boot=50)
    ids = bridge.tokenizer(" Hogwarts Harry", add_special_tokens=False)["input_ids"]
    edit = EmbeddingEdit(torch.tensor(ids), torch.ones(len(ids), bridge.cfg.d_model))
    sweep = sweep_delta(bridge, edit, ev, grid=[1.0, 10.0], progress=False)
    assert len(sweep.table) == 2 and read and set(read) <= {"train", "validation"}, set(read)
    assert set(ev.splits.values()) == {"train", "validation"} and ev.splits["neutral"] == "validation"
    test_ev = Evaluator(bridge, concept, common, split="train", neutral_split="test", measure_open=False)
    with pytest.raises(ValueError, match=r"must not read a test split.*\['neutral'\]"):
        sweep_delta(bridge, edit, test_ev, grid=[1.0], progress=False)


def test_every_term_is_gated_and_the_smallest_delta_within_noise_wins():
    table = pd.DataFrame({
        "delta":            [2.0, 5.0, 10.0, 100.0],
        "efficacy":         [0.4, 0.6, 0.65, 0.97],
        "specificity":      [0.95, 0.93, 0.92, 0.90],
        "specificity_hi":   [1.0, 1.0, 1.0, 0.99],
        "coherence":        [0.98, 0.94, 0.93, 0.80],
        "coherence_hi":     [1.0, 1.0, 0.99, 0.95],   # coherence alone lets δ=100 through ...
        "seamlessness":     [0.97, 0.85, 0.80, 0.53],
        "seamlessness_hi":  [1.0, 0.97, 0.93, 0.86],  # ... its seamlessness term clearly does not
        "score_se":         [0.05, 0.05, 0.06, 0.07],
    })
    delta, scored = select_delta(table)
    assert scored.loc[scored.delta == 100.0, "failed_gates"].item() == "seamlessness"
    assert list(scored["passes_gates"]) == [True, True, True, False]
    # best passing: δ=10 (score 0.77); its score minus one standard error (0.71) is reached by δ=5 (0.74) already
    best = scored.loc[scored.delta == 10.0, "score"].item()
    assert scored["score_bar"].iloc[0] == pytest.approx(best - 0.06)
    assert delta == 5.0 and scored.loc[scored.delta == 5.0, "score"].item() >= best - 0.06
    no_se, _ = select_delta(table.drop(columns="score_se"))
    assert no_se == 10.0  # without a standard error the best score wins outright
