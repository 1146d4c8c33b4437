"""What the ELM target does on one real sentence: the expert/novice log-likelihood gap per token, and how the
target distribution reweights the frozen model's top next tokens at one position (chapter 5)."""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from ...eval._hf import _encode_cont, _inference, _resolve
from ._positions import context_rows, position_logits
from .prefixes import PrefixPair
from .target import elm_target, eta_schedule

__all__ = ["prefix_logits", "token_gaps", "target_top_tokens", "likelihood_shift"]


def prefix_logits(model: Any, text: str, pair: PrefixPair, concept: str, max_length: int = 64
                  ) -> tuple[Any, list[int], list[torch.Tensor]]:
    """(tokenizer, token ids of ``text``, [logits without a prefix, after the expert prefix, after the novice
    prefix]), each (positions × vocab): the next-token logits at every token of ``text`` under the three contexts."""
    hf, tok = _resolve(model, getattr(model, "tokenizer", None))
    ids = _encode_cont(tok, text)[:max_length]
    out = []
    with _inference(hf):
        for ctx in ([], *(_encode_cont(tok, s) for s in pair.format(concept))):
            out.append(dict(position_logits(hf, context_rows(tok, ctx, [ids])))[0].float())
    return tok, ids, out


def token_gaps(model: Any, text: str, pair: PrefixPair, concept: str, *, eta: float = 20.0, ramp: int = 8,
               temperature: float = 1.2, top_k: int = 50, max_length: int = 64) -> pd.DataFrame:
    """Per token of ``text``: log p under no prefix / the expert / the novice prefix (at T = 1), the gap
    ℓᵉ − ℓⁿ (> 0: the expert expects this token more), η_t, and the probability of the actual token under the
    frozen model (top-k, temperature T) and under the ELM target (0 when it is not among the top-k)."""
    tok, ids, (l0, le, ln) = prefix_logits(model, text, pair, concept, max_length)
    eta_t = eta_schedule(len(ids), eta, ramp)
    idx, q = elm_target(l0, le, ln, eta_t, temperature, top_k)
    p0 = torch.softmax(l0.gather(-1, idx) / temperature, dim=-1)
    lp = [torch.log_softmax(x, dim=-1) for x in (l0, le, ln)]
    rows = []
    for t, token in enumerate(ids):
        hit = (idx[t] == token).nonzero()
        rows.append({"position": t, "token": tok.decode([token]), "logp_plain": float(lp[0][t, token]),
                     "logp_expert": float(lp[1][t, token]), "logp_novice": float(lp[2][t, token]),
                     "gap": float(lp[1][t, token] - lp[2][t, token]), "eta": float(eta_t[t]),
                     "p_frozen_topk": float(p0[t, hit[0, 0]]) if len(hit) else 0.0,
                     "p_target": float(q[t, hit[0, 0]]) if len(hit) else 0.0})
    return pd.DataFrame(rows)


def target_top_tokens(model: Any, text: str, pair: PrefixPair, concept: str, position: int, *, eta: float = 20.0,
                      ramp: int = 8, temperature: float = 1.2, top_k: int = 50, show: int = 8,
                      max_length: int = 64) -> pd.DataFrame:
    """At ``position`` (the prediction of the text's token number ``position``): the ``show`` most likely next
    tokens of the frozen model with their probability (top-k, temperature T), their expert − novice gap and
    their probability under the ELM target, plus the tokens the target favours most."""
    tok, ids, (l0, le, ln) = prefix_logits(model, text, pair, concept, max_length)
    if not 0 <= position < len(ids):
        raise ValueError(f"position {position} is outside the text's {len(ids)} tokens.")
    eta_t = eta_schedule(len(ids), eta, ramp)
    idx, q = elm_target(l0[position:position + 1], le[position:position + 1], ln[position:position + 1],
                        eta_t[position:position + 1], temperature, top_k)
    idx, q = idx[0], q[0]
    p0 = torch.softmax(l0[position, idx] / temperature, dim=-1)
    gap = torch.log_softmax(le[position], -1)[idx] - torch.log_softmax(ln[position], -1)[idx]
    frame = pd.DataFrame({"token": [tok.decode([int(i)]) for i in idx], "p_frozen": p0.numpy(),
                          "gap": gap.numpy(), "p_target": q.numpy()})
    frame["rank_frozen"] = frame["p_frozen"].rank(ascending=False, method="first").astype(int)
    frame["rank_target"] = frame["p_target"].rank(ascending=False, method="first").astype(int)
    keep = (frame["rank_frozen"] <= show) | (frame["rank_target"] <= 3)
    return frame[keep].sort_values("rank_frozen").reset_index(drop=True)


def likelihood_shift(model: Any, state: Any, groups: dict[str, list[str]]) -> pd.DataFrame:
    """Per group of texts: mean per-token log-likelihood under the model as it is and inside ``state`` (a model
    state, applied for the measurement and reverted), and the change. Shows what an erasure did to the text it was
    trained on (e.g. forget sentences) next to held-out concept text and neutral text."""
    from ...eval.likelihood import text_logprobs

    rows = []
    for group, texts in groups.items():
        before = text_logprobs(model, texts)
        with state.applied_to(model):
            after = text_logprobs(model, texts)
        n = before["n_tokens"].sum()
        rows.append({"texts": group, "n_texts": len(texts), "logprob_per_token_before": before["logprob"].sum() / n,
                     "logprob_per_token_after": after["logprob"].sum() / n})
    out = pd.DataFrame(rows)
    out["change"] = out["logprob_per_token_after"] - out["logprob_per_token_before"]
    return out
