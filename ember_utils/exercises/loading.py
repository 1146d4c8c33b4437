"""Chapter 1 exercises: read the bridge's hooks by hand — the embedding activation and a logit lens."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._check import call, compare, passed

__all__ = ["check_embed_activation", "check_layer_logits"]


@torch.inference_mode()
def check_embed_activation(fn: Callable[[Any, torch.Tensor], Any], bridge: Any,
                           text: str = "Harry Potter went back to Hogwarts") -> bool:
    """``fn(bridge, tokens)`` → the (positions × d_model) activation at ``hook_embed`` for a (1 × positions)
    token tensor, computed from ``bridge.W_E`` without running the model; compared with the cached hook."""
    name = "embedding activation"
    tokens = bridge.to_tokens(text)
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n == "hook_embed")
    expected = cache["hook_embed"][0].float()
    rows = bridge.W_E[tokens[0]].float()
    got = call(fn, name, bridge, tokens)
    compare(name, "the activation", got, expected, atol=1e-3, rtol=1e-3,
            mistakes={"take the rows of W_E without the model's input scaling (Gemma multiplies by √d_model)": rows,
                      "divide by √d_model instead of multiplying": rows / bridge.cfg.d_model ** 0.5})
    return passed(name, f"{tokens.shape[1]} positions match hook_embed")


@torch.inference_mode()
def check_layer_logits(fn: Callable[[Any, str], Any], bridge: Any, text: str = "Harry Potter went back to") -> bool:
    """``fn(bridge, text)`` → (n_layers × vocab) logits that each layer's residual stream (``hook_resid_post``)
    at the last position gives through the final norm and the unembedding; compared with
    :func:`ember_utils.interp.logit_lens.layer_logits`."""
    from ..interp.logit_lens import _softcap, layer_logits, residual_at

    name = "logit lens"
    expected = layer_logits(bridge, text)
    resid = residual_at(bridge, text)[:, None, :]
    no_norm = _softcap(bridge, bridge.unembed(resid)[:, 0, :]).float()
    no_cap = bridge.unembed(bridge.ln_final(resid))[:, 0, :].float()
    got = call(fn, name, bridge, text)
    mistakes = {"skip the final norm (ln_final) before the unembedding": no_norm}
    if getattr(bridge.cfg, "output_logits_soft_cap", -1.0) and bridge.cfg.output_logits_soft_cap > 0:
        mistakes["leave out the output soft-cap (tanh(logits / cap) · cap)"] = no_cap
    compare(name, "the layer logits", got, expected, atol=2e-3, rtol=2e-3, mistakes=mistakes)
    return passed(name, f"{expected.shape[0]} layers; the last one equals the model's own logits")
