"""Factorization persistence, the cached concept pipeline, the δ sweep and the runner helpers."""
from __future__ import annotations

import pytest
import torch

from ember_utils.methods.ember.factorize import SparseFactorization
from ember_utils.methods.ember.pipeline import (
    cached_factorization,
    fit_concept_atoms,
    tensor_digest,
)
from helpers.tiny_models import tiny_bridge_and_hf
from helpers.toy_data import TINY_CONCEPT_TEXTS as CONCEPT
from helpers.toy_data import TINY_NEUTRAL_TEXTS as NEUTRAL


def test_save_load_round_trip(tmp_path):
    X = torch.randn(300, 16, generator=torch.Generator().manual_seed(1))
    f = SparseFactorization(n_atoms=10, sparsity=0.05, max_iter=50, patience=10).fit(X)
    g = SparseFactorization.load(f.save(tmp_path / "f.safetensors"))
    assert torch.equal(f.codes_, g.codes_) and torch.equal(f.atoms_, g.atoms_)
    assert torch.allclose(f.transform(X[:5]), g.transform(X[:5]))
    assert g.get_params() == f.get_params() and g.loss_curve_ == f.loss_curve_
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(Exception):  # noqa: B017 - safetensors raises its own error type for garbage
        SparseFactorization.load(tmp_path / "bad.safetensors")


def test_cached_factorization_reuses_and_keys_on_content(tmp_path):
    X = torch.randn(200, 12, generator=torch.Generator().manual_seed(2))
    kw = dict(n_atoms=8, sparsity=0.05, max_iter=30, patience=5)
    a = cached_factorization(X, tmp_path, **kw)
    files = list((tmp_path / "factorizations").iterdir())
    b = cached_factorization(X, tmp_path, **kw)
    assert torch.equal(a.codes_, b.codes_) and list((tmp_path / "factorizations").iterdir()) == files
    X2 = X.clone()
    X2[0, 0] += 1.0
    assert tensor_digest(X2) != tensor_digest(X)
    cached_factorization(X2, tmp_path, **kw)
    cached_factorization(X, tmp_path, **{**kw, "random_state": 1})
    assert len(list((tmp_path / "factorizations").iterdir())) == 3


def test_corrupt_cache_entry_is_refit(tmp_path):
    X = torch.randn(200, 12, generator=torch.Generator().manual_seed(3))
    kw = dict(n_atoms=8, sparsity=0.05, max_iter=30, patience=5)
    a = cached_factorization(X, tmp_path, **kw)
    (path,) = list((tmp_path / "factorizations").iterdir())
    path.write_bytes(b"corrupted")
    b = cached_factorization(X, tmp_path, **kw)
    assert torch.equal(a.codes_, b.codes_)
    assert SparseFactorization.load(path).n_iter_ == a.n_iter_  # rewritten


def test_fit_concept_atoms_on_tiny_model(tmp_path):
    bridge, _, _ = tiny_bridge_and_hf()
    atoms = fit_concept_atoms(bridge, CONCEPT, NEUTRAL, "hp", n_atoms=4, sparsity=0.2, max_iter=40, patience=10,
                              cache_dir=tmp_path)
    assert len(atoms.scores) == 4 and set(atoms.selection.columns) >= {"ratio", "purity", "selected"}
    edit = atoms.edit(atoms=[int(atoms.selection.atom.iloc[0])], tokenizer=bridge.tokenizer)
    concept_only = set(atoms.vocab.ids_with_label("concept-only").tolist())
    assert set(edit.token_ids.tolist()) <= concept_only
    with pytest.raises(ValueError, match="exceeds"):
        fit_concept_atoms(bridge, CONCEPT, NEUTRAL, n_atoms=10_000, cache_dir=tmp_path)


def test_atoms_to_edit_falls_back_with_a_label_when_the_rule_selects_nothing(tmp_path):
    from ember_utils.methods.ember.atoms import PermutationRule

    bridge, _, _ = tiny_bridge_and_hf()
    kw = dict(n_atoms=4, sparsity=0.2, max_iter=40, patience=10, cache_dir=tmp_path)
    strict = fit_concept_atoms(bridge, CONCEPT, NEUTRAL, "hp", rule=PermutationRule(min_purity=1.0, alpha=0.01), **kw)
    assert strict.selected_atoms == []
    chosen, how = strict.atoms_to_edit(fallback_min_purity=0.0)
    assert chosen and how.startswith("no atom passed the rule")
    assert len(strict.edit(atoms=chosen)) > 0
    top = int(strict.selection.sort_values("ratio", ascending=False).atom.iloc[0])
    impossible = fit_concept_atoms(bridge, CONCEPT, NEUTRAL, "hp",
                                   rule=PermutationRule(min_purity=1.0, min_concept_tokens=10_000), **kw)
    assert impossible.atoms_to_edit(fallback_min_purity=1.0) == (
        [top], "no atom passed the rule; fallback: the single highest-ratio atom")
    from ember_utils.methods.ember.atoms import RatioRule

    default = fit_concept_atoms(bridge, CONCEPT, NEUTRAL, "hp", rule=RatioRule(1e-9), **kw)
    assert default.selected_atoms
    assert default.atoms_to_edit() == (default.selected_atoms, f"selected by the rule ({default.rule.describe()})")


@pytest.mark.real_model
def test_concept_text_in_another_register_selects_no_punctuation_atom(real_bridge, tmp_path):
    """Encyclopedic chess text (brackets, citation marks, dashes) against the neutral corpus: no punctuation,
    number or function token is concept-only, so no atom of them can be selected; without that rule such tokens
    would be 'concept-only' only because of the register."""
    from pathlib import Path

    from ember_utils.data import load_common
    from ember_utils.methods.ember.vocab import CONCEPT, build_vocab_slice, is_generic_token

    chess = (Path(__file__).resolve().parents[3] / "fixtures" / "chess_encyclopedic.txt").read_text().splitlines()
    neutral = load_common().neutral_texts("train")
    atoms = fit_concept_atoms(real_bridge, chess, neutral, "chess", seed=0, cache_dir=tmp_path, describe_top=5)
    concept_only = [t for t, lab in zip(atoms.vocab.tokens, atoms.vocab.labels) if lab == CONCEPT]
    assert concept_only and not [t for t in concept_only if is_generic_token(t)]
    for a in atoms.selection.head(5)["atom"]:
        top = atoms.descriptions[int(a)]["top_tokens"][:10]
        assert sum(map(is_generic_token, top)) <= 2, (a, top)  # the strongest atoms are words, not punctuation
    raw = build_vocab_slice(real_bridge.tokenizer, chess, neutral, generic_is_shared=False)
    raw_generic = [t for t, lab in zip(raw.tokens, raw.labels) if lab == CONCEPT and is_generic_token(t)]
    assert raw_generic, "the register alone makes some punctuation/function tokens concept-only"
