"""Attention to the edited tokens: per layer and head, the attention weight that one query position (default:
the last) puts on positions holding an edited id."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import torch

__all__ = ["attention_patterns", "attention_to_tokens"]


@torch.inference_mode()
def attention_patterns(bridge: Any, text: str, state: Any = None) -> torch.Tensor:
    """(layers × heads × query × key) attention patterns of ``text`` (``blocks.{i}.attn.hook_pattern``) under
    ``state`` (None: the unedited model)."""
    from ..state import applied

    names = [f"blocks.{i}.attn.hook_pattern" for i in range(bridge.cfg.n_layers)]
    with applied(state, bridge):
        _, cache = bridge.run_with_cache(bridge.to_tokens(text), names_filter=lambda n: n in names)
    return torch.stack([cache[n][0].float() for n in names])


def attention_to_tokens(bridge: Any, text: str, token_ids: Iterable[int], state: Any = None,
                        query: int = -1) -> pd.DataFrame:
    """Per (layer, head): ``attention`` = the weight the ``query`` position puts on all key positions holding one
    of ``token_ids`` (0 when the text holds none), and ``max_elsewhere`` = its largest weight on any other
    key — is the edited token read, and by whom? (``viz.widgets.attention_view`` draws one layer's patterns.)"""
    ids = {int(i) for i in token_ids}
    tokens = bridge.to_tokens(text)
    mask = torch.tensor([int(t) in ids for t in tokens[0]])
    if not -tokens.shape[1] <= query < tokens.shape[1]:
        raise ValueError(f"query {query} is outside the text's {tokens.shape[1]} positions.")
    pat = attention_patterns(bridge, text, state)[:, :, query, :]  # layers × heads × key
    on = pat[:, :, mask].sum(-1)
    off = pat[:, :, ~mask].amax(-1) if (~mask).any() else torch.zeros_like(on)
    rows = [{"layer": layer, "head": h, "attention": float(on[layer, h]), "max_elsewhere": float(off[layer, h])}
            for layer in range(pat.shape[0]) for h in range(pat.shape[1])]
    return pd.DataFrame(rows)

