"""Tests for ember_utils.evaluate: packed scorer vs naive reference, generation, answer matching, metric
formulas, and the Evaluator with unedited / embedding-edited / LoRA states (tiny model; a few tests on
the real default model are marked ``real_model``)."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ember_utils import evaluate as E
from ember_utils.data import CommonData, ConceptData

SCORE_COLS = [f"score_{k}" for k in range(4)]

TOY_QUESTIONS = [
    ("Who is the headmaster of Hogwarts, the school of witchcraft and wizardry where Harry studies?",
     ["Albus Dumbledore", "Severus Snape", "Minerva McGonagall", "Rubeus Hagrid"], 0),
    ("What is the capital of France?", ["Rome", "Paris", "Berlin", "Madrid"], 1),
    ("Which animal sat on the mat?", ["The dog", "A fox", "The cat", "A bird"], 2),
    ("When did the war end?", ["1945", "1918", "1939", "2001"], 0),
    ("Water boils at?", ["one hundred degrees Celsius at sea level", "zero", "fifty degrees", "ninety nine"], 0),
    ("Baseball teams have how many players?", ["nine", "eleven", "five", "seven players on each side"], 0),
    ("What did the Romans build?", ["roads", "aqueducts", "the Colosseum", "all of these"], 3),
]


def _toy_frame(rows=TOY_QUESTIONS, prefix="q", split="test") -> pd.DataFrame:
    return pd.DataFrame([{"id": f"{prefix}{i}", "split": split, "question": q, "options": o, "answer": a}
                         for i, (q, o, a) in enumerate(rows)])


# ============================================================================ packed scorer


def test_score_mc_matches_naive_with_packing_padding_and_sliding_window(tiny_bridge):
    qs = _toy_frame()
    naive = E.score_mc_naive(tiny_bridge, qs)
    # default packing (all questions in one row) and tiny rows/batches (many rows, padding, several batches)
    for kw in ({}, {"max_row_tokens": 30, "batch_tokens": 70}, {"max_row_tokens": 1, "batch_tokens": 1}):
        fast = E.score_mc(tiny_bridge, qs, **kw)
        np.testing.assert_allclose(fast[SCORE_COLS].values, naive[SCORE_COLS].values, atol=1e-4, rtol=0)
        assert (fast["predicted"] == naive["predicted"]).all()
    # the first question (with <bos>) is longer than the sliding window, so the window is exercised
    ids = tiny_bridge.tokenizer(E.MC_PROMPT_TEMPLATE.format(question=qs["question"][0])).input_ids
    assert len(ids) > tiny_bridge.original_model.config.sliding_window


@pytest.mark.parametrize("normalization", ["sum", "chars"])
def test_score_mc_normalizations_match_naive(tiny_bridge, normalization):
    qs = _toy_frame()
    fast = E.score_mc(tiny_bridge, qs, normalization=normalization)
    naive = E.score_mc_naive(tiny_bridge, qs, normalization=normalization)
    np.testing.assert_allclose(fast[SCORE_COLS].values, naive[SCORE_COLS].values, atol=1e-4, rtol=0)


def test_score_mc_output_frame(tiny_bridge):
    qs = _toy_frame()
    out = E.score_mc(tiny_bridge, qs.to_dict("records"))  # records work too
    assert list(out.columns) == ["id", "split", "predicted", "answer", "correct", *SCORE_COLS]
    assert (out["predicted"] == out[SCORE_COLS].values.argmax(1)).all()
    assert (out["correct"] == (out["predicted"] == out["answer"])).all()
    assert E.mc_accuracy(out) == pytest.approx(out["correct"].mean())
    assert math.isnan(E.mc_accuracy(out.iloc[:0]))


def test_score_mc_with_hf_model_and_custom_template(tiny_bridge):
    qs = _toy_frame()
    hf, tok = tiny_bridge.original_model, tiny_bridge.tokenizer
    kw = dict(prompt_template="Q: {question}\nA:", option_template=" {option}.")
    a = E.score_mc(hf, qs, tokenizer=tok, **kw)
    b = E.score_mc_naive(tiny_bridge, qs, **kw)
    np.testing.assert_allclose(a[SCORE_COLS].values, b[SCORE_COLS].values, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="tokenizer"):
        E.score_mc(hf, qs)


def test_score_mc_input_errors(tiny_bridge):
    with pytest.raises(ValueError, match="empty"):
        E.score_mc(tiny_bridge, _toy_frame().iloc[:0])
    with pytest.raises(ValueError, match="missing"):
        E.score_mc(tiny_bridge, pd.DataFrame({"question": ["q"]}))
    with pytest.raises(ValueError, match="normalization"):
        E.score_mc(tiny_bridge, _toy_frame(), normalization="bytes")
    with pytest.raises(TypeError):
        E.score_mc(None, _toy_frame())


def test_branch_logprobs_equal_full_forward(tiny_bridge):
    tok = tiny_bridge.tokenizer
    hf = tiny_bridge.original_model
    rng = np.random.default_rng(0)
    items = []
    for n_prefix, lens in [(1, [1]), (3, [1, 2, 5]), (12, [4, 1]), (20, [9]), (2, [3, 3, 3, 3])]:
        prefix = [tok.bos_token_id] + rng.integers(4, len(tok), n_prefix - 1).tolist()
        items.append((prefix, [rng.integers(4, len(tok), n).tolist() for n in lens]))
    out = E.branch_logprobs(tiny_bridge, items, max_row_tokens=16, batch_tokens=40, head_chunk=3)
    with torch.no_grad():
        for (prefix, branches), got in zip(items, out):
            for br, lp in zip(branches, got):
                ids = torch.tensor([prefix + br])
                ref = torch.log_softmax(hf(input_ids=ids).logits[0].float(), -1)[len(prefix) - 1:-1]
                ref = ref[torch.arange(len(br)), torch.tensor(br)].numpy()
                np.testing.assert_allclose(lp, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="empty prefix"):
        E.branch_logprobs(tiny_bridge, [([], [[5]])])
    with pytest.raises(ValueError, match="non-empty branch"):
        E.branch_logprobs(tiny_bridge, [([2], [[]])])


def test_perplexity_matches_naive(tiny_bridge):
    texts = ["The cat sat on the mat.", "Harry Potter is a wizard.", "Water boils at one hundred degrees."]
    tok, hf = tiny_bridge.tokenizer, tiny_bridge.original_model
    total, n = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok(t).input_ids])
            lp = torch.log_softmax(hf(input_ids=ids).logits[0].float(), -1)[:-1]
            total += lp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item()
            n += ids.shape[1] - 1
    assert E.perplexity(tiny_bridge, texts, max_row_tokens=12) == pytest.approx(math.exp(-total / n), rel=1e-5)
    df = E.text_logprobs(tiny_bridge, texts)
    assert df["n_tokens"].sum() == n
    with pytest.raises(ValueError):
        E.perplexity(tiny_bridge, [])
    with pytest.raises(ValueError, match="Empty"):
        E.perplexity(tiny_bridge, ["  "])


def test_generate_greedy_batched_equals_single(tiny_bridge):
    prompts = ["The cat", "Harry Potter is a wizard who studies at", "Describe your ideal weekend.\n"]
    p_ids, batched = E.generate_greedy(tiny_bridge, prompts, max_new_tokens=6, batch_size=3)
    for p, g, pid in zip(prompts, batched, p_ids):
        _, single = E.generate_greedy(tiny_bridge, [p], max_new_tokens=6)
        assert single[0] == g
        assert pid[0] == tiny_bridge.tokenizer.bos_token_id
        assert 1 <= len(g) <= 6
    # manual greedy decoding agrees
    hf = tiny_bridge.original_model
    ids = list(p_ids[1])
    with torch.no_grad():
        for _ in range(len(batched[1])):
            ids.append(int(hf(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert ids[len(p_ids[1]):] == batched[1]
    with pytest.raises(ValueError):
        E.generate_greedy(tiny_bridge, prompts, max_new_tokens=0)
    # n-gram blocking: no bigram of prompt + continuation repeats
    p_ids, blocked = E.generate_greedy(tiny_bridge, prompts[:2], max_new_tokens=12, no_repeat_ngram_size=2)
    for pid, g in zip(p_ids, blocked):
        seq = pid + g
        grams = [tuple(seq[i:i + 2]) for i in range(len(seq) - 1)]
        assert len(grams) == len(set(grams))


def test_continuation_logprobs_consistent_with_text_logprobs(tiny_bridge):
    tok = tiny_bridge.tokenizer
    ids = tok("The quick brown fox jumps over the lazy dog.").input_ids
    lp = E.continuation_logprobs(tiny_bridge, [ids[:4]], [ids[4:]])[0]
    full = E.text_logprobs(tiny_bridge, ["The quick brown fox jumps over the lazy dog."])
    first = E.continuation_logprobs(tiny_bridge, [ids[:1]], [ids[1:4]])[0]
    assert lp.sum() + first.sum() == pytest.approx(full["logprob"][0], abs=1e-4)
    with pytest.raises(ValueError):
        E.continuation_logprobs(tiny_bridge, [ids], [])


# ============================================================================ open answers


@pytest.mark.parametrize("text,expected", [
    ("The Burrow", "burrow"),
    ("  J.K. Rowling!! ", "j k rowling"),
    ("Hermione   Granger.", "hermione granger"),
    ("Élan vital", "elan vital"),
    ("an apple a day", "apple day"),
])
def test_normalize_answer(text, expected):
    assert E.normalize_answer(text) == expected


@pytest.mark.parametrize("gen,span", [
    (" Hermione Granger\nQuestion: who else?", "Hermione Granger"),
    ("\n\n Ron. Then Harry said", "Ron."),
    (" Mr. Weasley works there. Yes", "Mr. Weasley works there."),  # 'Mr.' (< 3 letters) does not end it
    (" Hogwarts. It is a school.", "Hogwarts."),
    (" J.K. Rowling wrote it. Later", "J.K. Rowling wrote it."),
    ("", ""),
])
def test_answer_span(gen, span):
    assert E.answer_span(gen) == span


@pytest.mark.parametrize("gen,answers,ok", [
    (" Hermione Granger\nQuestion: Who is Ron?", ["Hermione"], True),
    (" hermione granger.", ["Hermione Granger"], True),
    (" The Burrow", ["the Burrow"], True),
    (" J. K. Rowling", ["J.K. Rowling"], True),
    (" Ronald", ["Ron"], False),                          # whole words only
    (" Harry\nQuestion: Hermione", ["Hermione"], False),  # only the first line counts
    (" The author. Hermione is", ["Hermione"], False),    # only the first sentence counts
    (" 1945", ["1945"], True),
    ("", ["x"], False),
])
def test_answer_matches(gen, answers, ok):
    assert E.answer_matches(gen, answers) is ok


def test_score_open_frame(tiny_bridge):
    df = pd.DataFrame({"id": ["o1", "o2"], "question": ["Who?", "Where?"], "answers": [["Harry"], ["Rome"]]})
    out = E.score_open(tiny_bridge, df, max_new_tokens=4)
    assert list(out.columns) == ["id", "generation", "answer_span", "correct", "token_ids"]
    assert out["correct"].dtype == bool
    with pytest.raises(ValueError, match="answers"):
        E.score_open(tiny_bridge, df.drop(columns="answers"))


# ============================================================================ metric formulas


def test_normalized_accuracy():
    assert E.normalized_accuracy(0.25, 0.75) == 0.0
    assert E.normalized_accuracy(0.5, 0.75) == pytest.approx(0.5)
    assert E.normalized_accuracy(0.75, 0.75) == 1.0
    assert E.normalized_accuracy(0.9, 0.75) == 1.0   # clipped above
    assert E.normalized_accuracy(0.1, 0.75) == 0.0   # clipped below
    assert E.normalized_accuracy(0.4, 0.6, chance=0.5) == 0.0
    with pytest.warns(UserWarning, match="not above chance"):
        assert math.isnan(E.normalized_accuracy(0.3, 0.25))
    assert math.isnan(E.normalized_accuracy(float("nan"), 0.5))
    with pytest.raises(ValueError):
        E.normalized_accuracy(1.5, 0.5)


def test_harmonic_mean():
    assert E.harmonic_mean(1.0, 1.0, 1.0) == 1.0
    assert E.harmonic_mean(0.5, 1.0) == pytest.approx(2 / 3)
    assert E.harmonic_mean(0.2, 0.5, 1.0) == pytest.approx(3 / (5 + 2 + 1))
    assert E.harmonic_mean(0.0, 1.0) == 0.0
    assert math.isnan(E.harmonic_mean(float("nan"), 1.0))
    with pytest.raises(ValueError):
        E.harmonic_mean()
    with pytest.raises(ValueError):
        E.harmonic_mean(-0.1, 1.0)


def test_coherence_terms():
    c = E.coherence_terms(ppl=20.0, ppl_base=10.0, fluency=-3.0, fluency_base=-2.0)
    assert c["ppl_term"] == pytest.approx(0.5)
    assert c["fluency_term"] == pytest.approx(math.exp(-1.0))
    assert c["coherence"] == pytest.approx(2 / (2 + math.exp(1.0)))
    better = E.coherence_terms(ppl=5.0, ppl_base=10.0, fluency=-1.0, fluency_base=-2.0)
    assert better == {"ppl_term": 1.0, "fluency_term": 1.0, "coherence": 1.0}  # capped at 1
    with pytest.raises(ValueError):
        E.coherence_terms(0.0, 10.0, -1.0, -1.0)


def test_compute_metrics_hand_numbers():
    base = {"concept": 0.75, "similar": 0.65, "general": 0.45, "perplexity": 10.0, "fluency": -2.0}
    edited = {"concept": 0.35, "similar": 0.55, "general": 0.45, "perplexity": 12.5, "fluency": -2.0}
    m = E.compute_metrics(edited, base)
    assert m["norm_concept"] == pytest.approx(0.2)
    assert m["efficacy"] == pytest.approx(0.8)
    assert m["norm_similar"] == pytest.approx(0.75)
    assert m["norm_general"] == pytest.approx(1.0)
    assert m["specificity"] == pytest.approx(2 / (1 / 0.75 + 1))
    assert m["ppl_term"] == pytest.approx(0.8) and m["fluency_term"] == 1.0
    assert m["coherence"] == pytest.approx(2 / (1 / 0.8 + 1))
    assert m["score"] == pytest.approx(3 / (1 / 0.8 + 1 / m["specificity"] + 1 / m["coherence"]))
    same = E.compute_metrics(base, base)
    assert (same["efficacy"], same["specificity"], same["coherence"], same["score"]) == (0.0, 1.0, 1.0, 0.0)


def test_selection_score():
    assert E.selection_score(0.8, 0.95, 0.95) == pytest.approx(E.harmonic_mean(0.8, 0.95, 0.95))
    assert E.selection_score(0.8, 0.89, 1.0) == 0.0
    assert E.selection_score(0.8, 1.0, 0.85) == 0.0
    assert math.isnan(E.selection_score(float("nan"), 1.0, 1.0))


# ============================================================================ Evaluator


def _toy_data(bridge) -> tuple[ConceptData, CommonData]:
    """A toy concept whose 'correct' answers are chosen so the unedited tiny model gets 3 of 4 right
    (and 2 of 4 on similar/general): the normalizations are then well defined."""
    def with_answers(rows, prefix, n_right):
        df = _toy_frame(rows, prefix)
        pred = E.score_mc(bridge, df)["predicted"].to_numpy()
        df["answer"] = [int(p) if i < n_right else int((p + 1) % 4) for i, p in enumerate(pred)]
        return df

    mc = pd.concat([with_answers(TOY_QUESTIONS[:4], "c", 3),
                    _toy_frame(TOY_QUESTIONS[4:], "ct", split="train")], ignore_index=True)
    sim = with_answers(TOY_QUESTIONS[3:7], "s", 2)
    gen = with_answers(TOY_QUESTIONS[:4], "g", 2)
    gen["subject"] = "misc"
    concept = ConceptData(
        slug="toy", root=Path("."), meta={"name": "Toy", "slug": "toy", "similar_domain": "Other", "description": "d"},
        sentences=["Harry Potter is a wizard."], mc=mc, similar_mc=sim,
        open=pd.DataFrame({"id": ["o1", "o2"], "question": ["Who is a wizard?", "Capital of France?"],
                           "answers": [["Harry Potter"], ["Paris"]]}),
        relearn=pd.DataFrame({"id": ["r1"], "text": ["Some text."]}))
    common = CommonData(
        root=Path("."),
        neutral=pd.DataFrame({"id": ["n1", "n2", "n3"], "topic": ["a", "b", "c"], "split": ["test", "test", "train"],
                              "text": ["The cat sat on the mat.", "Water boils at one hundred degrees.", "Chop."]}),
        general_mc=gen,
        coherence_prompts=pd.DataFrame({"id": ["c1", "c2"], "split": ["test", "test"],
                                        "prompt": ["Describe your ideal weekend.", "Explain how to make a cup of tea."]}))
    return concept, common


@contextlib.contextmanager
def _embedding_noise(bridge, token_ids, scale=3.0, log=None):
    """A toy 'embedding edit': perturb some W_E rows inside the context, restore them bit-exactly after."""
    W = bridge.W_E
    saved = W.data[token_ids].clone()
    gen = torch.Generator().manual_seed(0)
    W.data[token_ids] += scale * torch.randn(saved.shape, generator=gen)
    if log is not None:
        log.append("enter")
    try:
        yield
    finally:
        W.data[token_ids] = saved
        if log is not None:
            log.append("exit")


def test_evaluator_unedited_and_embedding_edit(fresh_tiny_bridge):
    bridge = fresh_tiny_bridge
    concept, common = _toy_data(bridge)
    ev = E.Evaluator(bridge, concept, common, split="test", gen_max_new_tokens=5, open_max_new_tokens=4)
    base = ev.baseline.metrics
    assert base["acc_concept"] == 0.75 and base["acc_similar"] == 0.5 and base["acc_general"] == 0.5
    assert (base["efficacy"], base["specificity"], base["coherence"], base["score"]) == (0.0, 1.0, 1.0, 0.0)
    assert ev.baseline is ev.baseline  # cached

    # the model as it is (no state) reproduces the baseline
    same = ev.evaluate(name="noop").metrics
    for k in ("acc_concept", "acc_similar", "acc_general", "perplexity", "fluency_logprob"):
        assert same[k] == pytest.approx(base[k], abs=1e-6)

    # an embedding edit: the evaluator enters it for measuring, exits it before scoring the generations
    log = []
    W_before = bridge.W_E.detach().clone()
    W_U_before = bridge.original_model.lm_head.weight.detach().clone() if hasattr(
        bridge.original_model.lm_head, "weight") else None
    n_vocab = len(bridge.tokenizer)
    res = ev.evaluate(_embedding_noise(bridge, list(range(4, n_vocab)), log=log), name="noisy")
    assert log == ["enter", "exit"]
    assert torch.equal(bridge.W_E, W_before)
    if W_U_before is not None:
        assert torch.equal(bridge.original_model.lm_head.weight, W_U_before)
    m = res.metrics
    assert m["perplexity"] != pytest.approx(base["perplexity"])
    for k in ("efficacy", "specificity", "coherence", "score", "ppl_term", "fluency_term"):
        assert 0.0 <= m[k] <= 1.0 or math.isnan(m[k])
    assert set(res.mc["set"]) == {"concept", "similar", "general"}
    assert list(res.generations.columns) == ["id", "prompt", "generation", "n_tokens", "token_ids", "base_logprob"]

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
    concept, common = _toy_data(bridge)
    ev = E.Evaluator(bridge, concept, common, gen_max_new_tokens=5, open_max_new_tokens=3)
    res = ev.evaluate(_embedding_noise(bridge, list(range(4, len(bridge.tokenizer)))), name="noisy")
    p_ids = [E._encode_prompt(bridge.tokenizer, E.COHERENCE_PROMPT_TEMPLATE.format(prompt=p))
             for p in common.coherence_prompts["prompt"]]
    g_ids = list(res.generations["token_ids"])
    # re-scoring the generations with the (restored) unedited model gives the stored numbers
    lps = E.continuation_logprobs(bridge, p_ids, g_ids)
    np.testing.assert_allclose([lp.mean() for lp in lps], res.generations["base_logprob"], atol=1e-4)


def test_evaluator_with_lora_state():
    from tiny_models import boot_tiny_bridge, build_tiny_model
    from peft import LoraConfig, get_peft_model

    model, tok = build_tiny_model()
    ref_bridge = boot_tiny_bridge(*build_tiny_model())  # same seed: the unedited model
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"],
                                                  init_lora_weights=False, lora_dropout=0.5))
    bridge = boot_tiny_bridge(peft_model.base_model.model, tok)
    bridge.train()  # dropout must be switched off by the evaluator
    concept, common = _toy_data(ref_bridge)
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


@pytest.mark.parametrize("which", ["names", "first_generation"])
def test_evaluator_reuse_of_unaffected_inputs_equals_full_measurement(fresh_tiny_bridge, which):
    """edited_tokens=: only inputs with an edited token are re-run, and every number equals a full measurement."""
    bridge = fresh_tiny_bridge
    concept, common = _toy_data(bridge)
    ev = E.Evaluator(bridge, concept, common, split="test", gen_max_new_tokens=6, open_max_new_tokens=4)
    if which == "names":
        ids = _token_ids(bridge, " Hogwarts", " Harry", " Dumbledore")
    else:  # tokens that the unedited model generates for the first coherence prompt (but not in its prompt)
        prompt_ids = set(E._encode_prompt(bridge.tokenizer, E.COHERENCE_PROMPT_TEMPLATE.format(
            prompt=common.coherence_prompts["prompt"].iloc[0])))
        gen = ev.baseline.generations["token_ids"].iloc[0]
        ids = sorted(set(gen[:-1]) - prompt_ids - {bridge.tokenizer.eos_token_id})
        assert ids, "the first generation should contain some new token"
    full = ev.evaluate(_embedding_noise(bridge, ids, scale=3.0), name="full")
    fast = ev.evaluate(_embedding_noise(bridge, ids, scale=3.0), name="reuse", edited_tokens=torch.tensor(ids))
    assert 0.0 < fast.metrics["remeasured_fraction"] < 1.0 and full.metrics["remeasured_fraction"] == 1.0
    for k in ("acc_concept", "acc_similar", "acc_general", "acc_open"):
        assert fast.metrics[k] == full.metrics[k], k
    for k in ("perplexity", "fluency_logprob", "efficacy", "specificity", "coherence", "score"):
        assert fast.metrics[k] == pytest.approx(full.metrics[k], rel=1e-5, abs=1e-6), k
    pd.testing.assert_frame_equal(fast.mc.drop(columns=SCORE_COLS), full.mc.drop(columns=SCORE_COLS))
    np.testing.assert_allclose(fast.mc[SCORE_COLS].to_numpy(float), full.mc[SCORE_COLS].to_numpy(float), atol=1e-5)
    assert list(fast.generations["token_ids"]) == list(full.generations["token_ids"])
    assert list(fast.open["generation"]) == list(full.open["generation"])
    if which == "first_generation":  # the affected generation was re-run, and it changed under the edit
        assert fast.measurements.remeasured["generations"] >= 1


def test_evaluator_reuse_spot_check_catches_a_broken_promise(fresh_tiny_bridge):
    bridge = fresh_tiny_bridge
    concept, common = _toy_data(bridge)
    ev = E.Evaluator(bridge, concept, common, gen_max_new_tokens=4, open_max_new_tokens=3)
    declared = _token_ids(bridge, " Hogwarts")
    really_changed = [i for i in range(4, len(bridge.tokenizer)) if i not in declared]
    with pytest.raises(ValueError, match="promised"):
        ev.evaluate(_embedding_noise(bridge, really_changed), edited_tokens=declared)
    W = bridge.W_E.detach().clone()
    with pytest.raises(ValueError, match="reference= only applies"):
        ev.evaluate(reference=ev.baseline)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ev.evaluate(edited_tokens=[len(bridge.tokenizer) + 5])
    with pytest.raises(TypeError, match="integer token ids"):
        ev.evaluate(edited_tokens=["Hogwarts"])
    other = E.Evaluator(bridge, concept, common, gen_max_new_tokens=4, open_max_new_tokens=3)
    with pytest.raises(ValueError, match="this evaluator's baseline"):
        ev.evaluate(edited_tokens=declared, reference=other.baseline)
    assert torch.equal(bridge.W_E, W)  # state restored after the failure


def test_evaluator_reuse_refuses_tied_embeddings():
    from tiny_models import tiny_bridge_and_hf

    bridge, _, _ = tiny_bridge_and_hf(untie=False)
    concept, common = _toy_data(bridge)
    ev = E.Evaluator(bridge, concept, common, gen_max_new_tokens=3, open_max_new_tokens=3)
    with pytest.raises(ValueError, match="ties its input and output embeddings"):
        ev.evaluate(edited_tokens=[5])


def test_evaluator_fast_mode_and_errors(tiny_bridge):
    concept, common = _toy_data(tiny_bridge)
    ev = E.Evaluator(tiny_bridge, concept, common, fast=True, limits={"mc": 2, "similar_mc": 2, "general_mc": 3})
    assert len(ev.questions["concept"]) == 2 and len(ev.questions["general"]) == 3
    assert ev.gen_max_new_tokens == E.FAST_LIMITS["gen_max_new_tokens"]
    with pytest.raises(ValueError, match="split"):
        E.Evaluator(tiny_bridge, concept, common, split="dev")
    with pytest.raises(TypeError, match="state"):
        ev.evaluate(state=42)
    with pytest.raises(ValueError, match="No concept MC questions"):
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
    easy = E.score_mc(real_bridge, _toy_frame(EASY_HP, "easy"))
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
    res = ev.evaluate(_embedding_noise(real_bridge, ids, scale=0.5), name="noise")
    assert 0.0 <= res.metrics["coherence"] <= 1.0
    assert res.metrics["efficacy"] >= 0.0


# ============================================================================ baselines command


def _write_toy_data_root(root: Path) -> Path:
    import json

    def dump(path: Path, records) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    def mc(prefix, rows, split, extra=None):
        return [{"id": f"{prefix}-{split}-{i}", "split": split, "question": q, "options": o, "answer": a, **(extra or {})}
                for i, (q, o, a) in enumerate(rows)]

    folder = root / "toy"
    (folder).mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"name": "Toy", "slug": "toy", "similar_domain": "Other",
                                                  "description": "A toy concept."}))
    (folder / "DATACARD.md").write_text("toy\n")
    dump(folder / "sentences.jsonl", [{"id": "t-s-1", "text": "Harry Potter is a wizard."}])
    dump(folder / "mc.jsonl", mc("t-mc", TOY_QUESTIONS[:4], "train") + mc("t-mc", TOY_QUESTIONS[4:], "test"))
    dump(folder / "similar_mc.jsonl", mc("t-sim", TOY_QUESTIONS[:2], "train") + mc("t-sim", TOY_QUESTIONS[2:4], "test"))
    dump(folder / "open.jsonl", [{"id": "t-open-1", "question": "Who is a wizard?", "answers": ["Harry Potter"]}])
    dump(folder / "relearn.jsonl", [{"id": "t-rl-1", "text": "Some text."}])
    dump(root / "common" / "neutral.jsonl", [{"id": "n-1", "topic": "a", "split": "test", "text": "The cat sat."},
                                             {"id": "n-2", "topic": "a", "split": "train", "text": "A dog ran."}])
    dump(root / "common" / "general_mc.jsonl", mc("g", TOY_QUESTIONS[:3], "train", {"subject": "x"})
         + mc("g", TOY_QUESTIONS[3:6], "test", {"subject": "x"}))
    dump(root / "common" / "coherence_prompts.jsonl", [{"id": "c-1", "split": "test", "prompt": "Describe a cat."}])
    return root


def test_baselines_measure_and_write(tiny_bridge, tmp_path):
    import json

    from ember_utils import baselines as B

    root = _write_toy_data_root(tmp_path / "data")
    assert B.incomplete_concepts(root) == {}
    table, shared = B.measure_baselines(tiny_bridge, root=root, open_max_new_tokens=3)
    assert list(table["concept"]) == ["toy"]
    ref = E.score_mc(tiny_bridge, pd.DataFrame([{"question": q, "options": o, "answer": a}
                                                 for q, o, a in TOY_QUESTIONS[4:]]))
    assert table["acc_mc_test"][0] == pytest.approx(ref["correct"].mean())
    assert table["usable"][0] == (table["acc_mc_test"][0] >= 0.40)
    assert shared["n_neutral_test"] == 1 and shared["neutral_test_perplexity"] > 1
    csv_path, json_path = B.write_baselines(table, shared, tmp_path / "out", model="tiny", command="pytest")
    assert pd.read_csv(csv_path)["concept"].tolist() == ["toy"]
    rec = json.loads(json_path.read_text())
    assert rec["model"] == "tiny" and rec["command"] == "pytest" and rec["concepts"][0]["concept"] == "toy"
    (root / "toy" / "DATACARD.md").unlink()
    assert B.incomplete_concepts(root) == {"toy": ["DATACARD.md"]}
