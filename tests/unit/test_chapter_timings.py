"""The workshop page's timing table comes from the committed measurement file, and says what is not measured."""
from __future__ import annotations

import json

import pytest

from ember_utils.notebook import chapter_timings_table
from ember_utils.paths import repo_root


def test_table_from_a_measurement_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"chapters": {
        "01_loading_models": {"fast_s": 30.0, "fast_date": "2026-12-03", "fast_machine": "x86_64 2 cores"},
        "04_embedding_edit": {"fast_s": 125.0, "fast_date": "2026-12-03", "fast_machine": "m",
                              "full_s": 342.0, "full_date": "2026-12-01", "full_machine": "m"}}}))
    table = chapter_timings_table(path).set_index("chapter")
    assert table.loc["01_loading_models", "CPU, FAST"] == "0.5 min"
    assert table.loc["01_loading_models", "CPU, full"] == "not measured yet"
    assert table.loc["04_embedding_edit", "CPU, full"] == "5.7 min"
    assert "2 cores" in table.loc["01_loading_models", "fast measured"]
    with pytest.raises(FileNotFoundError, match="chapter_timings.py"):
        chapter_timings_table(tmp_path / "missing.json")


def test_the_committed_file_covers_every_chapter():
    path = repo_root() / "benchmarks" / "results" / "chapter_timings.json"
    chapters = sorted(p.stem for p in (repo_root() / "notebooks").glob("[0-9]*.ipynb"))
    measured = json.loads(path.read_text())["chapters"]
    assert sorted(measured) == chapters
    assert all("fast_s" in measured[c] for c in chapters)
