"""Dataset quality rules that go beyond the per-record schema: seeded stratified splits, concept names in text
that must not name the concept, and relearning text that must not leak test answers.

Used by the data tests and by whoever writes a new concept folder (``python -m ember_utils.data_quality check
<slug>`` lists every problem with file and record id).
"""
from __future__ import annotations

import argparse
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .data import ConceptData, load_concept

__all__ = ["assign_splits", "names_in", "distinctive_words", "relearn_leaks", "concept_problems", "STOPWORDS"]

#: Words that never identify an answer (function words and a few generic ones).
STOPWORDS = frozenset("""a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having he
her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
off on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours yourself yourselves one two three first second new old
called named known""".split())


def assign_splits(records: Sequence[dict[str, Any]], seed: int = 0, key: Callable[[dict], Any] | None = None,
                  splits: Sequence[str] = ("train", "test"),
                  fractions: Sequence[float] | None = None) -> dict[str, str]:
    """Seeded random split of ``records`` (each with an ``id``), stratified by ``key`` (default: ``subtopic``).

    Within each group (groups in sorted order, one ``random.Random(seed)`` for all) the ids are sorted, shuffled
    and cut into ``fractions`` (default: equal shares) of ``splits``, in that order; the remainders of all groups
    go to the splits in turn, so the totals stay balanced. Returns ``{id: split}``.
    """
    if fractions is None:
        fractions = [1.0 / len(splits)] * len(splits)
    if len(fractions) != len(splits) or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions {list(fractions)} must be one non-negative share per split, summing to 1.")
    key = key or (lambda r: r["subtopic"])
    groups: dict[Any, list[str]] = defaultdict(list)
    for r in records:
        groups[key(r)].append(r["id"])
    if sum(len(v) for v in groups.values()) != len({r["id"] for r in records}):
        raise ValueError("record ids are not unique.")
    rng = random.Random(seed)
    out: dict[str, str] = {}
    turn = 0
    for g in sorted(groups):
        ids = sorted(groups[g])
        rng.shuffle(ids)
        counts = [int(len(ids) * f) for f in fractions]
        for _ in range(len(ids) - sum(counts)):
            counts[turn % len(splits)] += 1
            turn += 1
        start = 0
        for name, c in zip(splits, counts):
            for rid in ids[start:start + c]:
                out[rid] = name
            start += c
    return out


def _name_pattern(names: Iterable[str]) -> re.Pattern | None:
    names = sorted({n.strip().lower() for n in names if n.strip()}, key=len, reverse=True)
    if not names:
        return None
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(n) for n in names) + r")(?!\w)", re.IGNORECASE)


def names_in(text: str, names: Iterable[str]) -> list[str]:
    """The concept names (whole words or phrases, case-insensitive) that occur in ``text``."""
    pat = _name_pattern(names)
    return [m.group(0) for m in pat.finditer(text)] if pat else []


def distinctive_words(answer: str) -> list[str]:
    """Lower-case words of an answer that could give it away: no stopwords, at least 3 letters (numbers count)."""
    return [w for w in re.findall(r"[a-z0-9]+", answer.lower())
            if w not in STOPWORDS and (len(w) >= 3 or w.isdigit())]


def _test_answers(concept: ConceptData) -> list[tuple[str, str]]:
    """(record id, answer text) of every test answer: correct MC option (concept and indirect MC) and every
    accepted open answer."""
    out = []
    for table in (concept.mc, concept.indirect_mc):
        test = table[table["split"] == "test"]
        out += list(zip(test["id"], test["answer_text"]))
    open_test = concept.open[concept.open["split"] == "test"] if "split" in concept.open else concept.open.iloc[:0]
    for rid, answers in zip(open_test["id"], open_test["answers"]):
        out += [(rid, a) for a in answers]
    return out


def relearn_leaks(concept: ConceptData) -> list[str]:
    """Test answers whose distinctive words occur in relearning text (unless allow-listed), one line each."""
    where: dict[str, set[str]] = defaultdict(set)
    for rid, text in zip(concept.relearn["id"], concept.relearn["text"]):
        for w in set(re.findall(r"[a-z0-9]+", text.lower())):
            where[w].add(rid)
    leaks = []
    for qid, answer in _test_answers(concept):
        for w in distinctive_words(answer):
            if w in where and w not in concept.leak_allowlist:
                leaks.append(f"{qid}: test answer {answer!r} — word {w!r} is in relearning text "
                             f"{sorted(where[w])[:3]}")
    return leaks


def concept_problems(concept: ConceptData) -> list[str]:
    """Every quality problem of one concept folder: leaks, names in indirect questions, open answers that
    repeat the MC answers, allow-list words that no test answer needs."""
    problems = list(relearn_leaks(concept))
    for rid, q, opts in zip(concept.indirect_mc["id"], concept.indirect_mc["question"], concept.indirect_mc["options"]):
        found = names_in(" ".join([q, *opts]), concept.names)
        if found:
            problems.append(f"{rid}: indirect question names the concept ({found[:3]})")
    mc_answers = {a.strip().casefold() for a in concept.mc["answer_text"]}
    repeats = [rid for rid, answers in zip(concept.open["id"], concept.open["answers"])
               if any(a.strip().casefold() in mc_answers for a in answers)]
    if len(concept.open) and len(repeats) > 0.25 * len(concept.open):
        problems.append(f"open.jsonl: {len(repeats)}/{len(concept.open)} open questions have an MC answer as an "
                        "accepted answer (at most 25 % may)")
    needed = {w for _, a in _test_answers(concept) for w in distinctive_words(a)}
    problems += [f"leak_allowlist.json: {w!r} is not a word of any test answer" for w in concept.leak_allowlist
                 if w not in needed]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ember_utils.data_quality", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["check"])
    ap.add_argument("concepts", nargs="+", help="concept slugs (folders of data/)")
    args = ap.parse_args(argv)
    total = 0
    for slug in args.concepts:
        problems = concept_problems(load_concept(slug))
        for p in problems:
            print(f"{slug}: {p}")
        total += len(problems)
    print(f"problems: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())
