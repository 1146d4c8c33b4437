"""Workshop kit: every chapter ends with at least two exercises and a collapsed solution.

A chapter's exercises are the numbered items of its ``## Exercises`` section; solutions are code cells tagged
``hide-cell`` (the book shows them collapsed, see the browser test) and ``solution``. Its "Implement it yourself"
section holds at least two exercises whose solutions run a check from ``ember_utils.exercises`` (the FAST build
runs them: ``test_notebooks.test_every_checked_solution_passed_its_check``).
"""
from __future__ import annotations

import importlib
import re

import nbformat
import pytest
from book_build import chapter_notebooks

CHAPTERS = chapter_notebooks()
_HEADING = re.compile(r"^#{2,3}\s+Exercises?\b", re.IGNORECASE | re.MULTILINE)
_ITEM = re.compile(r"^\s{0,3}\d+[.)]\s+\S", re.MULTILINE)


def _exercise_section(nb) -> list:
    """Cells from the Exercises heading to the next heading of the same or higher level."""
    cells, inside = [], False
    for cell in nb.cells:
        if cell.cell_type == "markdown" and _HEADING.search(cell.source):
            inside = True
            cells.append(cell)
            continue
        if inside and cell.cell_type == "markdown" and re.match(r"^#{1,2}\s", cell.source.lstrip()):
            break
        if inside:
            cells.append(cell)
    return cells


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_at_least_two_exercises(nb_path):
    section = _exercise_section(nbformat.read(nb_path, as_version=4))
    assert section, f"{nb_path.name}: no '## Exercises' section"
    text = "\n".join(c.source[_HEADING.search(c.source).end():] if _HEADING.search(c.source) else c.source
                     for c in section if c.cell_type == "markdown")
    n = len(_ITEM.findall(text))
    assert n >= 2, f"{nb_path.name}: {n} numbered exercise(s) under '## Exercises', need at least 2"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_collapsed_solution_cell(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    solutions = [c for c in nb.cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", [])]
    assert solutions, f"{nb_path.name}: no code cell tagged 'solution'"
    for cell in solutions:
        tags = cell.metadata.get("tags", [])
        assert "hide-cell" in tags, f"{nb_path.name}: solution cell tagged {tags} must also be tagged hide-cell"


_CHECK_CALL = re.compile(r"^\s*(check_\w+)\(", re.MULTILINE)


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_two_checked_exercises(nb_path):
    """Two solutions that call a check, each check a real function of ``ember_utils.exercises`` imported by the
    chapter, and an exercise stub (with the check commented out) before each solution."""
    import ember_utils.exercises as ex

    nb = nbformat.read(nb_path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    solutions = [c for c in code if "solution" in c.metadata.get("tags", []) and _CHECK_CALL.search(c.source)]
    called = {m for c in solutions for m in _CHECK_CALL.findall(c.source)}
    assert len(solutions) >= 2 and len(called) >= 2, f"{nb_path.name}: {len(solutions)} checked solution(s) {called}"
    modules = [importlib.import_module(f"ember_utils.exercises.{m}") for m in
               ("loading", "factorization", "atoms", "edit", "elm", "relearn", "probing", "results")]
    known = {n for m in modules for n in getattr(m, "__all__", ())}
    assert called <= known, f"{nb_path.name}: unknown checks {called - known}"
    stubs = "\n".join(c.source for c in code if "solution" not in c.metadata.get("tags", []))
    for name in called:
        assert f"# {name}(" in stubs, f"{nb_path.name}: no exercise stub with the commented call '# {name}(...)'"
    assert ex.ExerciseFailed  # the failure type the checks raise
