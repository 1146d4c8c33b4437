"""Concept atoms: scoring, selection rules, readable descriptions, whole-vocabulary projection.

An atom k is scored by how much more strongly concept-only tokens load on it than neutral-only tokens:

    ratio_k = mean_{i concept-only} |G_ik|  /  mean_{i neutral-only} |G_ik|

Because with a few hundred neutral sentences many everyday words are concept-only *by accident*, a fixed
``ratio >= 2`` picks generic atoms. :class:`PermutationRule` (the book's default) instead asks whether an atom's
ratio beats what the same atom reaches when the concept/neutral labels are shuffled (a family-wise null over
all atoms), and whether the atom's active tokens are mostly concept-only (*purity*).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .vocab import CONCEPT, NEUTRAL, SHARED, VocabSlice

__all__ = [
    "score_atoms",
    "RatioRule",
    "PermutationRule",
    "largest_gap_threshold",
    "select_atoms",
    "describe_atoms",
    "atom_readout",
    "project_vocabulary",
    "AtomJudge",
]

AtomJudge = Callable[[dict], bool]
"""A judge receives one atom's description (a dict with ``atom``, ``top_tokens``, ``readout_tokens``, ...)
and returns True when the atom is distinctive for the concept (e.g. a human, or a hosted LLM on Colab)."""


def _as_numpy(codes: Any) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        if codes.is_sparse:
            codes = codes.to_dense()
        return codes.detach().cpu().float().numpy()
    return np.asarray(codes, dtype=np.float32)


def _check_codes(codes: np.ndarray, vocab: VocabSlice) -> None:
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (n_tokens × n_atoms), got shape {codes.shape}.")
    if codes.shape[0] != len(vocab):
        raise ValueError(f"codes have {codes.shape[0]} rows but the vocabulary slice has {len(vocab)} tokens; "
                         "fit the factorization on E[V′] in the slice's token order.")
    if not vocab.mask(CONCEPT).any():
        raise ValueError("The vocabulary slice has no concept-only tokens: the concept corpus adds nothing "
                         "beyond the neutral corpus, so no atom can be scored.")
    if not vocab.mask(NEUTRAL).any():
        raise ValueError("The vocabulary slice has no neutral-only tokens; give a larger neutral corpus.")


def _ratios(abs_codes: np.ndarray, concept_mask: np.ndarray, neutral_mask: np.ndarray) -> np.ndarray:
    c = abs_codes[concept_mask].mean(axis=0)
    n = abs_codes[neutral_mask].mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(n > 0, c / np.where(n > 0, n, 1.0), np.where(c > 0, np.inf, 0.0))
    return r


def score_atoms(codes: Any, vocab: VocabSlice) -> pd.DataFrame:
    """One row per atom: ratio, mean |code| per label, active-token counts per label and purity.

    ``purity`` = share of the atom's total |code| mass that sits on concept-only tokens.
    """
    G = _as_numpy(codes)
    _check_codes(G, vocab)
    A = np.abs(G)
    cm, nm, sm = vocab.mask(CONCEPT), vocab.mask(NEUTRAL), vocab.mask(SHARED)
    mass = A.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        purity = np.where(mass > 0, A[cm].sum(axis=0) / np.where(mass > 0, mass, 1.0), 0.0)
    return pd.DataFrame({
        "atom": np.arange(G.shape[1]),
        "ratio": _ratios(A, cm, nm),
        "concept_mean": A[cm].mean(axis=0),
        "neutral_mean": A[nm].mean(axis=0),
        "n_concept": (A[cm] > 0).sum(axis=0),
        "n_shared": (A[sm] > 0).sum(axis=0),
        "n_neutral": (A[nm] > 0).sum(axis=0),
        "purity": purity,
    })


@dataclass
class RatioRule:
    """The original candidate rule: ratio >= ``tau`` (τ = 2 by default)."""

    tau: float = 2.0

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}.")

    def select(self, scores: pd.DataFrame, codes: Any = None, vocab: VocabSlice | None = None) -> pd.Series:
        return scores["ratio"] >= self.tau

    def describe(self) -> str:
        return f"ratio ≥ {self.tau:g}"


@dataclass
class PermutationRule:
    """Ratio above a permutation null, plus a purity floor (the book's offline default).

    The concept-only/neutral-only labels are shuffled ``n_permutations`` times (keeping their counts); for
    each shuffle we take the **maximum** ratio over all atoms, and the threshold is the ``1 - alpha``
    quantile of those maxima (a family-wise test over K atoms). An atom is selected when its ratio exceeds
    the threshold, its purity is at least ``min_purity``, and at least ``min_concept_tokens`` concept-only
    tokens load on it.

    Significance is not the same as being *about* the concept: atoms of honorifics ("Mr", "Madam") or of
    name fragments are significantly associated with a corpus full of names, too. With ``gap_cut=True``
    (default) the significant atoms are therefore cut once more at the **largest gap in their sorted
    log-ratios** (an elbow), provided that gap is at least ``min_gap`` (a factor, e.g. 2 = one ratio is at
    least twice the next); atoms above the gap are selected.
    """

    alpha: float = 0.01
    n_permutations: int = 500
    min_purity: float = 0.5
    min_concept_tokens: int = 3
    gap_cut: bool = True
    min_gap: float = 2.0
    seed: int = 0
    threshold_: float | None = field(default=None, init=False)
    gap_threshold_: float | None = field(default=None, init=False)
    null_maxima_: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}.")
        if self.n_permutations < 10:
            raise ValueError(f"n_permutations must be >= 10, got {self.n_permutations}.")
        if not 0 <= self.min_purity <= 1:
            raise ValueError(f"min_purity must be in [0, 1], got {self.min_purity}.")

    def null_threshold(self, codes: Any, vocab: VocabSlice) -> float:
        G = np.abs(_as_numpy(codes))
        _check_codes(G, vocab)
        pooled = vocab.mask(CONCEPT) | vocab.mask(NEUTRAL)
        rows = G[pooled]
        n_c = int(vocab.mask(CONCEPT).sum())
        rng = np.random.default_rng(self.seed)
        maxima = np.empty(self.n_permutations)
        for b in range(self.n_permutations):
            perm = rng.permutation(rows.shape[0])
            cm = np.zeros(rows.shape[0], bool)
            cm[perm[:n_c]] = True
            r = _ratios(rows, cm, ~cm)
            maxima[b] = np.max(r[np.isfinite(r)]) if np.isfinite(r).any() else 0.0
        self.null_maxima_ = maxima
        self.threshold_ = float(np.quantile(maxima, 1 - self.alpha))
        return self.threshold_

    def select(self, scores: pd.DataFrame, codes: Any = None, vocab: VocabSlice | None = None) -> pd.Series:
        if codes is None or vocab is None:
            raise ValueError("PermutationRule needs the codes and the vocabulary slice to build its null.")
        thr = self.null_threshold(codes, vocab)
        significant = (scores["ratio"] > thr) & (scores["purity"] >= self.min_purity) & (
            scores["n_concept"] >= self.min_concept_tokens)
        self.gap_threshold_ = None
        if self.gap_cut and significant.sum() >= 2:
            cut = largest_gap_threshold(scores.loc[significant, "ratio"].to_numpy(), self.min_gap)
            if cut is not None:
                self.gap_threshold_ = cut
                significant &= scores["ratio"] >= cut
        return significant

    def describe(self) -> str:
        thr = f"{self.threshold_:.2f}" if self.threshold_ is not None else "?"
        text = (f"ratio > permutation-null max-ratio quantile {1 - self.alpha:g} (= {thr}), "
                f"purity ≥ {self.min_purity:g}, ≥ {self.min_concept_tokens} concept-only tokens")
        if self.gap_cut:
            gap = f"{self.gap_threshold_:.2f}" if self.gap_threshold_ is not None else f"no gap ≥ ×{self.min_gap:g}"
            text += f", then cut at the largest ratio gap (ratio ≥ {gap})"
        return text


def largest_gap_threshold(ratios: np.ndarray, min_gap: float = 2.0) -> float | None:
    """The ratio just above the largest multiplicative gap between consecutive sorted ratios.

    Returns ``None`` when no gap reaches ``min_gap`` (then nothing is cut). Infinite ratios (no neutral
    token loads on the atom) count as above every finite one.
    """
    r = np.sort(np.asarray(ratios, dtype=float))[::-1]
    if r.size < 2:
        return None
    finite = np.where(np.isfinite(r), r, np.nanmax(np.where(np.isfinite(r), r, np.nan)) * 10 if np.isfinite(r).any() else 1.0)
    logs = np.log(np.clip(finite, 1e-12, None))
    gaps = logs[:-1] - logs[1:]
    i = int(np.argmax(gaps))
    if gaps[i] < np.log(min_gap):
        return None
    return float(r[i])


def select_atoms(scores: pd.DataFrame, rule: Any, codes: Any = None, vocab: VocabSlice | None = None,
                 judge: AtomJudge | None = None, descriptions: Sequence[dict] | None = None) -> pd.DataFrame:
    """Apply a rule (and optionally a judge) and return ``scores`` with ``candidate``/``selected`` columns.

    The judge is asked only about candidates; it receives the atom's description from
    :func:`describe_atoms` (pass ``descriptions``).
    """
    out = scores.copy()
    out["candidate"] = np.asarray(rule.select(scores, codes, vocab), dtype=bool)
    out["judge"] = pd.Series([None] * len(out), dtype=object)
    if judge is not None:
        if descriptions is None:
            raise ValueError("A judge needs the atom descriptions (pass descriptions=describe_atoms(...)).")
        by_atom = {d["atom"]: d for d in descriptions}
        for i in out.index[out["candidate"]]:
            out.at[i, "judge"] = bool(judge(by_atom[int(out.at[i, "atom"])]))
        out["selected"] = out["candidate"] & out["judge"].fillna(False).astype(bool)
    else:
        out["selected"] = out["candidate"]
    return out.sort_values("ratio", ascending=False, kind="stable").reset_index(drop=True)


def atom_readout(atoms: Any, W_U: torch.Tensor, tokenizer: Any, top_k: int = 10) -> list[list[str]]:
    """Read each atom direction out through the unembedding: top tokens of ``atom @ W_U``."""
    F = atoms if isinstance(atoms, torch.Tensor) else torch.as_tensor(np.asarray(atoms))
    with torch.no_grad():
        logits = F.to(W_U.device, W_U.dtype) @ W_U
        idx = logits.topk(top_k, dim=1).indices.cpu().tolist()
    return [[tokenizer.decode([i]) for i in row] for row in idx]


def describe_atoms(codes: Any, atoms: Any, vocab: VocabSlice, W_U: torch.Tensor | None = None,
                   tokenizer: Any = None, which: Sequence[int] | None = None, top_k: int = 10) -> list[dict]:
    """Readable description per atom: top V′ tokens by |code| (with sign and label) and the unembedding read-out."""
    G = _as_numpy(codes)
    _check_codes(G, vocab)
    which = list(range(G.shape[1])) if which is None else [int(k) for k in which]
    readouts = None
    if W_U is not None and tokenizer is not None:
        F = atoms if isinstance(atoms, torch.Tensor) else torch.as_tensor(np.asarray(atoms))
        readouts = atom_readout(F[which], W_U, tokenizer, top_k)
    out = []
    for j, k in enumerate(which):
        col = G[:, k]
        order = np.argsort(-np.abs(col), kind="stable")[:top_k]
        order = order[np.abs(col[order]) > 0]
        out.append({
            "atom": k,
            "top_tokens": [vocab.tokens[i] for i in order],
            "top_codes": [float(col[i]) for i in order],
            "top_labels": [str(vocab.labels[i]) for i in order],
            "readout_tokens": readouts[j] if readouts else [],
        })
    return out


def project_vocabulary(embeddings: torch.Tensor, atoms: Any, selected: Sequence[int], vocab: VocabSlice,
                       tokenizer: Any, top_n: int = 50, chunk: int = 32768, min_cosine: float = 0.0) -> pd.DataFrame:
    """Rank tokens of the **whole** vocabulary that are not in V′ by how well the selected atoms explain them.

    For each token row e we compute its cosine with its best reconstruction from the selected atoms alone
    (least squares on span{F_k : k ∈ S}); tokens whose embedding lies close to that span are candidate
    concept tokens the corpus never contained. Returns a review table (token id, token, cosine, dominant
    atom, its coefficient) with the ``top_n`` best, excluding V′ and special tokens.
    """
    if len(selected) == 0:
        raise ValueError("No selected atoms: nothing to project onto.")
    F = atoms if isinstance(atoms, torch.Tensor) else torch.as_tensor(np.asarray(atoms))
    F = F[list(selected)].to(embeddings.device, torch.float32)  # (S, d)
    gram = F @ F.T + 1e-6 * torch.eye(F.shape[0], device=F.device)
    chol = torch.linalg.cholesky(gram)
    excluded = set(int(t) for t in vocab.token_ids) | set(getattr(tokenizer, "all_special_ids", []) or [])
    best_cos, best_atom, best_coef = [], [], []
    with torch.no_grad():
        for start in range(0, embeddings.shape[0], chunk):
            E = embeddings[start:start + chunk].float()
            coef = torch.cholesky_solve((E @ F.T).T, chol).T  # (m, S)
            recon = coef @ F
            cos = (recon * E).sum(1) / (recon.norm(dim=1) * E.norm(dim=1)).clamp_min(1e-12)
            contrib = coef.abs() * F.norm(dim=1)
            best_cos.append(cos.cpu())
            a = contrib.argmax(1)
            best_atom.append(a.cpu())
            best_coef.append(coef.gather(1, a[:, None])[:, 0].cpu())
    cos = torch.cat(best_cos)
    atom_idx = torch.cat(best_atom)
    coef = torch.cat(best_coef)
    if excluded:
        cos[torch.tensor(sorted(excluded), dtype=torch.long)] = -2.0
    vals, idx = cos.topk(min(top_n, cos.numel()))
    rows = []
    sel = list(selected)
    for v, i in zip(vals.tolist(), idx.tolist()):
        if v < min_cosine:
            break
        rows.append({"token_id": i, "token": tokenizer.decode([i]), "cosine": v,
                     "atom": sel[int(atom_idx[i])], "coefficient": float(coef[i])})
    return pd.DataFrame(rows, columns=["token_id", "token", "cosine", "atom", "coefficient"])
