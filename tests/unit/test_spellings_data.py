"""Tests for the optional ``spellings.json`` of a concept folder (token-bypass respellings): every committed
file loads and only names words of the concept's test questions, and the loader rejects malformed entries
with the file and the word in the message."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ember_utils import data as D
from ember_utils.data import DataValidationError

WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
CONCEPTS_WITH_SPELLINGS = [s for s in D.list_concepts() if (D.data_root() / s / D.SPELLINGS).is_file()]


def _test_words(concept: D.ConceptData) -> set[str]:
    words: set[str] = set()
    for table in ("mc", "indirect_mc"):
        for _, row in concept.split(table, "test").iterrows():
            for text in [row["question"], *row["options"]]:
                words.update(WORD.findall(text))
    return words


def test_some_concepts_have_spellings():
    assert CONCEPTS_WITH_SPELLINGS, "no data/<concept>/spellings.json found"


@pytest.mark.parametrize("slug", CONCEPTS_WITH_SPELLINGS)
def test_committed_spellings_load_and_use_test_words(slug):
    concept = D.load_concept(slug)
    assert concept.spellings, f"{slug}: spellings.json is empty"
    words = _test_words(concept)
    missing = sorted(w for w in concept.spellings if w not in words)
    assert not missing, f"{slug}: spellings.json words not in the test mc/indirect questions or options: {missing}"
    for word, entry in concept.spellings.items():
        assert set(entry) <= set(D.SPELLING_FIELDS)
        if "misspelling" in entry:
            assert entry["misspelling"].casefold() != word.casefold()


# ============================================================================ loader errors on a toy folder


def _make_concept(root: Path) -> Path:
    """A minimal valid concept folder ``root/toy`` (one record per file, test questions about 'Toyland')."""
    folder = root / "toy"
    folder.mkdir(parents=True, exist_ok=True)
    mc = {"subtopic": "misc", "split": "test", "question": "Who rules Toyland?",
          "options": ["Noddy", "Big Ears", "Mr Plod", "Tessie Bear"], "answer": 0}
    files = {
        "sentences.jsonl": [{"id": "t-s-0001", "text": "Toyland is a toy town."}],
        "mc.jsonl": [{"id": "t-mc-001", **mc}],
        "similar_mc.jsonl": [{"id": "t-sim-001", **mc}],
        "indirect_mc.jsonl": [{"id": "t-ind-001", **mc}],
        "open.jsonl": [{"id": "t-open-001", "subtopic": "misc", "split": "test", "question": "Who?",
                        "answers": ["Noddy"]}],
        "collateral.jsonl": [{"id": "t-col-001", "kind": "sentence", "subtopic": "x", "word": "toy",
                              "split": "test", "text": "A toy boat."}],
        "prompts.jsonl": [{"id": "t-pr-001", "subtopic": "misc", "split": "test", "prompt": "In Toyland"}],
        "relearn.jsonl": [{"id": "t-rl-001", "text": "A paragraph about toys."}],
    }
    meta = {"name": "Toy", "slug": "toy", "similar_domain": "Other", "description": "A toy concept.",
            "prefix": "t", "names": ["toyland"]}
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    for name, recs in files.items():
        (folder / name).write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def toy_folder(tmp_path):
    return _make_concept(tmp_path)


def _load_with(folder: Path, spellings) -> D.ConceptData:
    (folder / D.SPELLINGS).write_text(json.dumps(spellings, ensure_ascii=False), encoding="utf-8")
    return D.load_concept("toy", root=folder.parent)


def test_missing_file_gives_empty_spellings(toy_folder):
    assert D.load_concept("toy", root=toy_folder.parent).spellings == {}


def test_hand_built_concept_data_defaults_to_empty_spellings(toy_folder):
    c = D.load_concept("toy", root=toy_folder.parent)
    hand = D.ConceptData(slug="toy", root=toy_folder, meta=c.meta, sentences=c.sentences, mc=c.mc,
                         similar_mc=c.similar_mc, open=c.open, relearn=c.relearn)
    assert hand.spellings == {}


def test_valid_spellings_load(toy_folder):
    good = {"Toyland": {"misspelling": "Toylannd", "translation": "Spielzeugland", "language": "German"},
            "Noddy": {"misspelling": "Nodddy"}}
    assert _load_with(toy_folder, good).spellings == good


@pytest.mark.parametrize("entry, pattern", [
    ("Toylannd", "expected an object"),
    (["Toylannd"], "expected an object"),
    ({"misspelling": "Toylannd", "note": "x"}, r"unexpected field\(s\) \['note'\]"),
    ({"language": "German"}, "needs a 'misspelling' or a 'translation'"),
    ({}, "needs a 'misspelling' or a 'translation'"),
    ({"misspelling": ""}, "must be non-empty strings"),
    ({"misspelling": "Toylannd", "translation": " ", "language": "German"}, "must be non-empty strings"),
    ({"misspelling": "Toylannd", "translation": "Spielzeugland", "language": ""}, "must be non-empty strings"),
    ({"misspelling": 3}, "must be non-empty strings"),
    ({"misspelling": "toyLAND"}, "equals the word"),
    ({"misspelling": "Toyland"}, "equals the word"),
    ({"translation": "Spielzeugland"}, "'translation' and 'language' must be given together"),
    ({"misspelling": "Toylannd", "language": "German"}, "'translation' and 'language' must be given together"),
])
def test_bad_entry_names_file_and_word(toy_folder, entry, pattern):
    with pytest.raises(DataValidationError, match=pattern) as info:
        _load_with(toy_folder, {"Noddy": {"misspelling": "Nodddy"}, "Toyland": entry})
    msg = str(info.value)
    assert Path(info.value.file).name == "spellings.json"
    assert "spellings.json" in msg and "'Toyland'" in msg
    assert "'Noddy'" not in msg  # the good entry is not reported


def test_all_bad_entries_are_listed(toy_folder):
    with pytest.raises(DataValidationError) as info:
        _load_with(toy_folder, {"Toyland": {"misspelling": "toyland"}, "Noddy": {"translation": "Oui-Oui"}})
    assert len(info.value.errors) == 2
    assert "'Toyland'" in str(info.value) and "'Noddy'" in str(info.value)


def test_file_that_is_not_an_object(toy_folder):
    with pytest.raises(DataValidationError, match="spellings.json.*expected a JSON object"):
        _load_with(toy_folder, [1, 2])
    (toy_folder / D.SPELLINGS).write_text("{oops", encoding="utf-8")
    with pytest.raises(DataValidationError, match="spellings.json.*bad JSON"):
        D.load_concept("toy", root=toy_folder.parent)
