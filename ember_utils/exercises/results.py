"""Chapter 8 exercises: a percentile bootstrap interval, and the regained-accuracy table from the robustness rows."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ._check import ExerciseFailed, as_array, call, compare, passed

__all__ = ["check_bootstrap_interval", "check_regained_table"]


def check_bootstrap_interval(fn: Callable[..., Any], values: Any, level: float = 0.95, seed: int = 0) -> bool:
    """``fn(values, level, seed)`` → (estimate, low, high): the mean of the 0/1 ``values`` and its percentile
    bootstrap interval (resample the questions with replacement, take the quantiles of the resampled means).
    Different random draws are allowed: the ends must lie within 0.04 of the package's interval."""
    from ..eval.intervals import bootstrap_interval

    name = "bootstrap interval"
    x = as_array(values, name, "values").ravel()
    est, lo, hi = bootstrap_interval(x, level=level, n_boot=5000, seed=seed)
    got = as_array(call(fn, name, x.copy(), level, seed), name, "(estimate, low, high)").ravel()
    if got.shape != (3,):
        raise ExerciseFailed(f"{name}: return three numbers (estimate, low, high), got {got.shape}.")
    compare(name, "the estimate", got[0], est, atol=1e-9, rtol=0)
    if not got[1] <= got[0] <= got[2]:
        raise ExerciseFailed(f"{name}: the interval [{got[1]:.3f}, {got[2]:.3f}] does not contain the estimate "
                             f"{got[0]:.3f}.")
    if got[1] == got[2]:
        raise ExerciseFailed(f"{name}: the interval has zero width; resample with replacement (without it every "
                             "resample is the same set of questions).")
    if abs(got[1] - lo) > 0.04 or abs(got[2] - hi) > 0.04:
        se = x.std(ddof=1) / np.sqrt(len(x))
        wrong_level = (got[2] - got[1]) < 0.8 * (hi - lo) or (got[2] - got[1]) > 1.25 * (hi - lo)
        hint = (f"the width is {got[2] - got[1]:.3f} against {hi - lo:.3f}: check the quantiles (a 95 % interval "
                "cuts 2.5 % at each end)" if wrong_level else
                f"the ends are off; take quantiles of the resampled means (standard error {se:.3f})")
        raise ExerciseFailed(f"{name}: yours [{got[1]:.3f}, {got[2]:.3f}], the package's [{lo:.3f}, {hi:.3f}]; {hint}.")
    return passed(name, f"{est:.3f} [{got[1]:.3f}, {got[2]:.3f}] (package [{lo:.3f}, {hi:.3f}], n = {len(x)})")


def check_regained_table(fn: Callable[[pd.DataFrame, float], pd.DataFrame], table: pd.DataFrame,
                         chance: float = 0.25) -> bool:
    """``fn(table, chance)`` → a frame with ``method`` and ``regained_normalized`` for every erased row of a
    robustness table (columns ``method``, ``acc_before``, ``acc_relearn_full``): (after − chance) / (unedited's
    accuracy before − chance); compared with :func:`ember_utils.experiments.experiment.regained_table`."""
    from ..experiments.experiment import regained_table

    name = "regained table"
    expected = regained_table(table, chance=chance).set_index("method")["regained_normalized"]
    got = call(fn, name, table.copy(), chance)
    if not isinstance(got, pd.DataFrame) or not {"method", "regained_normalized"} <= set(got.columns):
        raise ExerciseFailed(f"{name}: return a DataFrame with columns 'method' and 'regained_normalized'.")
    got = got.set_index("method")["regained_normalized"]
    missing = sorted(set(expected.index) - set(got.index))
    if missing:
        raise ExerciseFailed(f"{name}: rows {missing} are missing (every erased method: EMBER, ELM, ELM+EMBER, ...).")
    rows = table.set_index("method")
    after = rows.loc[expected.index, "acc_relearn_full"].astype(float)
    compare(name, "regained_normalized", got.loc[expected.index], expected, atol=1e-6, rtol=1e-6, mistakes={
        "divide by the unedited accuracy without subtracting chance": after / float(rows.loc["unedited", "acc_before"]),
        "normalize by each method's own accuracy before the attack":
            (after - chance) / (rows.loc[expected.index, "acc_before"].astype(float) - chance)})
    return passed(name, f"{len(expected)} methods")
