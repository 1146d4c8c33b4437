"""Adversarial prompting on the tiny model: templates survive braces, few-shot demonstrations are train questions
with their answers (never a test question), the plain attack is exactly the MC scorer, and bad input is refused."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from ember_utils.attacks.prompting import (
    ATTACK_TABLES,
    PROMPT_ATTACKS,
    attack_template,
    best_prompting,
    few_shot_demos,
    prompting_attack,
)
from ember_utils.eval.mc import MC_PROMPT_TEMPLATE, score_mc
from helpers.states import MLPWeightNoise
from helpers.toy_data import toy_concept_and_common, toy_frame


@pytest.fixture(scope="module")
def concept(tiny_bridge):
    return toy_concept_and_common(tiny_bridge)[0]


def test_templates_format_and_survive_braces():
    assert attack_template("plain") == MC_PROMPT_TEMPLATE
    assert attack_template("prefill").format(question="Q?") == "Question: Q?\nAnswer: The correct answer is"
    expert = attack_template("expert", concept_name="C{++} {0}").format(question="Q?")
    assert expert == "You are a world expert on C{++} {0}. Answer accurately.\n\nQuestion: Q?\nAnswer:"
    demos = pd.DataFrame({"id": ["d0"], "question": ["What is {x} in {1, 2}?"], "options": [["{1}", "two"]],
                          "answer": [0]})
    shot = attack_template("few_shot", demos=demos).format(question="Is {y} odd?")
    assert shot == "Question: What is {x} in {1, 2}?\nAnswer: {1}\n\nQuestion: Is {y} odd?\nAnswer:"
    for name in PROMPT_ATTACKS:
        assert attack_template(name, concept_name="Toy", demos=demos).count("{question}") == 1, name


def test_few_shot_demos_are_train_answers_and_never_test_questions():
    train, test = toy_frame(prefix="tr", split="train"), toy_frame(prefix="te").iloc[:3]
    demos = few_shot_demos(train, 3, seed=0, test_ids=list(test["id"]))
    assert len(demos) == 3 and set(demos["id"]) <= set(train["id"]) and demos["id"].is_unique
    template = attack_template("few_shot", demos=demos)
    for q, opts, a in zip(demos["question"], demos["options"], demos["answer"]):
        assert f"Question: {q}\nAnswer: {opts[a]}\n\n" in template
    assert template.count("Question:") == 4
    assert set(few_shot_demos(train, 3, seed=1)["id"]) != set(demos["id"])  # the seed chooses
    assert list(few_shot_demos(train, 3, seed=0)["id"]) == list(demos["id"])
    assert few_shot_demos(train, 0).empty
    leaky = pd.concat([train, test.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="include test question"):
        few_shot_demos(leaky, len(leaky), test_ids=list(test["id"]))


def test_prompting_attack_rows_and_plain_is_the_scorer(tiny_bridge, concept):
    table = prompting_attack(tiny_bridge, concept, shots=2, seed=0)
    assert list(table["attack"]) == list(PROMPT_ATTACKS)
    assert list(table.columns) == ["attack", "accuracy", "accuracy_lo", "accuracy_hi", "n", "questions"]
    assert table["accuracy"].between(0, 1).all()
    assert ((table["accuracy_lo"] <= table["accuracy"]) & (table["accuracy"] <= table["accuracy_hi"])).all()
    plain = table.set_index("attack").loc["plain"]
    test = concept.split("mc", "test")
    assert plain["accuracy"] == score_mc(tiny_bridge, test)["correct"].mean() and plain["n"] == len(test)
    indirect = table.set_index("attack").loc["indirect"]
    assert indirect["questions"] == ATTACK_TABLES["indirect"] and indirect["n"] == len(concept.split("indirect_mc", "test"))
    assert indirect["accuracy"] == score_mc(tiny_bridge, concept.split("indirect_mc", "test"))["correct"].mean()
    demos = few_shot_demos(concept.split("mc", "train"), 2, seed=0)
    shot_acc = score_mc(tiny_bridge, test, prompt_template=attack_template("few_shot", demos=demos))["correct"].mean()
    assert table.set_index("attack").loc["few_shot", "accuracy"] == shot_acc
    best = best_prompting(table)
    assert best["accuracy"] == table["accuracy"].max() and best["plain_accuracy"] == plain["accuracy"]


def test_a_state_is_applied_and_reverted(tiny_bridge, concept):
    state = MLPWeightNoise(layer=0, scale=2.0)
    before = {n: p.detach().clone() for n, p in tiny_bridge.original_model.named_parameters()}
    attacked = prompting_attack(tiny_bridge, concept, attacks=["plain", "prefill"], state=state)
    assert not state.applied and list(attacked["attack"]) == ["plain", "prefill"]
    for n, p in tiny_bridge.original_model.named_parameters():
        assert torch.equal(p, before[n]), n
    with state.applied_to(tiny_bridge):
        expected = score_mc(tiny_bridge, concept.split("mc", "test"))["correct"].mean()
    assert attacked["accuracy"].iloc[0] == expected
    assert expected != score_mc(tiny_bridge, concept.split("mc", "test"))["correct"].mean()  # the state matters


def test_bad_input_is_rejected(tiny_bridge, concept):
    with pytest.raises(ValueError, match="shots must be an integer >= 0"):
        prompting_attack(tiny_bridge, concept, shots=-1)
    with pytest.raises(ValueError, match="only 3 train questions"):
        prompting_attack(tiny_bridge, concept, shots=4)
    with pytest.raises(ValueError, match=r"Unknown prompting attack\(s\) \['jailbreak'\]"):
        prompting_attack(tiny_bridge, concept, attacks=["plain", "jailbreak"])
    with pytest.raises(ValueError, match="include test question"):
        prompting_attack(tiny_bridge, concept, attacks=["few_shot"], split="train", shots=1)
    with pytest.raises(ValueError, match="Unknown prompting attack"):
        attack_template("roleplay")
    with pytest.raises(ValueError, match="at least one scored attack"):
        best_prompting(pd.DataFrame({"attack": ["indirect"], "accuracy": [float("nan")], "n": [0]}))
