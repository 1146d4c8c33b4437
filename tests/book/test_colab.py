"""Colab readiness, end to end: every chapter runs top to bottom through its setup cell's Colab branch
(clone + `pip install -e`) in a fresh virtual environment (scripts/colab_smoke.sh, FAST mode, CPU).

Marked ``colab`` (a few minutes: it installs the package's dependencies into a new venv); skipped unless
``EMBER_RUN_COLAB=1`` (set by the README's test command) or ``-m colab``.
"""
from __future__ import annotations

import subprocess

import pytest
from book_build import ROOT


@pytest.mark.colab
def test_chapters_run_through_their_colab_setup_cell(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "colab_smoke.sh"), str(tmp_path / "colab")],
                          capture_output=True, text=True, timeout=1800)
    report = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, report[-6000:]
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for name in chapters:
        assert f"{name}: ran top to bottom" in proc.stdout, report[-6000:]
    # the setup cell really cloned and installed the repository (the Colab branch ran)
    assert (tmp_path / "colab" / "ember-book" / "ember_utils" / "__init__.py").exists()
