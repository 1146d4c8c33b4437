"""Probing attack on tiny models and synthetic features: the activations are the hooks' values at the scorer's
tokens (batching changes nothing), a probe finds a planted direction and nothing in noise or shuffled labels, the
logit lens' last layer is the model's own prediction, and the attack runs end to end without touching the model."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ember_utils.attacks.probing import (
    answer_activations,
    best_probe,
    lens_option_logprobs,
    logit_lens_accuracy,
    probe_attack,
    probe_layers,
    probe_split,
)
from ember_utils.eval._hf import _encode_cont, _encode_prompt
from ember_utils.eval.mc import MC_OPTION_TEMPLATE, MC_PROMPT_TEMPLATE
from helpers.states import MLPWeightNoise
from helpers.tiny_models import PRESET_ARCHITECTURES, boot_bridge_as, bpe_tokenizer
from helpers.toy_data import toy_concept_and_common, toy_frame

NAMES = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def scorer_ids(tok, question, option):
    return (_encode_prompt(tok, MC_PROMPT_TEMPLATE.format(question=question)),
            _encode_cont(tok, MC_OPTION_TEMPLATE.format(option=option)))


def test_activations_are_the_hook_values_one_at_a_time(tiny_bridge):
    qs = toy_frame().iloc[3:6].reset_index(drop=True)
    tok = tiny_bridge.tokenizer
    lengths = {len(scorer_ids(tok, q, o)[1]) for q, opts in zip(qs["question"], qs["options"]) for o in opts}
    assert len(lengths) > 1, "options must differ in length so the batch is padded"
    feats = answer_activations(tiny_bridge, qs)
    assert feats.shape == (3, 4, 2, tiny_bridge.cfg.d_model) and feats.dtype == np.float32
    hf = tiny_bridge.original_model
    for i, (q, opts) in enumerate(zip(qs["question"], qs["options"])):
        for k, o in enumerate(opts):
            prefix, cont = scorer_ids(tok, q, o)
            ids = torch.tensor([prefix + cont])
            with torch.inference_mode():
                _, cache = tiny_bridge.run_with_cache(ids, names_filter=lambda n: n in NAMES)
                hidden = hf(input_ids=ids, output_hidden_states=True).hidden_states
            for layer, name in enumerate(NAMES):
                np.testing.assert_allclose(feats[i, k, layer], cache[name][0, -1].numpy(), atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(feats[i, k, 0], hidden[1][0, -1].numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(answer_activations(tiny_bridge, qs, layers=[1])[:, :, 0], feats[:, :, 1])
    # several questions per batch (the default) or one: the same activations
    np.testing.assert_allclose(answer_activations(tiny_bridge, qs, batch_size=1), feats, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        answer_activations(tiny_bridge, qs, batch_size=0)


def planted(n_q, n_opt=4, n_layers=4, d=64, signal_layers=(1, 3), strength=3.0, seed=0):
    """Features where the correct option is shifted along one direction on ``signal_layers``, noise elsewhere."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_q, n_opt, n_layers, d))
    y = rng.integers(0, n_opt, size=n_q)
    u = np.random.default_rng(99).normal(size=d)
    u /= np.linalg.norm(u)
    for layer in signal_layers:
        x[np.arange(n_q), y, layer] += strength * u
    return x.astype(np.float32), y


def test_probe_finds_the_planted_layers_and_nothing_else():
    xtr, ytr = planted(80, seed=1)
    xte, yte = planted(120, seed=2)
    table = probe_layers(xtr, ytr, xte, yte, layers=[4, 5, 6, 7], seed=0)
    assert list(table["layer"]) == [4, 5, 6, 7]
    acc = dict(zip(table["layer"], table["probe_acc"]))
    assert acc[5] > 0.85 and acc[7] > 0.85
    assert acc[4] < 0.4 and acc[6] < 0.4
    assert (table["control_acc"] < 0.4).all()
    assert (table["probe_acc_lo"] <= table["probe_acc"]).all() and (table["probe_acc"] <= table["probe_acc_hi"]).all()
    assert (table["chance"] == 0.25).all() and (table["n_train"] == 80).all() and (table["n_test"] == 120).all()
    assert table["C"].isin([0.01, 0.1, 1, 10]).all()
    pd.testing.assert_frame_equal(table, probe_layers(xtr, ytr, xte, yte, layers=[4, 5, 6, 7], seed=0))
    no_ctrl = probe_layers(xtr[:, :, :1], ytr, xte[:, :, :1], yte, control=False)
    assert no_ctrl["control_acc"].isna().all() and list(no_ctrl["layer"]) == [0]


def test_probe_layers_rejects_bad_features():
    x, y = planted(10)
    with pytest.raises(ValueError, match="questions, options, layers, d_model"):
        probe_layers(x[:, :, 0], y, x, y)
    with pytest.raises(ValueError, match="differ"):
        probe_layers(x, y, x[:, :, :2], y)
    with pytest.raises(ValueError, match="option indices"):
        probe_layers(x, y + 4, x, y)
    with pytest.raises(ValueError, match="at least 2 train"):
        probe_layers(x[:1], y[:1], x, y)
    with pytest.raises(ValueError, match="labels"):
        probe_layers(x, y, x, y, layers=[0, 1])


def test_probe_split_rejects_overlap_and_empty_tables():
    train, test = toy_frame(prefix="a", split="train"), toy_frame(prefix="b")
    tr, te = probe_split(train, test)
    assert len(tr) == len(train) and len(te) == len(test)
    with pytest.raises(ValueError, match=r"overlap in 2 id\(s\): \['a1', 'a3'\]"):
        probe_split(train, pd.concat([test, train.iloc[[1, 3]]]))
    with pytest.raises(ValueError, match="train question table is empty"):
        probe_split(train.iloc[0:0], test)


@pytest.mark.parametrize("hf_id", sorted(PRESET_ARCHITECTURES))
def test_lens_last_layer_is_the_model_prediction(hf_id):
    tok = bpe_tokenizer()
    bridge = boot_bridge_as(hf_id, PRESET_ARCHITECTURES[hf_id](len(tok)), tok)
    qs = toy_frame().iloc[:5]
    lp = lens_option_logprobs(bridge, qs, batch_size=4)  # two batches of different prompt lengths
    assert lp.shape == (5, bridge.cfg.n_layers, 4)
    np.testing.assert_allclose(lens_option_logprobs(bridge, qs, batch_size=1), lp, atol=1e-5, rtol=1e-5)
    for i, (q, opts) in enumerate(zip(qs["question"], qs["options"])):
        prefix = _encode_prompt(tok, MC_PROMPT_TEMPLATE.format(question=q))
        first = [_encode_cont(tok, MC_OPTION_TEMPLATE.format(option=o))[0] for o in opts]
        with torch.inference_mode():
            logp = torch.log_softmax(bridge(torch.tensor([prefix]))[0, -1].float(), dim=-1)
        np.testing.assert_allclose(lp[i, -1], logp[first].numpy(), atol=1e-4, rtol=1e-4)


def test_logit_lens_accuracy_counts_the_first_token_argmax(tiny_bridge):
    qs = toy_frame()
    lp = lens_option_logprobs(tiny_bridge, qs, layers=[1])
    qs["answer"] = lp[:, 0].argmax(axis=1)
    qs.loc[0, "answer"] = (qs.loc[0, "answer"] + 1) % 4
    table = logit_lens_accuracy(tiny_bridge, qs, layers=[1])
    assert list(table.columns) == ["layer", "lens_acc", "lens_acc_lo", "lens_acc_hi", "n", "first_token_ties"]
    assert table["lens_acc"].iloc[0] == pytest.approx(6 / 7) and table["n"].iloc[0] == 7


def test_probe_attack_end_to_end_and_the_model_comes_back(tiny_bridge):
    concept, _ = toy_concept_and_common(tiny_bridge)
    state = MLPWeightNoise(layer=0, scale=0.5)
    before = {n: p.detach().clone() for n, p in tiny_bridge.original_model.named_parameters()}
    table = probe_attack(tiny_bridge, concept, seed=0, state=state)
    assert not state.applied
    for n, p in tiny_bridge.original_model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert list(table["layer"]) == [0, 1]
    for col in ("probe_acc", "probe_acc_lo", "probe_acc_hi", "control_acc", "control_acc_lo", "control_acc_hi",
                "chance", "n_train", "n_test", "C", "lens_acc", "lens_acc_lo", "lens_acc_hi", "table"):
        assert col in table.columns, col
    assert table[["probe_acc", "control_acc", "lens_acc"]].stack().between(0, 1).all()
    assert (table["n_train"] == len(concept.split("mc", "train"))).all()
    assert (table["n_test"] == len(concept.split("mc", "test"))).all()
    plain = probe_attack(tiny_bridge, concept, layers=[1], seed=0)
    assert list(plain["layer"]) == [1]
    best = best_probe(table)
    assert best["probe_acc"] == table["probe_acc"].max() and best["layer"] in (0, 1)
    assert best["mean_probe_acc"] == pytest.approx(table["probe_acc"].mean())


def test_bad_input_is_rejected(tiny_bridge):
    qs = toy_frame().iloc[:2]
    with pytest.raises(ValueError, match=r"out of range: the model has 2 layers \(use 0..1\)"):
        answer_activations(tiny_bridge, qs, layers=[2])
    with pytest.raises(ValueError, match="out of range"):
        logit_lens_accuracy(tiny_bridge, qs, layers=[-1])
    with pytest.raises(ValueError, match="empty table"):
        answer_activations(tiny_bridge, qs.iloc[0:0])
    ragged = qs.copy()
    ragged.at[0, "options"] = ["a", "b", "c"]
    with pytest.raises(ValueError, match="same number"):
        answer_activations(tiny_bridge, ragged)

    class NoTrain:
        def split(self, table, split):
            return toy_frame(prefix="t", split=split).iloc[0:0 if split == "train" else 7]

    with pytest.raises(ValueError, match="train question table is empty"):
        probe_attack(tiny_bridge, NoTrain())
    with pytest.raises(ValueError, match="non-empty"):
        best_probe(pd.DataFrame())
