"""Model states for tests: a random embedding edit, one that lies about what it touches, and a weight change."""
from __future__ import annotations

from pathlib import Path

import torch

from ember_utils.methods.ember.edit import EmbeddingEdit
from ember_utils.state import ModelState


def noise_edit(bridge, token_ids, scale: float = 3.0, seed: int = 0) -> EmbeddingEdit:
    """An EmbeddingEdit with random directions on ``token_ids`` (a stand-in for an EMBER edit)."""
    gen = torch.Generator().manual_seed(seed)
    d = bridge.W_E.shape[1]
    return EmbeddingEdit(torch.tensor(list(token_ids)), scale * torch.randn(len(token_ids), d, generator=gen))


class LyingEdit(EmbeddingEdit):
    """Edits the rows of ``token_ids`` but declares that it touches only ``declared``."""

    def __init__(self, *args, declared=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.declared = frozenset(int(i) for i in declared)

    @property
    def touched_tokens(self) -> frozenset[int]:
        return self.declared


class MLPWeightNoise(ModelState):
    """Adds noise to one MLP down-projection (a stand-in for a LoRA or RMU state: it may change any output)."""

    def __init__(self, layer: int = 0, scale: float = 0.5, seed: int = 0):
        self.layer, self.scale, self.seed = layer, scale, seed
        self._saved = None

    def _weight(self, model):
        from ember_utils.models import hf_model_of

        return hf_model_of(model).model.layers[self.layer].mlp.down_proj.weight

    def _apply(self, model) -> None:
        W = self._weight(model)
        gen = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            self._saved = W.detach().clone()
            W += self.scale * torch.randn(W.shape, generator=gen)

    def _revert(self, model) -> None:
        with torch.no_grad():
            self._weight(model).copy_(self._saved)
        self._saved = None

    @property
    def touched_tokens(self):
        return None

    def save(self, path) -> Path:
        path = Path(path)
        torch.save({"layer": self.layer, "scale": self.scale, "seed": self.seed}, path)
        return path

    @classmethod
    def load(cls, path) -> "MLPWeightNoise":
        return cls(**torch.load(path))
