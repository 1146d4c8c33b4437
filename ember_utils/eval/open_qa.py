"""Open questions: greedy short answers matched against accepted answers after normalization."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ._hf import _resolve
from .generation import generate_greedy

#: Two neutral general-knowledge examples fix the answer format (short answer, then a blank line); zero-shot,
#: the 270M base model mostly answers with a sentence that restates the question (HP open accuracy 4 % vs 10 %).
OPEN_PROMPT_TEMPLATE = ("Question: What is the capital of France?\nAnswer: Paris\n\n"
                        "Question: Who painted the Mona Lisa?\nAnswer: Leonardo da Vinci\n\n"
                        "Question: {question}\nAnswer:")


_ARTICLES = {"a", "an", "the"}
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def normalize_answer(text: str) -> str:
    """Lowercase, strip accents, turn punctuation into spaces, drop the articles a/an/the, collapse spaces."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = "".join(c if c.isalnum() or c.isspace() else " " for c in text)
    return " ".join(w for w in text.split() if w not in _ARTICLES)


_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "mt", "no", "vs", "etc", "gen", "col", "capt",
                  "lt", "sgt", "rev", "hon", "ft", "approx", "ca", "inc", "ltd", "co", "vol"}


def answer_span(generation: str) -> str:
    """The part of a generation that counts as the answer: its first non-empty line, cut after the first
    sentence end (``.``, ``!`` or ``?`` followed by a space or the end of the line) — except after a single
    letter, a dotted initial or a common abbreviation ("J.K. Rowling", "Mr. Weasley", "St. Mungo's")."""
    lines = [ln for ln in str(generation).splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[0].strip()
    for m in _SENTENCE_END.finditer(line):
        before = line[:m.start()].split()
        word = before[-1].lstrip("\"'([") if before else ""
        if m.group() == "." and (len(word) <= 1 or "." in word or word.lower() in _ABBREVIATIONS):
            continue
        return line[:m.end()]
    return line


def answer_matches(generation: str, answers: Sequence[str]) -> bool:
    """True if some accepted answer, normalized (:func:`normalize_answer`), occurs as a whole-word sequence
    in the normalized :func:`answer_span` of the generation."""
    span = f" {normalize_answer(answer_span(generation))} "
    if not span.strip():
        return False
    for a in answers:
        na = normalize_answer(a)
        if na and f" {na} " in span:
            return True
    return False


def score_open(model: Any, questions: Any, *, tokenizer: Any = None, prompt_template: str = OPEN_PROMPT_TEMPLATE,
               max_new_tokens: int = 10, batch_size: int = 16, progress: bool = False) -> pd.DataFrame:
    """Greedy answers to open questions (``question``, ``answers`` columns), matched with :func:`answer_matches`.

    Returns one row per question: ``id`` (if present), ``generation``, ``answer_span``, ``correct`` and
    ``token_ids`` (the generated ids).
    """
    hf, tok = _resolve(model, tokenizer)
    df = questions if isinstance(questions, pd.DataFrame) else pd.DataFrame(list(questions))
    if len(df) == 0:
        raise ValueError("No open questions to score.")
    for c in ("question", "answers"):
        if c not in df.columns:
            raise ValueError(f"Open questions need a {c!r} column.")
    prompts = [prompt_template.format(question=q) for q in df["question"]]
    _, new_ids = generate_greedy(hf, prompts, tokenizer=tok, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 progress=progress)
    return open_answers(df, new_ids, tok)


def open_answers(questions: pd.DataFrame, new_ids: Sequence[Sequence[int]], tokenizer: Any) -> pd.DataFrame:
    """The table of :func:`score_open` from generated answer ids (one list per question, in order)."""
    df, tok = questions, tokenizer
    if len(new_ids) != len(df):
        raise ValueError(f"{len(new_ids)} generations for {len(df)} open questions.")
    gens = [tok.decode(ids, skip_special_tokens=True) for ids in new_ids]
    out = pd.DataFrame({"id": df["id"].values} if "id" in df.columns else {})
    out["generation"] = gens
    out["answer_span"] = [answer_span(g) for g in gens]
    out["correct"] = [answer_matches(g, a) for g, a in zip(gens, df["answers"])]
    out["token_ids"] = [list(ids) for ids in new_ids]
    return out

