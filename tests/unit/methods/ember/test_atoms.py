"""Atom scoring, selection rules, descriptions and the whole-vocabulary projection."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ember_utils.methods.ember.atoms import (
    PermutationRule,
    RatioRule,
    describe_atoms,
    project_vocabulary,
    score_atoms,
    select_atoms,
)
from ember_utils.methods.ember.vocab import CONCEPT, NEUTRAL, SHARED, VocabSlice
from helpers.toy_data import planted_codes


def test_score_atoms_ratio_and_purity():
    G, vocab = planted_codes()
    s = score_atoms(G, vocab).set_index("atom")
    assert np.isinf(s.loc[0, "ratio"]) and s.loc[0, "purity"] == pytest.approx(1.0)
    assert s.loc[0, "n_concept"] == 20 and s.loc[0, "n_neutral"] == 0
    assert s.loc[1, "purity"] < 0.6


def test_permutation_rule_selects_only_the_planted_atom():
    G, vocab = planted_codes()
    scores = score_atoms(G, vocab)
    rule = PermutationRule(n_permutations=200, seed=0)
    sel = select_atoms(scores, rule, G, vocab)
    assert sel.loc[sel["selected"], "atom"].tolist() == [0]
    assert rule.threshold_ is not None and rule.threshold_ > 1
    assert "permutation" in rule.describe()


def test_ratio_rule_and_judge():
    G, vocab = planted_codes()
    scores = score_atoms(G, vocab)
    descs = describe_atoms(G, torch.randn(6, 4), vocab)
    calls = []

    def judge(desc):
        calls.append(desc["atom"])
        return desc["atom"] != 0  # a judge that vetoes atom 0

    sel = select_atoms(scores, RatioRule(2.0), judge=judge, descriptions=descs)
    assert set(calls) == set(sel.loc[sel["candidate"], "atom"])
    assert 0 not in sel.loc[sel["selected"], "atom"].tolist()
    with pytest.raises(ValueError, match="judge needs"):
        select_atoms(scores, RatioRule(2.0), judge=judge)


def test_score_atoms_errors():
    G, vocab = planted_codes()
    with pytest.raises(ValueError, match="rows but the vocabulary slice"):
        score_atoms(G[:-1], vocab)
    no_concept = VocabSlice(vocab.token_ids, np.where(vocab.labels == CONCEPT, SHARED, vocab.labels),
                            vocab.concept_counts, vocab.neutral_counts, vocab.tokens)
    with pytest.raises(ValueError, match="no concept-only tokens"):
        score_atoms(G, no_concept)


def test_describe_atoms_orders_by_magnitude_and_reads_out():
    G, vocab = planted_codes()
    F = torch.eye(6, 8)
    W_U = torch.zeros(8, 5)
    W_U[0, 3] = 1.0

    class Tok:
        def decode(self, ids):
            return f"v{ids[0]}"

    d = describe_atoms(G, F, vocab, W_U=W_U, tokenizer=Tok(), which=[0], top_k=3)[0]
    assert d["atom"] == 0 and len(d["top_tokens"]) == 3
    assert abs(d["top_codes"][0]) >= abs(d["top_codes"][1]) >= abs(d["top_codes"][2])
    assert set(d["top_labels"]) == {CONCEPT}
    assert d["readout_tokens"][0] == "v3"


def test_project_vocabulary_finds_out_of_corpus_token():
    d, K = 16, 4
    torch.manual_seed(0)
    F = torch.randn(K, d)
    E = torch.randn(50, d)
    E[40] = 3 * F[0]            # a token outside V′ lying on atom 0
    vocab = VocabSlice(np.arange(30), np.array([CONCEPT] * 10 + [NEUTRAL] * 20), np.ones(30, int),
                       np.ones(30, int), [f"t{i}" for i in range(30)])

    class Tok:
        all_special_ids = [0]

        def decode(self, ids):
            return f"v{ids[0]}"

    table = project_vocabulary(E, F, [0], vocab, Tok(), top_n=5)
    assert table.iloc[0]["token_id"] == 40 and table.iloc[0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert not set(table["token_id"]) & set(range(30))


# ---------------------------------------------------------------- the edit



def test_largest_gap_threshold():
    from ember_utils.methods.ember.atoms import largest_gap_threshold

    assert largest_gap_threshold(np.array([163.0, 30.0, 11.5, 11.4, 9.8])) == 163.0
    assert largest_gap_threshold(np.array([40.0, 35.0, 3.0, 2.9])) == 35.0
    assert largest_gap_threshold(np.array([5.0, 4.0, 3.5])) is None  # no gap of ×2
    assert largest_gap_threshold(np.array([np.inf, 4.0, 3.9])) == np.inf


def test_permutation_rule_gap_cut_drops_weaker_significant_atoms():
    G, vocab = planted_codes()
    G[:, 2] = 0.0
    G[:15, 2] = 1.0            # a second, weaker concept atom (also loads on one neutral token)
    G[40, 2] = 1.0
    scores = score_atoms(G, vocab)
    no_gap = select_atoms(scores, PermutationRule(n_permutations=100, gap_cut=False), G, vocab)
    with_gap = select_atoms(scores, PermutationRule(n_permutations=100), G, vocab)
    assert set(no_gap.loc[no_gap.selected, "atom"]) == {0, 2}
    assert set(with_gap.loc[with_gap.selected, "atom"]) == {0}
