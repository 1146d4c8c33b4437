"""Factorization persistence, the cached concept pipeline, the δ sweep and the runner helpers."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from ember_utils.factorize import SparseFactorization
from ember_utils.pipeline import cached_factorization, fit_concept_atoms, tensor_digest
from ember_utils.sweep import sweep_delta
from tiny_models import tiny_bridge_and_hf

CONCEPT = ["Harry Potter is a young wizard", "the wand chose the wizard", "Hogwarts castle owl letters",
           "Ron and Hermione study magic at Hogwarts", "the owl carried letters to the castle"]
NEUTRAL = ["the cat sat on the warm mat", "people go to the market to buy bread, milk and apples",
           "the capital of France is Paris", "the capital of Spain is Madrid", "fresh vegetables in the morning"]


def test_save_load_round_trip(tmp_path):
    X = torch.randn(300, 16, generator=torch.Generator().manual_seed(1))
    f = SparseFactorization(n_atoms=10, sparsity=0.05, max_iter=50, patience=10).fit(X)
    g = SparseFactorization.load(f.save(tmp_path / "f.safetensors"))
    assert torch.equal(f.codes_, g.codes_) and torch.equal(f.atoms_, g.atoms_)
    assert torch.allclose(f.transform(X[:5]), g.transform(X[:5]))
    assert g.get_params() == f.get_params() and g.loss_curve_ == f.loss_curve_
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(Exception):
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
    cached_factorization(X, tmp_path, **{**kw, "seed": 1})
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


class _FakeResult:
    def __init__(self, metrics):
        self.metrics = metrics


class _FakeEvaluator:
    """Efficacy grows with δ; specificity collapses beyond δ=5 — measured from the real edited weights."""

    split = "train"

    def __init__(self, model, token_id):
        self.model, self.token_id, self.base = model, token_id, model.W_E[token_id].detach().clone()
        self.calls = []

    def evaluate(self, state, name=None, edited_tokens=None, reference=None):
        self.calls.append(None if edited_tokens is None else sorted(edited_tokens.tolist()))
        with state:
            moved = (self.model.W_E[self.token_id] - self.base).norm().item()
        eff = min(1.0, moved / 10)
        spec = 1.0 if moved <= 5 * self.scale else 0.5
        return _FakeResult({"efficacy": eff, "specificity": spec, "coherence": 1.0, "acc_concept": 0.0,
                            "acc_similar": 0.0, "acc_general": 0.0, "acc_open": 0.0, "perplexity": 1.0})


def test_sweep_delta_picks_by_rule_and_leaves_model_unedited():
    from ember_utils.edit import EmbeddingEdit

    bridge, _, _ = tiny_bridge_and_hf()
    direction = torch.zeros(1, bridge.cfg.d_model)
    direction[0, 0] = 1.0
    edit = EmbeddingEdit(torch.tensor([5]), direction)
    ev = _FakeEvaluator(bridge, 5)
    ev.scale = 1.0
    W0 = bridge.W_E.detach().clone()
    sweep = sweep_delta(bridge, edit, ev, grid=[1, 2, 5, 10], progress=False)
    assert torch.equal(bridge.W_E, W0)
    assert sweep.chosen_delta == 5 and sweep.edit.delta == 5
    assert list(sweep.table.delta) == [1, 2, 5, 10] and sweep.table.score.iloc[-1] == 0
    assert ev.calls == [[5]] * 4  # the edited tokens are declared, so unaffected inputs can be reused
    sweep_delta(bridge, edit, ev, grid=[1], progress=False, reuse_unaffected=False)
    assert ev.calls[-1] is None
    ev.split = "test"
    with pytest.raises(ValueError, match="train split"):
        sweep_delta(bridge, edit, ev, grid=[1])


def test_collect_ember_results_reads_runner_output(tmp_path):
    import json

    from ember_utils.runner import collect_ember_results, results_dir

    folder = results_dir("gemma-3-270m", "harry_potter", tmp_path)
    folder.mkdir(parents=True)
    (folder / "ember_seed0.json").write_text(json.dumps({
        "concept": "harry_potter", "seed": 0, "selected_atoms": [1, 2], "n_edit_tokens": 40, "chosen_delta": 2.0,
        "test_unedited": {"acc_concept": 0.6}, "test_edited": {"acc_concept": 0.3, "efficacy": 0.86}}))
    (folder / "ember_seed0.config.json").write_text(json.dumps({"command": "python -m ember_utils.runner ember"}))
    table = collect_ember_results("gemma-3-270m", tmp_path)
    assert len(table) == 1  # the run's config file is not a run
    assert table.loc[0, "concept_acc_after"] == 0.3 and table.loc[0, "selected_atoms"] == 2
    assert results_dir("meta-llama/Llama-3.1-8B-Instruct", None, tmp_path).name == "meta-llama__Llama-3.1-8B-Instruct"
