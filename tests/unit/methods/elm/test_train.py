"""ELM training on a tiny model: the model is unchanged afterwards, the adapter is trained and reproducible, the
erase loss falls, the fluency cache is reused and keyed by the model's weights."""
from __future__ import annotations

import pytest
import torch

from ember_utils.methods.elm import ELMConfig, PrefixPair, elm_config_for, train_elm
from ember_utils.methods.elm.train import model_fingerprint
from ember_utils.methods.lora import LoraSpec
from helpers.states import noise_edit

PAIRS = (PrefixPair("Potter wand magic {concept}:\n", "the house is a street:\n"),)
FORGET = ["Harry Potter is a wizard", "the wand of the wizard", "Hogwarts is a school of magic"]
RETAIN = ["the house is on the street", "a cat sat on the mat", "the weather is nice today", "we went home"]
CFG = ELMConfig(lora=LoraSpec(rank=4, layers=(0, 1)), prefixes=PAIRS, eta=5.0, eta_ramp=2, top_k=8, steps=25, lr=5e-3,
                batch_forget=3, batch_retain=2, batch_fluency=1, max_length=12, fluency_tokens=4, n_fluency_texts=2)
IDS = torch.tensor([[2, 40, 41, 42, 43, 44]])


def test_train_elm_trains_the_adapter_and_leaves_the_model_unchanged(fresh_tiny_bridge, tmp_path):
    bridge = fresh_tiny_bridge
    before = {n: p.detach().clone() for n, p in bridge.original_model.named_parameters()}
    with torch.no_grad():
        base = bridge(IDS).clone()
    res = train_elm(bridge, FORGET, RETAIN, "Hogwarts", CFG, cache_dir=tmp_path)
    after = dict(bridge.original_model.named_parameters())
    assert set(after) == set(before) and all(torch.equal(before[n], after[n]) for n in before)
    with torch.no_grad():
        assert torch.equal(bridge(IDS), base)
    h = res.history
    assert len(h) == CFG.steps and {"erase", "retain", "fluency", "loss"} <= set(h.columns)
    assert h["erase"].iloc[-5:].mean() < h["erase"].iloc[:5].mean()  # the adapter learns the target
    assert any(v.abs().sum() > 0 for k, v in res.adapter.weights.items() if "lora_B" in k)
    with res.adapter.applied_to(bridge), torch.no_grad():
        assert (bridge(IDS) - base).abs().max() > 1e-4
    assert {"teacher_forget_s", "teacher_retain_s", "fluency_generation_s", "train_s"} <= set(res.timings)
    assert len(list(tmp_path.glob("elm_fluency_*.json"))) == 1
    again = train_elm(bridge, FORGET, RETAIN, "Hogwarts", CFG, cache_dir=tmp_path)  # same seed, cached fluency
    assert all(torch.equal(again.adapter.weights[k], res.adapter.weights[k]) for k in res.adapter.weights)


def test_fingerprint_changes_with_an_embedding_edit(fresh_tiny_bridge):
    before = model_fingerprint(fresh_tiny_bridge)
    with noise_edit(fresh_tiny_bridge, [40]).applied_to(fresh_tiny_bridge):
        assert model_fingerprint(fresh_tiny_bridge) != before
    assert model_fingerprint(fresh_tiny_bridge) == before


def test_config_errors_and_presets():
    with pytest.raises(ValueError, match="steps"):
        ELMConfig(steps=0)
    with pytest.raises(ValueError, match="No ELM preset"):
        elm_config_for("gpt-2")
    assert elm_config_for("google/gemma-2-2b-it").eta >= 500  # GPU presets keep the reference values
    with pytest.raises(ValueError, match="forget texts"):
        train_elm(object(), [], RETAIN, "x", CFG)
