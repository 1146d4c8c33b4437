"""Relearning attack: fine-tune an erased model on the concept's relearning paragraphs (facts that do not answer
the test questions) and measure how much test accuracy comes back, as a curve over steps.

Two variants: a full fine-tune of every weight *including the embeddings* (so an EMBER edit can be undone row by
row) and a LoRA fine-tune of every attention and MLP projection. The model is restored exactly afterwards (every
parameter is copied back), so the attack can run on each row of the comparison in turn. For an embedding edit
:func:`edit_recovery` says how far the edited rows moved back toward their original values.
"""
from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..eval._hf import _text_config
from ..eval.mc import score_mc
from ..methods.ember.edit import embedding_edits
from ..methods.lora import LoraAdapter, LoraSpec
from ..models import hf_model_of
from ..state import ModelState, StackedState, applied, components

__all__ = ["RelearnConfig", "RELEARN_PRESETS", "relearn_config_for", "RelearnResult", "relearn", "edit_recovery",
           "fold_adapters"]


@dataclass(frozen=True)
class RelearnConfig:
    """``mode`` 'full' (every weight, embeddings included) or 'lora'; AdamW ``lr``, ``weight_decay``; ``batch_size``
    paragraphs per step for ``epochs`` over the first ``n_paragraphs`` (None: all), each cut to ``max_length``
    tokens; accuracy measured ``n_evals`` times along the way (step 0 and the last step included)."""

    mode: str = "full"
    lr: float = 1e-5
    weight_decay: float = 0.01
    batch_size: int = 1
    epochs: int = 2
    max_length: int = 256
    n_paragraphs: int | None = None
    lora_rank: int = 16
    lora_lr: float = 1e-4
    n_evals: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("full", "lora"):
            raise ValueError(f"Relearning mode must be 'full' or 'lora', got {self.mode!r}.")
        if self.lr <= 0 or self.lora_lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"Relearning needs lr > 0 and weight_decay >= 0 (got {self.lr}, {self.weight_decay}).")
        if self.batch_size < 1 or self.epochs < 1 or self.max_length < 2 or self.n_evals < 1:
            raise ValueError("Relearning batch_size, epochs, n_evals must be >= 1 and max_length >= 2.")
        if self.n_paragraphs is not None and self.n_paragraphs < 1:
            raise ValueError(f"n_paragraphs must be >= 1 or None, got {self.n_paragraphs}.")

    def replace(self, **changes: Any) -> "RelearnConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: GPU presets = the reference setting (full fine-tune incl. embeddings, AdamW lr 1e-5, wd 0.01, batch 1, 2 epochs,
#: length 256, every paragraph). The CPU preset keeps the optimizer and batch but reads 24 paragraphs cut to 128
#: tokens for one epoch (~8× fewer tokens than the reference's ~80 × 2 × ~140) at a 5× learning rate, so that one
#: attack on one row fits in about a minute here.
RELEARN_PRESETS: dict[str, RelearnConfig] = {
    "gemma-3-270m": RelearnConfig(lr=5e-5, epochs=1, max_length=128, n_paragraphs=24),
    "google/gemma-3-270m-it": RelearnConfig(lr=5e-5, epochs=1, max_length=128, n_paragraphs=24),
    "google/gemma-2-2b-it": RelearnConfig(),
    "meta-llama/Llama-3.1-8B-Instruct": RelearnConfig(),
}


def relearn_config_for(model_name: str, **changes: Any) -> RelearnConfig:
    if model_name not in RELEARN_PRESETS:
        raise ValueError(f"No relearning preset for {model_name!r}; presets: {sorted(RELEARN_PRESETS)}.")
    return RELEARN_PRESETS[model_name].replace(**changes)


@dataclass
class RelearnResult:
    """``curve``: one row per evaluation (step, paragraphs and tokens seen, mean loss since the last one,
    accuracy per question set); ``correct``: per-question correctness after the attack (for intervals);
    ``recovery``: :func:`edit_recovery` of an embedding edit (empty when there is none)."""

    curve: pd.DataFrame
    correct: dict[str, np.ndarray]
    recovery: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    config: RelearnConfig | None = None

    def final_accuracy(self, name: str) -> float:
        return float(self.correct[name].mean())


def fold_adapters(state: ModelState | None, model: Any) -> ModelState | None:
    """``state`` with every LoRA adapter folded into a weight patch (the attack's own LoRA, or a full fine-tune
    of the weights under an adapter, needs plain weights). Must be called with ``state`` not applied; an
    adapter is folded against the weights below it in the stack."""
    if state is None or not isinstance(state, (LoraAdapter, StackedState)):
        return state
    parts = components(state)
    if any(s.applied for s in parts):
        raise ValueError("fold_adapters needs the state unapplied.")
    folded, done = [], []
    try:
        for s in parts:
            f = s.as_weight_patch(model) if isinstance(s, LoraAdapter) else s
            f.apply(model)  # the next adapter folds against the weights it will sit on
            done.append(f)
            folded.append(f)
    finally:
        for f in reversed(done):
            f.revert()
    return folded[0] if len(folded) == 1 else StackedState(*folded)


def edit_recovery(edits: Any, edited_rows: torch.Tensor, after_rows: torch.Tensor) -> dict[str, float]:
    """How far relearning moved the edited embedding rows back (``edits``: one embedding edit or a list, whose rows
    ``edited_rows`` and ``after_rows`` hold in that order): per row, the fraction of the way from the edited value
    back to the original along the edit (1 = fully undone, 0 = not moved) and the remaining distance to the
    original relative to the edit's size; medians over the rows, and the mean cosine between the change and the
    way back."""
    edits = [edits] if hasattr(edits, "directions") else list(edits)
    back = torch.cat([e.delta * e.directions for e in edits]).to(edited_rows.dtype)  # original − edited
    moved = (after_rows - edited_rows).float()
    size = back.norm(dim=1).clamp_min(1e-12)
    along = (moved * back).sum(dim=1) / size ** 2
    remaining = (edited_rows + back - after_rows).norm(dim=1) / size
    cos = (moved * back).sum(dim=1) / (moved.norm(dim=1).clamp_min(1e-12) * size)
    return {"recovered_fraction_median": float(along.median()), "recovered_fraction_max": float(along.max()),
            "remaining_distance_median": float(remaining.median()), "cosine_with_way_back_mean": float(cos.mean()),
            "n_rows": int(edited_rows.shape[0])}


def _batches(tok: Any, texts: Sequence[str], cfg: RelearnConfig) -> list[torch.Tensor]:
    rng = random.Random(cfg.seed)
    order = []
    for _ in range(cfg.epochs):
        epoch = list(range(len(texts)))
        rng.shuffle(epoch)
        order += epoch
    out = []
    for start in range(0, len(order), cfg.batch_size):
        enc = tok([texts[i] for i in order[start:start + cfg.batch_size]], truncation=True,
                  max_length=cfg.max_length, padding=True, return_tensors="pt")
        out.append((enc["input_ids"], enc["attention_mask"]))
    return out


def _eval_steps(n_steps: int, n_evals: int) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(0, n_steps, max(2, n_evals))}) if n_evals > 1 else [n_steps]


def relearn(model: Any, texts: Sequence[str], config: RelearnConfig | None = None, *,
            eval_sets: Mapping[str, pd.DataFrame] | None = None, state: ModelState | None = None,
            progress: bool = False) -> RelearnResult:
    """Run the attack on ``model`` with ``state`` applied (``None``: the unedited model, the control).

    ``eval_sets``: question tables scored with the MC scorer along the curve and at the end. The model and the
    state are unchanged afterwards."""
    cfg = config or RelearnConfig()
    texts = list(texts)[: cfg.n_paragraphs] if cfg.n_paragraphs else list(texts)
    if not texts:
        raise ValueError("Relearning needs at least one paragraph.")
    eval_sets = dict(eval_sets or {})
    hf = hf_model_of(model)
    tok = model.tokenizer
    folded = fold_adapters(state, model)
    batches = _batches(tok, texts, cfg)
    marks = _eval_steps(len(batches), cfg.n_evals)
    timings: dict[str, float] = {"train_s": 0.0, "eval_s": 0.0}
    rows, correct, recovery = [], {}, {}
    params = dict(hf.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    was_training = hf.training
    with applied(folded, model):
        edits = embedding_edits(folded)
        edited_before = [e._weight(model)[e.token_ids].detach().clone() for e in edits]
        # a full fine-tune changes every weight: keep a copy to restore, on disk one tensor at a time (a second
        # copy in memory would add the whole model to the peak); LoRA leaves the base weights alone
        snapshot = _DiskSnapshot(params) if cfg.mode == "full" else None
        adapter = None
        try:
            gen = torch.random.fork_rng(devices=[])
            with gen:
                torch.manual_seed(cfg.seed)
                if cfg.mode == "lora":
                    n_layers = _text_config(hf).num_hidden_layers
                    adapter = LoraAdapter(LoraSpec(rank=cfg.lora_rank, alpha=2.0 * cfg.lora_rank, dropout=0.0,
                                                   layers=tuple(range(n_layers))), seed=cfg.seed)
                    adapter.apply(model)
                    trainable = adapter.parameters()
                    lr = cfg.lora_lr
                else:
                    trainable = list(params.values())
                    for p in trainable:
                        p.requires_grad_(True)
                    lr = cfg.lr
                hf.eval()  # no dropout in these models; eval keeps the run deterministic
                opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=cfg.weight_decay, foreach=False)  # no batched temporaries
                losses: list[float] = []
                tokens = 0

                def evaluate(step: int) -> None:
                    t0 = time.perf_counter()
                    row = {"step": step, "paragraphs": step * cfg.batch_size, "tokens": tokens,
                           "loss": float(np.mean(losses)) if losses else float("nan")}
                    for name, qs in eval_sets.items():
                        ok = score_mc(model, qs)["correct"].to_numpy(bool)
                        row[f"acc_{name}"] = float(ok.mean())
                        correct[name] = ok
                    rows.append(row)
                    losses.clear()
                    timings["eval_s"] += time.perf_counter() - t0

                steps = range(len(batches))
                if progress:
                    from tqdm.auto import tqdm

                    steps = tqdm(steps, desc=f"relearn ({cfg.mode})", leave=False)
                if 0 in marks:
                    evaluate(0)
                with torch.enable_grad():
                    for step in steps:
                        t0 = time.perf_counter()
                        ids, att = batches[step]
                        labels = ids.masked_fill(att == 0, -100)
                        loss = hf(input_ids=ids, attention_mask=att, labels=labels, use_cache=False).loss
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        losses.append(loss.item())
                        tokens += int(att.sum())
                        timings["train_s"] += time.perf_counter() - t0
                        if step + 1 in marks:
                            evaluate(step + 1)
                del opt
            timings["tokens"] = float(tokens)
            timings["tokens_per_s"] = tokens / max(timings["train_s"], 1e-9)
            if edits:
                after = torch.cat([e._weight(model)[e.token_ids].detach() for e in edits])
                recovery = edit_recovery(edits, torch.cat(edited_before), after)
        finally:
            if adapter is not None and adapter.applied:
                adapter.revert()
            if snapshot is not None:
                snapshot.restore()
            for n, p in params.items():
                p.requires_grad_(flags[n])
            hf.train(was_training)
    return RelearnResult(pd.DataFrame(rows), correct, recovery, timings, cfg)


class _DiskSnapshot:
    """Every parameter's value written to a temporary folder, one file each; :meth:`restore` copies them back
    bit-exactly and removes the folder."""

    def __init__(self, params: dict[str, torch.nn.Parameter]) -> None:
        import tempfile

        self.params = params
        self.folder = tempfile.TemporaryDirectory(prefix="ember-relearn-")
        self.files = {}
        for i, (name, p) in enumerate(params.items()):
            self.files[name] = f"{self.folder.name}/{i}.pt"
            torch.save(p.detach().cpu(), self.files[name])

    def restore(self) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(torch.load(self.files[name], map_location=p.device, weights_only=True))
        self.folder.cleanup()
