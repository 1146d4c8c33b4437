"""The EMBER concept pipeline: V′ → factorization (cached) → atom scores → selection → descriptions → edit."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ...io import stable_hash
from ...paths import default_cache_dir
from .atoms import (
    PermutationRule,
    describe_atoms,
    project_vocabulary,
    score_atoms,
    select_atoms,
)
from .edit import EmbeddingEdit, build_edit
from .factorize import SparseFactorization
from .vocab import VocabSlice, build_vocab_slice

__all__ = ["ConceptAtoms", "fit_concept_atoms", "cached_factorization", "tensor_digest"]

logger = logging.getLogger(__name__)


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 (first 16 hex) of a tensor's bytes, dtype and shape: the content key of a cached fit."""
    h = hashlib.sha256()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_factorization(X: torch.Tensor, cache_dir: str | Path | None = None, **params: Any) -> SparseFactorization:
    """Fit :class:`SparseFactorization` on ``X`` or load the identical fit from disk.

    The cache key is a hash of ``X``'s bytes and the estimator parameters, so any change of model, corpus
    or parameters recomputes. Files are written atomically.
    """
    est = SparseFactorization(**params)
    key = stable_hash(tensor_digest(X), {k: repr(v) for k, v in sorted(est.get_params().items()) if k != "verbose"})
    path = Path(cache_dir or default_cache_dir()) / "factorizations" / f"fit-{key}.safetensors"
    if path.exists():
        try:
            return SparseFactorization.load(path)
        except Exception as exc:  # a damaged cache file is recomputed, never trusted
            logger.warning("Ignoring unreadable cached factorization %s (%s); refitting.", path, exc)
    est.fit(X)
    est.save(path)
    return est


@dataclass
class ConceptAtoms:
    """Everything the chapters need about one concept's atoms."""

    concept: str
    vocab: VocabSlice
    factorization: SparseFactorization
    scores: pd.DataFrame
    selection: pd.DataFrame
    rule: Any
    descriptions: dict[int, dict] = field(default_factory=dict)

    @property
    def selected_atoms(self) -> list[int]:
        return self.selection.loc[self.selection["selected"], "atom"].astype(int).tolist()

    def describe(self, atoms: Sequence[int] | None = None) -> pd.DataFrame:
        """A table of (atom, ratio, purity, selected, top tokens, read-out tokens)."""
        atoms = list(self.selection["atom"]) if atoms is None else list(atoms)
        sel = self.selection.set_index("atom")
        rows = []
        for a in atoms:
            d = self.descriptions.get(int(a))
            rows.append({"atom": int(a), "ratio": sel.at[a, "ratio"], "purity": sel.at[a, "purity"],
                         "n_concept": int(sel.at[a, "n_concept"]), "selected": bool(sel.at[a, "selected"]),
                         "top_tokens": ", ".join(repr(t) for t in d["top_tokens"][:8]) if d else "",
                         "readout": ", ".join(repr(t) for t in d["readout_tokens"][:6]) if d else ""})
        return pd.DataFrame(rows)

    def atoms_to_edit(self, fallback_min_purity: float = 0.25) -> tuple[list[int], str]:
        """The atoms an edit should use and a sentence saying where they come from.

        The rule's selection when it selected any. Otherwise (e.g. a broad neutral corpus leaves no atom pure
        enough) the same permutation rule with the purity floor lowered to ``fallback_min_purity``, and failing
        that the single highest-ratio atom: a labelled fallback, so a chapter still has an edit to measure and
        the δ gates decide whether it is worth keeping."""
        if self.selected_atoms:
            return self.selected_atoms, f"selected by the rule ({self.rule.describe()})"
        if isinstance(self.rule, PermutationRule):
            relaxed = dataclasses.replace(self.rule, min_purity=fallback_min_purity)
            sel = select_atoms(self.scores, relaxed, self.factorization.codes_, self.vocab)
            chosen = sel.loc[sel["selected"], "atom"].astype(int).tolist()
            if chosen:
                return chosen, (f"no atom passed the rule; fallback: the rule with purity ≥ {fallback_min_purity:g} "
                                f"instead of ≥ {self.rule.min_purity:g}")
        top = int(self.selection.sort_values("ratio", ascending=False, kind="stable")["atom"].iloc[0])
        return [top], "no atom passed the rule; fallback: the single highest-ratio atom"

    def edit(self, delta: float = 1.0, atoms: Sequence[int] | None = None, extra_token_ids: Sequence[int] = (),
             embeddings: torch.Tensor | None = None, tokenizer: Any = None) -> EmbeddingEdit:
        """Build the EMBER edit for the selected atoms (or ``atoms``), optionally with reviewed extra tokens
        (their codes come from ``factorization.transform`` of their ``embeddings`` rows)."""
        atoms = self.selected_atoms if atoms is None else list(atoms)
        extra_codes = None
        if len(extra_token_ids):
            if embeddings is None:
                raise ValueError("extra_token_ids need the embedding matrix to compute their codes.")
            rows = embeddings[torch.as_tensor(list(extra_token_ids))].detach().to(self.factorization.atoms_.device)
            extra_codes = self.factorization.transform(rows.float())
        return build_edit(self.factorization.codes_, self.factorization.atoms_, self.vocab, atoms, delta,
                          extra_token_ids, extra_codes, meta={"concept": self.concept}, tokenizer=tokenizer)

    def vocabulary_candidates(self, embeddings: torch.Tensor, tokenizer: Any, top_n: int = 50) -> pd.DataFrame:
        """Whole-vocabulary projection onto the selected atoms: tokens outside V′ to review."""
        return project_vocabulary(embeddings, self.factorization.atoms_, self.selected_atoms, self.vocab,
                                  tokenizer, top_n=top_n)


def fit_concept_atoms(model: Any, concept_texts: Sequence[str], neutral_texts: Sequence[str], concept: str = "",
                      n_atoms: int | None = None, sparsity: float | None = None, rule: Any = None, seed: int = 0,
                      max_iter: int = 20000, patience: int = 500, tol: float = 1e-4,
                      cache_dir: str | Path | None = None, describe_top: int = 25) -> ConceptAtoms:
    """Run the EMBER atom pipeline on a model's raw input embeddings (before √d_model scaling).

    ``n_atoms`` and ``sparsity`` default to the preset's ``default_rank`` and ``default_sparsity`` (100 and 0.01
    for a model without a preset); ``rule`` to :class:`PermutationRule`.
    """
    preset = getattr(model, "ember_preset", None)
    if n_atoms is None:
        n_atoms = preset.default_rank if preset is not None else 100
    if sparsity is None:
        sparsity = preset.default_sparsity if preset is not None else 0.01
    vocab = build_vocab_slice(model.tokenizer, concept_texts, neutral_texts)
    if n_atoms > len(vocab):
        raise ValueError(f"n_atoms={n_atoms} exceeds the {len(vocab)} tokens of V′; use fewer atoms or more text.")
    X = model.W_E[torch.as_tensor(vocab.token_ids, device=model.W_E.device)].detach().float()
    fac = cached_factorization(X, cache_dir, n_atoms=n_atoms, sparsity=sparsity, random_state=seed, max_iter=max_iter,
                               patience=patience, tol=tol)
    scores = score_atoms(fac.codes_, vocab)
    rule = rule if rule is not None else PermutationRule(seed=seed)
    selection = select_atoms(scores, rule, fac.codes_, vocab)
    top = selection["atom"].head(max(describe_top, len(selection[selection["selected"]]))).tolist()
    descs = describe_atoms(fac.codes_, fac.atoms_, vocab, model.W_U, model.tokenizer, which=top)
    return ConceptAtoms(concept, vocab, fac, scores, selection, rule, {d["atom"]: d for d in descs})
