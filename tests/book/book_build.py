"""Build the book once per test session in FAST mode (every chapter executed) and share the result.

Used by the notebook test (every chapter executed, no error outputs) and the browser test.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
FAST_BUILD_DIR = ROOT / "_build" / "fast"
#: the book is also built in FAST mode for this concept (chapters 2–8 follow $EMBER_CONCEPT)
SECOND_CONCEPT = "association_football"


@dataclass
class BookBuild:
    returncode: int
    log: str
    html_dir: Path


def toc_files() -> list[str]:
    """Every document in ``_toc.yml`` (root first), without extension."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def chapter_notebooks() -> list[Path]:
    """The executable chapters: toc entries backed by an .ipynb."""
    return [ROOT / f"{f}.ipynb" for f in toc_files() if (ROOT / f"{f}.ipynb").exists()]


@functools.lru_cache(maxsize=2)
def fast_book(concept: str | None = None) -> BookBuild:
    """``EMBER_FAST=1 jupyter-book build`` into ``_build/fast`` (warnings are errors); with ``concept``, the same
    build with ``EMBER_CONCEPT=concept`` into ``_build/fast-<concept>``."""
    from ember_utils.notebook import DEFAULT_CONCEPT

    env = {**os.environ, "EMBER_FAST": "1", "EMBER_CONCEPT": concept or DEFAULT_CONCEPT}
    build_dir = FAST_BUILD_DIR if concept is None else FAST_BUILD_DIR.with_name(f"fast-{concept}")
    # Same config, but always re-execute: the execution cache keys on notebook content only and would hide a
    # change in ember_utils that breaks a chapter.
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "force"
    # jupyter-book resolves local_extensions paths relative to the config file, which now lives in _build/fast.
    local_ext = (config.get("sphinx") or {}).get("local_extensions") or {}
    for name, path in local_ext.items():
        local_ext[name] = str((ROOT / path).resolve())
    build_dir.mkdir(parents=True, exist_ok=True)
    config_path = build_dir / "_config_fast.yml"
    config_path.write_text(yaml.safe_dump(config))
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(ROOT), "--path-output", str(build_dir), "--config", str(config_path),
           "--all", "-W", "-n", "--keep-going"]  # --all: fresh environment, every page re-read (and re-executed) and re-written
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    log = proc.stdout + proc.stderr
    artifacts = ROOT / "test-artifacts"  # git-ignored; the log has the per-chapter execution times
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"fast_book_build{'' if concept is None else '-' + concept}.log").write_text(log)
    return BookBuild(proc.returncode, log, build_dir / "_build" / "html")
