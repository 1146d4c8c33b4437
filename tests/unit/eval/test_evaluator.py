"""The Evaluator with unedited, embedding-edited and LoRA states (tiny model; a few tests on the
real default model are marked ``real_model``)."""
from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ember_utils import eval as E
from ember_utils.eval._hf import _encode_prompt
from ember_utils.profiles import FAST
from ember_utils.state import StackedState
from helpers.states import LyingEdit, MLPWeightNoise, noise_edit
from helpers.toy_data import SCORE_COLS, TOY_QUESTIONS, toy_concept_and_common, toy_frame

# ============================================================================ Evaluator


def test_evaluator_unedited_and_embedding_edit(fresh_tiny_bridge):
    bridge = fresh_tiny_bridge
    concept, common = toy_concept_and_common(bridge)
    ev = E.Evaluator(bridge, concept, common, split="test", gen_max_new_tokens=5, open_max_new_tokens=4)
    base = ev.baseline.metrics
    assert base["acc_concept"] == 0.75 and base["acc_similar"] == 0.5 and base["acc_general"] == 0.5
    assert (base["efficacy"], base["specificity"], base["coherence"], base["score"]) == (0.0, 1.0, 1.0, 0.0)
    assert ev.baseline is ev.baseline  # cached

    # the model as it is (no state) reproduces the baseline
    same = ev.evaluate(name="noop").metrics
    for k in ("acc_concept", "acc_similar", "acc_general", "perplexity", "fluency_logprob"):
        assert same[k] == pytest.approx(base[k], abs=1e-6)

    # an embedding edit: the evaluator applies it for measuring, reverts it before scoring the generations
    W_before = bridge.W_E.detach().clone()
    W_U_before = bridge.original_model.lm_head.weight.detach().clone() if hasattr(
        bridge.original_model.lm_head, "weight") else None
    n_vocab = len(bridge.tokenizer)
    edit = noise_edit(bridge, list(range(4, n_vocab)))
    res = ev.evaluate(edit, name="noisy")
    assert not edit.applied and res.state is edit
    assert torch.equal(bridge.W_E, W_before)
    if W_U_before is not None:
        assert torch.equal(bridge.original_model.lm_head.weight, W_U_before)
    m = res.metrics
    assert m["perplexity"] != pytest.approx(base["perplexity"])
    for k in ("efficacy", "specificity", "coherence", "score", "ppl_term", "fluency_term"):
        assert 0.0 <= m[k] <= 1.0 or math.isnan(m[k])
    assert set(res.mc["set"]) == {"concept", "indirect", "similar", "other_sense", "general"}
    assert list(res.generations.columns) == ["id", "prompt", "generation", "n_tokens", "token_ids", "base_logprob"]
    assert list(res.measurements.seamless.columns) == ["id", "prompt", "generation", "n_tokens", "fluency",
                                                       "repetition", "word_share", "token_ids"]
    assert m["specificity_terms"] == "general+similar+other_sense+other_sense_text"
    assert m["coherence_terms"] == "perplexity+fluency+seamlessness"
    for k in ("efficacy", "specificity", "coherence", "acc_concept", "d_acc_concept"):
        assert m[f"{k}_lo"] <= m[f"{k}_hi"]
    assert m["lost_concept"] + m["gained_concept"] <= m["n_concept"] and 0 <= m["mcnemar_p_concept"] <= 1
    # every token is edited: every concept question contains one, none is left without
    assert m["n_concept_named"] == m["n_concept"] and m["n_concept_unnamed"] == 0

    table = ev.table()
    assert list(table["name"]) == ["unedited", "noop", "noisy"]
    reuse = E.Evaluator(bridge, concept, common, baseline=ev.baseline)
    assert reuse.baseline is ev.baseline
    with pytest.raises(TypeError, match="EvalResult"):
        E.Evaluator(bridge, concept, common, baseline=base)
    assert {"efficacy", "specificity", "coherence", "score", "selection_score", "acc_open"} <= set(table.columns)


def test_evaluator_generations_scored_by_unedited_model(fresh_tiny_bridge):
    """Fluency of the edited model's generations is measured with the *unedited* model."""
    bridge = fresh_tiny_bridge
    concept, common = toy_concept_and_common(bridge)
    ev = E.Evaluator(bridge, concept, common, gen_max_new_tokens=5, open_max_new_tokens=3)
    res = ev.evaluate(noise_edit(bridge, list(range(4, len(bridge.tokenizer)))), name="noisy")
    p_ids = [_encode_prompt(bridge.tokenizer, E.COHERENCE_PROMPT_TEMPLATE.format(prompt=p))
             for p in common.coherence_prompts["prompt"]]
    g_ids = list(res.generations["token_ids"])
    # re-scoring the generations with the (restored) unedited model gives the stored numbers
    lps = E.continuation_logprobs(bridge, p_ids, g_ids)
    np.testing.assert_allclose([lp.mean() for lp in lps], res.generations["base_logprob"], atol=1e-4)


def test_evaluator_with_lora_state():
    from peft import LoraConfig, get_peft_model

    from helpers.tiny_models import boot_tiny_bridge, build_tiny_model

    model, tok = build_tiny_model()
    ref_bridge = boot_tiny_bridge(*build_tiny_model())  # same seed: the unedited model
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"],
                                                  init_lora_weights=False, lora_dropout=0.5))
    bridge = boot_tiny_bridge(peft_model.base_model.model, tok)
    bridge.train()  # dropout must be switched off by the evaluator
    concept, common = toy_concept_and_common(ref_bridge)
    ev = E.Evaluator(bridge, concept, common, gen_max_new_tokens=4, open_max_new_tokens=3,
                     base_state=peft_model.disable_adapter)
    ref = E.Evaluator(ref_bridge, concept, common, gen_max_new_tokens=4, open_max_new_tokens=3)
    assert ev.baseline.metrics["perplexity"] == pytest.approx(ref.baseline.metrics["perplexity"], rel=1e-5)
    assert ev.baseline.metrics["acc_concept"] == 0.75
    lora = ev.evaluate(name="lora")  # adapters are on by default
    assert lora.metrics["perplexity"] != pytest.approx(ev.baseline.metrics["perplexity"], rel=1e-3)
    assert bridge.original_model.training  # training flag restored
    # enabling LoRA through a state instead of by default
    with peft_model.disable_adapter():
        ev2 = E.Evaluator(bridge, concept, common, gen_max_new_tokens=4, open_max_new_tokens=3)
        ev2.baseline  # noqa: B018 - computed with adapters off
    # a callable that returns a context manager is accepted as a state

    @contextlib.contextmanager
    def nothing():
        yield

    assert ev.evaluate(nothing, name="callable").metrics["perplexity"] == pytest.approx(lora.metrics["perplexity"])
    assert ev2.baseline.metrics["perplexity"] == pytest.approx(ref.baseline.metrics["perplexity"], rel=1e-5)


def _token_ids(bridge, *texts) -> list[int]:
    ids = set()
    for t in texts:
        ids.update(bridge.tokenizer(t, add_special_tokens=False)["input_ids"])
    return sorted(ids)


@pytest.mark.parametrize("which", ["names", "first_generation", "one_set_only"])
def test_evaluator_reuse_of_unaffected_inputs_equals_full_measurement(fresh_tiny_bridge, which):
    """A state that touches some tokens: only inputs with one of them are re-run, and every number equals a full
    measurement."""
    bridge = fresh_tiny_bridge
    concept, common = toy_concept_and_common(bridge)
    ev = E.Evaluator(bridge, concept, common, split="test", gen_max_new_tokens=6, open_max_new_tokens=4)
    if which == "names":
        ids = _token_ids(bridge, " Hogwarts", " Harry", " Dumbledore")
    elif which == "one_set_only":  # only a similar-domain question: the general set is copied whole
        ids = sorted(set(_token_ids(bridge, " Romans", " aqueducts", " Colosseum")) - set(_token_ids(
            bridge, *(" ".join([q, *o]) for q, o, _ in TOY_QUESTIONS[:6]), *common.neutral["text"],
            *concept.prompts["prompt"], *concept.collateral_sentences["text"], *common.coherence_prompts["prompt"])))
        assert ids
    else:  # tokens that the unedited model generates for the first coherence prompt (but not in its prompt)
        prompt_ids = set(_encode_prompt(bridge.tokenizer, E.COHERENCE_PROMPT_TEMPLATE.format(
            prompt=common.coherence_prompts["prompt"].iloc[0])))
        gen = ev.baseline.generations["token_ids"].iloc[0]
        ids = sorted(set(gen[:-1]) - prompt_ids - {bridge.tokenizer.eos_token_id})
        assert ids, "the first generation should contain some new token"
    full = ev.evaluate(noise_edit(bridge, ids), name="full", reuse=False)
    fast = ev.evaluate(noise_edit(bridge, ids), name="reuse")
    assert 0.0 < fast.metrics["remeasured_fraction"] < 1.0 and full.metrics["remeasured_fraction"] == 1.0
    for k in ("acc_concept", "acc_similar", "acc_general", "acc_open", "acc_indirect", "acc_other_sense"):
        assert fast.metrics[k] == full.metrics[k], k
    for k in ("perplexity", "fluency_logprob", "efficacy", "specificity", "coherence", "score",
              "other_sense_perplexity", "seamlessness", "seamless_fluency", "specificity_lo", "coherence_hi"):
        assert fast.metrics[k] == pytest.approx(full.metrics[k], rel=1e-5, abs=1e-6), k
    pd.testing.assert_frame_equal(fast.mc.drop(columns=SCORE_COLS), full.mc.drop(columns=SCORE_COLS))
    np.testing.assert_allclose(fast.mc[SCORE_COLS].to_numpy(float), full.mc[SCORE_COLS].to_numpy(float), atol=1e-5)
    assert list(fast.generations["token_ids"]) == list(full.generations["token_ids"])
    assert list(fast.measurements.seamless["token_ids"]) == list(full.measurements.seamless["token_ids"])
    assert list(fast.open["generation"]) == list(full.open["generation"])
    if which == "first_generation":  # the affected generation was re-run, and it changed under the edit
        assert fast.measurements.remeasured["coherence"] >= 1


def test_evaluator_reuse_spot_check_catches_a_broken_promise(fresh_tiny_bridge):
    bridge = fresh_tiny_bridge
    concept, common = toy_concept_and_common(bridge)
    ev = E.Evaluator(bridge, concept, common, gen_max_new_tokens=4, open_max_new_tokens=3)
    declared = _token_ids(bridge, " Hogwarts")
    everything = list(range(4, len(bridge.tokenizer)))
    d = bridge.W_E.shape[1]
    liar = LyingEdit(torch.tensor(everything), 3.0 * torch.ones(len(everything), d), declared=declared)
    W = bridge.W_E.detach().clone()
    with pytest.raises(ValueError, match="touched_tokens are wrong"):
        ev.evaluate(liar)
    assert torch.equal(bridge.W_E, W) and not liar.applied  # state reverted after the failure
    with pytest.raises(ValueError, match="reference= only applies"):
        ev.evaluate(noise_edit(bridge, declared), reference=ev.baseline, reuse=False)
    out_of_range = LyingEdit(torch.tensor([5]), torch.zeros(1, d), declared=[len(bridge.tokenizer) + 5])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ev.evaluate(out_of_range)
    other = E.Evaluator(bridge, concept, common, gen_max_new_tokens=4, open_max_new_tokens=3)
    with pytest.raises(ValueError, match="this evaluator's baseline"):
        ev.evaluate(noise_edit(bridge, declared), reference=other.baseline)
    applied = noise_edit(bridge, declared).apply(bridge)
    with pytest.raises(ValueError, match="already applied"):
        ev.evaluate(applied)
    applied.revert()


def test_evaluator_measures_everything_for_tied_embeddings():
    from helpers.tiny_models import tiny_bridge_and_hf

    bridge, _, _ = tiny_bridge_and_hf(untie=False)
    concept, common = toy_concept_and_common(bridge)
    ev = E.Evaluator(bridge, concept, common, gen_max_new_tokens=3, open_max_new_tokens=3)
    res = ev.evaluate(noise_edit(bridge, _token_ids(bridge, " Hogwarts")))
    assert res.metrics["remeasured_fraction"] == 1.0  # an edit of tied embeddings changes every output


def test_evaluator_stacked_state_reuses_relative_to_the_state_below(fresh_tiny_bridge):
    """EMBER on top of another state: measured against that state's result, only inputs with edited tokens are
    re-run, and the numbers equal a full measurement of the stack."""
    bridge = fresh_tiny_bridge
    concept, common = toy_concept_and_common(bridge)
    ev = E.Evaluator(bridge, concept, common, gen_max_new_tokens=5, open_max_new_tokens=3)
    below = MLPWeightNoise(layer=0, scale=0.3)
    below_res = ev.evaluate(below, name="base method")
    assert below_res.metrics["remeasured_fraction"] == 1.0
    ids = _token_ids(bridge, " Hogwarts", " Harry")
    stack = StackedState(below, noise_edit(bridge, ids))
    assert stack.touched_tokens is None and stack.touched_tokens_since(below) == frozenset(ids)
    fast = ev.evaluate(stack, name="stack, reused", reference=below_res)
    full = ev.evaluate(stack, name="stack, full", reuse=False)
    assert 0.0 < fast.metrics["remeasured_fraction"] < 1.0
    for k in ("acc_concept", "acc_similar", "acc_general", "acc_open"):
        assert fast.metrics[k] == full.metrics[k], k
    for k in ("perplexity", "fluency_logprob", "coherence"):
        assert fast.metrics[k] == pytest.approx(full.metrics[k], rel=1e-5, abs=1e-6), k
    # against the baseline the stack may differ anywhere, so it is measured in full
    assert ev.evaluate(stack, name="stack vs baseline").metrics["remeasured_fraction"] == 1.0


def test_evaluator_fast_mode_and_errors(tiny_bridge):
    concept, common = toy_concept_and_common(tiny_bridge)
    ev = E.Evaluator(tiny_bridge, concept, common, fast=True, limits={"mc": 2, "similar_mc": 2, "general_mc": 3})
    assert len(ev.questions["concept"]) == 2 and len(ev.questions["general"]) == 3
    assert ev.gen_max_new_tokens == FAST.eval_limits["gen_max_new_tokens"]
    with pytest.raises(ValueError, match="split"):
        E.Evaluator(tiny_bridge, concept, common, split="dev")
    with pytest.raises(TypeError, match="state"):
        ev.evaluate(state=42)
    with pytest.raises(ValueError, match=r"No items for evaluation part\(s\) \[.concept.\]"):
        E.Evaluator(tiny_bridge, dataclasses.replace(concept, mc=concept.mc.iloc[:0]), common)


# ============================================================================ real default model

EASY_HP = [
    ("Who is the author of the Harry Potter books?", ["J.K. Rowling", "Stephen King", "Roald Dahl", "C.S. Lewis"], 0),
    ("What is the name of Harry Potter's school?", ["Durmstrang", "Hogwarts", "Beauxbatons", "Eton"], 1),
    ("Who is Harry Potter's best friend?", ["Draco Malfoy", "Dudley Dursley", "Ron Weasley", "Cedric Diggory"], 2),
    ("What is Harry Potter?", ["A vampire", "A pirate", "A robot", "A wizard"], 3),
    ("Which dark wizard killed Harry Potter's parents?", ["Lord Voldemort", "Gandalf", "Sauron", "Merlin"], 0),
    ("Which sport do Harry Potter and his friends play on broomsticks?", ["Cricket", "Quidditch", "Polo", "Golf"], 1),
    ("Who is the headmaster of Hogwarts?", ["Gilderoy Lockhart", "Argus Filch", "Albus Dumbledore", "Peeves"], 2),
    ("What is the name of Harry Potter's female friend who is very clever?", ["Luna", "Ginny", "Cho", "Hermione"], 3),
]


@pytest.mark.real_model
def test_real_batched_matches_naive(real_bridge):
    from ember_utils.data import load_concept

    qs = load_concept("harry_potter").split("mc", "test").head(6)
    fast = E.score_mc(real_bridge, qs)
    naive = E.score_mc_naive(real_bridge, qs)
    np.testing.assert_allclose(fast[SCORE_COLS].values, naive[SCORE_COLS].values, atol=1e-4, rtol=0)
    assert (fast["predicted"] == naive["predicted"]).all()


@pytest.mark.real_model
def test_real_harry_potter_above_chance(real_bridge):
    easy = E.score_mc(real_bridge, toy_frame(EASY_HP, "easy"))
    assert easy["correct"].mean() >= 0.6, easy


@pytest.mark.real_model
def test_real_evaluator_fast_smoke(real_bridge):
    ev = E.Evaluator(real_bridge, "harry_potter", fast=True)
    base = ev.baseline.metrics
    assert base["acc_concept"] > 0.25 and base["perplexity"] < 200
    assert base["fluency_logprob"] < 0
    tok = real_bridge.tokenizer
    ids = sorted({i for w in [" Harry", " Potter", " Hogwarts", " Hermione", " wizard"] for i in
                  tok(w, add_special_tokens=False).input_ids})
    res = ev.evaluate(noise_edit(real_bridge, ids, scale=0.5), name="noise")
    assert 0.0 <= res.metrics["coherence"] <= 1.0
    assert res.metrics["efficacy"] >= 0.0


def test_evaluator_open_questions_follow_the_split(tiny_bridge):
    concept, common = toy_concept_and_common(tiny_bridge)
    mixed = dataclasses.replace(concept, open=concept.open.assign(split=["train", "test"]))
    assert list(E.Evaluator(tiny_bridge, mixed, common, split="test").open_questions["id"]) == ["o2"]
    train_only = dataclasses.replace(concept, open=concept.open.assign(split="train"))
    with pytest.raises(ValueError, match=r"No items for evaluation part\(s\) \[.open.\] in split .test."):
        E.Evaluator(tiny_bridge, train_only, common, split="test")
    assert len(E.Evaluator(tiny_bridge, train_only, common, split="test", measure_open=False).open_questions) == 0


@pytest.mark.real_model
def test_real_delta_200_harry_potter_edit_loses_seamlessness(real_bridge, tmp_path):
    """The runaway edit of the old δ rule: at δ = 200 the continuations of Harry Potter openings derail, and
    seamlessness (hence coherence) says so, while the unedited model scores 1."""
    from ember_utils.data import load_common, load_concept
    from ember_utils.methods.ember.pipeline import fit_concept_atoms
    from ember_utils.profiles import FAST

    concept, common = load_concept("harry_potter"), load_common()
    atoms = fit_concept_atoms(real_bridge, concept.sentences, common.neutral_texts("train"), "harry_potter", seed=0,
                              cache_dir=tmp_path, **FAST.factorization)
    edit = atoms.edit(atoms=atoms.atoms_to_edit()[0], tokenizer=real_bridge.tokenizer)
    ev = E.Evaluator(real_bridge, concept, common, split="test", parts=E.REQUIRED_PARTS + ("seamlessness",),
                     limits={"mc": 24, "similar_mc": 16, "general_mc": 24, "neutral": 48, "coherence_prompts": 6,
                             "prompts": 12}, gen_max_new_tokens=16, seamless_max_new_tokens=24, n_boot=300)
    assert ev.baseline.metrics["seamlessness"] == 1.0
    m = ev.evaluate(edit.with_delta(200.0), name="δ=200").metrics
    assert m["seamlessness"] < 0.7 and m["seamlessness_hi"] < 0.9, m["seamlessness"]
    assert m["coherence"] < 0.9
