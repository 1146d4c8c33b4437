"""Token bypass: the same questions with every word that contains an edited token spelled so that it tokenizes
without one (other casing, a hyphen inside, spaced letters, a common misspelling, a translation).

An embedding edit changes only the input rows of its tokens, so an edit that removed a *lookup key* and not the
knowledge loses here: the model reads the respelled name through untouched tokens. Each respelled text is
checked with the tokenizer (in the context the scorer uses) and a question counts only when no edited id is left
in its prompt or its options.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..eval._hf import _encode_cont, _encode_prompt, _resolve
from ..eval.intervals import bootstrap_interval, paired_bootstrap_interval
from ..eval.mc import MC_OPTION_TEMPLATE, MC_PROMPT_TEMPLATE, score_mc
from ..state import ModelState, applied

__all__ = ["STRATEGIES", "respell", "offending_words", "bypass_text", "bypass_questions", "edit_token_ids",
           "token_bypass_attack", "best_bypass"]

#: respelling strategies, in the order :func:`best_bypass` lists them
STRATEGIES = ("lowercase", "uppercase", "hyphenated", "spaced_letters", "misspelling", "translation")
_WORD = re.compile(r"[^\W_][\w'\-]*")


def _split_points(word: str) -> list[int]:
    mid = len(word) // 2
    return sorted(range(1, len(word)), key=lambda i: (abs(i - mid), i))


def respell(word: str, strategy: str, spellings: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Candidate spellings of ``word`` under ``strategy`` (first = preferred; empty when the strategy does not
    apply, e.g. lower-casing a lower-case word or a translation the data does not have)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; use one of {list(STRATEGIES)}.")
    entry = (spellings or {}).get(word) or {}
    if strategy == "lowercase":
        out = [word.lower()]
    elif strategy == "uppercase":
        out = [word.upper()]
    elif strategy == "hyphenated":
        out = [f"{word[:i]}-{word[i:]}" for i in _split_points(word) if word[i - 1] != "-" and word[i] != "-"]
    elif strategy == "spaced_letters":
        out = [" ".join(word)] if len(word) > 1 else []
    else:
        out = [entry[strategy]] if entry.get(strategy) else []
    return [w for w in out if w != word]


def _offending_spans(tok: Any, text: str, ids: Sequence[int], offsets: Sequence[tuple[int, int]],
                     edited: frozenset[int]) -> list[tuple[int, int]]:
    spans = []
    for i, (s, e) in zip(ids, offsets):
        if int(i) in edited:
            while s < e and text[s].isspace():
                s += 1
            spans.append((s, max(e, s + 1)))
    return spans


def offending_words(tok: Any, text: str, edited: frozenset[int], prefix: str = "") -> list[tuple[int, int, str]]:
    """(start, end, word) of every word of ``text`` that a token with an edited id overlaps, tokenizing
    ``prefix + text`` (the scorer's context: the prompt template before the question, or the option's space)."""
    enc = tok(prefix + text, add_special_tokens=False, return_offsets_mapping=True)
    spans = [(s - len(prefix), e - len(prefix)) for s, e in
             _offending_spans(tok, prefix + text, enc["input_ids"], enc["offset_mapping"], edited)]
    out = []
    for m in _WORD.finditer(text):
        if any(s < m.end() and e > m.start() for s, e in spans):
            out.append((m.start(), m.end(), m.group()))
    return out


def bypass_text(tok: Any, text: str, edited: frozenset[int], strategy: str,
                spellings: Mapping[str, Mapping[str, str]] | None = None, prefix: str = "",
                encode: Callable[[str], list[int]] | None = None) -> tuple[str, list[str]]:
    """``text`` with each offending word replaced by the first candidate of ``strategy`` whose own tokens hold no
    edited id; returns (new text, ["old→new", ...]). Words without a clean candidate stay as they are (the
    caller checks the whole text with ``encode``)."""
    encode = encode or (lambda t: list(tok(prefix + t, add_special_tokens=False)["input_ids"]))
    changes, pieces, last = [], [], 0
    for s, e, word in offending_words(tok, text, edited, prefix):
        lead = " " if s > 0 and text[s - 1] == " " else ""
        choice = next((c for c in respell(word, strategy, spellings)
                       if not edited & set(tok(lead + c, add_special_tokens=False)["input_ids"])), None)
        if choice is None:
            continue
        pieces += [text[last:s], choice]
        last = e
        changes.append(f"{word}→{choice}")
    return "".join(pieces) + text[last:], changes


def _prompt_prefix(prompt_template: str) -> str:
    if prompt_template.count("{question}") != 1:
        raise ValueError("prompt_template must contain '{question}' exactly once.")
    return prompt_template.split("{question}")[0]


def bypass_questions(tok: Any, questions: pd.DataFrame, edited: Iterable[int], strategy: str,
                     spellings: Mapping[str, Mapping[str, str]] | None = None, *,
                     prompt_template: str = MC_PROMPT_TEMPLATE, option_template: str = MC_OPTION_TEMPLATE
                     ) -> pd.DataFrame:
    """Every question with its question and options respelled by ``strategy``. Columns added: ``affected`` (the
    original prompt or options hold an edited id), ``clean`` (the respelled prompt and options hold none, checked
    on exactly the ids the scorer will see), ``changes`` ("old→new; ...")."""
    edited = frozenset(int(i) for i in edited)
    if not edited:
        raise ValueError("No edited token ids: a token bypass needs the ids of an embedding edit.")
    if len(questions) == 0:
        raise ValueError("No questions to respell (empty table).")
    q_prefix = _prompt_prefix(prompt_template)
    o_prefix = option_template.split("{option}")[0]

    def prompt_ids(q: str) -> set[int]:
        return set(_encode_prompt(tok, prompt_template.format(question=q)))

    def option_ids(o: str) -> set[int]:
        return set(_encode_cont(tok, option_template.format(option=o)))

    rows = []
    for rec in questions.to_dict(orient="records"):
        q, opts = str(rec["question"]), [str(o) for o in rec["options"]]
        affected = bool(edited & prompt_ids(q)) or any(edited & option_ids(o) for o in opts)
        new_q, changes = bypass_text(tok, q, edited, strategy, spellings, q_prefix)
        new_opts = []
        for o in opts:
            new_o, ch = bypass_text(tok, o, edited, strategy, spellings, o_prefix)
            new_opts.append(new_o)
            changes += ch
        clean = not (edited & prompt_ids(new_q)) and not any(edited & option_ids(o) for o in new_opts)
        rows.append({**rec, "question": new_q, "options": new_opts, "original_question": q, "affected": affected,
                     "clean": clean, "changes": "; ".join(changes)})
    return pd.DataFrame(rows)


def edit_token_ids(state: ModelState | None) -> frozenset[int]:
    """The token ids of the embedding edit(s) inside ``state`` (a stack included); empty when it holds none."""
    from ..methods.ember.edit import embedding_edits

    return frozenset().union(*(e.touched_tokens for e in embedding_edits(state)))


def _correct(model: Any, questions: pd.DataFrame, state: ModelState | None) -> np.ndarray:
    with applied(state, model):
        return score_mc(model, questions)["correct"].to_numpy(bool)


def token_bypass_attack(model: Any, concept: Any, edited: Iterable[int], states: Mapping[str, ModelState | None], *,
                        strategies: Sequence[str] = STRATEGIES, tables: Sequence[str] = ("mc", "indirect_mc"),
                        split: str = "test", n_boot: int = 2000, seed: int = 0,
                        unedited_memo: dict | None = None) -> pd.DataFrame:
    """Accuracy of every state on the respelled questions, one row per (state, table, strategy).

    Only questions the edit reaches (``affected``) and whose respelling is ``clean`` count. Columns:
    ``accuracy`` (respelled, with ``_lo/_hi``), ``original_accuracy`` (same questions as written), ``regained``
    (respelled − original, paired interval), ``unedited_accuracy`` (the unedited model on the respelled questions:
    what the respelling itself costs), ``n_affected``, ``n_clean`` and an example of the changes.

    Each state scores the questions as written once per table and the respelled ones once per strategy; the
    unedited model's scores on the respelled questions are the same for every state, so a caller that attacks
    states one call at a time passes the same ``unedited_memo`` dict to reuse them (keyed by model, concept,
    split, ids, table and strategy).
    """
    _, tok = _resolve(model)
    edited = frozenset(int(i) for i in edited)
    memo = {} if unedited_memo is None else unedited_memo
    rows = []
    for table in tables:
        qs = concept.split(table, split).reset_index(drop=True)
        if len(qs) == 0:
            continue
        as_written = {name: _correct(model, qs, state).astype(float) for name, state in states.items()}
        for strategy in strategies:
            bq = bypass_questions(tok, qs, edited, strategy, getattr(concept, "spellings", None))
            mask = (bq["affected"] & bq["clean"]).to_numpy(bool)
            keep = bq[mask].reset_index(drop=True)
            base = {"table": table, "strategy": strategy, "n_affected": int(bq["affected"].sum()),
                    "n_clean": len(keep), "example": keep["changes"].iloc[0] if len(keep) else ""}
            if keep.empty:
                rows += [{"state": name, **base} for name in states]
                continue
            key = (id(model), getattr(concept, "name", None), split, edited, table, strategy,
                   tuple(keep["question"]))
            if key not in memo:
                memo[key] = _correct(model, keep, None).astype(float)
            unedited = memo[key]
            for name, state in states.items():
                after = unedited if state is None else _correct(model, keep, state).astype(float)
                before = as_written[name][mask]
                acc, lo, hi = bootstrap_interval(after, n_boot=n_boot, seed=seed)
                d, dlo, dhi = paired_bootstrap_interval(after, before, n_boot=n_boot, seed=seed)
                rows.append({"state": name, **base, "accuracy": acc, "accuracy_lo": lo, "accuracy_hi": hi,
                             "original_accuracy": float(before.mean()), "regained": d, "regained_lo": dlo,
                             "regained_hi": dhi, "unedited_accuracy": float(unedited.mean())})
    return pd.DataFrame(rows)


def best_bypass(table: pd.DataFrame, state: str, questions: str = "mc", min_clean: int = 5) -> dict[str, Any]:
    """The strategy with the highest respelled accuracy for ``state`` among those that respelled at least
    ``min_clean`` questions (an attacker's best-of over strategies, so optimistic for the attacker)."""
    sub = table[(table["state"] == state) & (table["table"] == questions) & (table["n_clean"] >= min_clean)]
    sub = sub.dropna(subset=["accuracy"]) if "accuracy" in sub else sub.iloc[0:0]
    if sub.empty:
        return {"state": state, "strategy": None, "accuracy": float("nan")}
    best = sub.loc[sub["accuracy"].idxmax()]
    return {k: (best[k].item() if hasattr(best[k], "item") else best[k]) for k in
            ("state", "strategy", "accuracy", "accuracy_lo", "accuracy_hi", "original_accuracy", "regained",
             "regained_lo", "regained_hi", "unedited_accuracy", "n_clean")}
