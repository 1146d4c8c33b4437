"""The package's layering rules, checked on its import graph (every import statement, also inside functions).

* nothing under ``eval/`` imports an erasure method, an experiment or a figure;
* ``methods/`` never imports ``viz/`` or ``experiments/``;
* the factorizer is linear algebra on a matrix: no model code;
* data loading knows no model;
* no computational module imports ``viz/``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ember_utils

PACKAGE = Path(ember_utils.__file__).resolve().parent
MODEL_CODE = ("ember_utils.models", "ember_utils.eval", "transformers", "transformer_lens", "peft")

RULES = [  # (modules the rule applies to, forbidden import prefixes)
    ("ember_utils.eval", ("ember_utils.methods", "ember_utils.experiments", "ember_utils.viz", "ember_utils.attacks")),
    ("ember_utils.methods", ("ember_utils.viz", "ember_utils.experiments")),
    ("ember_utils.methods.ember.factorize", MODEL_CODE + ("ember_utils.data",)),
    ("ember_utils.data", MODEL_CODE + ("torch",)),
    ("ember_utils.state", MODEL_CODE),
]
COMPUTATIONAL = ("ember_utils.eval", "ember_utils.methods", "ember_utils.experiments", "ember_utils.interp",
                 "ember_utils.models", "ember_utils.data", "ember_utils.state", "ember_utils.attacks")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved; ``from a import b`` gives
    both ``a`` and ``a.b``, since b may be a submodule)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    return {module_name(p, root): imports_of(p, root) for p in sorted(root.rglob("*.py"))}


def violations(graph: dict[str, set[str]]) -> list[str]:
    def within(mod: str, prefix: str) -> bool:
        return mod == prefix or mod.startswith(prefix + ".")

    bad = []
    for mod, imported in graph.items():
        for scope, forbidden in RULES:
            if within(mod, scope):
                bad += [f"{mod} imports {i}" for i in sorted(imported) if any(within(i, f) for f in forbidden)]
        if any(within(mod, c) for c in COMPUTATIONAL):
            bad += [f"{mod} imports {i} (viz)" for i in sorted(imported) if within(i, "ember_utils.viz")]
    return bad


def test_package_follows_the_layering_rules():
    graph = import_graph(PACKAGE)
    assert "ember_utils.eval.evaluator" in graph and "ember_utils.methods.ember.factorize" in graph
    assert violations(graph) == []


@pytest.mark.parametrize("where,line", [
    ("eval/bad.py", "from ..methods.ember.edit import EmbeddingEdit"),
    ("methods/ember/bad.py", "from ...viz import plots"),
    ("methods/ember/factorize.py", "def f():\n    import transformers"),
    ("data.py", "from .models import load_model"),
    ("experiments/bad.py", "from ember_utils.viz.plots import ratio_plot"),
])
def test_the_check_catches_a_forbidden_import(tmp_path, where, line):
    root = tmp_path / "ember_utils"
    path = root / where
    path.parent.mkdir(parents=True, exist_ok=True)
    for folder in [root, *path.parents]:
        if folder == tmp_path:
            break
        (folder / "__init__.py").touch()
    path.write_text(line + "\n")
    assert violations(import_graph(root)), f"{where}: {line!r} should break a rule"
