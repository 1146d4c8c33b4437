"""A content-addressed cache of experiment stages (factorize, δ sweep, ELM, RMU, each attack).

A stage's entry lives in ``<root>/<stage>/<key>/``: the key hashes the stage's inputs (parameters, the keys of
the stages it builds on) and its *code version* (a hash of the source of the modules it runs), so changing δ
recomputes the edit and what follows from it while the factorization stays cached. Entries are written
atomically with a manifest of every file's SHA-256; a read checks them, and an entry that fails the check (a
crash, a truncated file, an edit by hand) is removed and recomputed, never used.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..io import atomic_directory, atomic_write_json, stable_hash

__all__ = ["Codec", "JSON", "StateCodec", "FrameCodec", "StageCache", "StageResult", "code_version",
           "CorruptEntryError"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_MANIFEST = "manifest.json"
_FORMAT = "ember-stage-v1"


class CorruptEntryError(RuntimeError):
    """A cache entry whose files do not match its manifest."""


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How a stage's value is written into (and read from) the entry folder."""

    save: Callable[[T, Path], None]
    load: Callable[[Path], T]
    name: str


def _save_json(value: Any, folder: Path) -> None:
    atomic_write_json(folder / "value.json", value)


JSON: Codec[Any] = Codec(_save_json, lambda folder: json.loads((folder / "value.json").read_text()), "json")


def StateCodec(cls: type) -> Codec[Any]:  # noqa: N802 - reads like the codec it returns
    """A :class:`~ember_utils.state.ModelState` class's own ``save``/``load`` (one file or folder ``state``)."""
    return Codec(lambda state, folder: state.save(folder / "state"), lambda folder: cls.load(folder / "state"),
                 f"state:{cls.__qualname__}")


def _save_frame(frame: Any, folder: Path) -> None:
    atomic_write_json(folder / "frame.json", json.loads(frame.to_json(orient="split", double_precision=15)))


def _load_frame(folder: Path) -> Any:
    import pandas as pd

    spec = json.loads((folder / "frame.json").read_text())
    return pd.DataFrame(spec["data"], columns=spec["columns"])


#: a DataFrame, kept with its lists and floats (JSON 'split' orientation)
FrameCodec: Codec[Any] = Codec(_save_frame, _load_frame, "frame")


def code_version(modules: Sequence[str]) -> str:
    """Hash of the source files of ``modules`` (dotted names): a stage's code version."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        module = importlib.import_module(name)
        h.update(name.encode())
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()[:16]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != _MANIFEST)


@dataclass(frozen=True)
class StageResult(Generic[T]):
    """A stage's value, its key (what later stages hash), whether it came from the cache, and its seconds."""

    value: T
    key: str
    cached: bool
    seconds: float
    path: Path


class StageCache:
    """Run stages once: ``cache.run("elm", inputs, compute, codec, code=[...])`` returns the cached value when
    an intact entry for the same inputs and code exists, and computes, stores and returns it otherwise.

    ``meter`` (optional) is a context-manager factory wrapped around each computation, whose value has a
    ``to_dict()`` (e.g. ``lambda: count_tokens(model)``): the counts go into the stage's log entry and manifest.
    ``log`` lists every stage run, cached ones with the seconds and counts of the run that computed them."""

    def __init__(self, root: str | Path, meter: Callable[[], AbstractContextManager[Any]] | None = None) -> None:
        self.root = Path(root)
        self.meter = meter
        self.log: list[dict[str, Any]] = []

    def key(self, stage: str, inputs: dict[str, Any], code: Sequence[str] = ()) -> str:
        if not stage or "/" in stage or stage.startswith("."):
            raise ValueError(f"Stage names are plain folder names like 'elm' or 'probe-EMBER', got {stage!r}.")
        if not isinstance(inputs, dict):
            raise TypeError(f"Stage inputs must be a dict of JSON-like values, got {type(inputs).__name__}.")
        return stable_hash(stage, inputs, code_version(code) if code else "", length=20)

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def verify(self, folder: Path) -> dict[str, Any]:
        """The manifest of an intact entry; raises :class:`CorruptEntryError` naming what does not match."""
        manifest_path = folder / _MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CorruptEntryError(f"{folder}: unreadable manifest ({exc}).") from exc
        if manifest.get("format") != _FORMAT:
            raise CorruptEntryError(f"{folder}: manifest format {manifest.get('format')!r}, expected {_FORMAT}.")
        listed = manifest.get("files", {})
        present = {str(p.relative_to(folder)) for p in _files(folder)}
        if present != set(listed):
            raise CorruptEntryError(f"{folder}: files {sorted(present ^ set(listed))} differ from the manifest.")
        for rel, digest in listed.items():
            if _file_digest(folder / rel) != digest:
                raise CorruptEntryError(f"{folder}: {rel} does not match its SHA-256 in the manifest.")
        return manifest

    def run(self, stage: str, inputs: dict[str, Any], compute: Callable[[], T], codec: Codec[T] = JSON,
            code: Sequence[str] = ()) -> StageResult[T]:
        key = self.key(stage, inputs, code)
        folder = self.entry(stage, key)
        if folder.exists():
            try:
                manifest = self.verify(folder)
                value = codec.load(folder)
                self.log.append({"stage": stage, "key": key, "cached": True, "seconds": 0.0,
                                 "computed_seconds": manifest.get("seconds"), "counts": manifest.get("counts", {})})
                return StageResult(value, key, True, 0.0, folder)
            except Exception as exc:  # a damaged entry is recomputed, never used
                logger.warning("Stage %s: discarding cache entry %s (%s); recomputing.", stage, folder, exc)
                shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        with (self.meter() if self.meter else contextlib.nullcontext()) as metered:
            value = compute()
        seconds = time.perf_counter() - t0
        counts = metered.to_dict() if metered is not None else {}

        def build(tmp: Path) -> None:
            codec.save(value, tmp)
            files = {str(p.relative_to(tmp)): _file_digest(p) for p in _files(tmp)}
            atomic_write_json(tmp / _MANIFEST, {"format": _FORMAT, "stage": stage, "key": key, "codec": codec.name,
                                                "inputs": inputs, "code": list(code), "seconds": seconds,
                                                "counts": counts, "files": files})

        atomic_directory(folder, build)
        self.log.append({"stage": stage, "key": key, "cached": False, "seconds": seconds,
                         "computed_seconds": seconds, "counts": counts})
        return StageResult(value, key, False, seconds, folder)
