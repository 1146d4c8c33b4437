"""Where things live: the repository, the cache folder, and the results folder of a model (the only place that
turns a model name into a folder name)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "default_cache_dir", "model_folder_name", "results_dir"]


def repo_root() -> Path:
    """The repository root (the folder holding ``data/`` and ``_config.yml``); ``$EMBER_REPO_ROOT`` overrides."""
    env = os.environ.get("EMBER_REPO_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1]


def default_cache_dir() -> Path:
    """``$EMBER_CACHE_DIR`` or ``~/.cache/ember_utils``."""
    return Path(os.environ.get("EMBER_CACHE_DIR", Path.home() / ".cache" / "ember_utils"))


def model_folder_name(model_name: str) -> str:
    """Folder name of a model's results: the preset or hub id with '/' replaced by '__'."""
    if not model_name or not model_name.strip():
        raise ValueError("model_name is empty.")
    return model_name.strip().replace("/", "__")


def results_dir(model_name: str, concept: str | None = None, root: str | Path | None = None) -> Path:
    """``results/<model folder>/[<concept>/]`` under ``root`` (default: the repository's ``results/``)."""
    base = Path(root) if root is not None else repo_root() / "results"
    path = base / model_folder_name(model_name)
    return path / concept if concept else path
