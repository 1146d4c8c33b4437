"""Vocabulary slice, atom scoring/selection/description, the reversible edit and δ selection."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ember_utils.atoms import PermutationRule, RatioRule, describe_atoms, project_vocabulary, score_atoms, select_atoms
from ember_utils.edit import EditStateError, EmbeddingEdit, build_edit, select_delta
from ember_utils.vocab import CONCEPT, NEUTRAL, SHARED, VocabSlice, build_vocab_slice
from tiny_models import tiny_bridge_and_hf, word_tokenizer

CONCEPT_TEXTS = ["Harry Potter is a young wizard", "the wand chose the wizard", "Hogwarts castle owl"]
NEUTRAL_TEXTS = ["the cat sat on the warm mat", "people go to the market to buy bread",
                 "the capital of France is Paris"]


# ---------------------------------------------------------------- vocabulary slice

def test_vocab_slice_labels():
    tok = word_tokenizer()
    v = build_vocab_slice(tok, CONCEPT_TEXTS, NEUTRAL_TEXTS)
    lab = dict(zip(v.tokens, v.labels))
    assert lab["wizard"] == CONCEPT and lab["cat"] == NEUTRAL and lab["the"] == SHARED
    assert tok.bos_token_id not in v.token_ids.tolist()
    assert list(v.token_ids) == sorted(v.token_ids)
    assert v.summary().sum() == len(v)


def test_vocab_slice_rejects_empty_corpus():
    with pytest.raises(ValueError, match="concept corpus is empty"):
        build_vocab_slice(word_tokenizer(), [], NEUTRAL_TEXTS)
    with pytest.raises(TypeError, match=r"neutral corpus\[1\]"):
        build_vocab_slice(word_tokenizer(), CONCEPT_TEXTS, ["ok", 3])


# ---------------------------------------------------------------- atom scoring

def _planted(n_concept=20, n_neutral=60, n_shared=20, K=6, seed=0):
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


def test_score_atoms_ratio_and_purity():
    G, vocab = _planted()
    s = score_atoms(G, vocab).set_index("atom")
    assert np.isinf(s.loc[0, "ratio"]) and s.loc[0, "purity"] == pytest.approx(1.0)
    assert s.loc[0, "n_concept"] == 20 and s.loc[0, "n_neutral"] == 0
    assert s.loc[1, "purity"] < 0.6


def test_permutation_rule_selects_only_the_planted_atom():
    G, vocab = _planted()
    scores = score_atoms(G, vocab)
    rule = PermutationRule(n_permutations=200, seed=0)
    sel = select_atoms(scores, rule, G, vocab)
    assert sel.loc[sel["selected"], "atom"].tolist() == [0]
    assert rule.threshold_ is not None and rule.threshold_ > 1
    assert "permutation" in rule.describe()


def test_ratio_rule_and_judge():
    G, vocab = _planted()
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
    G, vocab = _planted()
    with pytest.raises(ValueError, match="rows but the vocabulary slice"):
        score_atoms(G[:-1], vocab)
    no_concept = VocabSlice(vocab.token_ids, np.where(vocab.labels == CONCEPT, SHARED, vocab.labels),
                            vocab.concept_counts, vocab.neutral_counts, vocab.tokens)
    with pytest.raises(ValueError, match="no concept-only tokens"):
        score_atoms(G, no_concept)


def test_describe_atoms_orders_by_magnitude_and_reads_out():
    G, vocab = _planted()
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

def _edit_for(bridge, ids=(5, 7, 9), seed=0):
    g = torch.Generator().manual_seed(seed)
    return EmbeddingEdit(torch.tensor(ids), torch.randn(len(ids), bridge.cfg.d_model, generator=g), delta=2.0)


def test_edit_apply_revert_is_bit_exact_and_touches_only_its_rows():
    bridge, hf, _ = tiny_bridge_and_hf()
    W_E0, W_U0 = bridge.W_E.detach().clone(), bridge.W_U.detach().clone()
    edit = _edit_for(bridge)
    edit.apply(bridge)
    changed = (bridge.W_E != W_E0).any(dim=1).nonzero().flatten().tolist()
    assert changed == [5, 7, 9]
    assert torch.equal(bridge.W_U, W_U0)
    assert torch.allclose(bridge.W_E[5], W_E0[5] - 2.0 * edit.directions[0])
    edit.revert(bridge)
    assert torch.equal(bridge.W_E, W_E0)


def test_edit_state_errors():
    bridge, _, _ = tiny_bridge_and_hf()
    edit = _edit_for(bridge)
    with pytest.raises(EditStateError, match="not applied"):
        edit.revert(bridge)
    with edit.applied_to(bridge):
        with pytest.raises(EditStateError, match="already applied"):
            edit.apply(bridge)
    assert not edit.applied
    with pytest.raises(EditStateError, match="vocabulary has"):
        EmbeddingEdit(torch.tensor([10_000]), torch.zeros(1, bridge.cfg.d_model)).apply(bridge)


def test_edit_context_manager_reverts_on_error():
    bridge, _, _ = tiny_bridge_and_hf()
    W_E0 = bridge.W_E.detach().clone()
    edit = _edit_for(bridge)
    with pytest.raises(RuntimeError):
        with edit.applied_to(bridge):
            raise RuntimeError("boom")
    assert torch.equal(bridge.W_E, W_E0)


def test_edit_rejects_bad_input():
    with pytest.raises(ValueError, match="delta must be"):
        EmbeddingEdit(torch.tensor([1]), torch.zeros(1, 4), delta=-1)
    with pytest.raises(ValueError, match="delta must be"):
        EmbeddingEdit(torch.tensor([1]), torch.zeros(1, 4), delta=float("nan"))
    with pytest.raises(ValueError, match="one row per token"):
        EmbeddingEdit(torch.tensor([1, 2]), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="duplicates"):
        EmbeddingEdit(torch.tensor([1, 1]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        EmbeddingEdit(torch.tensor([1]), torch.full((1, 4), float("nan")))


def test_edit_save_load_round_trip_gives_identical_logits(tmp_path):
    bridge, _, _ = tiny_bridge_and_hf()
    edit = _edit_for(bridge)
    edit.tokens, edit.meta = ["a", "b", "c"], {"concept": "harry_potter"}
    path = edit.save(tmp_path / "edit.safetensors")
    loaded = EmbeddingEdit.load(path)
    assert loaded.delta == edit.delta and loaded.tokens == edit.tokens and loaded.meta == edit.meta
    tokens = bridge.to_tokens("Harry Potter is a wizard at Hogwarts")
    with edit.applied_to(bridge):
        a = bridge(tokens)
    with loaded.applied_to(bridge):
        b = bridge(tokens)
    assert torch.equal(a, b)
    (tmp_path / "junk.safetensors").write_bytes(b"not a patch")
    with pytest.raises(ValueError, match="not a readable edit patch"):
        EmbeddingEdit.load(tmp_path / "junk.safetensors")


def test_build_edit_only_concept_only_tokens():
    G, vocab = _planted()
    G[60, 0] = 1.0  # a neutral-only token loading on the concept atom must not be edited
    F = torch.randn(6, 8)
    edit = build_edit(G, F, vocab, [0])
    assert set(edit.token_ids.tolist()) == set(range(20))
    assert torch.allclose(edit.directions[0], torch.as_tensor(G[0, 0]) * F[0])
    with pytest.raises(ValueError, match="already in V′"):
        build_edit(G, F, vocab, [0], extra_token_ids=[3], extra_codes=np.zeros((1, 6)))
    extra = build_edit(G, F, vocab, [0], extra_token_ids=[500], extra_codes=np.ones((1, 6)))
    assert 500 in extra.token_ids.tolist()
    with pytest.raises(ValueError, match="No atoms selected"):
        build_edit(G, F, vocab, [])


# ---------------------------------------------------------------- δ selection

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


def test_largest_gap_threshold():
    from ember_utils.atoms import largest_gap_threshold

    assert largest_gap_threshold(np.array([163.0, 30.0, 11.5, 11.4, 9.8])) == 163.0
    assert largest_gap_threshold(np.array([40.0, 35.0, 3.0, 2.9])) == 35.0
    assert largest_gap_threshold(np.array([5.0, 4.0, 3.5])) is None  # no gap of ×2
    assert largest_gap_threshold(np.array([np.inf, 4.0, 3.9])) == np.inf


def test_permutation_rule_gap_cut_drops_weaker_significant_atoms():
    G, vocab = _planted()
    G[:, 2] = 0.0
    G[:15, 2] = 1.0            # a second, weaker concept atom (also loads on one neutral token)
    G[40, 2] = 1.0
    scores = score_atoms(G, vocab)
    no_gap = select_atoms(scores, PermutationRule(n_permutations=100, gap_cut=False), G, vocab)
    with_gap = select_atoms(scores, PermutationRule(n_permutations=100), G, vocab)
    assert set(no_gap.loc[no_gap.selected, "atom"]) == {0, 2}
    assert set(with_gap.loc[with_gap.selected, "atom"]) == {0}
