"""Tables of evaluated states for reading: every number with its 95 % interval, flips with McNemar's test."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["with_interval", "interval_table", "flip_table"]


def with_interval(metrics: Mapping[str, Any], key: str, digits: int = 3) -> str:
    """``'0.514 [0.400, 0.629]'`` from ``metrics[key]`` and ``metrics[key + '_lo' / '_hi']`` (the estimate alone
    when there are no bounds; ``'—'`` when the value is missing or NaN)."""
    v = metrics.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    lo, hi = metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi")
    if lo is None or hi is None or any(isinstance(x, float) and math.isnan(x) for x in (lo, hi)):
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _metrics_of(result: Any) -> Mapping[str, Any]:
    return result.metrics if hasattr(result, "metrics") else result


def interval_table(results: Sequence[Any], keys: Sequence[str], labels: Mapping[str, str] | None = None,
                   digits: int = 3) -> pd.DataFrame:
    """One row per result (an ``EvalResult`` or its metrics dict), one column per key, each cell
    :func:`with_interval`; ``labels`` renames the columns."""
    labels = labels or {}
    rows = []
    for r in results:
        m = _metrics_of(r)
        rows.append({"state": m.get("name", ""), **{labels.get(k, k): with_interval(m, k, digits) for k in keys}})
    return pd.DataFrame(rows).set_index("state")


def flip_table(result: Any, sets: Sequence[str] = ("concept", "indirect", "similar", "other_sense", "general")
               ) -> pd.DataFrame:
    """Per MC set: questions, right → wrong, wrong → right and McNemar's exact p-value against the unedited model."""
    m = _metrics_of(result)
    rows = [{"set": s, "questions": m[f"n_{s}"], "right → wrong": m[f"lost_{s}"], "wrong → right": m[f"gained_{s}"],
             "McNemar p": m[f"mcnemar_p_{s}"]} for s in sets if f"lost_{s}" in m]
    return pd.DataFrame(rows).set_index("set")
