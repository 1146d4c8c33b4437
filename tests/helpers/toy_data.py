"""Small hand-made question sets for tests on tiny models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ember_utils.data import CommonData, ConceptData
from ember_utils.eval import score_mc
from ember_utils.methods.ember.vocab import CONCEPT, NEUTRAL, SHARED, VocabSlice

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


#: a few concept and neutral sentences for the atom pipeline on a tiny model
TINY_CONCEPT_TEXTS = ["Harry Potter is a young wizard", "the wand chose the wizard", "Hogwarts castle owl letters",
                      "Ron and Hermione study magic at Hogwarts", "the owl carried letters to the castle"]
TINY_NEUTRAL_TEXTS = ["the cat sat on the warm mat", "people go to the market to buy bread, milk and apples",
                      "the capital of France is Paris", "the capital of Spain is Madrid", "fresh vegetables in the morning"]


def toy_frame(rows=TOY_QUESTIONS, prefix="q", split="test") -> pd.DataFrame:
    return pd.DataFrame([{"id": f"{prefix}{i}", "split": split, "question": q, "options": o, "answer": a}
                         for i, (q, o, a) in enumerate(rows)])



CONCEPT_TEXTS = ["Harry Potter is a young wizard", "the wand chose the wizard", "Hogwarts castle owl"]
NEUTRAL_TEXTS = ["the cat sat on the warm mat", "people go to the market to buy bread",
                 "the capital of France is Paris"]


def planted_codes(n_concept=20, n_neutral=60, n_shared=20, K=6, seed=0):
    """Codes where atom 0 is concept-specific, atom 1 is generic, the rest random."""
    rng = np.random.default_rng(seed)
    labels = np.array([CONCEPT] * n_concept + [NEUTRAL] * n_neutral + [SHARED] * n_shared)
    n = len(labels)
    G = np.zeros((n, K), np.float32)
    G[:n_concept, 0] = rng.uniform(1, 2, n_concept)                  # concept atom
    G[rng.choice(n, 25, replace=False), 1] = rng.uniform(1, 2, 25)   # generic atom
    for k in range(2, K):
        G[rng.choice(n, 10, replace=False), k] = rng.normal(size=10)
    vocab = VocabSlice(np.arange(n), labels, np.ones(n, int), np.ones(n, int), [f"t{i}" for i in range(n)])
    return G, vocab


def toy_concept_and_common(bridge) -> tuple[ConceptData, CommonData]:
    """A toy concept whose 'correct' answers are chosen so the unedited tiny model gets 3 of 4 right
    (and 2 of 4 on similar/general): the normalizations are then well defined."""
    def with_answers(rows, prefix, n_right):
        df = toy_frame(rows, prefix)
        pred = score_mc(bridge, df)["predicted"].to_numpy()
        df["answer"] = [int(p) if i < n_right else int((p + 1) % 4) for i, p in enumerate(pred)]
        return df

    mc = pd.concat([with_answers(TOY_QUESTIONS[:4], "c", 3),
                    toy_frame(TOY_QUESTIONS[4:], "ct", split="train")], ignore_index=True)
    sim = with_answers(TOY_QUESTIONS[3:7], "s", 2)
    gen = with_answers(TOY_QUESTIONS[:4], "g", 2)
    gen["subject"] = "misc"
    indirect = with_answers(TOY_QUESTIONS[2:6], "i", 3)
    other = with_answers(TOY_QUESTIONS[1:5], "x", 3).assign(kind="mc", word="potter")
    other_text = pd.DataFrame({"id": ["xs1", "xs2"], "kind": "sentence", "subtopic": "x", "word": "potter",
                               "split": "test", "text": ["The potter shaped a bowl on his wheel.",
                                                         "Sirius is the brightest star in the night sky."]})
    prompts = pd.DataFrame({"id": ["p1", "p2"], "subtopic": "x", "split": "test",
                            "prompt": ["When Harry Potter arrived at Hogwarts, he", "The wizard raised his wand and"]})
    concept = ConceptData(
        slug="toy", root=Path("."), meta={"name": "Toy", "slug": "toy", "similar_domain": "Other", "description": "d"},
        sentences=["Harry Potter is a wizard."], mc=mc, similar_mc=sim,
        open=pd.DataFrame({"id": ["o1", "o2"], "subtopic": ["x", "x"], "split": ["test", "test"],
                           "question": ["Who is a wizard?", "Capital of France?"],
                           "answers": [["Harry Potter"], ["Paris"]]}),
        relearn=pd.DataFrame({"id": ["r1"], "text": ["Some text."]}),
        indirect_mc=indirect, collateral_mc=other, collateral_sentences=other_text, prompts=prompts)
    common = CommonData(
        root=Path("."),
        neutral=pd.DataFrame({"id": ["n1", "n2", "n3"], "topic": ["a", "b", "c"], "split": ["test", "test", "train"],
                              "text": ["The cat sat on the mat.", "Water boils at one hundred degrees.", "Chop."]}),
        general_mc=gen,
        coherence_prompts=pd.DataFrame({"id": ["c1", "c2"], "split": ["test", "test"],
                                        "prompt": ["Describe your ideal weekend.", "Explain how to make a cup of tea."]}))
    return concept, common
