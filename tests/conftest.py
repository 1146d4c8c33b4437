"""Shared pytest fixtures.

* ``tiny_bridge`` (session): a randomly initialised 2-layer Gemma 3 (d_model 32, untied embeddings, a
  512-token byte-level BPE tokenizer trained in memory) booted in a TransformerLens 4.x
  ``TransformerBridge`` (built by ``helpers.tiny_models.build_tiny_bridge``). Treat it as read-only; tests that
  modify weights use ``fresh_tiny_bridge`` (function scope) or build their own with ``helpers.tiny_models``.
* ``real_bridge`` (session): the offline default Gemma 3 270M (``ember_utils.load_model()``), for tests
  marked ``@pytest.mark.real_model``.

Tests marked ``real_model`` are skipped unless the ``-m`` expression mentions ``real_model`` (e.g.
``pytest -m real_model``) or ``EMBER_RUN_REAL_MODEL=1`` is set, so a plain ``pytest`` stays fast; the same
for ``colab`` (the Colab smoke run of every chapter) and ``EMBER_RUN_COLAB=1``.

While the second-concept FAST book builds in the background (started at collection when its test is selected,
``tests/book/book_build.py``), every test runs with one torch thread and the build with one: two single-threaded
processes share the 2 cores well, more threads than cores do not. ``EMBER_BACKGROUND_BOOK=0`` builds it in the
foreground instead.

Tests *not* marked ``real_model`` run with one torch thread (``EMBER_TEST_THREADS=N`` sets N threads for
all tests): tiny models are dominated by per-op overhead, and on a busy 2-core machine two spinning
threads made them ~5x slower (the real model too: ``EMBER_TEST_THREADS=1`` helps when the machine is shared).
"""
from __future__ import annotations

import os
import sys

import pytest

from helpers.tiny_models import build_tiny_bridge


@pytest.fixture(scope="session")
def tiny_bridge():
    """Session-wide tiny Gemma 3 bridge. Do not modify its weights (use ``fresh_tiny_bridge``)."""
    return build_tiny_bridge()


@pytest.fixture
def fresh_tiny_bridge():
    """A new tiny Gemma 3 bridge per test (safe to edit)."""
    return build_tiny_bridge()


@pytest.fixture(autouse=True)
def _torch_threads_for_small_tests(request):
    """One torch thread for tests that do not use the real model, torch's default for ``real_model`` tests;
    ``EMBER_TEST_THREADS`` sets the count for all tests. Restored afterwards."""
    env = os.environ.get("EMBER_TEST_THREADS")
    if env is None and _background_build_running():
        env = "1"
    if env is None and "real_model" in request.node.keywords:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(env or "1"))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def real_bridge():
    """The offline default Gemma 3 270M as a TransformerBridge (only for ``real_model`` tests)."""
    import ember_utils

    return ember_utils.load_model()


#: opt-in markers: skipped unless named in ``-m`` or switched on by their environment variable
OPT_IN = {"real_model": "EMBER_RUN_REAL_MODEL", "colab": "EMBER_RUN_COLAB"}


def pytest_collection_modifyitems(config, items):
    """Skip ``real_model`` / ``colab`` tests unless asked for with ``-m ...`` or EMBER_RUN_REAL_MODEL=1 /
    EMBER_RUN_COLAB=1."""
    expr = config.getoption("-m") or ""
    for marker, env in OPT_IN.items():
        if marker in expr or os.environ.get(env) == "1":
            continue
        skip = pytest.mark.skip(reason=f"{marker} test: run with `-m {marker}` or {env}=1")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


def _background_build_running() -> bool:
    book_build = sys.modules.get("book_build")
    return bool(book_build and book_build.background_build_running())


def pytest_collection_finish(session):
    """Start the second-concept FAST book build in the background when its test is selected, so that it runs
    beside the other tests instead of after them."""
    book_build = sys.modules.get("book_build")
    if book_build is None or os.environ.get("EMBER_BACKGROUND_BOOK", "1") == "0":
        return
    if any(item.name == "test_fast_book_builds_for_a_second_concept" for item in session.items):
        book_build.start_fast_book(book_build.SECOND_CONCEPT)


def pytest_sessionfinish(session):
    book_build = sys.modules.get("book_build")
    if book_build is not None:
        book_build.stop_background_builds()
