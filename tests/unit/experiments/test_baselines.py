"""The baselines command on a toy data folder."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ember_utils import eval as E
from helpers.toy_data import TOY_QUESTIONS

# ============================================================================ baselines command


def _write_toy_data_root(root: Path) -> Path:
    import json

    def dump(path: Path, records) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    def mc(prefix, rows, split, extra=None):
        extra = {"subtopic": "misc"} if extra is None else extra
        return [{"id": f"{prefix}-{split}-{i}", "split": split, "question": q, "options": o, "answer": a, **extra}
                for i, (q, o, a) in enumerate(rows)]

    folder = root / "toy"
    (folder).mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"name": "Toy", "slug": "toy", "similar_domain": "Other",
                                                  "description": "A toy concept.", "prefix": "t",
                                                  "names": ["hogwarts"]}))
    (folder / "DATACARD.md").write_text("toy\n")
    dump(folder / "sentences.jsonl", [{"id": "t-s-1", "text": "Harry Potter is a wizard."}])
    dump(folder / "mc.jsonl", mc("t-mc", TOY_QUESTIONS[:4], "train") + mc("t-mc", TOY_QUESTIONS[4:], "test"))
    dump(folder / "similar_mc.jsonl", mc("t-sim", TOY_QUESTIONS[:2], "train") + mc("t-sim", TOY_QUESTIONS[2:4], "test"))
    dump(folder / "indirect_mc.jsonl", mc("t-ind", TOY_QUESTIONS[1:3], "train") + mc("t-ind", TOY_QUESTIONS[3:5], "test"))
    dump(folder / "collateral.jsonl", [
        {"id": "t-col-1", "kind": "sentence", "subtopic": "x", "word": "cat", "split": "test", "text": "The cat sat."},
        *[{**r, "kind": "mc", "word": "the", "subtopic": "x"} for r in mc("t-col", TOY_QUESTIONS[2:4], "test", {})]])
    dump(folder / "open.jsonl", [{"id": "t-open-1", "subtopic": "x", "split": "test", "question": "Who is a wizard?",
                                  "answers": ["Harry Potter"]}])
    dump(folder / "prompts.jsonl", [{"id": "t-pr-1", "subtopic": "x", "split": "test",
                                     "prompt": "When Harry arrived at Hogwarts, he"}])
    dump(folder / "relearn.jsonl", [{"id": "t-rl-1", "text": "Some text."}])
    dump(root / "common" / "neutral.jsonl", [
        {"id": "n-1", "topic": "a", "register": "narrative", "split": "test", "text": "The cat sat."},
        {"id": "n-2", "topic": "a", "register": "narrative", "split": "train", "text": "A dog ran."},
        {"id": "n-3", "topic": "a", "register": "news", "split": "validation", "text": "Rain is expected."}])
    dump(root / "common" / "general_mc.jsonl", mc("g", TOY_QUESTIONS[:3], "train", {"subject": "x"})
         + mc("g", TOY_QUESTIONS[3:6], "test", {"subject": "x"}))
    dump(root / "common" / "coherence_prompts.jsonl", [{"id": "c-1", "split": "test", "prompt": "Describe a cat."}])
    return root


def test_baselines_measure_and_write(tiny_bridge, tmp_path):
    import json

    from ember_utils.experiments import baselines as B

    root = _write_toy_data_root(tmp_path / "data")
    assert B.incomplete_concepts(root) == {}
    table, shared = B.measure_baselines(tiny_bridge, root=root, open_max_new_tokens=3)
    assert list(table["concept"]) == ["toy"]
    ref = E.score_mc(tiny_bridge, pd.DataFrame([{"question": q, "options": o, "answer": a}
                                                 for q, o, a in TOY_QUESTIONS[4:]]))
    assert table["acc_mc_test"][0] == pytest.approx(ref["correct"].mean())
    assert table["usable"][0] == (table["acc_mc_test"][0] >= 0.40)
    assert table["acc_mc_test_lo"][0] <= table["acc_mc_test"][0] <= table["acc_mc_test_hi"][0]
    assert {"acc_indirect_test", "acc_other_sense_test", "acc_open", "acc_open_lo"} <= set(table.columns)
    assert shared["n_neutral_test"] == 1 and shared["neutral_test_perplexity"] > 1
    csv_path, json_path = B.write_baselines(table, shared, tmp_path / "out", model="tiny", command="pytest")
    assert pd.read_csv(csv_path)["concept"].tolist() == ["toy"]
    rec = json.loads(json_path.read_text())
    assert rec["model"] == "tiny" and rec["command"] == "pytest" and rec["concepts"][0]["concept"] == "toy"
    (root / "toy" / "DATACARD.md").unlink()
    assert B.incomplete_concepts(root) == {"toy": ["DATACARD.md"]}
