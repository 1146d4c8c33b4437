"""Plumbing shared by the scorers: the HF model behind a wrapper, tokenization, inference mode, progress."""
from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch

from ..models import hf_model_of


def _resolve_hf(model: Any) -> Any:
    """The HF causal LM behind ``model``, checked for an attention implementation that takes 4-D masks."""
    hf = hf_model_of(model)
    impl = getattr(hf.config, "_attn_implementation", "eager")
    if impl not in (None, "eager", "sdpa"):
        raise NotImplementedError(f"Packed scoring needs 'eager' or 'sdpa' attention (custom 4-D masks); the model "
                                  f"uses {impl!r}. Load it with attn_implementation='eager'.")
    return hf


def _resolve(model: Any, tokenizer: Any = None) -> tuple[Any, Any]:
    """(HF causal LM, tokenizer); the tokenizer defaults to the bridge's."""
    hf = _resolve_hf(model)
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("No tokenizer: pass tokenizer= when scoring a plain transformers model.")
    return hf, tokenizer


def _body(hf: Any) -> Any:
    return getattr(hf, hf.base_model_prefix)


def _head(hf: Any) -> Any:
    head = getattr(hf, "lm_head", None)
    return head if head is not None else hf.get_output_embeddings()


def _text_config(hf: Any) -> Any:
    cfg = hf.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _device(hf: Any) -> torch.device:
    return next(hf.parameters()).device


@contextlib.contextmanager
def _inference(hf: Any):
    """Eval mode (no dropout, e.g. LoRA dropout) and no grad; restores the previous training flag."""
    was_training = hf.training
    hf.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            hf.train()


def _encode_prompt(tok: Any, text: str) -> list[int]:
    ids = list(tok(text, add_special_tokens=True)["input_ids"])
    bos = getattr(tok, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    if not ids:
        raise ValueError(f"Prompt {text!r} encodes to no tokens and the tokenizer has no <bos>.")
    return ids


def _encode_cont(tok: Any, text: str) -> list[int]:
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError(f"Continuation {text!r} encodes to no tokens (empty option?).")
    return ids


def _progress(iterable: Iterable, progress: bool, total: int | None = None, desc: str | None = None) -> Iterable:
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)

