"""A set of replaced weight matrices as a reversible model state (what RMU and full fine-tuning produce)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_bytes, read_safetensors
from ..models import hf_model_of
from ..state import ALL_TOKENS, ModelState, StateError
from .lora import canonical_name

__all__ = ["WeightPatch", "named_parameters_plain"]

_FORMAT = "ember-weights-v1"


def named_parameters_plain(model: Any) -> dict[str, torch.nn.Parameter]:
    """The HF model's parameters under plain HF names (the bridge's wrapper segments removed)."""
    return {canonical_name(n): p for n, p in hf_model_of(model).named_parameters()}


@dataclass(eq=False)
class WeightPatch(ModelState):
    """New values for some parameters (plain HF names → tensors). ``apply`` keeps the originals, so
    ``revert`` is bit-exact."""

    weights: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)
    _saved: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError("WeightPatch needs at least one parameter.")
        self.weights = {k: v.detach().cpu().clone() for k, v in self.weights.items()}

    @property
    def touched_tokens(self) -> None:
        return ALL_TOKENS

    def _params(self, model: Any) -> dict[str, torch.nn.Parameter]:
        params = named_parameters_plain(model)
        missing = sorted(set(self.weights) - set(params))
        if missing:
            raise StateError(f"WeightPatch names parameters the model does not have: {missing[:3]}.")
        for name, w in self.weights.items():
            if tuple(w.shape) != tuple(params[name].shape):
                raise StateError(f"{name}: patch shape {tuple(w.shape)} vs model {tuple(params[name].shape)}.")
        return params

    def _apply(self, model: Any) -> None:
        params = self._params(model)
        with torch.no_grad():
            self._saved = {n: params[n].detach().clone() for n in self.weights}
            for n, w in self.weights.items():
                params[n].copy_(w.to(params[n].device, params[n].dtype))

    def _revert(self, model: Any) -> None:
        params = self._params(model)
        with torch.no_grad():
            for n, w in self._saved.items():
                params[n].copy_(w)
        self._saved = {}

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save

        header = {"format": _FORMAT, "meta": json.dumps(self.meta, default=str)}
        return atomic_write_bytes(path, save({k: v.contiguous() for k, v in self.weights.items()}, metadata=header))

    @classmethod
    def load(cls, path: str | Path) -> "WeightPatch":
        header, weights = read_safetensors(path, "weight patch")
        if header.get("format") != _FORMAT:
            raise ValueError(f"{path} is not an {_FORMAT} file (format={header.get('format')!r}).")
        return cls(weights, json.loads(header.get("meta", "{}")))
