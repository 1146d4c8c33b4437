"""Every chapter executes top to bottom in FAST mode, is paired with its MyST source, and starts with
the standard setup cell."""
from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import sys

import jupytext
import nbformat
import pytest
from book_build import ROOT, SECOND_CONCEPT, chapter_notebooks, fast_book
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def _imported_modules(nb) -> set[str]:
    mods = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        src = "\n".join(ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module.split(".")[0])
    return mods


def _base_requirements() -> set[str]:
    """Distribution names the package installs without extras (what Colab gets from `pip install -e`)."""
    reqs = [Requirement(r) for r in md.requires("ember_utils") or []]
    return {canonicalize_name(r.name) for r in reqs if r.marker is None or "extra" not in str(r.marker)}


#: on Colab without installing anything: IPython/ipykernel; `google` is Colab's own module.
COLAB_PREINSTALLED = {"IPython", "ipykernel", "google"}


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_imports_only_what_colab_gets(nb_path):
    """Colab runs `pip install -e <repo>` (no `book`/`dev` extras): a chapter may import only the standard
    library, the package, its base dependencies and what Colab preinstalls (e.g. not myst_nb)."""
    base = _base_requirements()
    dists = md.packages_distributions()
    bad = []
    for mod in sorted(_imported_modules(nbformat.read(nb_path, as_version=4))):
        if mod in sys.stdlib_module_names or mod in COLAB_PREINSTALLED or mod == "ember_utils":
            continue
        owners = {canonicalize_name(d) for d in dists.get(mod, [])}
        if not owners & base:
            bad.append(f"{mod} (from {sorted(owners) or 'nothing installed'})")
    assert not bad, f"{nb_path.name} imports modules that `pip install -e` does not provide on Colab: {bad}"


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


@pytest.mark.notebooks
def test_fast_book_builds_for_a_second_concept():
    """The concept switch: with EMBER_CONCEPT set, the whole book builds (warnings are errors), every chapter runs
    without an error output, and chapters 2–8 ran on that concept (their concept card names it), not the default."""
    from ember_utils.data import load_concept

    build = fast_book(SECOND_CONCEPT)
    assert build.returncode == 0, build.log[-6000:]
    name = load_concept(SECOND_CONCEPT).name
    for nb_path in CHAPTERS:
        rel = nb_path.relative_to(ROOT)
        nb = json.loads((build.html_dir.parent / "jupyter_execute" / rel).read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert all(c.get("execution_count") for c in code) and not errors, f"{rel} ({SECOND_CONCEPT}): {errors[:1]}"
        if nb_path.stem[:2] in ("02", "03", "04", "05", "06", "07", "08"):
            expected = f"concept={SECOND_CONCEPT}" if nb_path.stem[:2] == "08" else f"Concept: {name}"
            assert expected in json.dumps([c.get("outputs", []) for c in code], ensure_ascii=False), (
                f"{rel} did not run on {SECOND_CONCEPT} (no {expected!r} in its outputs)")


@pytest.mark.notebooks
@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_every_checked_solution_passed_its_check(nb_path):
    """The FAST build ran each solution through its exercise check: every solution cell that calls a check printed
    the check's ✓ line (a wrong solution raises instead, and the build fails)."""
    build = fast_book()
    assert build.returncode == 0, build.log[-6000:]
    nb = json.loads((build.html_dir.parent / "jupyter_execute" / nb_path.relative_to(ROOT)).read_text())
    checked = [c for c in nb["cells"] if c["cell_type"] == "code" and "solution" in c["metadata"].get("tags", [])
               and re.search(r"^\s*check_\w+\(", "".join(c["source"]), re.MULTILINE)]
    for cell in checked:
        text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        guarded = re.search(r"^if .*:\n\s+check_", "".join(cell["source"]), re.MULTILINE)
        assert "✓" in text or guarded, f"{nb_path.name}: a checked solution printed no ✓:\n{''.join(cell['source'])}"


@pytest.mark.notebooks
@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_every_glued_number_is_also_printed(nb_path):
    """Colab shows ``{glue:text}`key``` roles raw, so a sentence that depends on a glued value alone is unreadable
    there. Opened as Colab would (the executed ``.ipynb``, no myst-nb), every value that a Markdown cell glues must
    also appear in a visible output: a printed line, a table or a display."""
    build = fast_book()
    assert build.returncode == 0, build.log[-6000:]
    nb = json.loads((build.html_dir.parent / "jupyter_execute" / nb_path.relative_to(ROOT)).read_text())
    glued, visible = {}, []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            data = out.get("data", {})
            if name:
                glued[name] = "".join(data.get("text/plain", "")).strip("'\"")
            elif out.get("output_type") == "stream":
                visible.append("".join(out["text"]))
            else:
                visible.append("".join(data.get("text/plain", "")) + "".join(data.get("text/html", "")))
    shown = "\n".join(visible)
    used = {k.split(":")[0] for c in nb["cells"] if c["cell_type"] == "markdown"
            for k in re.findall(r"\{glue:text\}`([^`]+)`", "".join(c["source"]))}
    hidden = {k: glued[k] for k in sorted(used) if glued.get(k) and glued[k] not in shown}
    assert not hidden, f"{nb_path.name}: glued values that no visible output shows (unreadable on Colab): {hidden}"


def test_glue_without_myst_nb_shows_the_value(monkeypatch):
    """On Colab myst-nb is absent: `ember_utils.notebook.glue` must not fail, and shows the value if asked."""
    import IPython.display

    from ember_utils.notebook import glue

    shown = []
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # makes `from myst_nb import glue` raise ImportError
    monkeypatch.setattr(IPython.display, "display", lambda v: shown.append(v))
    glue("hidden", 1, display=False)
    glue("shown", 2)
    assert shown == [2]
