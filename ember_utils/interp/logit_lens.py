"""Logit lens through the TransformerBridge: what each layer's residual stream predicts, read with the model's
own final norm and unembedding (``bridge.ln_final``, ``bridge.unembed``) from a ``run_with_cache`` pass."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from .embeddings import token_id

__all__ = ["residual_hook_names", "residual_at", "layer_logits", "logit_lens", "logit_lens_states"]


def residual_hook_names(bridge: Any) -> list[str]:
    """``blocks.{i}.hook_resid_post`` for every layer (the residual stream after each block)."""
    return [f"blocks.{i}.hook_resid_post" for i in range(bridge.cfg.n_layers)]


def _softcap(bridge: Any, logits: torch.Tensor) -> torch.Tensor:
    cap = getattr(bridge.cfg, "output_logits_soft_cap", -1.0) or -1.0
    return logits if cap <= 0 else torch.tanh(logits / cap) * cap


@torch.inference_mode()
def layer_logits(bridge: Any, text: str, position: int = -1) -> torch.Tensor:
    """(n_layers × vocab) logits that each layer's residual stream at ``position`` gives through the final norm
    and the unembedding; the last row equals the model's own logits there."""
    resid = residual_at(bridge, text, position)  # layers × d_model
    return _softcap(bridge, bridge.unembed(bridge.ln_final(resid[:, None, :]))[:, 0, :]).float()


@torch.inference_mode()
def residual_at(bridge: Any, text: str, position: int = -1) -> torch.Tensor:
    """(n_layers × d_model): every layer's ``hook_resid_post`` at ``position`` of ``text``."""
    tokens = bridge.to_tokens(text)
    if not -tokens.shape[1] <= position < tokens.shape[1]:
        raise ValueError(f"position {position} is outside the prompt's {tokens.shape[1]} tokens.")
    names = residual_hook_names(bridge)
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    return torch.stack([cache[n][0, position] for n in names])


def logit_lens(bridge: Any, text: str, targets: Sequence[str | int], position: int = -1) -> pd.DataFrame:
    """Per layer: probability and rank of each target token (a string that is one token, or an id) as the next
    token after ``text`` (at ``position``), read from that layer's residual stream. Columns ``layer``, ``token``,
    ``prob``, ``rank`` (0 = the layer's top prediction) and ``top_token`` (what the layer predicts)."""
    tok = bridge.tokenizer
    ids = [token_id(tok, t) for t in targets]
    logp = torch.log_softmax(layer_logits(bridge, text, position), dim=-1)
    top = logp.argmax(dim=-1)
    rows = []
    for layer in range(logp.shape[0]):
        for t, i in zip(targets, ids):
            rank = int((logp[layer] > logp[layer, i]).sum())
            rows.append({"layer": layer, "token": t if isinstance(t, str) else tok.decode([i]),
                         "prob": float(logp[layer, i].exp()), "rank": rank,
                         "top_token": tok.decode([int(top[layer])])})
    return pd.DataFrame(rows)


def logit_lens_states(bridge: Any, text: str, targets: Sequence[str | int], states: Mapping[str, Any],
                      position: int = -1) -> pd.DataFrame:
    """:func:`logit_lens` of ``text`` under each model state (``None`` = the unedited model), stacked with a
    ``state`` column: where along the layers does the edited model stop predicting a target?"""
    from ..state import applied

    frames = []
    for name, state in states.items():
        with applied(state, bridge):
            frames.append(logit_lens(bridge, text, targets, position).assign(state=name))
    return pd.concat(frames, ignore_index=True)
