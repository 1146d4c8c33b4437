"""Guided continuations for ELM's fluency term, generated once by the frozen model.

Each forget text is followed by a deflecting sentence; the frozen model continues it greedily while being
steered away from the expert: at every step the next-token scores are ℓ⁰ + η (ℓⁿ − ℓᵉ) over the top-k of ℓ⁰,
computed from three rows that share the generated tokens (no prefix, expert prefix, novice prefix). The student
later learns to produce these continuations after the text, so it stays fluent where it no longer knows.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ...eval._hf import _device, _encode_cont, _inference, _resolve
from ...eval.generation import _eos_ids
from .prefixes import PrefixPair

__all__ = ["DEFLECTIONS", "guided_continuations"]

#: sentences appended to a forget text before the guided continuation (one per text, in turn)
DEFLECTIONS: tuple[str, ...] = (
    " Honestly, I am not sure about any of this.",
    " I don't really know much about that.",
    " That is all I can say about it, and I may be wrong.",
)


class _GuidedScores:
    """LogitsProcessor over groups of three rows (plain, expert, novice): every row of a group gets the same
    guided scores, so greedy decoding appends the same token to all three."""

    def __init__(self, eta: float, top_k: int, temperature: float) -> None:
        self.eta, self.top_k, self.temperature = eta, top_k, temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        z = torch.log_softmax(scores.float() / self.temperature, dim=-1).view(-1, 3, scores.shape[-1])
        l0, le, ln = z[:, 0], z[:, 1], z[:, 2]
        idx = l0.topk(min(self.top_k, l0.shape[-1]), dim=-1).indices
        guided = torch.full_like(l0, float("-inf"))
        guided.scatter_(-1, idx, l0.gather(-1, idx) + self.eta * (ln.gather(-1, idx) - le.gather(-1, idx)))
        return guided[:, None, :].expand(-1, 3, -1).reshape(scores.shape).to(scores.dtype)


def guided_continuations(model: Any, texts: Sequence[str], pairs: Sequence[PrefixPair], concept: str, *,
                         eta: float, max_new_tokens: int = 16, top_k: int = 50, temperature: float = 1.0,
                         deflections: Sequence[str] = DEFLECTIONS, max_length: int = 64, batch_size: int = 8,
                         tokenizer: Any = None) -> tuple[list[list[int]], list[list[int]]]:
    """``(prompt_ids, continuation_ids)`` per text: the prompt is ``text + deflection`` (token ids, no ``<bos>``),
    the continuation the guided greedy tokens (cut after an end-of-sequence token). Text i uses pair
    ``i % len(pairs)`` and deflection ``i % len(deflections)``. Run it on the frozen model."""
    from transformers import GenerationConfig, LogitsProcessorList

    hf, tok = _resolve(model, tokenizer)
    if not pairs or not deflections:
        raise ValueError("guided_continuations needs at least one prefix pair and one deflecting sentence.")
    eos = _eos_ids(hf, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    prompts = [_encode_cont(tok, t)[:max_length] + _encode_cont(tok, deflections[i % len(deflections)])
               for i, t in enumerate(texts)]
    conts: list[list[int]] = [[] for _ in texts]
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos or None)
    processor = LogitsProcessorList([_GuidedScores(eta, top_k, temperature)])
    device = _device(hf)
    with _inference(hf):
        for start in range(0, len(prompts), batch_size):
            group = list(range(start, min(start + batch_size, len(prompts))))
            rows = []
            for i in group:
                expert, novice = (_encode_cont(tok, s) for s in pairs[i % len(pairs)].format(concept))
                rows += [bos + prompts[i], bos + expert + prompts[i], bos + novice + prompts[i]]
            L = max(len(r) for r in rows)
            ids = torch.full((len(rows), L), pad, dtype=torch.long)
            att = torch.zeros((len(rows), L), dtype=torch.long)
            for r, seq in enumerate(rows):  # left padding: the next token comes right after every row
                ids[r, L - len(seq):] = torch.tensor(seq)
                att[r, L - len(seq):] = 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = hf.generate(input_ids=ids.to(device), attention_mask=att.to(device), generation_config=cfg,
                                  logits_processor=processor)
            for g, i in enumerate(group):
                cut = []
                for t in out[3 * g, L:].tolist():
                    cut.append(t)
                    if t in eos:
                        break
                conts[i] = cut
    return prompts, conts
