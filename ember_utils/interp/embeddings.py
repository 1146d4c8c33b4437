"""Read-only views of a model's token embeddings: norms, nearest neighbours, input scaling."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["embedding_matrix", "unembedding_matrix", "embedding_norms", "nearest_tokens", "embedding_scale",
           "token_id"]


def embedding_matrix(bridge: Any) -> torch.Tensor:
    """The raw input embedding matrix W_E (vocab × d_model), before any √d_model scaling."""
    return bridge.W_E


def unembedding_matrix(bridge: Any) -> torch.Tensor:
    """The unembedding W_U (d_model × vocab)."""
    return bridge.W_U


def token_id(tokenizer: Any, token: str | int) -> int:
    """Id of a single token given as a string (must encode to exactly one token) or an int."""
    if isinstance(token, (int, np.integer)):
        if not 0 <= int(token) < len(tokenizer):
            raise ValueError(f"Token id {token} out of range [0, {len(tokenizer)}).")
        return int(token)
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise ValueError(f"{token!r} is not a single token (it splits into {pieces}); pass one of those pieces.")
    return int(ids[0])


def embedding_norms(bridge: Any) -> np.ndarray:
    """L2 norm of every row of W_E."""
    with torch.no_grad():
        return embedding_matrix(bridge).float().norm(dim=1).cpu().numpy()


def nearest_tokens(bridge: Any, tokens: Sequence[str | int], k: int = 8, chunk: int = 65536) -> pd.DataFrame:
    """The ``k`` nearest tokens by cosine similarity of input embeddings, for each query token.

    Returns a long DataFrame: query, rank, neighbour, cosine.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    tok = bridge.tokenizer
    W = embedding_matrix(bridge)
    rows = []
    with torch.no_grad():
        for q in tokens:
            qid = token_id(tok, q)
            qv = W[qid].float()
            qv = qv / qv.norm().clamp_min(1e-12)
            sims = []
            for start in range(0, W.shape[0], chunk):
                block = W[start:start + chunk].float()
                sims.append(block @ qv / block.norm(dim=1).clamp_min(1e-12))
            sims = torch.cat(sims)
            sims[qid] = -2.0
            vals, idx = sims.topk(k)
            for rank, (v, i) in enumerate(zip(vals.tolist(), idx.tolist()), start=1):
                rows.append({"query": tok.decode([qid]), "rank": rank, "neighbour": tok.decode([i]), "cosine": v})
    return pd.DataFrame(rows)


def embedding_scale(bridge: Any, text: str = "Hello world") -> float:
    """Measured ratio between the activation at ``hook_embed`` and the raw W_E row (Gemma: √d_model)."""
    tokens = bridge.to_tokens(text)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n == "hook_embed")
        emb = cache["hook_embed"][0].float()
        raw = embedding_matrix(bridge)[tokens[0]].float()
    ratio = (emb.norm(dim=-1) / raw.norm(dim=-1)).mean().item()
    return ratio
