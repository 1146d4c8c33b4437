"""Every chapter executes top to bottom in FAST mode, is paired with its MyST source, and starts with
the standard setup cell."""
from __future__ import annotations

import json

import jupytext
import nbformat
import pytest

from book_build import ROOT, chapter_notebooks, fast_book

CHAPTERS = chapter_notebooks()


def test_there_are_chapters():
    assert len(CHAPTERS) >= 1


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_ipynb_in_sync_with_md_source(nb_path):
    md_path = nb_path.with_suffix(".md")
    assert md_path.exists(), f"{nb_path.name} has no MyST source {md_path.name}"
    from_md = jupytext.read(md_path)
    from_nb = nbformat.read(nb_path, as_version=4)
    src_md = [(c.cell_type, c.source.strip()) for c in from_md.cells]
    src_nb = [(c.cell_type, c.source.strip()) for c in from_nb.cells]
    assert src_md == src_nb, f"{nb_path.name} is out of sync: run `jupytext --sync {md_path.relative_to(ROOT)}`"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_first_code_cell_is_standard_setup(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    src = first.source
    assert "setup" in first.metadata.get("tags", [])
    for needle in ("google.colab", "pip", "install", "setup_chapter(", "EMBER_REPO_URL"):
        assert needle in src, f"{nb_path.name}: setup cell lacks {needle!r}"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_committed_notebooks_have_no_outputs(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{nb_path.name}: strip outputs before committing (the book executes it)")


@pytest.mark.notebooks
def test_fast_book_builds_without_warnings():
    build = fast_book()
    assert build.returncode == 0, build.log[-6000:]
    assert (build.html_dir / "index.html").exists()


@pytest.mark.notebooks
@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_executed_without_errors(nb_path):
    build = fast_book()
    assert build.returncode == 0, build.log[-6000:]
    rel = nb_path.relative_to(ROOT)
    executed = build.html_dir.parent / "jupyter_execute" / rel
    assert executed.exists(), f"no executed copy of {rel} in the FAST build"
    nb = json.loads(executed.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), f"{rel}: some cells were not executed"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{rel}: error outputs {[e.get('ename') for e in errors]}"
