"""Small hand-made question sets for tests on tiny models."""
from __future__ import annotations

import numpy as np
import pandas as pd

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
