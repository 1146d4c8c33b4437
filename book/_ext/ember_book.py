"""Book-level Sphinx glue for the EMBER book (loaded through ``sphinx.local_extensions`` in ``_config.yml``).

Two jobs, both about the rendered HTML working the way readers use it:

1. **Offline assets.** By default the page template loads MathJax from a CDN and myst-nb loads require.js
   plus the ipywidgets HTML manager from two more CDNs on every page that carries widget state (tqdm
   progress bars are widgets). Workshop rooms and our headless-browser test have no internet, so:

   * MathJax 3 comes from the PyPI package ``sphinx-mathjax-offline`` (a pinned book dependency): the
     files are copied into ``_static/mathjax/`` after a successful build and ``mathjax_path`` points there;
   * the ipywidgets renderer is the standalone ``embed.js`` of ``@jupyter-widgets/html-manager`` vendored
     in ``book/_static/vendor/`` (see the README there); it needs no require.js, so no AMD loader can
     clash with the UMD/IIFE bundles of other outputs (circuitsvis inlines its own JS). It typesets widget
     labels with the MathJax 2 API, so ``book/_static/ember-widgets-mathjax3.js`` is loaded before it to
     translate that call for MathJax 3.

2. **No duplicate inline scripts.** sphinx-thebe 0.3.1 registers its inline config (``const THEBE_JS_URL
   = ...``) once with ``filename=None`` and once, via the registry, with ``filename=''``; Sphinx 7.4 does not
   see these as equal and writes the script twice, and every page then logs "Identifier 'THEBE_JS_URL' has
   already been declared". Identical script entries are dropped before the page is written.

3. **Navigation always matches the toc.** Every page carries the book's navigation, but an incremental
   build only re-writes the pages whose source changed, so adding a chapter left the other pages' sidebars
   without it. When ``_toc.yml`` changed, or a page was added or removed, every page is re-read (cheap:
   notebook execution is cached by jupyter-cache) and re-written.

4. **Launch buttons only where a notebook exists.** sphinx-book-theme adds Colab/Binder buttons to every
   page it considers a notebook, including MyST-Markdown pages with a kernel (the intro computes its
   results figure). Colab can only open the committed ``.ipynb`` files, so pages without a matching
   ``<page>.ipynb`` in the repository lose the launch group.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path, PurePosixPath

from sphinx.application import Sphinx
from sphinx.util.fileutil import copy_asset

MATHJAX_PACKAGE = "sphinx-mathjax-offline"  # PyPI: sphinx-mathjax-offline==0.0.2 (MathJax 3.2.2)
MATHJAX_ENTRY = "tex-mml-chtml.js"          # the combined component Sphinx uses from the CDN by default
# Other combined builds are never loaded when MATHJAX_ENTRY is the entry point: skip them (~13 MB).
_MATHJAX_SKIP = ("tex-svg", "tex-mml-svg", "mml-", "tex-chtml", "node-main.js", "latest.js")

WIDGETS_EMBED = "vendor/jupyter-widgets-html-manager/embed.js"  # relative to html_static_path
# embed.js typesets widget labels with the MathJax 2 API; this shim maps it onto MathJax 3 (see the file).
WIDGETS_MATHJAX_SHIM = "ember-widgets-mathjax3.js"


def mathjax_source_dir() -> Path:
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"The book needs the {MATHJAX_PACKAGE!r} package (pip install -e '.[book]').")
    path = Path(spec.origin).parent / "static" / "mathjax"
    if not (path / MATHJAX_ENTRY).is_file():
        raise RuntimeError(f"{path / MATHJAX_ENTRY} is missing: reinstall {MATHJAX_PACKAGE}.")
    return path


def _skip_mathjax_file(relpath: str) -> bool:
    """Top-level combined builds other than the entry point (``relpath`` as copy_asset passes it)."""
    parts = PurePosixPath(relpath).parts
    return len(parts) == 1 and parts[0] != MATHJAX_ENTRY and parts[0].startswith(_MATHJAX_SKIP)


def _copy_mathjax(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    src = mathjax_source_dir()
    copy_asset(src, Path(app.outdir) / "_static" / "mathjax", excluded=_skip_mathjax_file)


def _config_inited(app: Sphinx, config) -> None:
    mathjax_source_dir()  # fail early with a clear message
    config.mathjax_path = f"mathjax/{MATHJAX_ENTRY}"
    # Replace myst-nb's CDN defaults (require.js + embed-amd.js) with the vendored standalone renderer.
    config.nb_ipywidgets_js = {WIDGETS_MATHJAX_SHIM: {}, WIDGETS_EMBED: {}}


def _drop_launch_buttons_without_notebook(app: Sphinx, pagename: str, templatename: str, context: dict,
                                          doctree) -> None:
    repo_root = Path(app.srcdir)  # the book's source root is the repository root
    if (repo_root / f"{pagename}.ipynb").is_file():
        return
    buttons = context.get("header_buttons")
    if buttons:
        context["header_buttons"] = [b for b in buttons if b.get("label") != "launch-buttons"]


def _dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        key = (str(getattr(js, "filename", js) or ""), getattr(js, "priority", None), tuple(sorted(attrs.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def _toc_digest(app: Sphinx) -> str:
    toc = Path(app.srcdir) / "_toc.yml"
    return hashlib.sha256(toc.read_bytes()).hexdigest() if toc.is_file() else ""


def _outdate_all_when_toc_changes(app: Sphinx, env, added: set, changed: set, removed: set) -> list[str]:
    digest = _toc_digest(app)
    if digest != getattr(env, "ember_toc_digest", None) or added or removed:
        env.ember_toc_digest = digest
        return sorted(env.found_docs - added - changed)
    return []


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _config_inited, priority=900)
    app.connect("build-finished", _copy_mathjax)
    app.connect("env-get-outdated", _outdate_all_when_toc_changes)
    # sphinx-book-theme adds its launch group at priority 501 and renders the header later.
    app.connect("html-page-context", _drop_launch_buttons_without_notebook, priority=600)
    app.connect("html-page-context", _dedupe_scripts, priority=600)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
