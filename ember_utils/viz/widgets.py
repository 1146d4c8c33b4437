"""Interactive views: circuitsvis token colouring and ipywidgets explorers, each with a static fallback.

circuitsvis output embeds its JavaScript inline (``RenderedHTML.local_src``) so it renders without network, in
the static book as well as in Jupyter and Colab.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["colored_tokens_html", "attention_view", "atom_explorer"]


def colored_tokens_html(tokens: Sequence[str], values: Sequence[float], max_value: float | None = None) -> Any:
    """circuitsvis ``colored_tokens`` as an IPython HTML object with the JavaScript inlined (offline-safe)."""
    import circuitsvis as cv
    from IPython.display import HTML

    vals = [float(v) for v in values]
    lim = max_value if max_value is not None else (max(abs(v) for v in vals) or 1.0)
    rendered = cv.tokens.colored_tokens(list(tokens), vals, min_value=-lim, max_value=lim)
    return HTML(rendered.local_src)


def attention_view(bridge: Any, text: str, layer: int, state: Any = None) -> Any:
    """circuitsvis ``attention_heads`` of ``layer`` for ``text`` under ``state`` (None: the unedited model), as an
    IPython HTML object with the JavaScript inlined (offline-safe)."""
    import circuitsvis as cv
    from IPython.display import HTML

    from ..interp.attention import attention_patterns

    if not 0 <= layer < bridge.cfg.n_layers:
        raise ValueError(f"layer {layer} is outside 0..{bridge.cfg.n_layers - 1}.")
    pat = attention_patterns(bridge, text, state)[layer]
    rendered = cv.attention.attention_heads(attention=pat, tokens=bridge.to_str_tokens(text),
                                            attention_head_names=[f"L{layer}H{h}" for h in range(pat.shape[0])])
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
