"""Static matplotlib/seaborn figures for the chapters (no computation beyond arranging data for display)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..methods.ember.vocab import CONCEPT, NEUTRAL, SHARED, VocabSlice

__all__ = ["code_heatmap", "loss_curve_plot", "ratio_plot", "vocab_map", "delta_sweep_plot", "before_after_plot",
           "comparison_plot"]

LABEL_COLORS = {CONCEPT: "#c0392b", SHARED: "#7f8c8d", NEUTRAL: "#2980b9"}


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return (x.to_dense() if x.is_sparse else x).detach().cpu().float().numpy()
    return np.asarray(x)


def loss_curve_plot(loss_curves: dict[str, Sequence[float]], ax: Any = None) -> Any:
    """Relative reconstruction error per iteration, one line per labelled run."""
    ax = ax or plt.subplots(figsize=(6, 3.2))[1]
    for label, curve in loss_curves.items():
        ax.plot(np.arange(len(curve)), curve, label=label)
    ax.set(xlabel="iteration", ylabel="‖A − F Gᵀ‖ / ‖A‖", title="Sparse factorization: reconstruction error")
    ax.legend(fontsize=8)
    return ax


def code_heatmap(codes: Any, vocab: VocabSlice, atoms: Sequence[int], tokens_per_atom: int = 6, ax: Any = None) -> Any:
    """Atom × token heatmap of codes for the top tokens (by |code|) of each given atom."""
    G = _np(codes)
    rows: list[int] = []
    for a in atoms:
        order = np.argsort(-np.abs(G[:, a]), kind="stable")[:tokens_per_atom]
        rows += [int(i) for i in order if i not in rows and G[i, a] != 0]
    data = pd.DataFrame(G[np.ix_(rows, list(atoms))].T, index=[f"atom {a}" for a in atoms],
                        columns=[repr(vocab.tokens[i]) for i in rows])
    ax = ax or plt.subplots(figsize=(min(18, 0.45 * len(rows) + 2), 0.5 * len(atoms) + 1.5))[1]
    lim = float(np.abs(data.values).max()) or 1.0
    sns.heatmap(data, cmap="RdBu_r", center=0, vmin=-lim, vmax=lim, ax=ax, cbar_kws={"label": "code G"})
    for tick in ax.get_xticklabels():
        idx = rows[[repr(vocab.tokens[i]) for i in rows].index(tick.get_text())]
        tick.set_color(LABEL_COLORS[str(vocab.labels[idx])])
    ax.set(xlabel="token (red: concept-only, grey: shared, blue: neutral-only)", ylabel="")
    return ax


def ratio_plot(selection: pd.DataFrame, null_threshold: float | None = None, gap_threshold: float | None = None,
               tau: float | None = 2.0, ax: Any = None) -> Any:
    """Sorted atom ratios (log scale) with the selection thresholds; selected atoms highlighted."""
    s = selection.sort_values("ratio", ascending=False).reset_index(drop=True)
    r = s["ratio"].replace(np.inf, np.nan)
    r = r.fillna(r.max() * 2 if r.notna().any() else 1.0).clip(lower=1e-3)
    ax = ax or plt.subplots(figsize=(7, 3.2))[1]
    ax.scatter(np.arange(len(s)), r, c=np.where(s["selected"], "#c0392b", "#95a5a6"), s=18)
    if tau is not None:
        ax.axhline(tau, color="k", ls=":", lw=1, label=f"fixed τ = {tau:g}")
    if null_threshold is not None:
        ax.axhline(null_threshold, color="#8e44ad", ls="--", lw=1, label=f"permutation null = {null_threshold:.2f}")
    if gap_threshold is not None and np.isfinite(gap_threshold):
        ax.axhline(gap_threshold, color="#c0392b", ls="-", lw=1, label=f"largest gap cut = {gap_threshold:.1f}")
    ax.set_yscale("log")
    ax.set(xlabel="atoms, sorted by ratio", ylabel="concept / neutral mean |code|",
           title="Atom scores (red = selected)")
    ax.legend(fontsize=8)
    return ax


def vocab_map(embeddings: Any, vocab: VocabSlice, highlight: Sequence[int] = (), annotate: int = 12,
              ax: Any = None, seed: int = 0) -> Any:
    """2-D PCA map of the V′ embedding rows coloured by label; ``highlight`` (row indices) is circled."""
    from sklearn.decomposition import PCA

    X = _np(embeddings)
    xy = PCA(n_components=2, random_state=seed).fit_transform(X - X.mean(0))
    ax = ax or plt.subplots(figsize=(6.5, 5))[1]
    for lab in (NEUTRAL, SHARED, CONCEPT):
        m = vocab.labels == lab
        ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.45 if lab != CONCEPT else 0.8, c=LABEL_COLORS[lab],
                   label=f"{lab} ({int(m.sum())})")
    hl = list(highlight)
    if hl:
        ax.scatter(xy[hl, 0], xy[hl, 1], s=40, facecolors="none", edgecolors="k", lw=0.8, label="edited tokens")
        for i in hl[:annotate]:
            ax.annotate(vocab.tokens[i], xy[i], fontsize=7)
    ax.set(xlabel="PC 1", ylabel="PC 2", title="V′ in embedding space (PCA)")
    ax.legend(fontsize=7, markerscale=2)
    return ax


def delta_sweep_plot(table: pd.DataFrame, chosen: float | None = None, ax: Any = None, gate: float = 0.9,
                     edge: str | None = None) -> Any:
    """Efficacy, specificity, coherence (with their 95 % intervals as bands when the table has ``_lo``/``_hi``)
    and the selection score against δ (log x-axis); δ that fail the gates are marked with a cross."""
    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    for col, style in [("efficacy", "o-"), ("specificity", "s-"), ("coherence", "^-"), ("seamlessness", "v:"),
                       ("score", "k--")]:
        if col not in table:
            continue
        (line,) = ax.plot(table["delta"], table[col], style, label=col, ms=4)
        if f"{col}_lo" in table and f"{col}_hi" in table:
            ax.fill_between(table["delta"], table[f"{col}_lo"], table[f"{col}_hi"], color=line.get_color(), alpha=0.15)
    if "passes_gates" in table and (~table["passes_gates"]).any():
        bad = table[~table["passes_gates"].astype(bool)]
        ax.plot(bad["delta"], [-0.02] * len(bad), "x", color="#c0392b", label="fails a gate")
    ax.axhline(gate, color="grey", lw=0.8, ls=":", label=f"{gate:g} gate")
    if chosen is not None:
        note = "" if edge is None else " (grid edge: not identified)"
        ax.axvline(chosen, color="#c0392b", lw=1, label=f"chosen δ = {chosen:g}{note}")
    ax.set_xscale("log")
    ax.set(xlabel="δ", ylabel="metric (train split)", ylim=(-0.05, 1.1), title="δ sweep (bands: 95 % intervals)")
    ax.legend(fontsize=7, ncol=2)
    return ax


def before_after_plot(frame: pd.DataFrame, value: str = "accuracy", ax: Any = None) -> Any:
    """Grouped bars with error bars: long-form rows (benchmark, state) with ``value`` and, when present,
    ``lo`` / ``hi`` (the 95 % interval) columns."""
    ax = ax or plt.subplots(figsize=(7, 3.2))[1]
    benchmarks = list(dict.fromkeys(frame["benchmark"]))
    states = list(dict.fromkeys(frame["state"]))
    width = 0.8 / max(1, len(states))
    for j, state in enumerate(states):
        rows = frame[frame["state"] == state].set_index("benchmark").reindex(benchmarks)
        x = np.arange(len(benchmarks)) + (j - (len(states) - 1) / 2) * width
        err = None
        if {"lo", "hi"} <= set(frame.columns):
            err = np.vstack([rows[value] - rows["lo"], rows["hi"] - rows[value]]).clip(min=0)
        ax.bar(x, rows[value], width, yerr=err, capsize=3, label=state)
    ax.set_xticks(np.arange(len(benchmarks)), benchmarks, fontsize=8)
    if value == "accuracy":
        ax.axhline(0.25, color="grey", ls=":", lw=1, label="chance")
    ax.set(xlabel="", ylabel=value, title="Before and after the edit (test split; bars: 95 % intervals)")
    ax.legend(fontsize=8)
    return ax


def comparison_plot(table: pd.DataFrame, columns: Sequence[str] = ("acc_concept", "acc_indirect", "efficacy",
                                                                   "specificity", "coherence", "score"),
                    ax: Any = None, title: str = "") -> Any:
    """Grouped bars, one group per metric and one bar per method (rows of a comparison table); error bars are
    the std over seeds (``<col>_std``) or, with one seed, its 95 % interval (``<col>_lo/_hi``)."""
    fig, ax = (None, ax) if ax is not None else plt.subplots(figsize=(8, 3.4))
    methods = list(table["method"])
    width = 0.8 / max(1, len(methods))
    for j, (_, row) in enumerate(table.iterrows()):
        x = np.arange(len(columns)) + (j - (len(methods) - 1) / 2) * width
        vals = np.array([row.get(c, np.nan) for c in columns], dtype=float)
        if all(f"{c}_std" in row and row[f"{c}_std"] == row[f"{c}_std"] for c in columns):
            err = np.array([row[f"{c}_std"] for c in columns], dtype=float)
        elif all(f"{c}_lo" in row and row[f"{c}_lo"] == row[f"{c}_lo"] for c in columns):
            err = np.vstack([vals - np.array([row[f"{c}_lo"] for c in columns], dtype=float),
                             np.array([row[f"{c}_hi"] for c in columns], dtype=float) - vals]).clip(min=0)
        else:
            err = None
        ax.bar(x, vals, width, yerr=err, capsize=2, label=f"{row['method']} (n={int(row.get('n_seeds', 1))})")
    ax.set_xticks(np.arange(len(columns)), [c.replace("acc_", "MC ") for c in columns], fontsize=8)
    ax.axhline(0.25, color="grey", ls=":", lw=1)
    ax.set(ylim=(0, 1.1), ylabel="test split", title=title or "Comparison (error bars: std over seeds or 95 % interval)")
    ax.legend(fontsize=7, ncol=3)
    return fig if fig is not None else ax.figure


def relearning_curve_plot(curves: dict[str, pd.DataFrame], column: str = "acc_concept", ax: Any = None,
                          title: str = "", chance: float = 0.25) -> Any:
    """Accuracy along a relearning fine-tune, one line per model (``curves``: name → the attack's ``curve``
    table with ``tokens`` and ``column``)."""
    fig, ax = (None, ax) if ax is not None else plt.subplots(figsize=(6, 3.2))
    for name, curve in curves.items():
        ax.plot(curve["tokens"], curve[column], marker="o", label=name)
    ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.set(xlabel="training tokens seen", ylabel=column.replace("acc_", "MC accuracy: "), ylim=(0, 1.05),
           title=title or "Relearning: test accuracy along the fine-tune")
    ax.legend(fontsize=8)
    return fig if fig is not None else ax.figure


def layer_accuracy_plot(table: pd.DataFrame, columns: Sequence[str] = ("probe_acc", "control_acc", "lens_acc"),
                        ax: Any = None, title: str = "", chance: float = 0.25) -> Any:
    """Per-layer accuracies of the probing attack (one line per column, shaded 95 % interval where the table has
    ``<col>_lo/_hi``)."""
    fig, ax = (None, ax) if ax is not None else plt.subplots(figsize=(6, 3.2))
    for col in columns:
        if col not in table:
            continue
        ax.plot(table["layer"], table[col], marker="o", label=col.replace("_acc", ""))
        if f"{col}_lo" in table:
            ax.fill_between(table["layer"], table[f"{col}_lo"], table[f"{col}_hi"], alpha=0.15)
    ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.set(xlabel="layer", ylabel="held-out MC accuracy", ylim=(0, 1.05), title=title or "Probing by layer")
    ax.legend(fontsize=8)
    return fig if fig is not None else ax.figure
