"""The EMBER edit as TransformerLens hooks instead of a weight change: the same shift, added to the embedding
activation (``hook_embed``) at every position whose token is edited, with the model's input scaling
(Gemma: √d_model) measured by ``interp.embeddings.embedding_scale``. Useful to compare edits without touching
``W_E``, and to see that an embedding edit is nothing but a per-token shift of the residual stream's start."""
from __future__ import annotations

from typing import Any

import torch

from ...interp.embeddings import embedding_scale
from .edit import EmbeddingEdit

__all__ = ["edit_hooks"]


def edit_hooks(edit: EmbeddingEdit, bridge: Any) -> list[tuple[str, Any]]:
    """``fwd_hooks`` for ``bridge.run_with_hooks`` / ``bridge.hooks`` that act like ``edit`` applied to ``W_E``:
    ``embed.hook_in`` records the token ids, ``hook_embed`` subtracts scale · δ · direction where they are edited."""
    if edit.applied:
        raise ValueError("The edit is applied to a model's weights; use the hooks instead of it, not on top.")
    n_vocab = bridge.W_E.shape[0]
    if int(edit.token_ids.max()) >= n_vocab or edit.directions.shape[1] != bridge.W_E.shape[1]:
        raise ValueError(f"The edit does not fit this model (vocabulary {n_vocab}, d_model {bridge.W_E.shape[1]}).")
    row_of = torch.full((n_vocab,), -1, dtype=torch.long)
    row_of[edit.token_ids] = torch.arange(len(edit.token_ids))
    shift = edit.delta * edit.directions * embedding_scale(bridge)
    seen: dict[str, torch.Tensor] = {}

    def record_ids(ids: torch.Tensor, hook: Any) -> torch.Tensor:
        seen["ids"] = ids
        return ids

    def shift_embeddings(x: torch.Tensor, hook: Any) -> torch.Tensor:
        rows = row_of.to(seen["ids"].device)[seen["ids"]]
        mask = rows >= 0
        if mask.any():
            x = x.clone()
            x[mask] = x[mask] - shift.to(x.device, x.dtype)[rows[mask]]
        return x

    return [("embed.hook_in", record_ids), ("hook_embed", shift_embeddings)]
