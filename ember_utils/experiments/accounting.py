"""Token accounting for one stage of an experiment: how many tokens went through the model's input embedding in
forward passes with gradients enabled (training) and without (evaluation, teacher passes, generation).

With a measured fine-tune rate and forward rate these counts give a stage's compute floor on a machine (see
``benchmarks/bench_experiment_stages.py``): time ÷ floor says how much of a stage is not the arithmetic.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..models import hf_model_of

__all__ = ["TokenCount", "count_tokens"]


@dataclass
class TokenCount:
    """Tokens embedded in forward passes with gradients (``trained``) and without (``forward``), and the number of
    forward calls."""

    trained: int = 0
    forward: int = 0
    calls: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@contextlib.contextmanager
def count_tokens(model: Any) -> Iterator[TokenCount]:
    """Count, while the block runs, every token that enters ``model``'s input embedding (the bridge's or the HF
    model's: every forward of the language model goes through it, generation steps included)."""
    embedding = hf_model_of(model).get_input_embeddings()
    count = TokenCount()

    def hook(module: Any, args: tuple, output: Any) -> None:
        ids = args[0] if args else None
        n = int(ids.numel()) if torch.is_tensor(ids) else int(output.shape[:-1].numel())
        if torch.is_grad_enabled():
            count.trained += n
        else:
            count.forward += n
        count.calls += 1

    handle = embedding.register_forward_hook(hook)
    try:
        yield count
    finally:
        handle.remove()
