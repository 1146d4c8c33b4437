"""The EMBER embedding edit: a reversible, serializable model state built from a factorization.

For each concept-only token i that loads on a selected atom:  e_i ← e_i − δ · Σ_{k∈S} G_ik F_k.
Shared and neutral-only tokens are never touched, nor is the unembedding. Edits work on the raw rows of
``W_E`` (before Gemma's √d_model input scaling).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...io import atomic_write_bytes, read_safetensors
from ...state import ModelState, StateError, components
from .vocab import CONCEPT, VocabSlice

__all__ = ["EmbeddingEdit", "build_edit", "EditStateError", "embedding_edits"]

_FORMAT = "ember-edit-v1"


class EditStateError(StateError):
    """A patch that does not fit the model (or any other misuse of an edit's state)."""


@dataclass
class EmbeddingEdit(ModelState):
    """A patch of input-embedding rows: ``W_E[token_ids] -= delta * directions``.

    ``directions`` (n_edit × d_model) is Σ_k G_ik F_k per edited token; ``delta`` scales it.
    ``apply`` keeps the original rows so ``revert`` is bit-exact.
    """

    token_ids: torch.Tensor
    directions: torch.Tensor
    delta: float = 1.0
    tokens: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    _saved_rows: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.token_ids = torch.as_tensor(self.token_ids, dtype=torch.long).flatten()
        self.directions = torch.as_tensor(self.directions, dtype=torch.float32)
        if self.directions.ndim != 2 or self.directions.shape[0] != self.token_ids.shape[0]:
            raise ValueError(f"directions must be (n_tokens × d_model) with one row per token id; got "
                             f"{tuple(self.directions.shape)} for {self.token_ids.shape[0]} token ids.")
        if len(set(self.token_ids.tolist())) != self.token_ids.shape[0]:
            raise ValueError("token_ids contain duplicates; each token may be edited once.")
        if not torch.isfinite(self.directions).all():
            raise ValueError("directions contain NaN or inf.")
        self.delta = _check_delta(self.delta)

    # -------------------------------------------------------------- state
    @property
    def touched_tokens(self) -> frozenset[int]:
        """The edited token ids: the edit changes nothing but their input-embedding rows."""
        return frozenset(int(i) for i in self.token_ids.tolist())

    def with_delta(self, delta: float) -> "EmbeddingEdit":
        """A copy of this edit (unapplied) with another δ."""
        return EmbeddingEdit(self.token_ids.clone(), self.directions.clone(), delta, list(self.tokens), dict(self.meta))

    def _weight(self, model: Any) -> torch.Tensor:
        W = model.W_E if hasattr(model, "W_E") else model.get_input_embeddings().weight
        if W.shape[1] != self.directions.shape[1]:
            raise EditStateError(f"Edit has d_model={self.directions.shape[1]} but the model's W_E has "
                                 f"d_model={W.shape[1]}.")
        if int(self.token_ids.max()) >= W.shape[0]:
            raise EditStateError(f"Edit touches token id {int(self.token_ids.max())} but the vocabulary has "
                                 f"{W.shape[0]} rows.")
        return W

    def _apply(self, model: Any) -> None:
        """Subtract ``delta * directions`` from the rows of the model's input embedding (in place)."""
        W = self._weight(model)
        ids = self.token_ids.to(W.device)
        with torch.no_grad():
            self._saved_rows = W[ids].detach().clone()
            W[ids] = (W[ids].float() - self.delta * self.directions.to(W.device)).to(W.dtype)

    def _revert(self, model: Any) -> None:
        """Restore the original rows bit-exactly."""
        W = self._weight(model)
        with torch.no_grad():
            W[self.token_ids.to(W.device)] = self._saved_rows
        self._saved_rows = None

    # -------------------------------------------------------------- reporting
    def summary(self, model: Any | None = None) -> pd.DataFrame:
        """Per edited token: id, string, ‖δ·direction‖ and, given the model, the change relative to the row norm
        and ``norm_ratio`` = ‖e − δ·direction‖ / ‖e‖ (how much longer the edited row is than the original)."""
        change = (self.delta * self.directions).norm(dim=1).cpu().numpy()
        df = pd.DataFrame({"token_id": self.token_ids.cpu().numpy(),
                           "token": self.tokens if self.tokens else [""] * len(self.token_ids),
                           "change_norm": change})
        if model is not None:
            W = self._weight(model)
            rows = self._saved_rows if self.applied else W[self.token_ids.to(W.device)]
            df["row_norm"] = rows.float().norm(dim=1).detach().cpu().numpy()
            df["relative_change"] = df["change_norm"] / df["row_norm"]
            edited = rows.float().cpu() - self.delta * self.directions.cpu()
            df["norm_ratio"] = edited.norm(dim=1).detach().numpy() / df["row_norm"].to_numpy()
        return df.sort_values("change_norm", ascending=False, kind="stable").reset_index(drop=True)

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    # -------------------------------------------------------------- serialization
    def save(self, path: str | Path) -> Path:
        """Write a compact patch (token ids, directions, δ, metadata) atomically with safetensors."""
        from safetensors.torch import save

        header = {"format": _FORMAT, "delta": repr(float(self.delta)), "tokens": json.dumps(self.tokens),
                  "meta": json.dumps(self.meta, default=str)}
        blob = save({"token_ids": self.token_ids.contiguous(), "directions": self.directions.contiguous()},
                    metadata=header)
        return atomic_write_bytes(path, blob)

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingEdit":
        """Read a patch written by :meth:`save`."""
        meta, tensors = read_safetensors(path, "edit patch")
        if meta.get("format") != _FORMAT or set(tensors) != {"token_ids", "directions"}:
            raise ValueError(f"{path} is not an {_FORMAT} patch (format={meta.get('format')!r}, "
                             f"tensors={sorted(tensors)}).")
        return cls(tensors["token_ids"], tensors["directions"], float(meta["delta"]),
                   json.loads(meta.get("tokens", "[]")), json.loads(meta.get("meta", "{}")))


def embedding_edits(state: ModelState | None) -> list[EmbeddingEdit]:
    """The embedding edits among the components of ``state`` (a stack included), in the order they apply."""
    return [s for s in components(state) if isinstance(s, EmbeddingEdit)]


def _check_delta(delta: float) -> float:
    try:
        d = float(delta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"delta must be a number >= 0, got {delta!r}.") from exc
    if math.isnan(d) or d < 0 or math.isinf(d):
        raise ValueError(f"delta must be a finite number >= 0, got {delta!r}.")
    return d


def build_edit(codes: Any, atoms: Any, vocab: VocabSlice, selected: Sequence[int], delta: float = 1.0,
               extra_token_ids: Sequence[int] = (), extra_codes: Any = None, meta: dict | None = None,
               tokenizer: Any = None) -> EmbeddingEdit:
    """The EMBER edit from a factorization of E[V′].

    Args:
        codes: G (n × K) for the tokens of ``vocab`` (same order).
        atoms: F as (K × d) rows (``SparseFactorization.atoms_``).
        vocab: the slice V′ with token labels.
        selected: atom indices S.
        extra_token_ids: reviewed tokens outside V′ to edit too (from the whole-vocabulary projection).
        extra_codes: their codes on all K atoms (e.g. ``factorization.transform(W_E[extra])``).
    """
    G = codes.to_dense() if isinstance(codes, torch.Tensor) and codes.is_sparse else codes
    G = torch.as_tensor(np.asarray(G) if not isinstance(G, torch.Tensor) else G, dtype=torch.float32).cpu()
    F = torch.as_tensor(np.asarray(atoms) if not isinstance(atoms, torch.Tensor) else atoms,
                        dtype=torch.float32).cpu()
    if G.shape != (len(vocab), F.shape[0]):
        raise ValueError(f"codes must be (|V′| × K) = ({len(vocab)} × {F.shape[0]}), got {tuple(G.shape)}.")
    sel = sorted(set(int(k) for k in selected))
    if not sel:
        raise ValueError("No atoms selected: the edit would be empty.")
    if sel[0] < 0 or sel[-1] >= F.shape[0]:
        raise ValueError(f"Selected atoms {sel} out of range [0, {F.shape[0]}).")
    concept = torch.as_tensor(vocab.mask(CONCEPT))
    loads = (G[:, sel] != 0).any(dim=1) & concept
    rows = torch.nonzero(loads).flatten()
    ids = torch.as_tensor(vocab.token_ids)[rows]
    directions = G[rows][:, sel] @ F[sel]
    tokens = [vocab.tokens[i] for i in rows.tolist()] if vocab.tokens else []
    extra_token_ids = [int(t) for t in extra_token_ids]
    if extra_token_ids:
        in_slice = set(vocab.token_ids.tolist())
        clash = [t for t in extra_token_ids if t in in_slice]
        if clash:
            raise ValueError(f"Extra tokens {clash[:10]} are already in V′; only tokens outside the corpora can be "
                             "added (shared/neutral tokens are never edited).")
        if extra_codes is None:
            raise ValueError("extra_token_ids given without extra_codes (their codes on the atoms).")
        Ge = torch.as_tensor(np.asarray(extra_codes) if not isinstance(extra_codes, torch.Tensor) else extra_codes,
                             dtype=torch.float32).cpu()
        if Ge.shape != (len(extra_token_ids), F.shape[0]):
            raise ValueError(f"extra_codes must be ({len(extra_token_ids)} × {F.shape[0]}), got {tuple(Ge.shape)}.")
        ids = torch.cat([ids, torch.tensor(extra_token_ids, dtype=torch.long)])
        directions = torch.cat([directions, Ge[:, sel] @ F[sel]])
        if tokenizer is not None:
            tokens = tokens + [tokenizer.decode([t]) for t in extra_token_ids]
    info = {"selected_atoms": sel, "n_extra": len(extra_token_ids)}
    info.update(meta or {})
    return EmbeddingEdit(ids, directions, delta, tokens, info)
