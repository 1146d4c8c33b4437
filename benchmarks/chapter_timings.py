"""Wall time of every chapter run top to bottom, FAST (``EMBER_FAST=1``) and/or full, on this machine; the
workshop page reads the result (``benchmarks/results/chapter_timings.json``).

Each chapter runs in a fresh kernel through nbclient, as Jupyter would run it; the model and factorization
caches are kept (a participant's second run), so the first chapter's time excludes the one-off model conversion
unless ``--cold`` clears the cache first. Entries are merged: timing only FAST keeps earlier full timings.

Usage::

    python benchmarks/chapter_timings.py --mode fast            # every chapter in the toc, FAST
    python benchmarks/chapter_timings.py --mode full --chapters 01 02
    # after a cold `bash scripts/build_book.sh`: read each chapter's execution time from the book's
    # execution cache (jupyter-cache records it) instead of running the chapters a second time
    python benchmarks/chapter_timings.py --mode full --from-build-cache _build/.jupyter_cache --build-seconds 1100
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, atomic_write_json, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = RESULTS_DIR / "chapter_timings.json"


def chapters() -> list[Path]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def run_chapter(path: Path, fast: bool) -> float:
    import nbformat
    from nbclient import NotebookClient

    env = {"EMBER_FAST": "1" if fast else "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=3600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        return time.perf_counter() - t0
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def times_from_build_cache(cache_dir: Path) -> dict[str, float]:
    """Chapter stem → execution seconds of the notebooks a Jupyter Book build executed (its jupyter-cache)."""
    from jupyter_cache import get_cache

    if not (cache_dir / "global.db").exists():
        raise SystemExit(f"{cache_dir} is not a jupyter-cache folder (no global.db): pass the build's "
                         "_build/.jupyter_cache after `bash scripts/build_book.sh`.")
    wanted = {p.stem for p in chapters()}
    out = {}
    for rec in get_cache(str(cache_dir)).list_cache_records():
        stem = Path(rec.uri).stem
        if stem in wanted and rec.data.get("execution_seconds") is not None:
            out[stem] = float(rec.data["execution_seconds"])
    return out


def save(record: dict) -> None:
    """Stamp ``record`` with the metric, machine, date and command, and write it atomically."""
    record.update(metric="chapter wall time", unit="s", machine=machine(), date=dt.date.today().isoformat(),
                  command="python benchmarks/chapter_timings.py " + " ".join(sys.argv[1:]))
    atomic_write_json(OUT, record)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("fast", "full", "both"), default="fast")
    ap.add_argument("--chapters", nargs="*", default=None, help="chapter number prefixes (default: all)")
    ap.add_argument("--from-build-cache", type=Path, default=None,
                    help="read the times from a Jupyter Book build's execution cache instead of running chapters")
    ap.add_argument("--build-seconds", type=float, default=None,
                    help="with --from-build-cache: the whole build's wall time, recorded as book_build_<mode>_s")
    args = ap.parse_args()
    record = json.loads(OUT.read_text()) if OUT.exists() else {"name": "chapter_timings", "chapters": {}}
    if args.from_build_cache is not None:
        if args.mode == "both":
            raise SystemExit("--from-build-cache reads one build: pass --mode fast or --mode full.")
        times = times_from_build_cache(args.from_build_cache)
        for stem, seconds in times.items():
            entry = record["chapters"].setdefault(stem, {})
            entry.update({f"{args.mode}_s": round(seconds, 1), f"{args.mode}_date": dt.date.today().isoformat(),
                          f"{args.mode}_machine": machine(), f"{args.mode}_source": "jupyter-book build"})
            print(f"{stem} {args.mode}: {seconds:.0f} s (from the build)")
        if args.build_seconds is not None:
            record[f"book_build_{args.mode}_s"] = round(args.build_seconds, 1)
        save(record)
        return
    modes = ("fast", "full") if args.mode == "both" else (args.mode,)
    todo = [p for p in chapters() if not args.chapters or any(p.stem.startswith(c) for c in args.chapters)]
    for path in todo:
        for mode in modes:
            seconds = run_chapter(path, fast=mode == "fast")
            entry = record["chapters"].setdefault(path.stem, {})
            entry[f"{mode}_s"] = round(seconds, 1)
            entry[f"{mode}_date"] = dt.date.today().isoformat()
            entry[f"{mode}_machine"] = machine()
            print(f"{path.stem} {mode}: {seconds:.0f} s", flush=True)
            save(record)  # after every chapter: an interrupted run keeps what it measured


if __name__ == "__main__":
    main()
