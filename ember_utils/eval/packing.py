"""Packed scoring of continuations that share a prefix (the fast multiple-choice scorer).

The 262k-token output layer is most of the cost of the default model, and the question is shared by its
4 options. :func:`branch_logprobs` therefore packs each question with its options into one sequence::

    <bos> Question: ... Answer: | option-1 tokens[:-1] | option-2 tokens[:-1] | ...

with a custom 4-D attention mask (each option attends to the question and causally to itself, never to
another option) and position ids that restart after the question for every option. Several questions
are packed into one row (block-diagonal mask) to avoid padding. The transformer body runs once; the
unembedding and log-softmax run only at the scored positions: the last question token (which predicts
the *first* token of all 4 options at once) and each option token but the last. Sliding-window layers
get the window applied on the position ids, so the result equals a plain forward of
``question + option`` (checked to 1e-4 against :func:`score_mc_naive`, the reference implementation).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._hf import _body, _device, _head, _inference, _progress, _resolve_hf, _text_config


@dataclass
class _Row:
    items: list[int] = field(default_factory=list)
    length: int = 0


def _item_length(prefix: Sequence[int], branches: Sequence[Sequence[int]]) -> int:
    return len(prefix) + sum(len(b) - 1 for b in branches)


def _pack_rows(lengths: list[int], max_row_tokens: int) -> list[_Row]:
    """First-fit decreasing packing of items into rows of at most ``max_row_tokens`` (an item longer than
    that gets a row of its own)."""
    rows: list[_Row] = []
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        for row in rows:
            if row.length + lengths[i] <= max_row_tokens:
                row.items.append(i)
                row.length += lengths[i]
                break
        else:
            rows.append(_Row([i], lengths[i]))
    return rows


def _batches(rows: list[_Row], batch_tokens: int) -> list[list[_Row]]:
    rows = sorted(rows, key=lambda r: -r.length)
    out: list[list[_Row]] = []
    for row in rows:
        if out and (len(out[-1]) + 1) * out[-1][0].length <= batch_tokens:
            out[-1].append(row)
        else:
            out.append([row])
    return out


def _mask_arg(hf: Any, seg: torch.Tensor, br: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor,
              dtype: torch.dtype) -> Any:
    """Additive 4-D masks for the packed layout (a dict per layer type when the model has several)."""
    same = seg[:, :, None] == seg[:, None, :]
    causal = pos[:, None, :] <= pos[:, :, None]
    kb, qb = br[:, None, :], br[:, :, None]
    allowed = same & causal & ((kb == -1) | (kb == qb)) & valid[:, None, :] & valid[:, :, None]
    eye = torch.eye(seg.shape[1], dtype=torch.bool, device=seg.device)[None]
    allowed = allowed | (eye & ~valid[:, :, None])  # padding attends to itself only (no empty softmax rows)
    neg = torch.finfo(dtype).min

    def additive(ok: torch.Tensor) -> torch.Tensor:
        m = torch.zeros(ok.shape, dtype=dtype, device=ok.device)
        return m.masked_fill_(~ok, neg)[:, None]

    cfg = _text_config(hf)
    layer_types = getattr(cfg, "layer_types", None)
    window = getattr(cfg, "sliding_window", None)
    full = additive(allowed)
    if not layer_types:
        return full
    out = {}
    for lt in set(layer_types):
        if lt == "sliding_attention" and window:
            near = (pos[:, :, None] - pos[:, None, :]) < window
            out[lt] = additive(allowed & (near | (eye & ~valid[:, :, None])))
        else:
            out[lt] = full
    return out


def branch_logprobs(
    model: Any,
    items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    *,
    max_row_tokens: int = 512,
    batch_tokens: int = 2048,
    head_chunk: int = 256,
    progress: bool = False,
) -> list[list[np.ndarray]]:
    """Per-token log-probabilities of continuations ("branches") that share a prefix.

    Args:
        model: TransformerBridge or HF causal LM (only its body and output head are used).
        items: ``(prefix_ids, [branch_ids, ...])`` pairs; every prefix and branch must be non-empty. The
            prefix should start with ``<bos>`` when the model expects one.
        max_row_tokens: items are packed into rows of at most this many tokens.
        batch_tokens: rows are batched so that ``n_rows × row_length`` stays below this.
        head_chunk: positions per output-layer call (bounds the ``chunk × vocab`` logits buffer).

    Returns:
        ``out[i][b]`` = float64 array of log p(branch_b token t | prefix, branch_b tokens < t) for item i.
        Equal (to float32 rounding) to running a full forward of ``prefix + branch`` for every branch.
    """
    hf = _resolve_hf(model)
    for k, (prefix, branches) in enumerate(items):
        if len(prefix) == 0:
            raise ValueError(f"Item {k}: empty prefix (prepend <bos>).")
        if len(branches) == 0 or any(len(b) == 0 for b in branches):
            raise ValueError(f"Item {k}: every item needs at least one non-empty branch.")
    if max_row_tokens < 1 or batch_tokens < 1 or head_chunk < 1:
        raise ValueError("max_row_tokens, batch_tokens and head_chunk must be positive.")
    out: list[list[np.ndarray]] = [[np.zeros(len(b)) for b in branches] for _, branches in items]
    if not items:
        return out
    lengths = [_item_length(p, b) for p, b in items]
    batches = _batches(_pack_rows(lengths, max_row_tokens), batch_tokens)
    device = _device(hf)
    dtype = next(hf.parameters()).dtype
    pad_id = getattr(getattr(hf, "config", None), "pad_token_id", None) or 0
    cfg = _text_config(hf)
    softcap = getattr(cfg, "final_logit_softcapping", None)
    body, head = _body(hf), _head(hf)
    with _inference(hf):
        for batch in _progress(batches, progress, desc="scoring"):
            L = max(r.length for r in batch)
            B = len(batch)
            ids = np.full((B, L), pad_id, dtype=np.int64)
            pos = np.zeros((B, L), dtype=np.int64)
            seg = np.full((B, L), -1, dtype=np.int64)
            br = np.full((B, L), -2, dtype=np.int64)
            head_pos: list[int] = []          # flat index (row * L + col) of each scored position
            tgt_h: list[int] = []             # index into head_pos
            tgt_tok: list[int] = []
            tgt_dst: list[tuple[int, int, int]] = []  # (item, branch, token index)
            for r, row in enumerate(batch):
                col = 0
                for s, i in enumerate(row.items):
                    prefix, branches = items[i]
                    P = len(prefix)
                    ids[r, col:col + P] = prefix
                    pos[r, col:col + P] = np.arange(P)
                    seg[r, col:col + P] = s
                    br[r, col:col + P] = -1
                    h_last = len(head_pos)
                    head_pos.append(r * L + col + P - 1)
                    col += P
                    for b, toks in enumerate(branches):
                        tgt_h.append(h_last)
                        tgt_tok.append(toks[0])
                        tgt_dst.append((i, b, 0))
                        n_in = len(toks) - 1
                        if n_in:
                            ids[r, col:col + n_in] = toks[:-1]
                            pos[r, col:col + n_in] = np.arange(P, P + n_in)
                            seg[r, col:col + n_in] = s
                            br[r, col:col + n_in] = b
                            for j in range(n_in):
                                tgt_h.append(len(head_pos))
                                head_pos.append(r * L + col + j)
                                tgt_tok.append(toks[j + 1])
                                tgt_dst.append((i, b, j + 1))
                            col += n_in
            t_ids = torch.from_numpy(ids).to(device)
            t_pos = torch.from_numpy(pos).to(device)
            t_seg = torch.from_numpy(seg).to(device)
            t_br = torch.from_numpy(br).to(device)
            valid = t_seg >= 0
            mask = _mask_arg(hf, t_seg, t_br, t_pos, valid, dtype)
            hidden = body(input_ids=t_ids, attention_mask=mask, position_ids=t_pos, use_cache=False).last_hidden_state
            hidden = hidden.reshape(B * L, -1)[torch.tensor(head_pos, device=device)]
            th = np.asarray(tgt_h)
            tt = torch.tensor(tgt_tok, device=device)
            vals = np.empty(len(tgt_h))
            for start in range(0, len(head_pos), head_chunk):
                stop = min(start + head_chunk, len(head_pos))
                logits = head(hidden[start:stop]).float()
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                logp = torch.log_softmax(logits, dim=-1)
                sel = np.nonzero((th >= start) & (th < stop))[0]
                if len(sel):
                    sel_t = torch.from_numpy(sel).to(device)
                    rows = torch.from_numpy(th[sel] - start).to(device)
                    vals[sel] = logp[rows, tt[sel_t]].double().cpu().numpy()
            for v, (i, b, j) in zip(vals, tgt_dst):
                out[i][b][j] = v
    return out

