"""RMU (Representation Misdirection for Unlearning): at one layer ℓ, push the residual stream on forget text
toward c·u (u a fixed random unit vector, c a multiple of the frozen model's typical residual norm there) and
keep it equal to the frozen model's on retain text, training only the MLP down-projections of a few layers at
or below ℓ. Activations are read through the TransformerBridge (``run_with_hooks`` on
``blocks.ℓ.hook_resid_post`` with ``stop_at_layer``: the layers above ℓ and the output layer never run).

    loss = mean_t ‖h_ℓ(x_t) − c·u‖² / d  +  α · mean_t ‖h_ℓ(y_t) − h⁰_ℓ(y_t)‖² / d      (x forget, y retain)
"""
from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from .weight_patch import WeightPatch, named_parameters_plain

__all__ = ["RMUConfig", "RMUResult", "RMU_PRESETS", "rmu_config_for", "train_rmu", "layer_activations", "activation_shift",
           "rmu_losses"]


@dataclass(frozen=True)
class RMUConfig:
    """``layer`` ℓ read out, ``update_layers`` whose ``mlp.down_proj`` is trained, ``steering`` c as a multiple of
    the frozen model's mean residual norm at ℓ on forget text, ``alpha`` the retain weight."""

    layer: int = 5
    update_layers: tuple[int, ...] = (3, 4, 5)
    steering: float = 1.0
    alpha: float = 100.0
    steps: int = 150
    lr: float = 5e-5
    batch_forget: int = 4
    batch_retain: int = 4
    max_length: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.update_layers or max(self.update_layers) > self.layer or min(self.update_layers) < 0:
            raise ValueError(f"RMU update_layers {self.update_layers} must be non-empty layers at or below the "
                             f"read-out layer {self.layer} (a layer above it cannot change h_ℓ).")
        if self.steps < 1 or self.batch_forget < 1 or self.batch_retain < 1 or self.max_length < 2:
            raise ValueError("RMU steps, batch sizes must be >= 1 and max_length >= 2.")
        if self.lr <= 0 or self.steering <= 0 or self.alpha < 0:
            raise ValueError(f"RMU needs lr > 0, steering > 0, alpha >= 0 (got {self.lr}, {self.steering}, {self.alpha}).")
        object.__setattr__(self, "update_layers", tuple(int(i) for i in self.update_layers))

    def replace(self, **changes: Any) -> "RMUConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: CPU setting for the 270M model: the validation sweep (``results/gemma-3-270m/rmu_settings_sweep.csv``) chose c = 1 ×
#: the residual norm and α = 100 (α = 10 wrecks specificity, α = 1000 erases nothing; c = 1 is the smallest c tried);
#: GPU presets follow the reference (layer 7, layers 5-7, c = 6.5 absolute there; here a multiple of the norm).
RMU_PRESETS: dict[str, RMUConfig] = {
    "gemma-3-270m": RMUConfig(),
    "google/gemma-3-270m-it": RMUConfig(),
    "google/gemma-2-2b-it": RMUConfig(layer=7, update_layers=(5, 6, 7), steering=3.0, alpha=100.0, steps=250,
                                      lr=5e-5, batch_forget=4, batch_retain=4, max_length=512),
    "meta-llama/Llama-3.1-8B-Instruct": RMUConfig(layer=7, update_layers=(5, 6, 7), steering=3.0, alpha=100.0,
                                                  steps=250, lr=5e-5, batch_forget=4, batch_retain=4, max_length=512),
}


def rmu_config_for(model_name: str, **changes: Any) -> RMUConfig:
    if model_name not in RMU_PRESETS:
        raise ValueError(f"No RMU preset for {model_name!r}; presets: {sorted(RMU_PRESETS)}.")
    return RMU_PRESETS[model_name].replace(**changes)


def _batch(tok: Any, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``<bos> + text`` ids and their attention mask (right padding keeps every position id)."""
    from ..eval._hf import _encode_prompt

    seqs = [_encode_prompt(tok, t)[:max_length] for t in texts]
    L = max(len(s) for s in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], att[i, :len(s)] = torch.tensor(s), 1
    return ids, att


def _content_mask(att: torch.Tensor) -> torch.Tensor:
    """The attention mask without ``<bos>``: its residual (an attention sink with a norm far above every other
    token's) is the same for every text, so it is neither misdirected nor counted in c."""
    mask = att.clone()
    mask[:, 0] = 0
    return mask


def layer_activations(bridge: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
    """``blocks.{layer}.hook_resid_post`` (batch × seq × d) through the bridge, stopping right after that block."""
    got: dict[str, torch.Tensor] = {}

    def grab(x: torch.Tensor, hook: Any) -> torch.Tensor:
        got["h"] = x
        return x

    bridge.run_with_hooks(input_ids, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", grab)], stop_at_layer=layer + 1,
                          attention_mask=attention_mask)
    return got["h"]


def rmu_losses(h_forget: torch.Tensor, mask_forget: torch.Tensor, target: torch.Tensor, h_retain: torch.Tensor,
               mask_retain: torch.Tensor, h_retain_frozen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(forget, retain) mean squared distances per dimension over the tokens where the masks are 1."""
    d = h_forget.shape[-1]
    mf, mr = mask_forget.bool(), mask_retain.bool()
    forget = ((h_forget[mf] - target) ** 2).sum(-1).mean() / d
    retain = ((h_retain[mr] - h_retain_frozen[mr]) ** 2).sum(-1).mean() / d
    return forget, retain


@dataclass
class RMUResult:
    """The trained down-projections as a :class:`WeightPatch` (unapplied), the losses per step, the steering
    vector c·u and per-stage seconds."""

    patch: WeightPatch
    history: pd.DataFrame
    steering_vector: torch.Tensor
    timings: dict[str, float]
    config: RMUConfig


def train_rmu(bridge: Any, forget_texts: Sequence[str], retain_texts: Sequence[str], config: RMUConfig | None = None,
              *, progress: bool = False) -> RMUResult:
    """Train RMU on ``bridge`` *as it is now* (with an EMBER edit applied, the frozen reference is the edited
    model). The model is unchanged afterwards; apply ``result.patch`` to use the erased model."""
    cfg = config or RMUConfig()
    if not forget_texts or not retain_texts:
        raise ValueError("train_rmu needs forget texts (concept) and retain texts (neutral train).")
    n_layers = bridge.cfg.n_layers
    if cfg.layer >= n_layers:
        raise ValueError(f"RMU layer {cfg.layer} does not exist: the model has layers 0..{n_layers - 1}.")
    tok = bridge.tokenizer
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    u = torch.rand(bridge.cfg.d_model, generator=gen)  # the reference draws u uniformly, then normalizes
    u = u / u.norm()
    f_batches = [[rng.randrange(len(forget_texts)) for _ in range(cfg.batch_forget)] for _ in range(cfg.steps)]
    r_pool = rng.sample(range(len(retain_texts)), min(len(retain_texts), cfg.batch_retain * cfg.steps))
    r_batches = [[r_pool[(s * cfg.batch_retain + j) % len(r_pool)] for j in range(cfg.batch_retain)]
                 for s in range(cfg.steps)]
    names = [f"model.layers.{i}.mlp.down_proj.weight" for i in cfg.update_layers]
    params = named_parameters_plain(bridge)
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"RMU cannot find {missing} in the model (expected Gemma/Llama-style MLP down-projections).")
    timings: dict[str, float] = {}
    flags = {n: p.requires_grad for n, p in params.items()}
    originals = {n: params[n].detach().clone() for n in names}
    was_training = bridge.training
    try:
        t0 = time.perf_counter()
        with torch.no_grad():  # the frozen reference: c from the forget norms, h⁰ on every retain batch
            norms = []
            for b in f_batches[: max(1, min(len(f_batches), 8))]:
                ids, att = _batch(tok, [forget_texts[i] for i in b], cfg.max_length)
                h = layer_activations(bridge, ids, att, cfg.layer)
                norms.append(h[_content_mask(att).bool()].norm(dim=-1))
            c = cfg.steering * float(torch.cat(norms).mean())
            retain_ref = []
            for b in r_batches:
                ids, att = _batch(tok, [retain_texts[i] for i in b], cfg.max_length)
                retain_ref.append((ids, att, layer_activations(bridge, ids, att, cfg.layer).detach()))
        timings["frozen_activations_s"] = time.perf_counter() - t0
        target = c * u
        for p in params.values():
            p.requires_grad_(False)
        trainable = [params[n] for n in names]
        for p in trainable:
            p.requires_grad_(True)
        bridge.eval()
        opt = torch.optim.AdamW(trainable, lr=cfg.lr)
        rows = []
        steps = range(cfg.steps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="RMU", leave=False)
        t_train = time.perf_counter()
        with torch.enable_grad():
            for step in steps:
                t0 = time.perf_counter()
                ids, att = _batch(tok, [forget_texts[i] for i in f_batches[step]], cfg.max_length)
                h_f = layer_activations(bridge, ids, att, cfg.layer)
                r_ids, r_att, r_ref = retain_ref[step]
                h_r = layer_activations(bridge, r_ids, r_att, cfg.layer)
                forget, retain = rmu_losses(h_f, _content_mask(att), target.to(h_f.device, h_f.dtype), h_r,
                                             _content_mask(r_att), r_ref)
                loss = forget + cfg.alpha * retain
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                rows.append({"step": step, "forget": forget.item(), "retain": retain.item(), "loss": loss.item(),
                             "seconds": time.perf_counter() - t0})
        timings["train_s"] = time.perf_counter() - t_train
        timings["step_s"] = timings["train_s"] / cfg.steps
        trained = {n: params[n].detach().cpu().clone() for n in names}
    finally:
        with torch.no_grad():
            for n in names:
                params[n].copy_(originals[n])
        for n, p in params.items():
            p.requires_grad_(flags[n])
        bridge.train(was_training)
    timings["total_s"] = timings.get("frozen_activations_s", 0.0) + timings.get("train_s", 0.0)
    patch = WeightPatch(trained, meta={"method": "RMU", "config": cfg.to_dict(), "steering_norm": c})
    return RMUResult(patch, pd.DataFrame(rows), target, timings, cfg)


def activation_shift(bridge: Any, result: RMUResult, texts: dict[str, Sequence[str]],
                     state: Any = None) -> pd.DataFrame:
    """Per group of texts (e.g. ``{"forget": ..., "retain": ...}``): mean distance of the layer-ℓ activations to
    c·u before and after RMU, and how far they moved (mean ‖h − h⁰‖), over the non-``<bos>`` tokens. ``state``:
    the trained state to measure (default ``result.patch``; pass e.g. a stack with an EMBER edit)."""
    cfg, target = result.config, result.steering_vector
    state = state if state is not None else result.patch
    rows = []
    for group, group_texts in texts.items():
        ids, att = _batch(bridge.tokenizer, list(group_texts), cfg.max_length)
        mask = _content_mask(att).bool()
        with torch.no_grad():
            before = layer_activations(bridge, ids, att, cfg.layer)
            with state.applied_to(bridge):
                after = layer_activations(bridge, ids, att, cfg.layer)
        t = target.to(before.dtype)
        rows.append({"texts": group, "n_tokens": int(mask.sum()),
                     "dist_to_cu_before": float((before[mask] - t).norm(dim=-1).mean()),
                     "dist_to_cu_after": float((after[mask] - t).norm(dim=-1).mean()),
                     "moved": float((after[mask] - before[mask]).norm(dim=-1).mean()),
                     "norm_before": float(before[mask].norm(dim=-1).mean())})
    return pd.DataFrame(rows)
