"""Probing attack: at which layer does the knowledge still sit? Two read-outs of the residual stream per layer.

* a **linear probe**: the residual stream (``blocks.{l}.hook_resid_post``) at the last token of ``prompt + option``
  for every option, a logistic regression scoring each (question, option) row as correct or not, trained on the
  concept's *train* questions and tested on its *test* (evaluation) questions; a question's prediction is the
  option the probe rates highest. The same probe trained on shuffled answers is the control (what a probe finds
  in features that carry no answer).
* the **logit lens**: the residual stream at the prompt's last token ("Answer:") through the model's final norm
  and unembedding, each option scored by the log-probability of its first token.

Texts are tokenized exactly like :func:`~ember_utils.eval.mc.score_mc` (prompt with ``<bos>``, option appended).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..eval._hf import _device, _encode_cont, _encode_prompt, _progress, _resolve
from ..eval.intervals import bootstrap_interval
from ..eval.mc import MC_OPTION_TEMPLATE, MC_PROMPT_TEMPLATE, _questions_frame
from ..interp.logit_lens import _softcap, residual_hook_names
from ..state import ModelState, applied

__all__ = ["answer_activations", "probe_split", "probe_layers", "lens_option_logprobs", "logit_lens_accuracy",
           "probe_attack", "best_probe"]


def _layers(bridge: Any, layers: Sequence[int] | None) -> list[int]:
    n = int(bridge.cfg.n_layers)
    if layers is None:
        return list(range(n))
    out = [int(x) for x in layers]
    if not out:
        raise ValueError("layers is empty; pass None for every layer or a list of layer indices.")
    bad = [x for x in out if not 0 <= x < n]
    if bad:
        raise ValueError(f"Layer(s) {bad} out of range: the model has {n} layers (use 0..{n - 1}).")
    if len(set(out)) != len(out):
        raise ValueError(f"Duplicate layers in {out}.")
    return out


def _n_options(df: pd.DataFrame) -> int:
    counts = {len(o) for o in df["options"]}
    if len(counts) != 1 or min(counts) < 2:
        raise ValueError(f"Every question needs the same number (>= 2) of options; got option counts {sorted(counts)}.")
    return counts.pop()


def _last_token_resid(bridge: Any, rows: list[list[int]], names: list[str], pad: int,
                      device: torch.device) -> torch.Tensor:
    """(rows × layers × d_model) residual streams at each row's last real token (rows right-padded)."""
    width = max(len(r) for r in rows)
    tokens = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    last = torch.tensor([len(r) - 1 for r in rows], device=tokens.device)
    idx = torch.arange(len(rows), device=tokens.device)
    return torch.stack([cache[n][idx, last] for n in names], dim=1)


def _pad_id(tok: Any) -> int:
    pad = getattr(tok, "pad_token_id", None)
    return int(pad if pad is not None else (getattr(tok, "eos_token_id", None) or 0))


@torch.inference_mode()
def answer_activations(model: Any, questions: Any, layers: Sequence[int] | None = None, *,
                       prompt_template: str = MC_PROMPT_TEMPLATE, option_template: str = MC_OPTION_TEMPLATE,
                       batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """(n_questions, n_options, n_layers, d_model) float32: ``blocks.{l}.hook_resid_post`` at the last token of
    ``prompt + option``, for each option and each selected layer (default: all). The options of ``batch_size``
    questions run as one right-padded batch (causal attention: a row's last real token never sees the padding)."""
    hf, tok = _resolve(model)
    df = _questions_frame(questions)
    n_opt = _n_options(df)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    sel = _layers(model, layers)
    all_names = residual_hook_names(model)
    names = [all_names[i] for i in sel]
    pad = _pad_id(tok)
    rows = []
    for q, opts in zip(df["question"], df["options"]):
        prefix = _encode_prompt(tok, prompt_template.format(question=q))
        rows.extend(prefix + _encode_cont(tok, option_template.format(option=o)) for o in opts)
    step = batch_size * n_opt
    out = [_last_token_resid(model, rows[start:start + step], names, pad, _device(hf)).float().cpu().numpy()
           for start in _progress(range(0, len(rows), step), progress, total=-(-len(rows) // step), desc="activations")]
    return np.concatenate(out).reshape(len(df), n_opt, len(names), -1).astype(np.float32)


def probe_split(train_questions: pd.DataFrame, test_questions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) after checking that both are non-empty and share no question id (a probe must never be
    trained on an evaluation question)."""
    for name, df in (("train", train_questions), ("test", test_questions)):
        if len(df) == 0:
            raise ValueError(f"The {name} question table is empty; probes need train and test questions.")
        if "id" not in df.columns:
            raise ValueError(f"The {name} question table has no 'id' column (needed to check train/test overlap).")
    overlap = sorted(set(train_questions["id"]) & set(test_questions["id"]))
    if overlap:
        raise ValueError(f"Train and test questions overlap in {len(overlap)} id(s): {overlap[:10]}.")
    return train_questions.reset_index(drop=True), test_questions.reset_index(drop=True)


def _check_feats(feats: np.ndarray, answers: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(feats, dtype=np.float64), np.asarray(answers).astype(int)
    if x.ndim != 4:
        raise ValueError(f"{name} features must be (questions, options, layers, d_model), got shape {x.shape}.")
    if x.shape[0] == 0 or y.shape != (x.shape[0],):
        raise ValueError(f"{name}: need one answer per question and at least one question "
                         f"(features {x.shape}, answers {y.shape}).")
    if y.min() < 0 or y.max() >= x.shape[1]:
        raise ValueError(f"{name} answers must be option indices in 0..{x.shape[1] - 1}.")
    return x, y


def _fit_probe(x: np.ndarray, y: np.ndarray, Cs: Sequence[float], n_folds: int, seed: int) -> Any:
    """A scaled logistic regression on (question × option) rows, C chosen by grouped K-fold on the train questions."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_q, n_opt, d = x.shape
    rows = x.reshape(n_q * n_opt, d)
    labels = (np.arange(n_opt)[None, :] == y[:, None]).reshape(-1).astype(int)
    groups = np.repeat(np.arange(n_q), n_opt)
    folds = list(GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(rows, labels, groups))
    clf = LogisticRegressionCV(Cs=list(Cs), cv=folds, l1_ratios=(0.0,), scoring="neg_log_loss", max_iter=2000,
                               random_state=seed, use_legacy_attributes=False)
    return make_pipeline(StandardScaler(), clf).fit(rows, labels)


def _probe_correct(probe: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n_q, n_opt, d = x.shape
    p = probe.predict_proba(x.reshape(n_q * n_opt, d))[:, 1].reshape(n_q, n_opt)
    return (p.argmax(axis=1) == y).astype(float)


def probe_layers(train_feats: np.ndarray, train_answers: Sequence[int], test_feats: np.ndarray,
                 test_answers: Sequence[int], *, layers: Sequence[int] | None = None, seed: int = 0,
                 control: bool = True, Cs: Sequence[float] = (0.01, 0.1, 1, 10), n_folds: int = 5,
                 n_boot: int = 2000) -> pd.DataFrame:
    """One linear probe per layer (features from :func:`answer_activations`), one row per layer.

    Columns: ``layer`` (``layers`` labels the layer axis; default 0..), ``probe_acc`` with ``_lo/_hi`` (bootstrap
    over test questions), ``control_acc`` with ``_lo/_hi`` (the same probe trained on a random answer per train
    question, drawn with ``seed``; NaN when ``control=False``), ``chance``, ``n_train``, ``n_test`` and ``C``
    (chosen by ``n_folds``-fold cross-validation over train questions only).

    The control is near chance unless the correct option stands out without labels (an outlier along some
    direction): a probe fit to random answers then picks it, or avoids it, depending on the seed."""
    xtr, ytr = _check_feats(train_feats, train_answers, "train")
    xte, yte = _check_feats(test_feats, test_answers, "test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"Train and test features differ in (options, layers, d_model): {xtr.shape[1:]} vs {xte.shape[1:]}.")
    n_q, n_opt, n_layers, _ = xtr.shape
    if n_q < 2:
        raise ValueError(f"Need at least 2 train questions to cross-validate the probe, got {n_q}.")
    labels = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if len(labels) != n_layers:
        raise ValueError(f"layers has {len(labels)} labels for {n_layers} layers of features.")
    folds = min(n_folds, n_q)
    shuffled = np.random.default_rng(seed).integers(0, n_opt, size=n_q)
    rows = []
    for i, layer in enumerate(labels):
        probe = _fit_probe(xtr[:, :, i], ytr, Cs, folds, seed)
        acc, lo, hi = bootstrap_interval(_probe_correct(probe, xte[:, :, i], yte), n_boot=n_boot, seed=seed)
        row = {"layer": layer, "probe_acc": acc, "probe_acc_lo": lo, "probe_acc_hi": hi}
        if control:
            ctrl = _fit_probe(xtr[:, :, i], shuffled, Cs, folds, seed)
            c, clo, chi = bootstrap_interval(_probe_correct(ctrl, xte[:, :, i], yte), n_boot=n_boot, seed=seed)
        else:
            c = clo = chi = float("nan")
        rows.append({**row, "control_acc": c, "control_acc_lo": clo, "control_acc_hi": chi, "chance": 1 / n_opt,
                     "n_train": n_q, "n_test": len(yte), "C": float(probe[-1].C_)})
    return pd.DataFrame(rows)


@torch.inference_mode()
def lens_option_logprobs(model: Any, questions: Any, layers: Sequence[int] | None = None, *,
                         prompt_template: str = MC_PROMPT_TEMPLATE, option_template: str = MC_OPTION_TEMPLATE,
                         batch_size: int = 16) -> np.ndarray:
    """(n_questions, n_layers, n_options): the log-probability of each option's first token as the next token
    after the prompt, read from each selected layer's residual stream through ``ln_final``, ``unembed`` and the
    logit soft-cap (the last layer's row is the model's own prediction)."""
    hf, tok = _resolve(model)
    df = _questions_frame(questions)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    sel = _layers(model, layers)
    all_names = residual_hook_names(model)
    names = [all_names[i] for i in sel]
    prompts = [_encode_prompt(tok, prompt_template.format(question=q)) for q in df["question"]]
    firsts = [[_encode_cont(tok, option_template.format(option=o))[0] for o in opts] for opts in df["options"]]
    pad = _pad_id(tok)
    out: list[np.ndarray] = []
    for start in range(0, len(prompts), batch_size):
        resid = _last_token_resid(model, prompts[start:start + batch_size], names, pad, _device(hf))  # b × layers × d
        logp = torch.log_softmax(_softcap(model, model.unembed(model.ln_final(resid))).float(), dim=-1)
        for j, ids in enumerate(firsts[start:start + batch_size]):
            out.append(logp[j][:, torch.tensor(ids, device=logp.device)].double().cpu().numpy())
    n_opt = max(len(f) for f in firsts)
    return np.stack([np.pad(a, ((0, 0), (0, n_opt - a.shape[1])), constant_values=-np.inf) for a in out])


def logit_lens_accuracy(model: Any, questions: Any, layers: Sequence[int] | None = None, *,
                        prompt_template: str = MC_PROMPT_TEMPLATE, option_template: str = MC_OPTION_TEMPLATE,
                        batch_size: int = 16, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per layer: accuracy when each question is answered by the option whose first token the logit lens rates
    highest (:func:`lens_option_logprobs`). Columns ``layer``, ``lens_acc`` with ``_lo/_hi`` (bootstrap over
    questions), ``n`` and ``first_token_ties`` (questions where two options share their first token: the lens
    cannot tell them apart and picks the first)."""
    df = _questions_frame(questions)
    if "answer" not in df.columns:
        raise ValueError("The logit-lens accuracy needs an 'answer' column.")
    sel = _layers(model, layers)
    lp = lens_option_logprobs(model, df, sel, prompt_template=prompt_template, option_template=option_template,
                              batch_size=batch_size)
    _, tok = _resolve(model)
    ties = sum(len({_encode_cont(tok, option_template.format(option=o))[0] for o in opts}) < len(opts)
               for opts in df["options"])
    answers = df["answer"].astype(int).to_numpy()
    rows = []
    for i, layer in enumerate(sel):
        acc, lo, hi = bootstrap_interval((lp[:, i].argmax(axis=1) == answers).astype(float), n_boot=n_boot, seed=seed)
        rows.append({"layer": layer, "lens_acc": acc, "lens_acc_lo": lo, "lens_acc_hi": hi, "n": len(df),
                     "first_token_ties": int(ties)})
    return pd.DataFrame(rows)


def probe_attack(model: Any, concept: Any, *, layers: Sequence[int] | None = None, seed: int = 0, table: str = "mc",
                 state: ModelState | None = None, Cs: Sequence[float] = (0.01, 0.1, 1, 10), n_boot: int = 2000,
                 progress: bool = False) -> pd.DataFrame:
    """Probe and logit lens on ``concept.split(table, 'train')`` (probe training) and ``'test'`` (evaluation), with
    ``state`` applied when given (reverted afterwards): one row per layer with the columns of :func:`probe_layers`
    and :func:`logit_lens_accuracy` (its ``n`` dropped: it is ``n_test``), plus ``table``."""
    train, test = probe_split(concept.split(table, "train"), concept.split(table, "test"))
    sel = _layers(model, layers)

    def run() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        ftr = answer_activations(model, train, sel, progress=progress)
        fte = answer_activations(model, test, sel, progress=progress)
        return ftr, fte, logit_lens_accuracy(model, test, sel, n_boot=n_boot, seed=seed)

    with applied(state, model):
        ftr, fte, lens = run()
    probes = probe_layers(ftr, train["answer"], fte, test["answer"], layers=sel, seed=seed, Cs=Cs, n_boot=n_boot)
    return probes.merge(lens.drop(columns="n"), on="layer").assign(table=table)


def best_probe(table: pd.DataFrame) -> dict[str, Any]:
    """The layer with the highest probe accuracy, its interval and the control there, plus the mean over layers.

    The layer is chosen on the test questions, so ``probe_acc`` is an optimistic (attacker's best-of) estimate;
    ``mean_probe_acc`` (the average over layers) is not selected and so not optimistic."""
    if len(table) == 0 or "probe_acc" not in table.columns:
        raise ValueError("best_probe needs a non-empty table from probe_attack / probe_layers.")
    best = table.loc[table["probe_acc"].idxmax()]
    keys = ["layer", "probe_acc", "probe_acc_lo", "probe_acc_hi", "control_acc", "control_acc_lo", "control_acc_hi",
            "chance", "n_test"]
    out = {k: (best[k].item() if hasattr(best[k], "item") else best[k]) for k in keys}
    out["mean_probe_acc"] = float(table["probe_acc"].mean())
    out["mean_control_acc"] = float(table["control_acc"].mean())
    if "lens_acc" in table.columns:
        lens = table.loc[table["lens_acc"].idxmax()]
        out.update(lens_layer=int(lens["layer"]), lens_acc=float(lens["lens_acc"]),
                   last_layer_lens_acc=float(table.loc[table["layer"].idxmax(), "lens_acc"]))
    return out
