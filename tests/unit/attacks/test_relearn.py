"""Relearning attack on tiny models: the loss falls, accuracy is measured along the way, the model comes back
bit-exactly, adapters fold into plain weights, and the edit-recovery numbers mean what they say."""
from __future__ import annotations

import pytest
import torch

from ember_utils.attacks.relearn import (
    RELEARN_PRESETS,
    RelearnConfig,
    edit_recovery,
    fold_adapters,
    relearn,
    relearn_config_for,
)
from ember_utils.data import list_concepts, load_concept
from ember_utils.data_quality import relearn_leaks
from ember_utils.methods.lora import LoraAdapter, LoraSpec
from ember_utils.methods.weight_patch import WeightPatch
from ember_utils.state import StackedState
from helpers.states import noise_edit
from helpers.toy_data import toy_frame

TEXTS = ["Harry Potter is a wizard who studies at Hogwarts School of Witchcraft and Wizardry.",
         "Hermione Granger and Ron Weasley are his best friends."]
IDS = torch.tensor([[2, 40, 41, 42, 43, 44, 45, 46]])


def params_of(bridge):
    return {n: p.detach().clone() for n, p in bridge.original_model.named_parameters()}


def assert_same(bridge, before):
    now = dict(bridge.original_model.named_parameters())
    assert set(now) == set(before)
    for n, p in now.items():
        assert torch.equal(p, before[n]), n


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_relearning_learns_and_leaves_the_model_as_it_was(fresh_tiny_bridge, mode):
    bridge = fresh_tiny_bridge
    before = params_of(bridge)
    flags = {n: p.requires_grad for n, p in bridge.original_model.named_parameters()}
    cfg = RelearnConfig(mode=mode, lr=3e-3, lora_lr=1e-2, epochs=6, max_length=32, n_evals=3)
    res = relearn(bridge, TEXTS, cfg, eval_sets={"toy": toy_frame()})
    assert list(res.curve["step"]) == [0, 6, 12] and list(res.curve["tokens"])[0] == 0
    assert res.curve["loss"].iloc[-1] < res.curve["loss"].iloc[1]  # later steps fit the paragraphs better
    assert res.correct["toy"].shape == (len(toy_frame()),) and 0 <= res.final_accuracy("toy") <= 1
    assert res.timings["tokens"] > 0 and res.timings["tokens_per_s"] > 0 and res.recovery == {}
    assert_same(bridge, before)
    assert {n: p.requires_grad for n, p in bridge.original_model.named_parameters()} == flags


def test_relearning_on_an_edited_model_reports_recovery_and_restores_the_edit(fresh_tiny_bridge):
    bridge = fresh_tiny_bridge
    before = params_of(bridge)
    ids = bridge.tokenizer(" Hogwarts", add_special_tokens=False)["input_ids"]
    edit = noise_edit(bridge, ids, scale=2.0)
    res = relearn(bridge, TEXTS, RelearnConfig(lr=1e-2, epochs=4, max_length=32, n_evals=1), state=edit)
    assert res.recovery["n_rows"] == len(ids) and -5 < res.recovery["recovered_fraction_median"] < 5
    assert not edit.applied
    assert_same(bridge, before)


def test_edit_recovery_on_known_moves(tiny_bridge):
    edit = noise_edit(tiny_bridge, [5, 6, 7], scale=1.0)
    edit.delta = 2.0
    edited = torch.randn(3, tiny_bridge.cfg.d_model)
    back = edit.delta * edit.directions
    half = edit_recovery(edit, edited, edited + 0.5 * back)
    assert half["recovered_fraction_median"] == pytest.approx(0.5, abs=1e-5)
    assert half["remaining_distance_median"] == pytest.approx(0.5, abs=1e-5)
    assert half["cosine_with_way_back_mean"] == pytest.approx(1.0, abs=1e-5)
    still = edit_recovery(edit, edited, edited.clone())
    assert still["recovered_fraction_median"] == 0 and still["remaining_distance_median"] == pytest.approx(1.0)
    away = edit_recovery(edit, edited, edited - back)
    assert away["recovered_fraction_median"] == pytest.approx(-1.0, abs=1e-5)


def test_fold_adapters_keeps_the_stack_logits(fresh_tiny_bridge):
    bridge = fresh_tiny_bridge
    edit = noise_edit(bridge, [40, 41], scale=1.0)
    adapter = LoraAdapter(LoraSpec(rank=2, layers=(0, 1)))
    stack = StackedState(edit, adapter)
    with stack.applied_to(bridge):
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in adapter.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            want = bridge(IDS).clone()
    folded = fold_adapters(stack, bridge)
    assert isinstance(folded, StackedState) and isinstance(folded.states[1], WeightPatch)
    assert folded.states[0] is edit
    with folded.applied_to(bridge), torch.no_grad():
        torch.testing.assert_close(bridge(IDS), want, atol=1e-4, rtol=1e-4)
    assert fold_adapters(None, bridge) is None and fold_adapters(edit, bridge) is edit


def test_config_checks_and_presets():
    for bad in ({"mode": "sgd"}, {"lr": 0}, {"epochs": 0}, {"n_paragraphs": 0}, {"max_length": 1}):
        with pytest.raises(ValueError):
            RelearnConfig(**bad)
    ref = RELEARN_PRESETS["meta-llama/Llama-3.1-8B-Instruct"]
    assert (ref.mode, ref.lr, ref.weight_decay, ref.batch_size, ref.epochs, ref.max_length, ref.n_paragraphs) == \
        ("full", 1e-5, 0.01, 1, 2, 256, None)  # the reference setting
    assert relearn_config_for("gemma-3-270m", mode="lora").mode == "lora"
    with pytest.raises(ValueError, match="No relearning preset"):
        relearn_config_for("gpt-2")
    with pytest.raises(ValueError, match="at least one paragraph"):
        relearn(None, [], RelearnConfig())


def test_relearning_text_answers_no_test_question():
    """The paragraphs the attack trains on hold no distinctive word of a test answer and no test question."""
    for slug in list_concepts():
        c = load_concept(slug)
        assert relearn_leaks(c) == [], slug
        questions = {q.strip().lower() for t in ("mc", "indirect_mc", "open") for q in c.split(t, "test")["question"]}
        assert not any(q in text.lower() for text in c.relearn_texts for q in questions), slug
