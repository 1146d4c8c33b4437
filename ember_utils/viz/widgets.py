"""Interactive views: circuitsvis token colouring and ipywidgets explorers, each with a static fallback.

circuitsvis output embeds its JavaScript inline (``RenderedHTML.local_src``) so it renders without network, in
the static book as well as in Jupyter and Colab.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["colored_tokens_html", "atom_explorer"]


def colored_tokens_html(tokens: Sequence[str], values: Sequence[float], max_value: float | None = None) -> Any:
    """circuitsvis ``colored_tokens`` as an IPython HTML object with the JavaScript inlined (offline-safe)."""
    import circuitsvis as cv
    from IPython.display import HTML

    vals = [float(v) for v in values]
    lim = max_value if max_value is not None else (max(abs(v) for v in vals) or 1.0)
    rendered = cv.tokens.colored_tokens(list(tokens), vals, min_value=-lim, max_value=lim)
    return HTML(rendered.local_src)


def atom_explorer(table: pd.DataFrame, atom_column: str = "atom") -> Any:
    """An ipywidgets dropdown over the rows of ``table`` (one per atom) showing that atom's row.

    In the static book the widget is inert, so chapters also print the full table (the static fallback).
    """
    import ipywidgets as widgets
    from IPython.display import display

    options = [int(a) for a in table[atom_column]]
    dropdown = widgets.Dropdown(options=options, description="atom")
    out = widgets.Output()

    def show(change: Any = None) -> None:
        out.clear_output()
        with out:
            display(table[table[atom_column] == dropdown.value].T)

    dropdown.observe(show, names="value")
    show()
    return widgets.VBox([dropdown, out])
