"""The ELM target distribution and the soft cross-entropy that trains towards it.

For a forget text x, the frozen model gives log-probs at temperature T at every position that predicts a token
of x: ℓ⁰ (after ``<bos>`` only), ℓᵉ (after the expert prefix) and ℓⁿ (after the novice prefix); the text's
tokens are identical in the three rows, so position t is the same prediction in each. The target keeps the
frozen model's k most likely next tokens (top-k of ℓ⁰) and reweights them,

    s_t = ℓ⁰_t + η_t (ℓⁿ_t − ℓᵉ_t),    q_t = softmax(s_t) over those k tokens,

with η ramped up over the first positions (the first tokens carry little context to classify). The candidates
come from ℓ⁰ rather than from the top-k of s_t: with η in the hundreds the largest s_t are tokens the model never
predicts whose likelihood ratio is noise, and the targets would teach gibberish.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...eval._hf import _encode_cont, _inference, _resolve
from ._positions import context_rows, position_logits
from .prefixes import PrefixPair

__all__ = ["eta_schedule", "elm_target", "soft_cross_entropy", "teacher_targets", "TeacherTargets"]


def eta_schedule(n_positions: int, eta: float, ramp: int = 0) -> torch.Tensor:
    """η_t for t = 0..n−1: linear from η/ramp at t = 0 to η at t = ramp−1, then η (``ramp`` ≤ 1: constant)."""
    if n_positions < 0:
        raise ValueError(f"n_positions must be >= 0, got {n_positions}.")
    t = torch.arange(n_positions, dtype=torch.float32)
    if ramp <= 1:
        return torch.full((n_positions,), float(eta))
    return float(eta) * torch.clamp((t + 1) / ramp, max=1.0)


def elm_target(base_logits: torch.Tensor, expert_logits: torch.Tensor, novice_logits: torch.Tensor,
               eta: torch.Tensor | float, temperature: float = 1.0, top_k: int = 50
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, probs)``, each (positions × k): the candidate tokens (top-k of the frozen model without a
    prefix) and the target distribution q_t over them. The three logit tensors are aligned (positions × vocab)."""
    if not (base_logits.shape == expert_logits.shape == novice_logits.shape) or base_logits.ndim != 2:
        raise ValueError(f"base/expert/novice logits must be aligned (positions × vocab); got "
                         f"{tuple(base_logits.shape)}, {tuple(expert_logits.shape)}, {tuple(novice_logits.shape)}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    k = min(int(top_k), base_logits.shape[-1])
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    eta_t = torch.as_tensor(eta, dtype=torch.float32, device=base_logits.device)
    if eta_t.ndim == 0:
        eta_t = eta_t.expand(base_logits.shape[0])
    if eta_t.shape != (base_logits.shape[0],):
        raise ValueError(f"eta must be a number or one value per position ({base_logits.shape[0]}), got {tuple(eta_t.shape)}.")

    def logprobs_at(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # no full log-softmax tensor
        z = logits.float() / temperature
        return z.gather(-1, idx) - torch.logsumexp(z, dim=-1, keepdim=True)

    idx = base_logits.float().topk(k, dim=-1).indices
    l0, le, ln = (logprobs_at(x, idx) for x in (base_logits, expert_logits, novice_logits))
    s = l0 + eta_t[:, None] * (ln - le)
    return idx, torch.softmax(s, dim=-1)


def soft_cross_entropy(logits: torch.Tensor, indices: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Mean over positions of −Σ_j q_j log p(token_j) for targets given on a few tokens per position (the rest of
    the vocabulary has target 0 but still enters the normalization)."""
    z = logits.float()
    return -(probs * (z.gather(-1, indices) - torch.logsumexp(z, dim=-1, keepdim=True))).sum(-1).mean()


@dataclass
class TeacherTargets:
    """Cached targets for a list of texts: per text its token ids and (indices, probs), each (len × k)."""

    text_ids: list[list[int]]
    indices: list[torch.Tensor]
    probs: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.text_ids)


def teacher_targets(model: Any, texts: Sequence[str], pairs: Sequence[PrefixPair] | None, concept: str, *,
                    eta: float, temperature: float, top_k: int, ramp: int = 0, max_length: int = 64,
                    tokenizer: Any = None, batch_tokens: int = 512) -> TeacherTargets:
    """Targets of the model *as it is now* (call it with the adapter disabled: the frozen teacher).

    With ``pairs``, text i uses pair ``i % len(pairs)`` (several templates) and gets the ELM target; with
    ``pairs=None`` the target is the frozen model's own top-k distribution at ``temperature`` (the retain term).
    """
    hf, tok = _resolve(model, tokenizer)
    texts_ids = [_encode_cont(tok, t)[:max_length] for t in texts]
    n = len(texts_ids)
    chunk = max(1, batch_tokens // max(1, max((len(t) for t in texts_ids), default=1)))
    indices: list[torch.Tensor] = [torch.empty(0)] * n
    probs: list[torch.Tensor] = [torch.empty(0)] * n
    with _inference(hf):
        if pairs is None:
            for i, logits in position_logits(hf, context_rows(tok, [], texts_ids), batch_tokens):
                z = logits.float() / temperature
                top = z.topk(min(top_k, z.shape[-1]), dim=-1)
                indices[i], probs[i] = top.indices.cpu(), torch.softmax(top.values, dim=-1).cpu()
            return TeacherTargets(texts_ids, indices, probs)
        if not pairs:
            raise ValueError("pairs is empty; pass at least one PrefixPair (or None for the retain targets).")
        for p, pair in enumerate(pairs):
            expert, novice = (_encode_cont(tok, s) for s in pair.format(concept))
            mine = [i for i in range(n) if i % len(pairs) == p]
            for c in range(0, len(mine), chunk):  # three contexts' logits of a few texts at a time
                part = mine[c:c + chunk]
                sub = [texts_ids[i] for i in part]
                ctx_logits = [dict(position_logits(hf, context_rows(tok, ctx, sub), batch_tokens))
                              for ctx in ([], expert, novice)]
                for j, i in enumerate(part):
                    idx, q = elm_target(ctx_logits[0][j], ctx_logits[1][j], ctx_logits[2][j],
                                        eta_schedule(len(sub[j]), eta, ramp), temperature, top_k)
                    indices[i], probs[i] = idx.cpu(), q.cpu()
    return TeacherTargets(texts_ids, indices, probs)
