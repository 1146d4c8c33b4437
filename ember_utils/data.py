"""Loading and validation of the concept datasets in ``data/`` (layout and schemas: ``data/SCHEMA.md``).

Every file is validated when it is loaded. A malformed record raises :class:`DataValidationError`, which
names the file, the record index (1-based line number in the JSONL file) and what is wrong; all problems
of one file are listed in the message (at most 20), the first one is also available as attributes.

Public API::

    data_root() -> Path                       # $EMBER_DATA_DIR, else <repo>/data
    list_concepts(root=None) -> list[str]     # concept slugs (sub-folders of data/ other than common/)
    load_concept(slug, root=None) -> ConceptData
    load_common(root=None) -> CommonData
    select_split(df, split) -> DataFrame      # 'train' / 'test' / 'all' (or None)

Dataset *quality* rules (minimum counts, balanced splits, relearning text that does not leak test
answers, ...) are checked by ``tests/test_data.py`` with the thresholds in :data:`MIN_COUNTS`; the loader
itself only enforces the per-record schema and unique ids, so small files (tests, FAST runs) load fine.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "DataValidationError",
    "ConceptData",
    "CommonData",
    "data_root",
    "list_concepts",
    "load_concept",
    "load_common",
    "select_split",
    "read_jsonl",
    "CONCEPT_FILES",
    "COMMON_FILES",
    "MIN_COUNTS",
    "SPLITS",
    "NEUTRAL_SPLITS",
    "REGISTERS",
    "CONCEPT_TABLES",
]

#: Splits of question and prompt files; the neutral corpus also has a validation split (:data:`NEUTRAL_SPLITS`).
SPLITS = ("train", "test")
NEUTRAL_SPLITS = ("train", "validation", "test")
ALL_SPLITS = NEUTRAL_SPLITS
N_OPTIONS = 4
#: Registers of the neutral corpus.
REGISTERS = ("encyclopedic", "news", "narrative", "instructions", "dialogue", "web")
#: Kinds of records in ``collateral.jsonl``.
COLLATERAL_KINDS = ("sentence", "mc")

#: Minimum sizes from ``data/SCHEMA.md`` (checked by the data tests, not by the loader).
MIN_COUNTS: dict[str, int] = {
    "sentences": 150,
    "mc": 120,
    "mc_per_split": 60,
    "similar_mc": 60,
    "similar_mc_per_split": 30,
    "open": 40,
    "relearn": 50,
    "indirect_mc": 40,
    "collateral_sentences": 60,
    "collateral_mc": 40,
    "neutral": 3000,
    "neutral_topics": 40,
    "general_mc": 200,
    "general_subjects": 10,
    "coherence_prompts": 50,
    "prompts": 40,
    "prompts_with_name": 32,
}

# field name -> (python type(s), description) ; "str" fields must be non-empty after strip().
_STR, _INT, _LIST = "str", "int", "list[str]"
_MC_FIELDS = {"id": _STR, "subtopic": _STR, "split": _STR, "question": _STR, "options": _LIST, "answer": _INT}
_COLLATERAL_BASE = {"id": _STR, "kind": _STR, "subtopic": _STR, "word": _STR, "split": _STR}
_COLLATERAL_FIELDS = {
    "sentence": {**_COLLATERAL_BASE, "text": _STR},
    "mc": {**_COLLATERAL_BASE, "question": _STR, "options": _LIST, "answer": _INT},
}
_SCHEMAS: dict[str, dict[str, str]] = {
    "sentences.jsonl": {"id": _STR, "text": _STR},
    "mc.jsonl": _MC_FIELDS,
    "similar_mc.jsonl": _MC_FIELDS,
    "indirect_mc.jsonl": _MC_FIELDS,
    "open.jsonl": {"id": _STR, "subtopic": _STR, "split": _STR, "question": _STR, "answers": _LIST},
    "relearn.jsonl": {"id": _STR, "text": _STR},
    "neutral.jsonl": {"id": _STR, "topic": _STR, "register": _STR, "split": _STR, "text": _STR},
    "general_mc.jsonl": {"id": _STR, "subject": _STR, "split": _STR, "question": _STR, "options": _LIST, "answer": _INT},
    "coherence_prompts.jsonl": {"id": _STR, "split": _STR, "prompt": _STR},
    "prompts.jsonl": {"id": _STR, "subtopic": _STR, "split": _STR, "prompt": _STR},
}
_META_FIELDS = {"name": _STR, "slug": _STR, "similar_domain": _STR, "description": _STR, "prefix": _STR,
                "names": _LIST}

#: Files every concept folder must contain (``DATACARD.md`` is documentation, checked by the tests).
CONCEPT_FILES = ("meta.json", "sentences.jsonl", "mc.jsonl", "similar_mc.jsonl", "indirect_mc.jsonl", "open.jsonl",
                 "collateral.jsonl", "prompts.jsonl", "relearn.jsonl")
#: Optional per concept: reviewed answer words that may appear in relearning text (word -> reason).
LEAK_ALLOWLIST = "leak_allowlist.json"
#: Optional per concept: hand-written respellings of the test words for the token-bypass attack
#: (word -> {"misspelling": ..., "translation": ..., "language": ...}).
SPELLINGS = "spellings.json"
SPELLING_FIELDS = ("misspelling", "translation", "language")
#: Optional per concept: the example texts the chapters show (logit-lens prompt and target, completion prompts,
#: an attention-view sentence, example words). Every chapter's concept needs one.
SHOWCASE = "showcase.json"
SHOWCASE_FIELDS = {"lens_prompt": "a prompt whose next token is the concept's answer",
                   "lens_target": "that answer, one word with its leading space (\" Hogwarts\")",
                   "prompts": "2 to 6 completion prompts that name the concept",
                   "attention_text": "a sentence that names the concept",
                   "example_words": "3 to 8 concept words with their leading space"}
#: Tables of a :class:`ConceptData` that :meth:`ConceptData.split` can select from.
CONCEPT_TABLES = ("mc", "similar_mc", "indirect_mc", "open", "collateral_sentences", "collateral_mc", "prompts",
                  "relearn")
COMMON_FILES = ("neutral.jsonl", "general_mc.jsonl", "coherence_prompts.jsonl")
_COMMON_DIR = "common"


class DataValidationError(ValueError):
    """A dataset file is missing or malformed.

    Attributes: ``file`` (path), ``index`` (1-based line number of the first bad record, or ``None`` for
    file-level problems), ``problem`` (what is wrong with it), ``errors`` (all ``(index, problem)`` found).
    """

    def __init__(self, file: str | Path, index: int | None, problem: str,
                 errors: list[tuple[int | None, str]] | None = None):
        self.file = str(file)
        self.index = index
        self.problem = problem
        self.errors = errors or [(index, problem)]
        lines = [f"{self.file}" + (f", record {i} (line {i})" if i is not None else "") + f": {p}"
                 for i, p in self.errors[:20]]
        more = f"\n... and {len(self.errors) - 20} more problems" if len(self.errors) > 20 else ""
        head = f"Invalid dataset file {self.file}: {len(self.errors)} problem(s)\n" if len(self.errors) > 1 else ""
        super().__init__(head + "\n".join(lines) + more)


# --------------------------------------------------------------------------------------------- paths


def data_root() -> Path:
    """``$EMBER_DATA_DIR`` if set, else the repository's ``data/`` folder next to the package."""
    env = os.environ.get("EMBER_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "data"


def _root(root: str | Path | None) -> Path:
    path = Path(root) if root is not None else data_root()
    if not path.is_dir():
        raise FileNotFoundError(f"Data folder {path} does not exist. Set EMBER_DATA_DIR or pass root=.")
    return path


def list_concepts(root: str | Path | None = None) -> list[str]:
    """Slugs of the concept folders in ``root`` (every visible sub-folder except ``common/``), sorted.

    A folder is listed even if it is incomplete, so that tests flag it instead of silently skipping it.
    """
    path = _root(root)
    return sorted(p.name for p in path.iterdir()
                  if p.is_dir() and p.name != _COMMON_DIR and not p.name.startswith((".", "_")))


# --------------------------------------------------------------------------------------------- reading


def read_jsonl(path: str | Path, schema: dict[str, str] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """Parse a JSON Lines file into ``(line_number, record)`` pairs, validating each record against
    ``schema`` (field -> kind) when given. Blank lines are skipped. Raises :class:`DataValidationError`."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, None, "file is missing")
    if schema is None and path.name == "collateral.jsonl":
        schema = _COLLATERAL_FIELDS  # one schema per record kind
    elif schema is None:
        schema = _SCHEMAS.get(path.name)
    splits = NEUTRAL_SPLITS if path.name == "neutral.jsonl" else SPLITS
    records: list[tuple[int, dict[str, Any]]] = []
    errors: list[tuple[int | None, str]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataValidationError(path, None, f"not valid UTF-8 ({exc})") from exc
    seen_ids: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append((lineno, f"bad JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(rec, dict):
            errors.append((lineno, f"expected a JSON object, got {type(rec).__name__}"))
            continue
        problems = _check_record(rec, schema, splits) if schema is not None else []
        rid = rec.get("id")
        if isinstance(rid, str):
            if rid in seen_ids:
                problems.append(f"duplicate id {rid!r} (first seen on line {seen_ids[rid]})")
            else:
                seen_ids[rid] = lineno
        errors.extend((lineno, p) for p in problems)
        records.append((lineno, rec))
    if errors:
        raise DataValidationError(path, errors[0][0], errors[0][1], errors)
    if not records:
        raise DataValidationError(path, None, "file has no records")
    return records


def _check_record(rec: dict[str, Any], schema: dict[str, Any], splits: tuple[str, ...] = SPLITS) -> list[str]:
    if schema is _COLLATERAL_FIELDS:
        kind = rec.get("kind")
        if kind not in COLLATERAL_KINDS:
            return [f"field 'kind' must be one of {list(COLLATERAL_KINDS)}, got {kind!r}"]
        problems = _check_record(rec, _COLLATERAL_FIELDS[kind], splits)
        word = rec.get("word")
        text = rec.get("text", "") if kind == "sentence" else " ".join(
            [str(rec.get("question", ""))] + [str(o) for o in rec.get("options", []) if isinstance(o, str)])
        if isinstance(word, str) and word.strip() and word.casefold() not in text.casefold():
            problems.append(f"word {word!r} does not occur in the record's text (it must use the word)")
        return problems
    problems = []
    missing = [f for f in schema if f not in rec]
    extra = [f for f in rec if f not in schema]
    if missing:
        problems.append(f"missing field(s) {missing}")
    if extra:
        problems.append(f"unexpected field(s) {extra} (allowed: {list(schema)})")
    for name, kind in schema.items():
        if name not in rec:
            continue
        value = rec[name]
        if kind == _STR:
            if not isinstance(value, str):
                problems.append(f"field {name!r} must be a string, got {type(value).__name__}")
            elif not value.strip():
                problems.append(f"field {name!r} is empty")
        elif kind == _INT:
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"field {name!r} must be an integer, got {type(value).__name__} {value!r}")
        elif kind == _LIST:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"field {name!r} must be a list of strings, got {value!r}")
            elif any(not v.strip() for v in value):
                problems.append(f"field {name!r} contains an empty string")
            elif not value:
                problems.append(f"field {name!r} is an empty list")
    if "split" in schema and isinstance(rec.get("split"), str) and rec["split"] not in splits:
        problems.append(f"bad split {rec['split']!r} (must be one of {list(splits)})")
    if "register" in schema and isinstance(rec.get("register"), str) and rec["register"] not in REGISTERS:
        problems.append(f"bad register {rec['register']!r} (must be one of {list(REGISTERS)})")
    if "options" in schema and isinstance(rec.get("options"), list) and all(isinstance(o, str) for o in rec["options"]):
        opts = rec["options"]
        if len(opts) != N_OPTIONS:
            problems.append(f"options must be exactly {N_OPTIONS} strings, got {len(opts)}")
        elif len({o.strip().casefold() for o in opts}) != len(opts):
            problems.append(f"options are not distinct: {opts}")
        answer = rec.get("answer")
        if isinstance(answer, int) and not isinstance(answer, bool) and not 0 <= answer < len(opts):
            problems.append(f"answer {answer} out of range 0..{len(opts) - 1}")
    return problems


def _read_json_object(path: Path, what: str = "a JSON object") -> dict[str, Any]:
    """One JSON object from ``path`` (DataValidationError if missing, not JSON or not an object)."""
    if not path.is_file():
        raise DataValidationError(path, None, "file is missing")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataValidationError(path, None, f"bad JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(obj, dict):
        raise DataValidationError(path, None, f"expected {what}, got {type(obj).__name__}")
    return obj


def _read_meta(path: Path, slug: str) -> dict[str, Any]:
    meta = _read_json_object(path)
    problems = _check_record(meta, _META_FIELDS)
    if not problems and meta["slug"] != slug:
        problems.append(f"slug {meta['slug']!r} does not match the folder name {slug!r}")
    if not problems and any(n != n.strip().lower() for n in meta["names"]):
        problems.append(f"names must be lower-case without surrounding spaces: "
                        f"{[n for n in meta['names'] if n != n.strip().lower()][:5]}")
    if problems:
        raise DataValidationError(path, None, problems[0], [(None, p) for p in problems])
    return meta


def _frame(records: list[tuple[int, dict[str, Any]]], columns: Iterable[str]) -> pd.DataFrame:
    cols = list(columns)
    df = pd.DataFrame([{**{c: r[c] for c in cols}, "line": i} for i, r in records], columns=cols + ["line"])
    if "options" in df and "answer" in df:
        df["answer"] = df["answer"].astype(int)
        df["answer_text"] = [opts[a] for opts, a in zip(df["options"], df["answer"])]
    return df


def select_split(df: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """Rows of ``df`` in ``split`` ('train', 'validation' or 'test'); ``None`` or 'all' returns every row (a copy)."""
    if split is None or split == "all":
        return df.copy()
    if split not in ALL_SPLITS:
        raise ValueError(f"Unknown split {split!r}; use 'train', 'validation', 'test' or 'all'.")
    if "split" not in df.columns:
        raise ValueError(f"This table has no 'split' column (columns: {list(df.columns)}); use split='all'.")
    return df[df["split"] == split].reset_index(drop=True)


# --------------------------------------------------------------------------------------------- concept


@dataclass(frozen=True)
class ConceptData:
    """One concept folder. Tables keep a ``line`` column (line number in the source file); MC tables also
    get ``answer_text`` (the correct option's text)."""

    slug: str
    root: Path
    meta: dict[str, Any]
    sentences: list[str]
    mc: pd.DataFrame
    similar_mc: pd.DataFrame
    open: pd.DataFrame
    relearn: pd.DataFrame
    indirect_mc: pd.DataFrame = None  # type: ignore[assignment]
    collateral_sentences: pd.DataFrame = None  # type: ignore[assignment]
    collateral_mc: pd.DataFrame = None  # type: ignore[assignment]
    leak_allowlist: dict[str, str] = None  # type: ignore[assignment]
    #: seamlessness prompts: openings about the concept that the model continues (``prompts.jsonl``)
    prompts: pd.DataFrame = None  # type: ignore[assignment]
    #: token-bypass respellings (``spellings.json``): word -> {misspelling, translation, language}
    spellings: dict[str, dict[str, str]] = None  # type: ignore[assignment]
    #: the chapters' example texts (``showcase.json``, fields :data:`SHOWCASE_FIELDS`); empty when absent
    showcase: dict[str, Any] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:  # tables a hand-built ConceptData (tests, small demos) may leave out
        empty_mc = pd.DataFrame(columns=list(_MC_FIELDS) + ["line", "answer_text"])
        for name, default in (("indirect_mc", empty_mc), ("collateral_mc", empty_mc.assign(word=[], kind=[])),
                              ("collateral_sentences", pd.DataFrame(columns=list(_COLLATERAL_FIELDS["sentence"]))),
                              ("prompts", pd.DataFrame(columns=list(_SCHEMAS["prompts.jsonl"]))),
                              ("leak_allowlist", {}), ("spellings", {}), ("showcase", {})):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def names(self) -> list[str]:
        """The concept's proper names and specific terms (lower-case); text containing one names the concept."""
        return list(self.meta.get("names", []))

    @property
    def similar_domain(self) -> str:
        return self.meta["similar_domain"]

    @property
    def relearn_texts(self) -> list[str]:
        return list(self.relearn["text"])

    def example(self, field: str) -> Any:
        """One of the chapters' example texts (``showcase.json``): ``lens_prompt``, ``lens_target``, ``prompts``,
        ``attention_text`` or ``example_words``."""
        if field not in SHOWCASE_FIELDS:
            raise ValueError(f"Unknown showcase field {field!r}; use one of {list(SHOWCASE_FIELDS)}.")
        if not self.showcase:
            raise FileNotFoundError(f"Concept {self.slug!r} has no {SHOWCASE} in {self.root}: the chapters need its "
                                    f"example texts ({', '.join(SHOWCASE_FIELDS)}; see data/SCHEMA.md).")
        return self.showcase[field]

    def split(self, table: str, split: str | None) -> pd.DataFrame:
        """``split`` rows of ``table`` (one of :data:`CONCEPT_TABLES`; 'relearn' only with split='all')."""
        if table not in CONCEPT_TABLES:
            raise ValueError(f"Unknown table {table!r}; use one of {list(CONCEPT_TABLES)}.")
        return select_split(getattr(self, table), split)

    def __repr__(self) -> str:  # keep notebook output short
        return (f"ConceptData({self.slug!r}, name={self.name!r}, sentences={len(self.sentences)}, mc={len(self.mc)}, "
                f"similar_mc={len(self.similar_mc)}, indirect_mc={len(self.indirect_mc)}, open={len(self.open)}, "
                f"collateral={len(self.collateral_sentences)}+{len(self.collateral_mc)}, prompts={len(self.prompts)}, "
                f"relearn={len(self.relearn)})")


def load_concept(slug: str, root: str | Path | None = None) -> ConceptData:
    """Load and validate ``<root>/<slug>/`` (see ``data/SCHEMA.md``). Ids must be unique across the
    concept's files. Raises :class:`DataValidationError` (file, line, problem) or ``FileNotFoundError``."""
    if not isinstance(slug, str) or not slug or "/" in slug or slug.startswith("."):
        raise ValueError(f"Concept slug must be a folder name like 'harry_potter', got {slug!r}.")
    base = _root(root)
    folder = base / slug
    if not folder.is_dir():
        raise FileNotFoundError(f"Unknown concept {slug!r}: no folder {folder}. Available: {list_concepts(base)}")
    meta = _read_meta(folder / "meta.json", slug)
    tables = {name: read_jsonl(folder / f"{name}.jsonl") for name in
              ("sentences", "mc", "similar_mc", "indirect_mc", "open", "collateral", "prompts", "relearn")}
    _check_cross_file_ids(folder, tables)
    collateral = {kind: [(i, r) for i, r in tables["collateral"] if r["kind"] == kind] for kind in COLLATERAL_KINDS}
    return ConceptData(
        slug=slug,
        root=folder,
        meta=meta,
        sentences=[r["text"] for _, r in tables["sentences"]],
        mc=_frame(tables["mc"], _MC_FIELDS),
        similar_mc=_frame(tables["similar_mc"], _MC_FIELDS),
        open=_frame(tables["open"], _SCHEMAS["open.jsonl"]),
        relearn=_frame(tables["relearn"], _SCHEMAS["relearn.jsonl"]),
        indirect_mc=_frame(tables["indirect_mc"], _MC_FIELDS),
        collateral_sentences=_frame(collateral["sentence"], _COLLATERAL_FIELDS["sentence"]),
        collateral_mc=_frame(collateral["mc"], _COLLATERAL_FIELDS["mc"]),
        prompts=_frame(tables["prompts"], _SCHEMAS["prompts.jsonl"]),
        leak_allowlist=_read_allowlist(folder / LEAK_ALLOWLIST),
        spellings=_read_spellings(folder / SPELLINGS),
        showcase=_read_showcase(folder / SHOWCASE, meta["names"]),
    )


def _read_showcase(path: Path, names: Iterable[str]) -> dict[str, Any]:
    """``showcase.json`` (optional; missing = empty): exactly the fields of :data:`SHOWCASE_FIELDS`; the prompts and
    the attention sentence name the concept (contain one of ``names``)."""
    if not path.exists():
        return {}
    obj = _read_json_object(path, "a JSON object with fields " + ", ".join(SHOWCASE_FIELDS))
    problems = [f"missing field {f!r} ({why})" for f, why in SHOWCASE_FIELDS.items() if f not in obj]
    problems += [f"unexpected field {f!r} (allowed: {list(SHOWCASE_FIELDS)})" for f in obj if f not in SHOWCASE_FIELDS]

    def is_text(v: Any) -> bool:
        return isinstance(v, str) and bool(v.strip())

    for f in ("lens_prompt", "attention_text"):
        if f in obj and not is_text(obj[f]):
            problems.append(f"field {f!r} must be a non-empty string")
    target = obj.get("lens_target")
    if "lens_target" in obj and not (is_text(target) and target.startswith(" ") and len(target.split()) == 1):
        problems.append(f"field 'lens_target' must be one word with a leading space, got {target!r}")
    for f, lo, hi in (("prompts", 2, 6), ("example_words", 3, 8)):
        v = obj.get(f)
        if f in obj and not (isinstance(v, list) and lo <= len(v) <= hi and all(is_text(x) for x in v)):
            problems.append(f"field {f!r} must be a list of {lo} to {hi} non-empty strings")
    if not problems:
        for w in obj["example_words"]:
            if not (w.startswith(" ") and len(w.split()) == 1):
                problems.append(f"example word {w!r} must be one word with a leading space")
        from .data_quality import names_in  # data_quality imports this module

        for text in [*obj["prompts"], obj["attention_text"], obj["lens_prompt"]]:
            if not names_in(text, names):
                problems.append(f"{text!r} names none of the concept's names (meta.json 'names')")
    if problems:
        raise DataValidationError(path, None, problems[0], [(None, p) for p in problems])
    return dict(obj)


def _read_allowlist(path: Path) -> dict[str, str]:
    """``leak_allowlist.json``: ``{word: reason}`` (optional; missing = empty)."""
    if not path.exists():
        return {}
    obj = _read_json_object(path, "a JSON object word -> reason")
    bad = [(None, f"entry {w!r}: the word must be a lower-case string and the reason a sentence (>= 10 characters)")
           for w, why in obj.items() if w != w.strip().lower() or not isinstance(why, str) or len(why.strip()) < 10]
    if bad:
        raise DataValidationError(path, None, bad[0][1], bad)
    return dict(obj)


def _read_spellings(path: Path) -> dict[str, dict[str, str]]:
    """``spellings.json``: ``{word: {"misspelling": str, "translation": str, "language": str}}`` (optional;
    missing = empty). Each entry needs a misspelling or a translation; a translation comes with its language;
    the misspelling differs from the word also ignoring case; no field is empty."""
    if not path.exists():
        return {}
    obj = _read_json_object(path, "a JSON object word -> {misspelling, translation, language}")
    problems: list[tuple[int | None, str]] = []
    for word, entry in obj.items():
        where = f"entry {word!r}"
        if not word.strip():
            problems.append((None, f"{where}: the word is empty"))
            continue
        if not isinstance(entry, dict):
            problems.append((None, f"{where}: expected an object with fields {list(SPELLING_FIELDS)}, "
                                   f"got {type(entry).__name__}"))
            continue
        extra = [f for f in entry if f not in SPELLING_FIELDS]
        if extra:
            problems.append((None, f"{where}: unexpected field(s) {extra} (allowed: {list(SPELLING_FIELDS)})"))
        bad = [f for f in SPELLING_FIELDS if f in entry and (not isinstance(entry[f], str) or not entry[f].strip())]
        if bad:
            problems.append((None, f"{where}: field(s) {bad} must be non-empty strings"))
        if "misspelling" not in entry and "translation" not in entry:
            problems.append((None, f"{where}: needs a 'misspelling' or a 'translation'"))
        mis = entry.get("misspelling")
        if isinstance(mis, str) and mis.strip().casefold() == word.strip().casefold():
            problems.append((None, f"{where}: the misspelling {mis!r} equals the word (ignoring case)"))
        if ("translation" in entry) != ("language" in entry):
            problems.append((None, f"{where}: 'translation' and 'language' must be given together"))
    if problems:
        raise DataValidationError(path, None, problems[0][1], problems)
    return {w: dict(e) for w, e in obj.items()}


def _check_cross_file_ids(folder: Path, tables: dict[str, list[tuple[int, dict[str, Any]]]]) -> None:
    seen: dict[str, str] = {}
    for name, records in tables.items():
        for line, rec in records:
            rid = rec["id"]
            if rid in seen and seen[rid] != name:
                raise DataValidationError(folder / f"{name}.jsonl", line,
                                          f"id {rid!r} is also used in {seen[rid]}.jsonl (ids must be unique per concept)")
            seen[rid] = name


# --------------------------------------------------------------------------------------------- common


@dataclass(frozen=True)
class CommonData:
    """``data/common``: neutral sentences, general-knowledge MC questions and coherence prompts."""

    root: Path
    neutral: pd.DataFrame
    general_mc: pd.DataFrame
    coherence_prompts: pd.DataFrame

    def neutral_texts(self, split: str | None = "train") -> list[str]:
        return list(select_split(self.neutral, split)["text"])

    def general(self, split: str | None) -> pd.DataFrame:
        return select_split(self.general_mc, split)

    def prompts(self, split: str | None) -> list[str]:
        return list(select_split(self.coherence_prompts, split)["prompt"])

    def __repr__(self) -> str:
        return (f"CommonData(neutral={len(self.neutral)} over {self.neutral['topic'].nunique()} topics, "
                f"general_mc={len(self.general_mc)} over {self.general_mc['subject'].nunique()} subjects, "
                f"coherence_prompts={len(self.coherence_prompts)})")


def load_common(root: str | Path | None = None) -> CommonData:
    """Load and validate ``<root>/common/``."""
    folder = _root(root) / _COMMON_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"No common data folder {folder}.")
    tables = {f: read_jsonl(folder / f) for f in COMMON_FILES}
    return CommonData(
        root=folder,
        neutral=_frame(tables["neutral.jsonl"], _SCHEMAS["neutral.jsonl"]),
        general_mc=_frame(tables["general_mc.jsonl"], _SCHEMAS["general_mc.jsonl"]),
        coherence_prompts=_frame(tables["coherence_prompts.jsonl"], _SCHEMAS["coherence_prompts.jsonl"]),
    )
