"""Tests for ember_utils.data: loader validation on small malformed files, and quality checks over every
concept folder present in data/ (parametrized, so new concepts are checked automatically)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from ember_utils import data as D
from ember_utils.data import MIN_COUNTS, DataValidationError

# ============================================================================ helpers for temp datasets


def _mc(pfx: str, i: int, split: str, answer: int = 0, **kw) -> dict:
    rec = {"id": f"{pfx}-{i:03d}", "split": split, "question": f"Question number {i}?",
           "options": [f"opt{i}a", f"opt{i}b", f"opt{i}c", f"opt{i}d"], "answer": answer}
    rec.update(kw)
    return rec


def _write_jsonl(path: Path, records: list) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _make_concept(root: Path, slug: str = "toy", **overrides) -> Path:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"name": "Toy", "slug": slug, "similar_domain": "Other Toy", "description": "A toy concept."}
    files = {
        "sentences.jsonl": [{"id": f"t-s-{i:04d}", "text": f"Toy sentence number {i} is here."} for i in range(3)],
        "mc.jsonl": [_mc("t-mc", 1, "train"), _mc("t-mc", 2, "test", 1)],
        "similar_mc.jsonl": [_mc("t-sim", 1, "train"), _mc("t-sim", 2, "test", 2)],
        "open.jsonl": [{"id": "t-open-001", "question": "Who?", "answers": ["Someone"]}],
        "relearn.jsonl": [{"id": "t-rl-001", "text": "A paragraph about toys."}],
    }
    (folder / "meta.json").write_text(json.dumps(overrides.pop("meta", meta)), encoding="utf-8")
    for name, recs in files.items():
        _write_jsonl(folder / name, overrides.pop(name, recs))
    assert not overrides, overrides
    return folder


def _make_common(root: Path, **overrides) -> Path:
    folder = root / "common"
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "neutral.jsonl": [{"id": "n-0001", "topic": "cooking", "split": "train", "text": "Boil the water."},
                          {"id": "n-0002", "topic": "cooking", "split": "test", "text": "Chop the onions."}],
        "general_mc.jsonl": [_mc("g", 1, "train", subject="geo"), _mc("g", 2, "test", 3, subject="geo")],
        "coherence_prompts.jsonl": [{"id": "c-001", "split": "test", "prompt": "Describe a cat."}],
    }
    for name, recs in files.items():
        _write_jsonl(folder / name, overrides.pop(name, recs))
    return folder


@pytest.fixture
def toy_root(tmp_path):
    _make_concept(tmp_path)
    _make_common(tmp_path)
    return tmp_path


# ============================================================================ loader: happy path


def test_load_toy_concept_and_common(toy_root):
    c = D.load_concept("toy", root=toy_root)
    assert c.name == "Toy" and c.similar_domain == "Other Toy"
    assert len(c.sentences) == 3 and isinstance(c.sentences[0], str)
    assert list(c.split("mc", "train")["id"]) == ["t-mc-001"]
    assert list(c.split("mc", "test")["answer_text"]) == ["opt2b"]
    assert len(c.split("mc", "all")) == 2
    assert c.relearn_texts == ["A paragraph about toys."]
    common = D.load_common(root=toy_root)
    assert common.neutral_texts("test") == ["Chop the onions."]
    assert list(common.general("test")["subject"]) == ["geo"]
    assert common.prompts("test") == ["Describe a cat."]
    assert D.list_concepts(toy_root) == ["toy"]


def test_data_root_env(monkeypatch, toy_root):
    monkeypatch.setenv("EMBER_DATA_DIR", str(toy_root))
    assert D.data_root() == toy_root
    assert D.list_concepts() == ["toy"]
    monkeypatch.delenv("EMBER_DATA_DIR")
    assert D.data_root() == Path(D.__file__).resolve().parents[1] / "data"


def test_select_split_errors(toy_root):
    c = D.load_concept("toy", root=toy_root)
    with pytest.raises(ValueError, match="Unknown split"):
        D.select_split(c.mc, "validation")
    with pytest.raises(ValueError, match="no 'split' column"):
        c.split("open", "test")
    with pytest.raises(ValueError, match="Unknown table"):
        c.split("nope", "test")


def test_unknown_concept_and_bad_slug(toy_root):
    with pytest.raises(FileNotFoundError, match="Unknown concept 'nope'"):
        D.load_concept("nope", root=toy_root)
    with pytest.raises(ValueError):
        D.load_concept("../etc", root=toy_root)
    with pytest.raises(FileNotFoundError):
        D.load_concept("toy", root=toy_root / "missing")


# ============================================================================ loader: one test per error kind

BAD_CASES = [
    # (file, records or raw lines, expected line, message regex)
    ("mc.jsonl", [_mc("t-mc", 1, "train"), "{not json"], 2, r"bad JSON"),
    ("mc.jsonl", [_mc("t-mc", 1, "train"), "[1, 2]"], 2, r"expected a JSON object"),
    ("mc.jsonl", [{k: v for k, v in _mc("t-mc", 1, "train").items() if k != "answer"}], 1, r"missing field.*answer"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", extra="x")], 1, r"unexpected field.*extra"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", answer="0")], 1, r"'answer' must be an integer"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", answer=True)], 1, r"'answer' must be an integer"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", question=3)], 1, r"'question' must be a string"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", options="a, b, c, d")], 1, r"'options' must be a list of strings"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", options=["a", "b", "c"])], 1, r"exactly 4"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", options=["a", "b", "c", "d", "e"])], 1, r"exactly 4"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", options=["a", "b", "A ", "d"])], 1, r"not distinct"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", options=["a", "", "c", "d"])], 1, r"empty string"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", answer=4)], 1, r"answer 4 out of range"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", answer=-1)], 1, r"answer -1 out of range"),
    ("mc.jsonl", [_mc("t-mc", 1, "train"), _mc("t-mc", 1, "test")], 2, r"duplicate id 't-mc-001'"),
    ("mc.jsonl", [_mc("t-mc", 1, "validation")], 1, r"bad split 'validation'"),
    ("mc.jsonl", [_mc("t-mc", 1, "train", question="   ")], 1, r"'question' is empty"),
    ("sentences.jsonl", [{"id": "t-s-0001", "text": ""}], 1, r"'text' is empty"),
    ("open.jsonl", [{"id": "t-open-001", "question": "Who?", "answers": []}], 1, r"'answers' is an empty list"),
    ("open.jsonl", [{"id": "t-open-001", "question": "Who?", "answers": "Harry"}], 1, r"list of strings"),
    ("relearn.jsonl", [{"id": "t-rl-001", "text": "ok"}, {"id": "t-rl-002"}], 2, r"missing field.*text"),
    ("similar_mc.jsonl", [_mc("t-sim", 1, "train"), _mc("t-sim", 2, "test", 7)], 2, r"out of range"),
]


@pytest.mark.parametrize("fname,records,line,pattern", BAD_CASES,
                         ids=[f"{c[0]}:{c[3]}" for c in BAD_CASES])
def test_concept_file_errors_name_file_line_and_problem(tmp_path, fname, records, line, pattern):
    _make_concept(tmp_path, **{fname: records})
    with pytest.raises(DataValidationError) as info:
        D.load_concept("toy", root=tmp_path)
    err = info.value
    assert Path(err.file).name == fname
    assert err.index == line
    assert re.search(pattern, err.problem), err.problem
    assert fname in str(err) and f"line {line}" in str(err)


def test_blank_lines_are_skipped_but_line_numbers_kept(tmp_path):
    _make_concept(tmp_path, **{"mc.jsonl": [_mc("t-mc", 1, "train"), "", _mc("t-mc", 3, "test", answer=9)]})
    with pytest.raises(DataValidationError) as info:
        D.load_concept("toy", root=tmp_path)
    assert info.value.index == 3


def test_all_problems_of_a_file_are_listed(tmp_path):
    _make_concept(tmp_path, **{"mc.jsonl": [_mc("t-mc", 1, "train", answer=5), _mc("t-mc", 2, "bad")]})
    with pytest.raises(DataValidationError) as info:
        D.load_concept("toy", root=tmp_path)
    assert [i for i, _ in info.value.errors] == [1, 2]
    assert "2 problem(s)" in str(info.value)


def test_missing_and_empty_files(tmp_path):
    folder = _make_concept(tmp_path)
    (folder / "relearn.jsonl").unlink()
    with pytest.raises(DataValidationError, match="relearn.jsonl: file is missing"):
        D.load_concept("toy", root=tmp_path)
    (folder / "relearn.jsonl").write_text("\n")
    with pytest.raises(DataValidationError, match="no records"):
        D.load_concept("toy", root=tmp_path)


def test_meta_errors(tmp_path):
    _make_concept(tmp_path, meta={"name": "Toy", "slug": "other", "similar_domain": "X", "description": "d"})
    with pytest.raises(DataValidationError, match="does not match the folder name"):
        D.load_concept("toy", root=tmp_path)
    _make_concept(tmp_path, meta={"name": "Toy", "slug": "toy", "description": "d"})
    with pytest.raises(DataValidationError, match="missing field.*similar_domain"):
        D.load_concept("toy", root=tmp_path)
    (tmp_path / "toy" / "meta.json").write_text("{oops")
    with pytest.raises(DataValidationError, match="meta.json.*bad JSON"):
        D.load_concept("toy", root=tmp_path)


def test_ids_unique_across_files_of_a_concept(tmp_path):
    _make_concept(tmp_path, **{"relearn.jsonl": [{"id": "t-mc-001", "text": "clash"}]})
    with pytest.raises(DataValidationError, match="also used in mc.jsonl") as info:
        D.load_concept("toy", root=tmp_path)
    assert Path(info.value.file).name == "relearn.jsonl" and info.value.index == 1


def test_common_errors(tmp_path):
    _make_common(tmp_path, **{"neutral.jsonl": [{"id": "n-1", "topic": "x", "split": "dev", "text": "t"}]})
    with pytest.raises(DataValidationError, match="neutral.jsonl.*bad split 'dev'"):
        D.load_common(root=tmp_path)
    _make_common(tmp_path, **{"general_mc.jsonl": [_mc("g", 1, "train")]})  # no subject
    with pytest.raises(DataValidationError, match="general_mc.jsonl.*missing field.*subject"):
        D.load_common(root=tmp_path)
    _make_common(tmp_path, **{"coherence_prompts.jsonl": [{"id": "c-1", "split": "test", "prompt": 5}]})
    with pytest.raises(DataValidationError, match="'prompt' must be a string"):
        D.load_common(root=tmp_path)


def test_non_utf8_file(tmp_path):
    folder = _make_concept(tmp_path)
    (folder / "open.jsonl").write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(DataValidationError, match="UTF-8"):
        D.load_concept("toy", root=tmp_path)


# ============================================================================ real data in data/

REAL_ROOT = D.data_root()
CONCEPTS = D.list_concepts(REAL_ROOT) if REAL_ROOT.is_dir() else []


def _norm(text: str) -> str:
    return " ".join(str(text).casefold().split())


def _words(text: str) -> int:
    return len(str(text).split())


@pytest.fixture(scope="module")
def real_common():
    return D.load_common(REAL_ROOT)


@pytest.fixture(scope="module", params=CONCEPTS)
def real_concept(request):
    slug = request.param
    missing = [f for f in (*D.CONCEPT_FILES, "DATACARD.md") if not (REAL_ROOT / slug / f).is_file()]
    assert not missing, f"data/{slug} is missing {missing}"
    return D.load_concept(slug, REAL_ROOT)


def test_some_concepts_exist():
    assert CONCEPTS, f"no concept folders in {REAL_ROOT}"


def _check_mc_table(df: pd.DataFrame, label: str, min_total: int, min_per_split: int) -> None:
    counts = df["split"].value_counts()
    assert len(df) >= min_total, f"{label}: {len(df)} questions < {min_total}"
    assert counts.get("train", 0) >= min_per_split and counts.get("test", 0) >= min_per_split, f"{label}: {dict(counts)}"
    assert counts.get("train", 0) == counts.get("test", 0), f"{label}: unbalanced splits {dict(counts)}"
    assert df["id"].is_unique
    for opts, ans in zip(df["options"], df["answer"]):
        assert len(opts) == 4 and len({_norm(o) for o in opts}) == 4 and 0 <= ans < 4
    # exactly one correct option: the correct text occurs once among the options
    for opts, ans in zip(df["options"], df["answer"]):
        assert sum(_norm(o) == _norm(opts[ans]) for o in opts) == 1
    # disjoint splits: no question text in both train and test (and no duplicate questions at all)
    qn = df["question"].map(_norm)
    both = set(qn[df["split"] == "train"]) & set(qn[df["split"] == "test"])
    assert not both, f"{label}: questions in both splits: {sorted(both)[:5]}"
    assert qn.is_unique, f"{label}: duplicate questions {list(qn[qn.duplicated()])[:5]}"
    # correct index spread evenly over 0..3 (each index at least 15 % of the questions)
    share = df["answer"].value_counts(normalize=True).reindex(range(4), fill_value=0)
    assert (share >= 0.15).all(), f"{label}: answer index distribution {dict(share.round(2))}"
    long_opts = [o for opts in df["options"] for o in opts if not 1 <= _words(o) <= 6]
    assert not long_opts, f"{label}: options must be 1-6 words: {long_opts[:5]}"


def test_concept_meta(real_concept):
    assert real_concept.meta["slug"] == real_concept.slug
    assert real_concept.similar_domain.casefold() != real_concept.name.casefold()


def test_concept_sentences(real_concept):
    s = real_concept.sentences
    assert len(s) >= MIN_COUNTS["sentences"], f"{len(s)} sentences"
    assert len({_norm(t) for t in s}) == len(s), "duplicate sentences"
    bad = [t for t in s if not 8 <= _words(t) <= 40]
    assert not bad, f"sentences must be 8-40 words: {bad[:3]}"


def test_concept_mc(real_concept):
    _check_mc_table(real_concept.mc, f"{real_concept.slug}/mc", MIN_COUNTS["mc"], MIN_COUNTS["mc_per_split"])


def test_concept_similar_mc(real_concept):
    df = real_concept.similar_mc
    _check_mc_table(df, f"{real_concept.slug}/similar_mc", MIN_COUNTS["similar_mc"], MIN_COUNTS["similar_mc_per_split"])
    name = real_concept.name.casefold()
    about = [q for q, o in zip(df["question"], df["options"]) if name in (q + " " + " ".join(o)).casefold()]
    assert not about, f"similar-domain questions mention the concept {real_concept.name!r}: {about[:3]}"


def test_concept_open(real_concept):
    df = real_concept.open
    assert len(df) >= MIN_COUNTS["open"], f"{len(df)} open questions"
    assert df["question"].map(_norm).is_unique
    too_long = [a for a in df["answers"] if not 1 <= _words(a[0]) <= 3]
    assert not too_long, f"first accepted answer must be 1-3 words: {too_long[:3]}"


def test_relearn_paragraphs_do_not_leak_test_answers(real_concept):
    df = real_concept.relearn
    assert len(df) >= MIN_COUNTS["relearn"], f"{len(df)} relearning paragraphs"
    bad_len = [(i, _words(t)) for i, t in zip(df["id"], df["text"]) if not 60 <= _words(t) <= 150]
    assert not bad_len, f"paragraphs must be 60-150 words: {bad_len[:5]}"
    answers = set(real_concept.split("mc", "test")["answer_text"].str.casefold())
    leaks = [(rid, a) for rid, text in zip(df["id"], df["text"].str.casefold()) for a in answers if a in text]
    assert not leaks, f"test answers appear in relearning paragraphs: {leaks[:10]}"


def test_neutral(real_common):
    df = real_common.neutral
    assert len(df) >= MIN_COUNTS["neutral"]
    assert df["topic"].nunique() >= MIN_COUNTS["neutral_topics"]
    share = df.groupby("topic")["split"].apply(lambda s: (s == "test").mean())
    assert share.between(0.1, 0.3).all(), f"test share per topic should be ~20 %: {share[~share.between(0.1, 0.3)]}"
    assert df["text"].map(_norm).is_unique


def test_neutral_avoids_concepts(real_common):
    names = {}
    for slug in CONCEPTS:
        meta = json.loads((REAL_ROOT / slug / "meta.json").read_text(encoding="utf-8"))
        names[meta["name"].casefold()] = slug
    hits = [(rid, n) for rid, t in zip(real_common.neutral["id"], real_common.neutral["text"].str.casefold())
            for n in names if n in t]
    assert not hits, f"neutral sentences mention concepts: {hits[:10]}"


def test_general_mc(real_common):
    df = real_common.general_mc
    assert len(df) >= MIN_COUNTS["general_mc"]
    assert df["subject"].nunique() >= MIN_COUNTS["general_subjects"]
    share = df.groupby("subject")["split"].apply(lambda s: (s == "test").mean())
    assert share.between(0.3, 0.7).all(), f"~50/50 split per subject expected: {share[~share.between(0.3, 0.7)]}"
    for opts, ans in zip(df["options"], df["answer"]):
        assert len({_norm(o) for o in opts}) == 4 and 0 <= ans < 4
    qn = df["question"].map(_norm)
    assert not set(qn[df["split"] == "train"]) & set(qn[df["split"] == "test"])


def test_coherence_prompts(real_common):
    df = real_common.coherence_prompts
    assert len(df) >= MIN_COUNTS["coherence_prompts"]
    assert 0.3 <= (df["split"] == "test").mean() <= 0.7
    assert df["prompt"].map(_norm).is_unique
