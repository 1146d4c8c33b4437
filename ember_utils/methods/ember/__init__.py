"""EMBER: erase a concept by editing the input embeddings of its tokens along its concept atoms.

The steps, one module each: ``vocab`` (the vocabulary slice V′ and its labels), ``factorize`` (sparse
factorization of E[V′]; linear algebra only), ``atoms`` (scoring and selecting concept atoms), ``edit`` (the
reversible edit, a model state), ``delta`` (choosing δ on the train split) and ``pipeline`` (all of it for one
concept, with a cached factorization).
"""
from .atoms import PermutationRule, RatioRule, describe_atoms, score_atoms, select_atoms
from .delta import DELTA_GRID, DeltaSweep, select_delta, sweep_delta
from .edit import EditStateError, EmbeddingEdit, build_edit
from .factorize import SparseFactorization
from .pipeline import ConceptAtoms, cached_factorization, fit_concept_atoms
from .vocab import VocabSlice, build_vocab_slice

__all__ = ["ConceptAtoms", "DELTA_GRID", "DeltaSweep", "EditStateError", "EmbeddingEdit", "PermutationRule", "RatioRule",
           "SparseFactorization", "VocabSlice", "build_edit", "build_vocab_slice", "cached_factorization",
           "describe_atoms", "fit_concept_atoms", "score_atoms", "select_atoms", "select_delta", "sweep_delta"]
