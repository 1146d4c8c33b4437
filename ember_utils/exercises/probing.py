"""Chapter 7 exercises: a linear probe that decodes the correct option, and a respelling that dodges the edit."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ._check import ExerciseFailed, as_array, call, passed

__all__ = ["check_probe", "check_respelling"]


def check_probe(fn: Callable[[Any, Any, Any], Any], train_feats: Any, train_answers: Sequence[int], test_feats: Any,
                test_answers: Sequence[int], layer: int, seed: int = 0) -> bool:
    """``fn(train_x, train_y, test_x)`` → the predicted option of every test question, from features of one layer
    (questions × options × d_model, as :func:`ember_utils.attacks.probing.answer_activations` gives them at
    index ``layer``). It must decode as well as the package's probe (its accuracy inside the package's 95 %
    interval or above) and must use the labels: trained on shuffled answers it may not predict the same (three
    draws)."""
    from ..attacks.probing import probe_layers

    name = "linear probe"
    xtr, xte = np.asarray(train_feats, float)[:, :, layer], np.asarray(test_feats, float)[:, :, layer]
    ytr, yte = np.asarray(train_answers, int), np.asarray(test_answers, int)
    ref = probe_layers(train_feats[:, :, [layer]], ytr, test_feats[:, :, [layer]], yte, layers=[layer], seed=seed,
                       control=False).iloc[0]
    pred = as_array(call(fn, name, xtr.copy(), ytr.copy(), xte.copy()), name, "the predictions").ravel()
    if pred.shape != yte.shape:
        raise ExerciseFailed(f"{name}: return one predicted option per test question ({len(yte)}), got {pred.shape}.")
    if not np.isin(pred, np.arange(xte.shape[1])).all():
        raise ExerciseFailed(f"{name}: predictions must be option indices 0..{xte.shape[1] - 1}; got values "
                             f"{sorted(set(pred.tolist()) - set(range(xte.shape[1])))[:5]}.")
    acc = float((pred == yte).mean())
    if acc < ref["probe_acc_lo"] - 1e-9:
        raise ExerciseFailed(f"{name}: your probe's test accuracy {acc:.3f} lies below the package probe's interval "
                             f"[{ref['probe_acc_lo']:.3f}, {ref['probe_acc_hi']:.3f}] at layer {layer}. Standardize "
                             "the features, fit one logistic regression on (question, option) rows with label "
                             "'is the correct option', and predict the option with the highest probability.")
    rng = np.random.default_rng(seed)
    if len(set(pred.tolist())) > 1:  # a constant prediction says nothing about the labels either way
        same = [np.array_equal(as_array(call(fn, name, xtr.copy(), rng.permutation(ytr), xte.copy()), name,
                                        "the predictions").ravel(), pred) for _ in range(3)]
        if all(same):
            raise ExerciseFailed(f"{name}: trained on shuffled answers (three times) your probe predicts exactly the "
                                 "same options, so it does not use the labels (it picks an option by some other rule).")
    return passed(name, f"layer {layer}: accuracy {acc:.3f} (package {ref['probe_acc']:.3f}, "
                        f"[{ref['probe_acc_lo']:.3f}, {ref['probe_acc_hi']:.3f}]), chance {1 / xte.shape[1]:.2f}")


def check_respelling(fn: Callable[[str], str], tokenizer: Any, words: Iterable[str], edited_ids: Iterable[int]) -> bool:
    """``fn(word)`` → a spelling of ``word`` that, after a space as in a sentence, tokenizes without any edited id
    (and is not the word itself)."""
    name = "respelling"
    edited = frozenset(int(i) for i in edited_ids)
    words = list(words)
    if not words:
        raise ValueError("No words to respell.")
    problems = []
    for w in words:
        new = call(fn, name, w)
        if not isinstance(new, str):
            raise ExerciseFailed(f"{name}: return a string for {w!r}, got {type(new).__name__}.")
        if new.strip() == w.strip():
            problems.append(f"{w!r} came back unchanged")
            continue
        ids = tokenizer(" " + new.strip(), add_special_tokens=False)["input_ids"]
        left = [tokenizer.decode([i]) for i in ids if int(i) in edited]
        if left:
            problems.append(f"{new!r} (for {w!r}) still holds edited token(s) {left}")
    if problems:
        raise ExerciseFailed(f"{name}: " + "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if
                                                                     len(problems) > 5 else "") +
                             ". Tokenize with a leading space, as the word appears inside a question.")
    return passed(name, f"{len(words)} words respelled without an edited id")
