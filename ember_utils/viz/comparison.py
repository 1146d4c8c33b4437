"""The comparison figure of ``results/<model>/<concept>/comparison.csv`` (written next to it as comparison.png).

Usage::

    python -m ember_utils.viz.comparison --concept harry_potter association_football
"""
from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

from ..io import atomic_write_bytes
from ..paths import results_dir

__all__ = ["write_comparison_figure", "main"]


def write_comparison_figure(concept: str, model_name: str = "gemma-3-270m", root: str | Path | None = None) -> Path:
    """Draw :func:`~ember_utils.viz.plots.comparison_plot` of the concept's ``comparison.csv`` into comparison.png."""
    import pandas as pd

    from .plots import comparison_plot

    folder = results_dir(model_name, concept, root)
    path = folder / "comparison.csv"
    if not path.exists():
        raise FileNotFoundError(f"No {path}; run `python -m ember_utils.experiments.runner compare --concept {concept}`.")
    fig = comparison_plot(pd.read_csv(path), title=f"{concept}: test split")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(folder / "comparison.png", buf.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    matplotlib.use("Agg")
    parser = argparse.ArgumentParser(prog="python -m ember_utils.viz.comparison", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", nargs="+", default=["harry_potter"])
    parser.add_argument("--model", default="gemma-3-270m")
    args = parser.parse_args(argv)
    for concept in args.concept:
        print(write_comparison_figure(concept, args.model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
