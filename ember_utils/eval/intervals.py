"""Uncertainty of accuracies and of differences between two states: bootstrap intervals over questions,
the analytic (Wilson) binomial interval they are checked against, and McNemar's test for flipped answers."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_interval", "paired_bootstrap_interval", "wilson_interval", "mcnemar_test"]


def _as_matrix(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of per-question values, got shape {x.shape}.")
    if np.isnan(x).any():
        raise ValueError(f"{name} contains NaN.")
    return x


def bootstrap_interval(values: Sequence[float] | np.ndarray, level: float = 0.95, n_boot: int = 5000,
                       seed: int = 0, statistic: Callable[[np.ndarray], np.ndarray] | None = None
                       ) -> tuple[float, float, float]:
    """(estimate, low, high): the statistic (default: the mean, e.g. accuracy of 0/1 correctness) of
    ``values`` and its percentile bootstrap interval, resampling questions with replacement."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    x = _as_matrix(values, "values")
    stat = statistic or (lambda m: m.mean(axis=-1))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    boots = np.asarray(stat(x[idx]), dtype=float)
    alpha = (1 - level) / 2
    return float(stat(x[None, :])[0]), float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def paired_bootstrap_interval(after: Sequence[float] | np.ndarray, before: Sequence[float] | np.ndarray,
                              level: float = 0.95, n_boot: int = 5000, seed: int = 0) -> tuple[float, float, float]:
    """(difference of means, low, high) for ``after − before`` measured on the *same* questions: the questions
    are resampled once for both, so the interval reflects the paired design."""
    a, b = _as_matrix(after, "after"), _as_matrix(before, "before")
    if a.shape != b.shape:
        raise ValueError(f"after and before must be measured on the same questions ({a.size} vs {b.size}).")
    return bootstrap_interval(a - b, level=level, n_boot=n_boot, seed=seed)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (the analytic check of :func:`bootstrap_interval`)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}.")
    z = stats.norm.ppf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mcnemar_test(before: Sequence[bool], after: Sequence[bool]) -> dict[str, float]:
    """Exact McNemar test on paired correctness: ``right_to_wrong``, ``wrong_to_right`` and the two-sided
    binomial p-value of the discordant pairs (1.0 when nothing flipped)."""
    b = np.asarray(before, dtype=bool)
    a = np.asarray(after, dtype=bool)
    if b.shape != a.shape or b.ndim != 1:
        raise ValueError(f"before and after must be 1-D and paired, got shapes {b.shape} and {a.shape}.")
    lost, gained = int((b & ~a).sum()), int((~b & a).sum())
    n = lost + gained
    p = 1.0 if n == 0 else float(stats.binomtest(lost, n, 0.5).pvalue)
    return {"right_to_wrong": lost, "wrong_to_right": gained, "p_value": p}
