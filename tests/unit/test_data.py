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
from ember_utils.data_quality import assign_splits, concept_problems, names_in, relearn_leaks

# ============================================================================ helpers for temp datasets


def _mc(pfx: str, i: int, split: str, answer: int = 0, **kw) -> dict:
    rec = {"id": f"{pfx}-{i:03d}", "subtopic": "misc", "split": split, "question": f"Question number {i}?",
           "options": [f"opt{i}a", f"opt{i}b", f"opt{i}c", f"opt{i}d"], "answer": answer}
    rec.update(kw)
    return rec


def _general(i: int, split: str, answer: int = 0, **kw) -> dict:
    rec = {k: v for k, v in _mc("g", i, split, answer).items() if k != "subtopic"}
    rec["subject"] = "geo"
    rec.update(kw)
    return rec


def _col(i: int, kind: str = "sentence", **kw) -> dict:
    rec = {"id": f"t-col-{i:03d}", "kind": kind, "subtopic": "stars", "word": "sirius", "split": "train"}
    if kind == "sentence":
        rec["text"] = "Sirius is the brightest star in the night sky."
    else:
        rec.update(question="Which star is the brightest in the night sky?",
                   options=["Sirius", "Vega", "Polaris", "Rigel"], answer=0)
    rec.update(kw)
    return rec


def _write_jsonl(path: Path, records: list) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _make_concept(root: Path, slug: str = "toy", **overrides) -> Path:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"name": "Toy", "slug": slug, "similar_domain": "Other Toy", "description": "A toy concept.",
            "prefix": "t", "names": ["toyland"]}
    files = {
        "sentences.jsonl": [{"id": f"t-s-{i:04d}", "text": f"Toy sentence number {i} is here."} for i in range(3)],
        "mc.jsonl": [_mc("t-mc", 1, "train"), _mc("t-mc", 2, "test", 1)],
        "similar_mc.jsonl": [_mc("t-sim", 1, "train"), _mc("t-sim", 2, "test", 2)],
        "indirect_mc.jsonl": [_mc("t-ind", 1, "train"), _mc("t-ind", 2, "test", 3)],
        "open.jsonl": [{"id": "t-open-001", "subtopic": "misc", "split": "test", "question": "Who?",
                        "answers": ["Someone"]}],
        "collateral.jsonl": [_col(1), _col(2, "mc", split="test")],
        "prompts.jsonl": [{"id": "t-pr-001", "subtopic": "misc", "split": "test", "prompt": "The toy box was"}],
        "relearn.jsonl": [{"id": "t-rl-001", "text": "A paragraph about toys."}],
    }
    (folder / "meta.json").write_text(json.dumps(overrides.pop("meta", meta)), encoding="utf-8")
    for name, recs in files.items():
        _write_jsonl(folder / name, overrides.pop(name, recs))
    assert not overrides, overrides
    return folder


def _neutral(i: int, split: str, **kw) -> dict:
    rec = {"id": f"n-{i:04d}", "topic": "cooking", "register": "instructions", "split": split,
           "text": f"Boil the water for {i} minutes."}
    rec.update(kw)
    return rec


def _make_common(root: Path, **overrides) -> Path:
    folder = root / "common"
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "neutral.jsonl": [_neutral(1, "train"), _neutral(2, "validation"), _neutral(3, "test")],
        "general_mc.jsonl": [_general(1, "train"), _general(2, "test", 3)],
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
    assert list(c.split("indirect_mc", "test")["answer_text"]) == ["opt2d"] and c.names == ["toyland"]
    assert list(c.collateral_sentences["word"]) == ["sirius"] and list(c.collateral_mc["answer_text"]) == ["Sirius"]
    assert list(c.split("open", "test")["id"]) == ["t-open-001"] and c.leak_allowlist == {}
    common = D.load_common(root=toy_root)
    assert common.neutral_texts("validation") == ["Boil the water for 2 minutes."]
    assert common.neutral_texts("test") == ["Boil the water for 3 minutes."]
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
        D.select_split(c.mc, "dev")
    with pytest.raises(ValueError, match="no 'split' column"):
        c.split("relearn", "test")
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
    ("open.jsonl", [{"id": "t-open-001", "subtopic": "x", "split": "test", "question": "Who?", "answers": []}], 1,
     r"'answers' is an empty list"),
    ("open.jsonl", [{"id": "t-open-001", "subtopic": "x", "split": "test", "question": "Who?", "answers": "Harry"}], 1,
     r"list of strings"),
    ("relearn.jsonl", [{"id": "t-rl-001", "text": "ok"}, {"id": "t-rl-002"}], 2, r"missing field.*text"),
    ("similar_mc.jsonl", [_mc("t-sim", 1, "train"), _mc("t-sim", 2, "test", 7)], 2, r"out of range"),
    ("indirect_mc.jsonl", [{k: v for k, v in _mc("t-ind", 1, "train").items() if k != "subtopic"}], 1,
     r"missing field.*subtopic"),
    ("open.jsonl", [{"id": "t-open-001", "subtopic": "x", "question": "Who?", "answers": ["A"]}], 1,
     r"missing field.*split"),
    ("collateral.jsonl", [_col(1, kind="poem")], 1, r"'kind' must be one of \['sentence', 'mc'\]"),
    ("collateral.jsonl", [_col(1, text="A bright star in the sky.")], 1, r"word 'sirius' does not occur"),
    ("collateral.jsonl", [_col(1, "mc", answer=4)], 1, r"answer 4 out of range"),
    ("collateral.jsonl", [{k: v for k, v in _col(1, "mc").items() if k != "word"}], 1, r"missing field.*word"),
    ("collateral.jsonl", [_col(1, "sentence", question="Which?")], 1, r"unexpected field.*question"),
    ("collateral.jsonl", [_col(1), _col(2, split="validation")], 2, r"bad split 'validation'"),
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
    base = {"name": "Toy", "slug": "toy", "similar_domain": "X", "description": "d", "prefix": "t", "names": ["toy"]}
    _make_concept(tmp_path, meta={**base, "slug": "other"})
    with pytest.raises(DataValidationError, match="does not match the folder name"):
        D.load_concept("toy", root=tmp_path)
    _make_concept(tmp_path, meta={k: v for k, v in base.items() if k != "similar_domain"})
    with pytest.raises(DataValidationError, match="missing field.*similar_domain"):
        D.load_concept("toy", root=tmp_path)
    _make_concept(tmp_path, meta={k: v for k, v in base.items() if k != "names"})
    with pytest.raises(DataValidationError, match="missing field.*names"):
        D.load_concept("toy", root=tmp_path)
    _make_concept(tmp_path, meta={**base, "names": ["Toyland"]})
    with pytest.raises(DataValidationError, match="names must be lower-case"):
        D.load_concept("toy", root=tmp_path)
    (tmp_path / "toy" / "meta.json").write_text("{oops")
    with pytest.raises(DataValidationError, match="meta.json.*bad JSON"):
        D.load_concept("toy", root=tmp_path)


def test_ids_unique_across_files_of_a_concept(tmp_path):
    _make_concept(tmp_path, **{"relearn.jsonl": [{"id": "t-mc-001", "text": "clash"}]})
    with pytest.raises(DataValidationError, match="also used in mc.jsonl") as info:
        D.load_concept("toy", root=tmp_path)
    assert Path(info.value.file).name == "relearn.jsonl" and info.value.index == 1


def test_leak_allowlist_errors_and_loading(tmp_path):
    folder = _make_concept(tmp_path)
    (folder / "leak_allowlist.json").write_text(json.dumps({"house": "too short"[:3]}))
    with pytest.raises(DataValidationError, match="leak_allowlist.json.*'house'"):
        D.load_concept("toy", root=tmp_path)
    (folder / "leak_allowlist.json").write_text("[1, 2]")
    with pytest.raises(DataValidationError, match="expected a JSON object"):
        D.load_concept("toy", root=tmp_path)
    (folder / "leak_allowlist.json").write_text(json.dumps({"house": "a generic word in a multi-word answer"}))
    assert D.load_concept("toy", root=tmp_path).leak_allowlist == {"house": "a generic word in a multi-word answer"}


def _showcase(**changes) -> dict:
    good = {"lens_prompt": "The capital of Toyland is", "lens_target": " Toytown",
            "prompts": ["In Toyland the toys", "Toyland is ruled by"], "attention_text": "Toyland has many toys.",
            "example_words": [" toy", " box", " Toyland"]}
    return {**good, **changes}


@pytest.mark.parametrize("changes, pattern", [
    ({"lens_target": "Toytown"}, "lens_target.*one word with a leading space"),
    ({"lens_target": " Toy town"}, "lens_target.*one word"),
    ({"prompts": ["In Toyland the toys"]}, "'prompts' must be a list of 2 to 6"),
    ({"example_words": [" toy", "box", " x"]}, "example word 'box'"),
    ({"attention_text": "A sentence about nothing."}, "names none of the concept's names"),
    ({"extra": 1}, "unexpected field 'extra'"),
])
def test_showcase_errors(tmp_path, changes, pattern):
    folder = _make_concept(tmp_path)
    (folder / D.SHOWCASE).write_text(json.dumps(_showcase(**changes)))
    with pytest.raises(DataValidationError, match=pattern):
        D.load_concept("toy", root=tmp_path)


def test_showcase_loading_and_missing(tmp_path):
    folder = _make_concept(tmp_path)
    c = D.load_concept("toy", root=tmp_path)
    assert c.showcase == {}
    with pytest.raises(FileNotFoundError, match="no showcase.json"):
        c.example("lens_prompt")
    (folder / D.SHOWCASE).write_text(json.dumps(_showcase()))
    c = D.load_concept("toy", root=tmp_path)
    assert c.example("lens_target") == " Toytown"
    with pytest.raises(ValueError, match="Unknown showcase field"):
        c.example("title")


def test_common_errors(tmp_path):
    _make_common(tmp_path, **{"neutral.jsonl": [_neutral(1, "dev")]})
    with pytest.raises(DataValidationError, match="neutral.jsonl.*bad split 'dev'"):
        D.load_common(root=tmp_path)
    _make_common(tmp_path, **{"neutral.jsonl": [_neutral(1, "train", register="poetry")]})
    with pytest.raises(DataValidationError, match="neutral.jsonl.*bad register 'poetry'"):
        D.load_common(root=tmp_path)
    _make_common(tmp_path, **{"neutral.jsonl": [{k: v for k, v in _neutral(1, "train").items() if k != "register"}]})
    with pytest.raises(DataValidationError, match="missing field.*register"):
        D.load_common(root=tmp_path)
    _make_common(tmp_path, **{"general_mc.jsonl": [{k: v for k, v in _general(1, "train").items() if k != "subject"}]})
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
    assert abs(counts.get("train", 0) - counts.get("test", 0)) <= 1, f"{label}: unbalanced splits {dict(counts)}"
    assert df["id"].is_unique
    for opts, ans in zip(df["options"], df["answer"]):
        assert len(opts) == 4 and len({_norm(o) for o in opts}) == 4 and 0 <= ans < 4
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


def _committed_splits_are_reproducible(path: Path) -> None:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.name == "neutral.jsonl":
        split = assign_splits(records, seed=0, key=lambda r: r["topic"], splits=D.NEUTRAL_SPLITS,
                              fractions=(0.7, 0.15, 0.15))
    else:
        split = assign_splits(records, seed=0, key=lambda r: (r.get("kind", ""), r["subtopic"]))
    changed = [r["id"] for r in records if split[r["id"]] != r["split"]]
    assert not changed, f"{path}: splits differ from assign_splits(seed=0) for {changed[:5]}"


def test_concept_meta(real_concept):
    assert real_concept.meta["slug"] == real_concept.slug
    assert real_concept.showcase, f"data/{real_concept.slug} has no showcase.json (the chapters' example texts)"
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


def test_concept_indirect_mc_avoids_the_names(real_concept):
    df = real_concept.indirect_mc
    _check_mc_table(df, f"{real_concept.slug}/indirect_mc", MIN_COUNTS["indirect_mc"], MIN_COUNTS["indirect_mc"] // 2)
    naming = [(rid, names_in(" ".join([q, *o]), real_concept.names))
              for rid, q, o in zip(df["id"], df["question"], df["options"])]
    assert not [x for x in naming if x[1]], f"indirect questions name the concept: {[x for x in naming if x[1]][:5]}"


def test_concept_seamlessness_prompts(real_concept):
    df = real_concept.prompts
    assert len(df) >= MIN_COUNTS["prompts"], f"{len(df)} seamlessness prompts"
    counts = df["split"].value_counts()
    assert abs(counts.get("train", 0) - counts.get("test", 0)) <= 1, dict(counts)
    named = sum(bool(names_in(p, real_concept.names)) for p in df["prompt"])
    assert named >= MIN_COUNTS["prompts_with_name"], f"only {named} prompts name the concept"
    starts = [" ".join(p.lower().split()[:4]) for p in df["prompt"]]
    assert len(set(starts)) == len(starts), "two prompts share their first four words"
    assert not [p for p in df["prompt"] if p != p.strip()], "prompts must not start or end with whitespace"


def test_concept_collateral(real_concept):
    sents, mc = real_concept.collateral_sentences, real_concept.collateral_mc
    assert len(sents) >= MIN_COUNTS["collateral_sentences"] and len(mc) >= MIN_COUNTS["collateral_mc"]
    _check_mc_table(mc, f"{real_concept.slug}/collateral_mc", MIN_COUNTS["collateral_mc"],
                    MIN_COUNTS["collateral_mc"] // 2)
    counts = sents["split"].value_counts()
    assert abs(counts.get("train", 0) - counts.get("test", 0)) <= 1, dict(counts)
    assert pd.concat([sents["word"], mc["word"]]).nunique() >= 10, "collateral should cover many words"


def test_committed_splits_are_seeded_and_stratified(real_concept):
    for name in ("mc.jsonl", "similar_mc.jsonl", "indirect_mc.jsonl", "open.jsonl", "collateral.jsonl", "prompts.jsonl"):
        _committed_splits_are_reproducible(real_concept.root / name)


def test_relearn_paragraphs_do_not_leak_test_answers(real_concept):
    df = real_concept.relearn
    assert len(df) >= MIN_COUNTS["relearn"], f"{len(df)} relearning paragraphs"
    bad_len = [(i, _words(t)) for i, t in zip(df["id"], df["text"]) if not 60 <= _words(t) <= 150]
    assert not bad_len, f"paragraphs must be 60-150 words: {bad_len[:5]}"
    assert concept_problems(real_concept) == []


def test_leak_check_finds_a_partial_leak(toy_root):
    """The distinctive-word check catches what a whole-answer substring check misses (e.g. 'Ribbentrop' for
    the answer 'Molotov-Ribbentrop Pact'), and the allow-list releases a reviewed word."""
    folder = toy_root / "toy"
    _write_jsonl(folder / "mc.jsonl", [_mc("t-mc", 1, "train"),
                                       _mc("t-mc", 2, "test", 0, options=["Molotov-Ribbentrop Pact", "b", "c", "d"])])
    _write_jsonl(folder / "relearn.jsonl", [{"id": "t-rl-001", "text": "Ribbentrop flew to Moscow in August."}])
    leaks = relearn_leaks(D.load_concept("toy", root=toy_root))
    assert len(leaks) == 1 and "'ribbentrop'" in leaks[0] and "t-mc-002" in leaks[0]
    (folder / "leak_allowlist.json").write_text(json.dumps({"ribbentrop": "reviewed: unavoidable in this toy text"}))
    assert relearn_leaks(D.load_concept("toy", root=toy_root)) == []


def test_assign_splits_is_seeded_stratified_and_balanced():
    recs = [{"id": f"r{i}", "subtopic": "abc"[i % 3]} for i in range(31)]
    a, b = assign_splits(recs, seed=0), assign_splits(recs, seed=0)
    assert a == b and assign_splits(recs, seed=1) != a
    counts = pd.Series(a).value_counts()
    assert abs(counts["train"] - counts["test"]) <= 1
    for t in "abc":
        per = pd.Series({k: v for k, v in a.items() if recs[int(k[1:])]["subtopic"] == t}).value_counts()
        assert abs(per.get("train", 0) - per.get("test", 0)) <= 1
    three = assign_splits(recs, seed=0, splits=("train", "validation", "test"), fractions=(0.7, 0.15, 0.15))
    assert pd.Series(three).value_counts()["train"] in (21, 22, 23)
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(recs, fractions=(0.5, 0.6))


def test_neutral(real_common):
    df = real_common.neutral
    assert len(df) >= MIN_COUNTS["neutral"]
    assert df["topic"].nunique() >= MIN_COUNTS["neutral_topics"]
    shares = df.groupby("topic")["split"].value_counts(normalize=True).unstack(fill_value=0)
    assert shares["validation"].between(0.1, 0.2).all() and shares["test"].between(0.1, 0.2).all(), shares
    assert set(df["register"]) == set(D.REGISTERS)
    assert (df.groupby("topic")["register"].nunique() >= 4).all(), "every topic mixes registers"
    assert df["text"].map(_norm).is_unique
    _committed_splits_are_reproducible(real_common.root / "neutral.jsonl")


def test_neutral_avoids_every_concept_name(real_common):
    names = [n for slug in CONCEPTS for n in D.load_concept(slug, REAL_ROOT).names]
    hits = [(rid, names_in(t, names)) for rid, t in zip(real_common.neutral["id"], real_common.neutral["text"])]
    hits = [h for h in hits if h[1]]
    assert not hits, f"neutral sentences name a concept: {hits[:10]}"


def test_neutral_keeps_the_ordinary_words_around_the_concepts(real_common):
    """The corpus must not avoid the words around a concept (or they become 'concept-only' and get edited)."""
    text = " ".join(real_common.neutral["text"]).lower()
    missing = [w for w in ("war", "battle", "army", "soldiers", "empire", "senate", "magic", "castle", "owl", "fossil",
                           "goal", "ball", "story") if not re.search(rf"\b{w}s?\b", text)]
    assert not missing, f"ordinary words missing from the neutral corpus: {missing}"


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
