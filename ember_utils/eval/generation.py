"""Batched greedy generation (optionally with n-gram blocking)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ._hf import _device, _encode_prompt, _inference, _progress, _resolve


def _eos_ids(hf: Any, tok: Any) -> list[int]:
    ids = set()
    for src in (getattr(tok, "eos_token_id", None), getattr(getattr(hf, "generation_config", None), "eos_token_id", None)):
        if src is None:
            continue
        ids.update([src] if isinstance(src, int) else list(src))
    return sorted(ids)


def generate_greedy(model: Any, prompts: Sequence[str], *, tokenizer: Any = None, max_new_tokens: int = 16,
                    batch_size: int = 16, no_repeat_ngram_size: int = 0,
                    progress: bool = False) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy continuations of ``prompts`` (batched, left-padded, KV cache). ``no_repeat_ngram_size`` > 0
    forbids repeating any n-gram of the prompt + continuation (still deterministic).

    Returns ``(prompt_ids, new_ids)``: the tokenized prompts (with ``<bos>``) and, per prompt, the
    generated token ids, cut after the first end-of-sequence token (which is kept).
    """
    from transformers import GenerationConfig

    hf, tok = _resolve(model, tokenizer)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}.")
    device = _device(hf)
    eos = _eos_ids(hf, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                               eos_token_id=eos or None, no_repeat_ngram_size=int(no_repeat_ngram_size))
    prompt_ids = [_encode_prompt(tok, p) for p in prompts]
    new_ids: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompt_ids[i]))  # similar lengths → little padding
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    with _inference(hf):
        for chunk in _progress(chunks, progress, desc="generate"):
            L = max(len(prompt_ids[i]) for i in chunk)
            ids = torch.full((len(chunk), L), pad_id, dtype=torch.long)
            att = torch.zeros((len(chunk), L), dtype=torch.long)
            for r, i in enumerate(chunk):
                p = prompt_ids[i]
                ids[r, L - len(p):] = torch.tensor(p)
                att[r, L - len(p):] = 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = hf.generate(input_ids=ids.to(device), attention_mask=att.to(device), generation_config=gen_cfg)
            for r, i in enumerate(chunk):
                seq = out[r, L:].tolist()
                cut = []
                for t in seq:
                    cut.append(t)
                    if t in eos:
                        break
                new_ids[i] = cut
    return prompt_ids, new_ids

