"""Logits at the positions that predict a text's tokens after a context, with the output layer applied only
there (a 262,144-token vocabulary makes the output layer the largest cost; prefix positions never need it)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...eval._hf import _body, _device, _head, _text_config


@dataclass(frozen=True)
class Row:
    """One sequence ``ids`` whose positions ``start .. start+length-1`` predict the ``length`` tokens after them."""

    ids: list[int]
    start: int
    length: int


def context_rows(tok: Any, context_ids: Sequence[int], texts_ids: Sequence[Sequence[int]]) -> list[Row]:
    """``<bos> + context + text`` for every text (token ids concatenated, so the text's tokens are identical
    under every context and positions align exactly); the span predicts the text's tokens."""
    bos = [tok.bos_token_id] if getattr(tok, "bos_token_id", None) is not None else []
    head = bos + list(context_ids)
    if not head:
        raise ValueError("A row needs a <bos> token or a non-empty context before the text.")
    rows = []
    for t in texts_ids:
        if len(t) == 0:
            raise ValueError("Empty text (no tokens) in ELM rows.")
        rows.append(Row(head + list(t), len(head) - 1, len(t)))
    return rows


def continuation_rows(tok: Any, prompts_ids: Sequence[Sequence[int]], conts_ids: Sequence[Sequence[int]]) -> list[Row]:
    """``<bos> + prompt + continuation``; the span predicts the continuation's tokens."""
    bos = [tok.bos_token_id] if getattr(tok, "bos_token_id", None) is not None else []
    return [Row(bos + list(p) + list(c), len(bos) + len(p) - 1, len(c)) for p, c in zip(prompts_ids, conts_ids)]


def _logits(hf: Any, hidden: torch.Tensor) -> torch.Tensor:
    logits = _head(hf)(hidden)
    cap = getattr(_text_config(hf), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def span_logits(hf: Any, rows: Sequence[Row], pad_id: int = 0) -> torch.Tensor:
    """One padded forward of all ``rows``; the logits at their spans, concatenated: (Σ length × vocab)."""
    device = _device(hf)
    L = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r.ids)] = torch.tensor(r.ids)
        att[i, :len(r.ids)] = 1
    hidden = _body(hf)(input_ids=ids.to(device), attention_mask=att.to(device)).last_hidden_state
    picked = torch.cat([hidden[i, r.start:r.start + r.length] for i, r in enumerate(rows)])
    return _logits(hf, picked)


def position_logits(hf: Any, rows: Sequence[Row], batch_tokens: int = 512,
                    pad_id: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """``(row index, logits (length × vocab))`` for every row, in batches of about ``batch_tokens`` tokens."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].ids))
    batch: list[int] = []
    for i in order + [None]:  # type: ignore[list-item]
        if i is not None and (not batch or (len(batch) + 1) * len(rows[batch[0]].ids) <= batch_tokens):
            batch.append(i)
            continue
        if batch:
            logits = span_logits(hf, [rows[j] for j in batch], pad_id)
            offset = 0
            for j in batch:
                yield j, logits[offset:offset + rows[j].length]
                offset += rows[j].length
        batch = [i] if i is not None else []
