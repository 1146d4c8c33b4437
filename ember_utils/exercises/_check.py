"""What every check shares: turning a reader's answer into an array, comparing it with the reference, and naming
the mistake when the answer matches a known wrong variant."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["ExerciseFailed", "as_array", "call", "compare", "passed"]


class ExerciseFailed(AssertionError):
    """A reader's implementation gives a wrong answer; the message says where and, when it can, why."""


def as_array(value: Any, exercise: str, what: str) -> np.ndarray:
    """``value`` (tensor, array, list, Series) as a float array, or a failure saying what came back instead."""
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    elif hasattr(value, "to_numpy"):
        value = value.to_numpy()
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ExerciseFailed(f"{exercise}: {what} should be numbers (an array or tensor); got {type(value).__name__}."
                             ) from exc


def call(fn: Callable[..., Any], exercise: str, *args: Any, **kwargs: Any) -> Any:
    """Run the reader's function; an exception inside it becomes a failure that names the exercise."""
    if not callable(fn):
        raise ExerciseFailed(f"{exercise}: pass your function itself (got {type(fn).__name__}).")
    try:
        return fn(*args, **kwargs)
    except ExerciseFailed:
        raise
    except Exception as exc:  # the reader's code failed: say so with its own error
        raise ExerciseFailed(f"{exercise}: your function raised {type(exc).__name__}: {exc}") from exc


def _close(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True))


def compare(exercise: str, what: str, got: Any, expected: Any, *, atol: float = 1e-5, rtol: float = 1e-4,
            mistakes: Mapping[str, Any] | None = None) -> np.ndarray:
    """Fail unless ``got`` equals ``expected`` within tolerance. ``mistakes`` maps a description of a common
    mistake to the answer it produces; a wrong answer that matches one is told which."""
    g = as_array(got, exercise, what)
    e = as_array(expected, exercise, "the reference")
    if g.shape != e.shape:
        raise ExerciseFailed(f"{exercise}: {what} has shape {g.shape}, expected {e.shape}.")
    if _close(g, e, atol, rtol):
        return g
    for description, wrong in (mistakes or {}).items():
        w = as_array(wrong, exercise, "a known mistake")
        if _close(g, w, atol, rtol):
            raise ExerciseFailed(f"{exercise}: {what} is wrong; it matches what you get when you {description}.")
    if not np.isfinite(g).all() and np.isfinite(e).all():
        raise ExerciseFailed(f"{exercise}: {what} holds {int((~np.isfinite(g)).sum())} NaN/inf values; the reference "
                             "has none.")
    diff = np.abs(np.nan_to_num(g - e, nan=np.inf))
    at = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    n_bad = int((diff > atol + rtol * np.abs(e)).sum())
    where = f" at index {tuple(int(i) for i in at)}" if at else ""
    raise ExerciseFailed(f"{exercise}: {what} differs from the reference in {n_bad} of {max(e.size, 1)} entries; the "
                         f"largest difference is{where}: yours {g[at]:.6g}, reference {e[at]:.6g}.")


def passed(exercise: str, detail: str) -> bool:
    """Print the confirmation and return True (so a cell can ``assert check_...(...)``)."""
    print(f"✓ {exercise}: {detail}")
    return True
