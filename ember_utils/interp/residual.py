"""How far an edit moves the residual stream: per layer and position, the distance between the edited and the
unedited model's ``hook_resid_post`` relative to the unedited norm, from two ``run_with_cache`` passes."""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from .logit_lens import residual_hook_names

__all__ = ["residual_difference"]


@torch.inference_mode()
def _resid(bridge: Any, tokens: torch.Tensor) -> torch.Tensor:
    names = ["hook_embed", *residual_hook_names(bridge)]
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    return torch.stack([cache[n][0].float() for n in names])  # (1 + layers) × positions × d_model


def residual_difference(bridge: Any, text: str, state: Any, edited_ids: Any = ()) -> pd.DataFrame:
    """One row per (layer, position): ``relative_change`` = ‖r_edited − r‖ / ‖r‖ of the residual stream
    (layer −1 is ``hook_embed``, the input to block 0; layer i is block i's output), ``token``, and ``edited``
    (the position holds one of ``edited_ids``; default: the ids of the state's embedding edits). Positions
    after an edited token change only through attention, so the table shows how the edit spreads."""
    from ..methods.ember.edit import embedding_edits
    from ..state import applied

    if state is None:
        raise ValueError("residual_difference needs a state to compare with the unedited model (got None).")
    ids = {int(i) for i in edited_ids} or {int(i) for e in embedding_edits(state) for i in e.token_ids.tolist()}
    tokens = bridge.to_tokens(text)
    before = _resid(bridge, tokens)
    with applied(state, bridge):
        after = _resid(bridge, tokens)
    rel = ((after - before).norm(dim=-1) / before.norm(dim=-1).clamp_min(1e-12)).cpu().numpy()
    strs = bridge.to_str_tokens(tokens)
    rows = [{"layer": layer - 1, "position": p, "token": strs[p], "edited": int(tokens[0, p]) in ids,
             "relative_change": float(rel[layer, p])} for layer in range(rel.shape[0]) for p in range(rel.shape[1])]
    return pd.DataFrame(rows)
