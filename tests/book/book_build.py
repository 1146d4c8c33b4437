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


#: builds started in the background (:func:`start_fast_book`), by concept (None: the default)
_PENDING: dict[str | None, tuple[subprocess.Popen, Path]] = {}
#: single-threaded math libraries for a build that shares the 2 cores with the rest of the test session: two
#: 1-thread processes nearly double throughput here, two 2-thread ones oversubscribe the cores and slow both down
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _launch(concept: str | None, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    """Start ``EMBER_FAST=1 jupyter-book build`` (output to a temporary log file) and return (process, build dir)."""
    from ember_utils.notebook import DEFAULT_CONCEPT

    env = {**os.environ, "EMBER_FAST": "1", "EMBER_CONCEPT": concept or DEFAULT_CONCEPT, **(extra_env or {})}
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
    log = open(build_dir / "build.log", "w")  # noqa: SIM115 (closed in _finish)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    proc.log_file = log  # type: ignore[attr-defined]
    return proc, build_dir


def start_fast_book(concept: str | None, one_thread: bool = True) -> None:
    """Start the FAST build of ``concept`` in the background (single-threaded unless ``one_thread=False``);
    :func:`fast_book` then waits for it instead of building again."""
    if concept not in _PENDING:
        _PENDING[concept] = _launch(concept, ONE_THREAD if one_thread else None)


def background_build_running() -> bool:
    """Whether a background build is still running (tests then use one thread each, see tests/conftest.py)."""
    return any(proc.poll() is None for proc, _ in _PENDING.values())


def stop_background_builds() -> None:
    """Terminate background builds that nobody waited for (end of the test session)."""
    for proc, _ in _PENDING.values():
        if proc.poll() is None:
            proc.terminate()


@functools.lru_cache(maxsize=2)
def fast_book(concept: str | None = None) -> BookBuild:
    """``EMBER_FAST=1 jupyter-book build`` into ``_build/fast`` (warnings are errors); with ``concept``, the same
    build with ``EMBER_CONCEPT=concept`` into ``_build/fast-<concept>``. Waits for a build started by
    :func:`start_fast_book`; a build started here is single-threaded while a background build runs."""
    if concept in _PENDING:
        proc, build_dir = _PENDING[concept]
    else:
        proc, build_dir = _launch(concept, ONE_THREAD if background_build_running() else None)
    proc.wait()
    proc.log_file.close()  # type: ignore[attr-defined]
    log = (build_dir / "build.log").read_text()
    artifacts = ROOT / "test-artifacts"  # git-ignored; the log has the per-chapter execution times
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"fast_book_build{'' if concept is None else '-' + concept}.log").write_text(log)
    return BookBuild(proc.returncode, log, build_dir / "_build" / "html")
