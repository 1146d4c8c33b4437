"""Every exercise check accepts a correct implementation and rejects a wrong one with a message that names the
mistake (on tiny models and planted data; the chapters run the same checks on the real model)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ember_utils.exercises import ExerciseFailed
from ember_utils.exercises.atoms import check_atom_purity, check_atom_ratio
from ember_utils.exercises.edit import check_delta_rule, check_edit_row
from ember_utils.exercises.elm import check_elm_target, check_soft_cross_entropy
from ember_utils.exercises.factorization import check_relative_error, check_top_atoms
from ember_utils.exercises.loading import check_embed_activation, check_layer_logits
from ember_utils.exercises.probing import check_probe, check_respelling
from ember_utils.exercises.relearn import check_normalized_regained, check_recovered_fraction
from ember_utils.exercises.results import check_bootstrap_interval, check_regained_table
from helpers.toy_data import planted_codes


def fails(match: str):
    return pytest.raises(ExerciseFailed, match=match)


# --- chapter 1
def test_embed_activation(tiny_bridge):
    scale = tiny_bridge.cfg.d_model ** 0.5
    assert check_embed_activation(lambda b, t: b.W_E[t[0]] * scale, tiny_bridge, "the cat sat")
    with fails("without the model's input scaling"):
        check_embed_activation(lambda b, t: b.W_E[t[0]], tiny_bridge, "the cat sat")


def test_layer_logits(tiny_bridge):
    def right(b, text):
        names = [f"blocks.{i}.hook_resid_post" for i in range(b.cfg.n_layers)]
        _, cache = b.run_with_cache(b.to_tokens(text), names_filter=lambda n: n in names)
        resid = torch.stack([cache[n][0, -1] for n in names])[:, None, :]
        logits = b.unembed(b.ln_final(resid))[:, 0, :]
        cap = getattr(b.cfg, "output_logits_soft_cap", -1.0) or -1.0
        return torch.tanh(logits / cap) * cap if cap > 0 else logits

    def no_norm(b, text):
        names = [f"blocks.{i}.hook_resid_post" for i in range(b.cfg.n_layers)]
        _, cache = b.run_with_cache(b.to_tokens(text), names_filter=lambda n: n in names)
        return b.unembed(torch.stack([cache[n][0, -1] for n in names])[:, None, :])[:, 0, :]

    assert check_layer_logits(right, tiny_bridge, "the cat sat on")
    with fails("differs|ln_final"):
        check_layer_logits(no_norm, tiny_bridge, "the cat sat on")
    with fails("shape"):
        check_layer_logits(lambda b, t: torch.zeros(3), tiny_bridge, "the cat sat on")


# --- chapter 2
def test_relative_error():
    rng = np.random.default_rng(0)
    G, F = rng.normal(size=(20, 4)), rng.normal(size=(4, 6))
    X = G @ F + 0.1 * rng.normal(size=(20, 6))
    assert check_relative_error(lambda X, G, F: np.linalg.norm(X - G @ F) / np.linalg.norm(X), X, G, F)
    with fails("square the ratio"):
        check_relative_error(lambda X, G, F: (np.linalg.norm(X - G @ F) / np.linalg.norm(X)) ** 2, X, G, F)


def test_top_atoms():
    G = np.array([[0.1, -3.0, 2.0, 0.0, 1.0]])
    assert check_top_atoms(lambda G, r, k: np.argsort(-np.abs(G[r]))[:k], G, 0, 3)
    with fails("signed code"):
        check_top_atoms(lambda G, r, k: np.argsort(-G[r])[:k], G, 0, 3)
    with fails("wrong order"):
        check_top_atoms(lambda G, r, k: np.argsort(-np.abs(G[r]))[:k][::-1], G, 0, 3)


# --- chapter 3
def test_atom_ratio_and_purity():
    G, vocab = planted_codes()

    def ratio(G, cm, nm):
        A = np.abs(G)
        with np.errstate(divide="ignore", invalid="ignore"):
            c, n = A[cm].mean(0), A[nm].mean(0)
            return np.where(n > 0, c / np.where(n > 0, n, 1), np.where(c > 0, np.inf, 0))

    def purity(G, cm):
        A = np.abs(G)
        mass = A.sum(0)
        return np.where(mass > 0, A[cm].sum(0) / np.where(mass > 0, mass, 1), 0.0)

    assert check_atom_ratio(ratio, G, vocab)
    assert check_atom_purity(purity, G, vocab)
    with fails("divide neutral by concept"):
        check_atom_ratio(lambda G, cm, nm: 1 / ratio(G, cm, nm), G, vocab)
    with fails("differs|signed"):
        check_atom_purity(lambda G, cm: G[cm].sum(0) / np.where(G.sum(0) == 0, 1, G.sum(0)), G, vocab)


# --- chapter 4
def test_edit_row(tmp_path):
    from ember_utils.methods.ember.pipeline import fit_concept_atoms
    from helpers.tiny_models import tiny_bridge_and_hf
    from helpers.toy_data import TINY_CONCEPT_TEXTS, TINY_NEUTRAL_TEXTS

    bridge, _, _ = tiny_bridge_and_hf()
    atoms = fit_concept_atoms(bridge, TINY_CONCEPT_TEXTS, TINY_NEUTRAL_TEXTS, "hp", n_atoms=4, sparsity=0.2, max_iter=40,
                              patience=10,
                              cache_dir=tmp_path)
    before = bridge.W_E.detach().clone()
    assert check_edit_row(lambda e, g, F, d: e - d * (g @ F), atoms, bridge, delta=2.0)
    with fails("add the concept direction"):
        check_edit_row(lambda e, g, F, d: e + d * (g @ F), atoms, bridge, delta=2.0)
    assert torch.equal(bridge.W_E, before)  # the check restores the model


def test_delta_rule():
    def rule(t):
        ok = t[t["passes_gates"] & (t["score"] > 0)]
        if ok.empty:
            return None
        best = ok.loc[ok["score"].idxmax()]
        se = 0.0 if pd.isna(best["score_se"]) else best["score_se"]
        return float(ok.loc[ok["score"] >= best["score"] - se, "delta"].min())

    def best_only(t):
        ok = t[t["passes_gates"]]
        return None if ok.empty or (ok["score"] <= 0).all() else float(ok.loc[ok["score"].idxmax(), "delta"])

    assert check_delta_rule(rule)
    with fails("smallest δ within one SE"):
        check_delta_rule(best_only)
    with fails("fails a gate"):
        check_delta_rule(lambda t: float(t.loc[t["score"].idxmax(), "delta"]) if t["passes_gates"].any() else None)


# --- chapter 5
def _three(seed=0, n=4, v=40):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, v, generator=g) * 3 for _ in range(3))


def test_elm_target():
    base, expert, novice = _three()

    def right(b, e, n, eta, k):
        idx = b.topk(k, -1).indices
        lp = lambda x: torch.log_softmax(x, -1).gather(-1, idx)  # noqa: E731
        return idx, torch.softmax(lp(b) + eta * (lp(n) - lp(e)), -1)

    assert check_elm_target(right, base, expert, novice, eta=2.0, top_k=10)
    with fails("swap expert and novice"):
        check_elm_target(lambda b, e, n, eta, k: right(b, n, e, eta, k), base, expert, novice, eta=2.0, top_k=10)


def test_soft_cross_entropy():
    logits, _, _ = _three()
    idx = logits.topk(5, -1).indices
    probs = torch.softmax(torch.randn(4, 5), -1)
    right = lambda z, i, q: -(q * torch.log_softmax(z, -1).gather(-1, i)).sum(-1).mean()  # noqa: E731
    assert check_soft_cross_entropy(right, logits, idx, probs)
    with fails("normalize over the k candidates only"):
        check_soft_cross_entropy(lambda z, i, q: -(q * torch.log_softmax(z.gather(-1, i), -1)).sum(-1).mean(),
                                 logits, idx, probs)


# --- chapter 6
def test_recovered_fraction():
    g = torch.Generator().manual_seed(0)
    orig = torch.randn(6, 8, generator=g)
    edited = orig - torch.randn(6, 8, generator=g)
    after = edited + 0.3 * (orig - edited) + 0.05 * torch.randn(6, 8, generator=g)
    right = lambda o, e, a: ((a - e) * (o - e)).sum(1) / ((o - e) ** 2).sum(1)  # noqa: E731
    assert check_recovered_fraction(right, orig, edited, after)
    with fails("instead of its square"):
        check_recovered_fraction(lambda o, e, a: ((a - e) * (o - e)).sum(1) / (o - e).norm(dim=1), orig, edited, after)


def test_normalized_regained():
    assert check_normalized_regained(lambda a, u, c: (a - c) / (u - c), 0.4, 0.55)
    with fails("forget to subtract chance"):
        check_normalized_regained(lambda a, u, c: a / u, 0.4, 0.55)


# --- chapter 7
def _probe_data(seed=0, n_train=40, n_test=30, n_opt=4, d=6, strength=1.5):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)

    def make(n):
        y = rng.integers(0, n_opt, n)
        x = rng.normal(size=(n, n_opt, 1, d))
        x[np.arange(n), y, 0] += strength * direction
        return x, y

    return (*make(n_train), *make(n_test))


def test_probe():
    from sklearn.linear_model import LogisticRegression

    xtr, ytr, xte, yte = _probe_data()

    def right(x, y, xt):
        n, k, d = x.shape
        clf = LogisticRegression(max_iter=1000).fit(x.reshape(-1, d), (np.arange(k)[None] == y[:, None]).ravel())
        return clf.predict_proba(xt.reshape(-1, d))[:, 1].reshape(len(xt), k).argmax(1)

    assert check_probe(right, xtr, ytr, xte, yte, layer=0)
    with fails("below the package probe's interval"):
        check_probe(lambda x, y, xt: np.zeros(len(xt), int) + (yte[0] + 1) % 4, xtr, ytr, xte, yte, layer=0)
    # the correct option stands out by its norm: picking the longest option decodes it without any label
    xtr, ytr, xte, yte = _probe_data(strength=6.0)
    with fails("does not use the labels"):
        check_probe(lambda x, y, xt: np.linalg.norm(xt, axis=-1).argmax(1), xtr, ytr, xte, yte, layer=0)


def test_respelling(tiny_bridge):
    tok = tiny_bridge.tokenizer
    word = "Hogwarts"
    edited = set(tok(" " + word, add_special_tokens=False)["input_ids"])
    assert check_respelling(lambda w: " ".join(w), tok, [word], edited)
    with fails("unchanged"):
        check_respelling(lambda w: w, tok, [word], edited)


# --- chapter 8
def test_bootstrap_interval():
    values = np.random.default_rng(0).integers(0, 2, 60)

    def right(x, level, seed):
        rng = np.random.default_rng(seed + 1)  # a different draw than the package's is fine
        means = x[rng.integers(0, len(x), (4000, len(x)))].mean(1)
        a = (1 - level) / 2
        return x.mean(), np.quantile(means, a), np.quantile(means, 1 - a)

    assert check_bootstrap_interval(right, values)
    with fails("zero width"):
        check_bootstrap_interval(lambda x, level, seed: (x.mean(), x.mean(), x.mean()), values)
    with fails("check the quantiles"):
        check_bootstrap_interval(lambda x, level, seed: right(x, 0.5, seed), values)


def test_regained_table():
    table = pd.DataFrame({"method": ["unedited", "EMBER", "ELM", "ELM+EMBER"], "acc_before": [0.65, 0.4, 0.35, 0.3],
                          "acc_relearn_full": [0.66, 0.5, 0.55, 0.45]})

    def right(t, chance):
        ref = t.set_index("method").loc["unedited", "acc_before"] - chance
        erased = t[t["method"] != "unedited"]
        return pd.DataFrame({"method": erased["method"], "regained_normalized": (erased["acc_relearn_full"] - chance) / ref})

    assert check_regained_table(right, table)
    with fails("own accuracy before"):
        check_regained_table(lambda t, c: t[t.method != "unedited"].assign(
            regained_normalized=(t.acc_relearn_full - c) / (t.acc_before - c)), table)
