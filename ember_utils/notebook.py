"""The standard chapter setup: environment detection, device, preset choice, run profile (FAST switch), seeds.

Every chapter's first cell installs the package on Colab and then calls :func:`setup_chapter`.
"""
from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models import DEFAULT_MODEL, _hf_token, get_preset, pick_device
from .paths import repo_root
from .profiles import RunProfile, run_profile

__all__ = ["ChapterContext", "setup_chapter", "resolve_concept", "DEFAULT_CONCEPT",
           "concept_card", "chapter_timings_table", "is_fast", "in_colab", "GPU_DEFAULT_MODEL",
           "set_seed", "repo_root", "glue"]

GPU_DEFAULT_MODEL = "google/gemma-2-2b-it"
#: The concept chapters 2–8 run on unless ``CONCEPT`` / ``$EMBER_CONCEPT`` says otherwise.
DEFAULT_CONCEPT = "harry_potter"
_TRUE = {"1", "true", "yes", "on"}


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def is_fast() -> bool:
    """The FAST switch (env ``EMBER_FAST``): shrink data and steps for CI smoke runs."""
    value = os.environ.get("EMBER_FAST", "0").strip().lower()
    if value not in _TRUE | {"0", "false", "no", "off", ""}:
        raise ValueError(f"EMBER_FAST must be one of 1/0/true/false/yes/no/on/off, got {value!r}.")
    return value in _TRUE


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch; make CPU runs deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@dataclass
class ChapterContext:
    """What a chapter needs to know about where it runs."""

    fast: bool
    device: torch.device
    model_name: str
    in_colab: bool
    seed: int
    #: the concept folder of ``data/`` the chapter runs on
    concept: str = DEFAULT_CONCEPT

    @property
    def profile(self) -> RunProfile:
        """The run profile (``profiles.FAST`` when the FAST switch is on, else ``profiles.FULL``)."""
        return run_profile(self.fast)

    def __str__(self) -> str:
        return (f"model={self.model_name} device={self.device} FAST={self.fast} "
                f"colab={self.in_colab} seed={self.seed} concept={self.concept}")


def resolve_concept(concept: str | None = None) -> str:
    """``concept``, else ``$EMBER_CONCEPT``, else :data:`DEFAULT_CONCEPT`; checked against the concept folders
    of ``data/`` (a ValueError lists the available ones)."""
    from .data import list_concepts

    slug = concept if concept is not None else (os.environ.get("EMBER_CONCEPT", "").strip() or DEFAULT_CONCEPT)
    available = list_concepts()
    if slug not in available:
        source = "CONCEPT" if concept is not None else "EMBER_CONCEPT"
        raise ValueError(f"{source}={slug!r} is not a concept folder of data/; available: {available}.")
    return slug


def setup_chapter(seed: int = 0, model_name: str | None = None, quiet: bool = False,
                  concept: str | None = None) -> ChapterContext:
    """Pick device, preset and concept, read the FAST switch, seed everything.

    The preset is ``model_name``, else ``$EMBER_MODEL``, else the GPU preset (Gemma-2-2B-it) when a CUDA
    GPU is present and a Hugging Face token is available, else the offline default (Gemma 3 270M). The concept is
    ``concept``, else ``$EMBER_CONCEPT``, else Harry Potter (:func:`resolve_concept`).
    """
    device = pick_device(os.environ.get("EMBER_DEVICE") or None)
    name = model_name or os.environ.get("EMBER_MODEL")
    if name is None:
        if device.type == "cuda":
            gpu = get_preset(GPU_DEFAULT_MODEL)
            name = GPU_DEFAULT_MODEL if (not gpu.gated or _hf_token()) else DEFAULT_MODEL
            if name == DEFAULT_MODEL and not quiet:
                print(f"GPU found but no HF_TOKEN for the gated {GPU_DEFAULT_MODEL}; using {DEFAULT_MODEL}.")
        else:
            name = DEFAULT_MODEL
    get_preset(name)  # validate early with a clear error
    slug = resolve_concept(concept)
    set_seed(seed)
    ctx = ChapterContext(fast=is_fast(), device=device, model_name=name, in_colab=in_colab(), seed=seed,
                         concept=slug)
    if not quiet:
        print(ctx)
    return ctx


def concept_card(concept: Any) -> Any:
    """A short Markdown card of the concept a chapter runs on (name, description, similar domain, data card, sizes):
    the chapter's text describes the default concept; this card and the outputs describe the chosen one."""
    from IPython.display import Markdown

    n_mc = {s: len(concept.split("mc", s)) for s in ("train", "test")}
    return Markdown(f"**Concept: {concept.name}** (`data/{concept.slug}/`, data card `data/{concept.slug}/DATACARD.md`)"
                    f" — {concept.meta['description']} Similar domain (specificity): *{concept.similar_domain}*. "
                    f"{len(concept.sentences)} sentences, {n_mc['train']} train / {n_mc['test']} test questions, "
                    f"{len(concept.relearn)} relearning paragraphs.")


def glue(name: str, value: object, display: bool = True) -> None:
    """``myst_nb.glue`` when it is installed (the book build: the page's text can cite ``value`` by ``name``);
    elsewhere (Colab, plain Jupyter: myst-nb is only in the ``book`` extra) just show ``value`` if ``display``."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show

            show(value)
        return
    myst_glue(name, value, display=display)


def chapter_timings_table(path: str | Path | None = None) -> Any:
    """The measured wall time of every chapter (``benchmarks/results/chapter_timings.json``, written by
    ``benchmarks/chapter_timings.py``): one row per chapter with the FAST and full times in minutes and the machine
    and date of each measurement; a chapter or mode not measured yet says so instead of a number."""
    import json

    import pandas as pd

    path = Path(path) if path else repo_root() / "benchmarks" / "results" / "chapter_timings.json"
    if not path.exists():
        raise FileNotFoundError(f"No chapter timings at {path}; run `python benchmarks/chapter_timings.py`.")
    chapters = json.loads(path.read_text()).get("chapters", {})
    rows = []
    for name in sorted(chapters):
        entry = chapters[name]
        row = {"chapter": name}
        for mode in ("fast", "full"):
            s = entry.get(f"{mode}_s")
            row[f"CPU, {mode.upper() if mode == 'fast' else mode}"] = (
                f"{s / 60:.1f} min" if s is not None else "not measured yet")
            row[f"{mode} measured"] = (f"{entry[f'{mode}_date']}, {entry[f'{mode}_machine']}" if s is not None
                                       else "—")
        rows.append(row)
    return pd.DataFrame(rows)
