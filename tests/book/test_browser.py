"""The rendered book as a reader sees it: the FAST build served on localhost and opened in headless Chromium.

Pages come from ``_toc.yml`` (``toc_files()``), so a new chapter is checked as soon as it is in the toc. For
every page: it loads, the browser logs no error (console errors, uncaught exceptions, failed requests), the
page makes no request outside localhost, every image (figures included) decodes, math is typeset, saved
ipywidgets and circuitsvis visualizations render with a non-zero size, chapter pages have a Colab button
pointing at their committed ``.ipynb`` and exercise solutions start collapsed. Plus: the search page finds
results, and a first-time reader can go intro → chapter 4 → Colab.

What is filtered, and why: nothing from the page's own origin. Every request to another origin is
aborted (there is no internet here, and the book must not need it) and counted as a failure, with one
exception: in the first-reader test the request to colab.research.google.com that the Colab button makes is
intercepted and answered with a stub page, because we only need to see that the button opens the right URL.
Console messages of level ``warning`` and below are ignored (the ipywidgets renderer logs a schema-
compiler warning, "strict mode: use allowUnionTypes ...", on every page with a widget; it is not an error).

Screenshots of every page go to ``test-artifacts/screenshots/`` (git-ignored).

Chromium is Debian's ``chromium`` (``scripts/test.sh`` installs it), driven by Playwright with
``executable_path``; Playwright's own browser downloads are never used.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import yaml
from book_build import ROOT, fast_book, toc_files

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("EMBER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
COLAB = "https://colab.research.google.com"
PAGES = toc_files()
CHAPTERS = [p for p in PAGES if (ROOT / f"{p}.ipynb").exists()]
RENDER_TIMEOUT_MS = 20_000


def _need(condition: bool, reason: str) -> None:
    """Skip outside CI, fail in CI (where scripts/test.sh has installed everything)."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def expected_colab_url(page: str) -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]
    org, name = repo["url"].rstrip("/").split("github.com/")[1].split("/")[:2]
    prefix = (repo.get("path_to_book") or "").strip("/")
    path = f"{prefix}/{page}.ipynb" if prefix else f"{page}.ipynb"
    return f"{COLAB}/github/{org}/{name}/blob/{repo.get('branch', 'main')}/{path}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Recorder:
    """Everything a page does wrong, plus the requests that left localhost."""

    def __init__(self, origin: str):
        self.origin = origin
        self.errors: list[str] = []
        self.external: list[str] = []
        self.colab: list[str] = []

    def clear(self):
        self.errors.clear(), self.external.clear(), self.colab.clear()

    def route(self, route):
        url = route.request.url
        if url.startswith(self.origin):
            route.continue_()
        elif url.startswith(COLAB):
            self.colab.append(url)
            route.fulfill(status=200, content_type="text/html",
                          body="<html><head><title>Colab (stub)</title></head><body>Colab stub</body></html>")
        else:
            self.external.append(url)
            route.abort()

    def attach(self, page):
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text} @ {m.location.get('url')}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} ({r.failure})")
                if r.url.startswith(self.origin) else None)
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status}: {r.url}")
                if r.status >= 400 and r.url.startswith(self.origin) else None)

    def problems(self) -> list[str]:
        return self.errors + [f"request outside localhost: {u}" for u in self.external]


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    _need(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: `apt-get install chromium` (scripts/test.sh does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        _need(False, "playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user-data-dir
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        context.set_default_timeout(RENDER_TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture(scope="module")
def site():
    """The FAST build, served on a free localhost port."""
    build = fast_book()
    if build.returncode != 0:
        pytest.fail("the FAST book build failed (see test_fast_book_builds_without_warnings):\n" + build.log[-4000:])
    handler = functools.partial(_QuietHandler, directory=str(build.html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    try:
        yield f"http://127.0.0.1:{server.server_port}/", build.html_dir
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def browse(browser_context, site):
    """A fresh tab whose problems are recorded; yields (page, recorder, base_url, html_dir)."""
    base, html_dir = site
    recorder = Recorder(base)
    browser_context.route("**/*", recorder.route)
    page = browser_context.new_page()
    recorder.attach(page)
    yield page, recorder, base, html_dir
    page.close()
    browser_context.unroute("**/*")


def _wait_for_images(page):
    page.evaluate("""async () => {
        const imgs = [...document.images];
        imgs.forEach(i => { i.loading = 'eager'; });
        await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
    }""")
    return page.evaluate("() => [...document.images].map(i => ({src: i.getAttribute('src'), w: i.naturalWidth,"
                         " output: !!i.closest('.cell_output')}))")


def _expected_output_images(html_dir: Path, page_name: str) -> int:
    """Image outputs of the executed notebook that the page should show (cells not tagged remove-*)."""
    executed = html_dir.parent / "jupyter_execute" / f"{page_name}.ipynb"
    if not executed.exists():
        return 0
    nb = json.loads(executed.read_text())
    count = 0
    for cell in nb["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] != "code" or tags & {"remove-output", "remove-cell"}:
            continue
        for out in cell.get("outputs", []):
            if any(k in out.get("data", {}) for k in ("image/png", "image/svg+xml", "image/jpeg")):
                count += 1
    return count


def _shot(page, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.mark.parametrize("page_name", PAGES)
def test_page_renders_offline_without_errors(browse, page_name):
    page, rec, base, html_dir = browse
    response = page.goto(base + f"{page_name}.html", wait_until="load")
    assert response is not None and response.status == 200, f"{page_name}.html: HTTP {response and response.status}"
    assert page.locator("article.bd-article h1").count() >= 1, f"{page_name}: no page title"

    # Figures: every <img> decodes; chapter pages show every image output of their executed notebook.
    images = _wait_for_images(page)
    broken = [i["src"] for i in images if i["w"] == 0]
    assert not broken, f"{page_name}: images that did not load: {broken}"
    expected = _expected_output_images(html_dir, page_name)
    shown = sum(i["output"] for i in images)
    assert shown >= expected, f"{page_name}: {shown} output images on the page, {expected} in the executed notebook"

    # Math: MathJax (served locally) typesets every math element without errors.
    if page.locator(".math").count():
        page.wait_for_function("() => document.querySelectorAll('mjx-container').length >= "
                               "document.querySelectorAll('.math').length", timeout=RENDER_TIMEOUT_MS)
        assert page.locator("mjx-merror").count() == 0, f"{page_name}: MathJax reported a TeX error"

    # Saved ipywidgets (e.g. progress bars): the vendored renderer draws each view.
    views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
    if views:
        page.wait_for_function(f"() => document.querySelectorAll('.widget-subarea').length >= {views}")

    # circuitsvis: every visualization has rendered into its div with a non-zero size.
    n_vis = page.locator('[id^="circuits-vis"]').count()
    if n_vis:
        page.evaluate("() => document.querySelectorAll('[id^=\"circuits-vis\"]').forEach(el => {"
                      " for (let d = el.closest('details'); d; d = d.parentElement.closest('details')) d.open = true; })")
        page.wait_for_function("""() => [...document.querySelectorAll('[id^="circuits-vis"]')].every(el => {
            const r = el.getBoundingClientRect(); return el.childElementCount > 0 && r.width > 0 && r.height > 0; })""")

    # Launch buttons: chapters open their committed notebook in Colab; other pages have no Colab button.
    colab_links = page.locator(f'a[href^="{COLAB}"]')
    if page_name in CHAPTERS:
        assert colab_links.count() == 1, f"{page_name}: expected one Colab button, found {colab_links.count()}"
        assert colab_links.first.get_attribute("href") == expected_colab_url(page_name)
    else:
        assert colab_links.count() == 0, f"{page_name} has no .ipynb but shows a Colab button"

    # Download buttons (.ipynb / .md source) serve a file.
    for href in page.eval_on_selector_all(".dropdown-download-buttons a[href]", "els => els.map(a => a.href)"):
        status = page.request.get(href).status
        assert status == 200, f"{page_name}: download link {href} gives HTTP {status}"

    # Navigation: the sidebar lists every page of the toc (a stale page would miss newer chapters).
    nav = set(page.eval_on_selector_all(".bd-sidebar-primary a.reference", "els => els.map(a => a.href.split('#')[0])"))
    missing = [p for p in PAGES if base + f"{p}.html" not in nav]
    assert not missing, f"{page_name}: the navigation does not link {missing}"

    _shot(page, Path(page_name).name)
    assert not rec.problems(), f"{page_name}:\n" + "\n".join(rec.problems())


@pytest.mark.parametrize("page_name", CHAPTERS[1:])
def test_chapter_links_to_another_chapter(browse, page_name):
    """Chapters build on each other: each one after the first cross-references another chapter in its text."""
    page, rec, base, _ = browse
    page.goto(base + f"{page_name}.html", wait_until="load")
    links = set(page.eval_on_selector_all("article.bd-article a.reference.internal",
                                          "els => els.map(a => a.href.split('#')[0])"))
    others = [c for c in CHAPTERS if c != page_name and base + f"{c}.html" in links]
    assert others, f"{page_name}: no cross-reference to another chapter (use {{ref}}`... <ch-label>`)"


@pytest.mark.parametrize("page_name", CHAPTERS)
def test_exercise_solutions_start_collapsed(browse, page_name):
    page, rec, base, _ = browse
    page.goto(base + f"{page_name}.html", wait_until="load")
    solutions = page.locator(".cell.tag_solution")
    assert solutions.count() >= 1, f"{page_name}: no solution cell (a code cell tagged hide-cell + solution)"
    for i in range(solutions.count()):
        assert not solutions.nth(i).locator(".cell_input").is_visible(), f"{page_name}: solution {i} is not collapsed"
    first = solutions.first
    first.locator("summary").first.click()
    assert first.locator(".cell_input").is_visible(), f"{page_name}: clicking the toggle does not show the solution"
    assert not rec.problems(), "\n".join(rec.problems())


def test_chapter_4_shows_the_logit_lens_and_the_exercise_checks(browse):
    """Chapter 4: the logit-lens figure (the cell tagged ``logit-lens``) rendered as an image, the attention view
    drew, and the hidden solutions show their checks' ✓ lines once opened."""
    chapter4 = next((p for p in PAGES if Path(p).name.startswith("04_")), None)
    if chapter4 is None:
        pytest.skip("the toc has no chapter 4 (notebooks/04_*) yet")
    page, rec, base, _ = browse
    page.goto(base + f"{chapter4}.html", wait_until="load")
    _wait_for_images(page)
    lens = page.locator(".cell.tag_logit-lens .cell_output img")
    assert lens.count() >= 1, "chapter 4: no logit-lens figure"
    assert lens.first.evaluate("i => i.naturalWidth") > 0, "chapter 4: the logit-lens figure did not load"
    page.wait_for_function("""() => [...document.querySelectorAll('[id^="circuits-vis"]')].some(el =>
        el.childElementCount && el.getBoundingClientRect().width > 0)""")
    checks = page.locator(".cell.tag_solution .cell_output", has_text="✓")
    assert checks.count() >= 2, f"chapter 4: {checks.count()} exercise check output(s) with a ✓"
    solution = page.locator(".cell.tag_solution").filter(has=page.locator(".cell_output", has_text="✓")).first
    solution.locator("summary").first.click()
    assert checks.first.is_visible(), "chapter 4: opening the solution does not show its check's output"
    _shot(page, "chapter4_logit_lens_and_checks")
    assert not rec.problems(), "\n".join(rec.problems())


def test_search_page_finds_the_model(browse):
    page, rec, base, _ = browse
    page.goto(base + "search.html?q=Gemma", wait_until="load")
    results = page.locator("ul.search li")
    results.first.wait_for(timeout=RENDER_TIMEOUT_MS)
    hrefs = [results.nth(i).locator("a").first.get_attribute("href") for i in range(results.count())]
    assert any("notebooks/" in h for h in hrefs), f"search for 'Gemma' found no chapter: {hrefs}"
    _shot(page, "search")
    assert not rec.problems(), "\n".join(rec.problems())


def test_intro_shows_results_figure(browse):
    page, rec, base, _ = browse
    page.goto(base + f"{PAGES[0]}.html", wait_until="load")
    figures = [i for i in _wait_for_images(page) if i["output"]]
    assert figures and all(i["w"] > 0 for i in figures), f"the intro shows no results figure: {figures}"
    assert not rec.problems(), "\n".join(rec.problems())


def test_first_reader_path_intro_to_chapter_4_to_colab(browser_context, browse):
    """Open the book, click into chapter 4 from the intro, press the Colab button."""
    chapter4 = next((p for p in PAGES if Path(p).name.startswith("04_")), None)
    if chapter4 is None:
        pytest.skip("the toc has no chapter 4 (notebooks/04_*) yet")
    page, rec, base, _ = browse
    page.goto(base + "index.html", wait_until="load")  # the landing page redirects to the intro
    page.wait_for_url(f"**/{PAGES[0]}.html")
    _shot(page, "first_reader_1_intro")

    target = f'a[href$="{Path(chapter4).name}.html"]'
    link = page.locator(f"article.bd-article {target}")
    if link.count() == 0:  # the intro text should link it; the sidebar always does
        link = page.locator(f".bd-sidebar-primary {target}")
    assert link.count() >= 1, f"the intro page has no link to {chapter4}"
    link.first.click()
    page.wait_for_url(f"**/{chapter4}.html")
    page.wait_for_load_state("load")
    _shot(page, "first_reader_2_chapter4")

    page.locator('button[aria-label="Launch interactive content"]').click()
    colab_item = page.locator(f'.dropdown-launch-buttons a[href^="{COLAB}"]')
    colab_item.wait_for(state="visible")
    page.screenshot(path=str(SCREENSHOTS / "first_reader_3_launch_menu.png"))  # the open menu, viewport only
    with browser_context.expect_page() as popup_info:
        colab_item.click()
    popup = popup_info.value
    popup.wait_for_load_state("load")
    assert popup.url == expected_colab_url(chapter4)
    assert rec.colab == [expected_colab_url(chapter4)], f"Colab requests: {rec.colab}"
    popup.close()
    assert not rec.problems(), "\n".join(rec.problems())


def test_circuitsvis_renders_offline(browser_context):
    """circuitsvis' inline bundle (``RenderedHTML.local_src``) renders with no network at all."""
    from circuitsvis.tokens import colored_tokens

    html = colored_tokens(["Harry", " Potter", " waved"], [0.1, 0.9, 0.4]).local_src
    external, errors = [], []
    browser_context.route("**/*", lambda r: (external.append(r.request.url), r.abort()))
    page = browser_context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.set_content(f"<!doctype html><html><body>{html}</body></html>", wait_until="load")
        page.wait_for_function("""() => { const el = document.querySelector('[id^="circuits-vis"]');
            if (!el || !el.childElementCount) return false;
            const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; }""")
    finally:
        page.close()
        browser_context.unroute("**/*")
    assert not external, f"circuitsvis requested {external}"
    assert not errors, errors
