"""A LoRA adapter (``peft``) as a reversible model state, injected in place into a booted TransformerBridge.

TransformerLens 4.x wraps every HF submodule of the booted model (``q_proj`` becomes a ``LinearBridge`` whose
``_original_component`` is the ``nn.Linear``). peft cannot adapt a ``LinearBridge``, so the adapter targets the
wrapped ``nn.Linear`` itself: the bridge's forward, hooks and ``run_with_cache`` then run through the adapter,
and so does the HF model the evaluator scores with (they share the modules). On a plain HF model the same
adapter targets the usual ``model.layers.N.self_attn.q_proj`` paths. Saved weights use those plain names, so a
file written from a bridge loads into either.

Applying injects the adapter (base weights untouched); reverting removes it and puts the original ``nn.Linear``
modules back, so the model is bit-exactly what it was. ``merged=True`` folds the update into the base weights
for inference (originals kept for an exact revert).
"""
from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..eval._hf import _text_config
from ..io import atomic_write_bytes, read_safetensors
from ..models import hf_model_of
from ..state import ALL_TOKENS, ModelState, StateError

__all__ = ["LoraSpec", "LoraAdapter", "ATTENTION_AND_MLP", "canonical_name"]

_FORMAT = "ember-lora-v1"
_ADAPTER = "ember"
_WRAP = "._original_component"

#: every attention and MLP projection of the Gemma / Llama decoder layers
ATTENTION_AND_MLP: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def canonical_name(module_name: str) -> str:
    """A module path with the bridge's ``._original_component`` wrappers removed (the plain HF name)."""
    return module_name.replace(_WRAP, "")


@dataclass(frozen=True)
class LoraSpec:
    """Where the adapter goes and its size: ``rank``, ``alpha`` (scale alpha/rank), ``dropout`` (training only),
    decoder ``layers`` and projection ``modules``."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    layers: tuple[int, ...] = (4, 5, 6, 7)
    modules: tuple[str, ...] = ATTENTION_AND_MLP

    def __post_init__(self) -> None:
        if int(self.rank) < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank!r}.")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}.")
        if not self.layers:
            raise ValueError("LoRA needs at least one layer.")
        unknown = sorted(set(self.modules) - set(ATTENTION_AND_MLP))
        if unknown or not self.modules:
            raise ValueError(f"Unknown LoRA target modules {unknown or list(self.modules)}; use some of "
                             f"{list(ATTENTION_AND_MLP)}.")
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        object.__setattr__(self, "modules", tuple(self.modules))

    def target_regex(self, wrapped: bool) -> str:
        """peft ``target_modules`` regex (full match) for a bridge-wrapped or a plain HF module tree."""
        w = re.escape(_WRAP) if wrapped else ""
        layers = "|".join(str(i) for i in self.layers)
        mods = "|".join(self.modules)
        return rf"(.*\.)?layers\.({layers}){w}\.(self_attn|mlp){w}\.({mods}){w}"


@dataclass(eq=False)
class LoraAdapter(ModelState):
    """LoRA adapter weights + their :class:`LoraSpec`, applied through ``peft``.

    ``weights`` maps plain HF parameter names (``model.layers.4.self_attn.q_proj.lora_A.weight``) to tensors;
    ``None`` gives peft's initialization (B = 0, so the adapted model starts equal to the base model), seeded by
    ``seed``. While applied, :meth:`parameters` are the live trainable tensors; :meth:`revert` copies them back
    into ``weights`` first, so a trained adapter can be reverted, saved and applied again.
    """

    spec: LoraSpec = field(default_factory=LoraSpec)
    weights: dict[str, torch.Tensor] | None = None
    seed: int = 0
    merged: bool = False
    meta: dict = field(default_factory=dict)
    _layers: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _saved_base: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    @property
    def touched_tokens(self) -> None:
        return ALL_TOKENS

    # ------------------------------------------------------------------ apply / revert
    def _apply(self, model: Any) -> None:
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        hf = hf_model_of(model)
        if any(isinstance(m, LoraLayer) for m in hf.modules()) or "peft_config" in vars(hf):
            raise StateError("The model already carries LoRA layers; revert the other adapter first.")
        n_layers = _text_config(hf).num_hidden_layers
        bad = [i for i in self.spec.layers if not 0 <= i < n_layers]
        if bad:
            raise StateError(f"LoRA layers {bad} do not exist: the model has layers 0..{n_layers - 1}.")
        wrapped = any(n.endswith(_WRAP.lstrip(".")) for n, _ in hf.named_modules())
        self._grad_flags = {n: p.requires_grad for n, p in hf.named_parameters()}  # peft freezes the base
        cfg = LoraConfig(r=int(self.spec.rank), lora_alpha=float(self.spec.alpha), lora_dropout=float(self.spec.dropout),
                         target_modules=self.spec.target_regex(wrapped), bias="none")
        gen = torch.random.fork_rng(devices=[])
        with gen:
            torch.manual_seed(self.seed)
            inject_adapter_in_model(cfg, hf, adapter_name=_ADAPTER)
        self._layers = {canonical_name(n): m for n, m in hf.named_modules() if isinstance(m, LoraLayer)}
        try:
            expected = len(self.spec.layers) * len(self.spec.modules)
            if len(self._layers) != expected:
                raise StateError(f"LoRA found {len(self._layers)} target modules, expected {expected} "
                                 f"({len(self.spec.layers)} layers × {list(self.spec.modules)}).")
            if self.weights is not None:
                self._load_weights(self.weights)
            for layer in self._layers.values():
                for p in _adapter_params(layer):
                    p.requires_grad_(True)
                layer.lora_dropout[_ADAPTER].eval()
            if self.merged:
                for name, layer in self._layers.items():
                    self._saved_base[name] = layer.get_base_layer().weight.detach().clone()
                    layer.merge(adapter_names=[_ADAPTER])
        except Exception:
            self._unload(hf)
            raise

    def _load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        expected = {f"{n}.{ab}.weight" for n in self._layers for ab in ("lora_A", "lora_B")}
        if set(weights) != expected:
            missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
            raise StateError(f"Adapter weights do not fit this spec/model: missing {missing[:3]}, extra {extra[:3]}.")
        with torch.no_grad():
            for name, layer in self._layers.items():
                for ab in ("lora_A", "lora_B"):
                    param = getattr(layer, ab)[_ADAPTER].weight
                    w = weights[f"{name}.{ab}.weight"]
                    if w.shape != param.shape:
                        raise StateError(f"{name}.{ab}: saved shape {tuple(w.shape)} vs model {tuple(param.shape)}.")
                    param.copy_(w.to(param.device, param.dtype))

    def _revert(self, model: Any) -> None:
        hf = hf_model_of(model)
        self.weights = self.current_weights()
        if self.merged:
            with torch.no_grad():
                for name, layer in self._layers.items():
                    layer.get_base_layer().weight.copy_(self._saved_base[name])
            self._saved_base = {}
        self._unload(hf)

    def _unload(self, hf: Any) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in list(hf.named_modules()):
            if isinstance(module, BaseTunerLayer):
                parent_name, _, child = name.rpartition(".")
                setattr(hf.get_submodule(parent_name) if parent_name else hf, child, module.get_base_layer())
        flags = getattr(self, "_grad_flags", {})
        for n, p in hf.named_parameters():
            if n in flags:
                p.requires_grad_(flags[n])
        self._layers, self._grad_flags = {}, {}
        if "peft_config" in vars(hf):  # peft's bookkeeping on the model; without it a later inject warns
            del hf.peft_config

    # ------------------------------------------------------------------ while applied
    def _require_applied(self) -> None:
        if not self.applied:
            raise StateError("The LoRA adapter is not applied; apply it to a model first.")

    def parameters(self) -> list[torch.nn.Parameter]:
        """The adapter's trainable tensors (A and B of every target module), in a fixed order."""
        self._require_applied()
        return [p for _, layer in sorted(self._layers.items()) for p in _adapter_params(layer)]

    def current_weights(self) -> dict[str, torch.Tensor]:
        """A detached copy of the live adapter weights (plain HF names)."""
        self._require_applied()
        return {f"{name}.{ab}.weight": getattr(layer, ab)[_ADAPTER].weight.detach().cpu().clone()
                for name, layer in sorted(self._layers.items()) for ab in ("lora_A", "lora_B")}

    @contextlib.contextmanager
    def disabled(self) -> Iterator["LoraAdapter"]:
        """The base model (adapter switched off, weights kept) inside the block: the frozen teacher."""
        self._require_applied()
        if self.merged:
            raise StateError("A merged adapter cannot be disabled; apply it with merged=False.")
        for layer in self._layers.values():
            layer.enable_adapters(False)
        try:
            yield self
        finally:
            for layer in self._layers.values():
                layer.enable_adapters(True)

    @contextlib.contextmanager
    def training(self) -> Iterator["LoraAdapter"]:
        """LoRA dropout on inside the block (the base model stays in eval mode)."""
        self._require_applied()
        for layer in self._layers.values():
            layer.lora_dropout[_ADAPTER].train()
        try:
            yield self
        finally:
            for layer in self._layers.values():
                layer.lora_dropout[_ADAPTER].eval()

    def n_parameters(self) -> int:
        w = self.current_weights() if self.applied else (self.weights or {})
        return int(sum(t.numel() for t in w.values()))

    def as_weight_patch(self, model: Any) -> Any:
        """The adapter folded into plain weights (W + (alpha/rank)·B·A for every target, read from ``model`` as it
        is now) as a :class:`~ember_utils.methods.weight_patch.WeightPatch`: what an attack that injects its own
        LoRA, or fine-tunes every weight, starts from. The adapter must not be applied."""
        from .weight_patch import WeightPatch, named_parameters_plain

        if self.applied:
            raise StateError("Revert the adapter before folding it into a weight patch.")
        if self.weights is None:
            raise StateError("The adapter has no weights yet (train or load it first).")
        params, scale = named_parameters_plain(model), float(self.spec.alpha) / int(self.spec.rank)
        out = {}
        for key in sorted(k for k in self.weights if k.endswith(".lora_A.weight")):
            base = key[: -len(".lora_A.weight")]
            if f"{base}.weight" not in params:
                raise StateError(f"The model has no {base}.weight for this adapter.")
            A, B = self.weights[key].float(), self.weights[f"{base}.lora_B.weight"].float()
            W = params[f"{base}.weight"].detach()
            out[f"{base}.weight"] = (W.float().cpu() + scale * (B @ A)).to(W.dtype)
        return WeightPatch(out, meta={**self.meta, "folded_from": "LoraAdapter"})

    # ------------------------------------------------------------------ serialization
    def save(self, path: str | Path) -> Path:
        """safetensors file: the weights under plain HF names, the spec and metadata in its header."""
        from safetensors.torch import save

        weights = self.current_weights() if self.applied else self.weights
        if weights is None:
            raise StateError("Nothing to save: the adapter has no weights yet (apply it, or train it).")
        header = {"format": _FORMAT, "spec": json.dumps(asdict(self.spec)), "seed": str(self.seed),
                  "meta": json.dumps(self.meta, default=str)}
        return atomic_write_bytes(path, save({k: v.contiguous() for k, v in weights.items()}, metadata=header))

    @classmethod
    def load(cls, path: str | Path, merged: bool = False) -> "LoraAdapter":
        header, weights = read_safetensors(path, "LoRA adapter file")
        if header.get("format") != _FORMAT:
            raise ValueError(f"{path} is not an {_FORMAT} file (format={header.get('format')!r}).")
        spec = json.loads(header["spec"])
        spec = LoraSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
        return cls(spec, weights, int(header.get("seed", 0)), merged, json.loads(header.get("meta", "{}")))


def _adapter_params(layer: Any) -> Sequence[torch.nn.Parameter]:
    return (layer.lora_A[_ADAPTER].weight, layer.lora_B[_ADAPTER].weight)
