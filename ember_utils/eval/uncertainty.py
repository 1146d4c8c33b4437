"""Intervals for every accuracy and metric of an evaluated state, paired with the unedited model.

:func:`paired_metric_intervals` resamples the items of every part (questions per MC set, neutral and
other-sense sentences, prompts) with replacement, the *same* draw for the state and for the unedited model
(they were measured on the same items), and recomputes all metrics on each draw: percentile intervals of the
accuracies, of their differences from the unedited model and of efficacy, specificity, coherence and the
score. :func:`flip_tests` adds McNemar's test per MC set.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .intervals import mcnemar_test
from .measurements import Measurements
from .metrics import compute_metrics

__all__ = ["paired_metric_intervals", "flip_tests", "named_breakdown", "INTERVAL_METRICS"]

#: Metrics that get ``_lo`` / ``_hi`` bounds (when the evaluation measured them).
INTERVAL_METRICS = ("efficacy", "efficacy_indirect", "specificity", "coherence", "score", "seamlessness",
                    "norm_concept", "norm_indirect", "norm_similar", "norm_general", "norm_other_sense",
                    "other_sense_text_term", "ppl_term", "fluency_term")
_RAW_TO_METRIC = {"concept": "acc_concept", "similar": "acc_similar", "general": "acc_general",
                  "indirect": "acc_indirect", "other_sense": "acc_other_sense", "perplexity": "perplexity",
                  "other_sense_perplexity": "other_sense_perplexity", "fluency": "fluency_logprob"}


def _draws(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return np.vstack([np.arange(n)[None, :], rng.integers(0, n, size=(n_boot, n))])  # row 0 = the sample itself


def _resampled_raw(meas: Measurements, idx: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw measurements (the keys of :meth:`Measurements.raw`) for every row of the index draws."""
    out: dict[str, np.ndarray] = {}
    for which in meas.mc["set"].unique():
        correct = meas.mc.loc[meas.mc["set"] == which, "correct"].to_numpy(float)
        out[which] = correct[idx[f"mc:{which}"]].mean(axis=1)
    for key, frame in (("perplexity", meas.neutral), ("other_sense_perplexity", meas.collateral)):
        if frame is None:
            continue
        lp, nt = frame["logprob"].to_numpy(float), frame["n_tokens"].to_numpy(float)
        out[key] = np.exp(-lp[idx[key]].sum(axis=1) / nt[idx[key]].sum(axis=1))
    if meas.neutral is None:
        out["perplexity"] = np.full(len(next(iter(idx.values()))), meas.perplexity)
    out["fluency"] = meas.generations["base_logprob"].to_numpy(float)[idx["coherence"]].mean(axis=1)
    if meas.seamless is not None:
        for col in ("fluency", "repetition", "word_share"):
            out[f"seamless_{col}"] = meas.seamless[col].to_numpy(float)[idx["seamless"]].mean(axis=1)
    return out


def _part_sizes(meas: Measurements) -> dict[str, int]:
    sizes = {f"mc:{w}": int((meas.mc["set"] == w).sum()) for w in meas.mc["set"].unique()}
    if meas.neutral is not None:
        sizes["perplexity"] = len(meas.neutral)
    if meas.collateral is not None:
        sizes["other_sense_perplexity"] = len(meas.collateral)
    sizes["coherence"] = len(meas.generations)
    if meas.seamless is not None:
        sizes["seamless"] = len(meas.seamless)
    return sizes


def paired_metric_intervals(meas: Measurements, base: Measurements, level: float = 0.95, n_boot: int = 2000,
                            seed: int = 0) -> dict[str, float]:
    """``<name>_lo`` / ``<name>_hi`` for every accuracy (``acc_*``), its difference from the unedited model
    (``d_acc_*``, with the difference itself), the neutral perplexity and every metric of
    :data:`INTERVAL_METRICS` that was measured (these also get ``<name>_se``, the bootstrap standard error).

    ``meas`` and ``base`` must come from the same evaluator (the same items in the same order).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    sizes = _part_sizes(meas)
    if sizes != _part_sizes(base):
        raise ValueError(f"The state and the unedited model were measured on different items: {sizes} vs "
                         f"{_part_sizes(base)}; use results of the same Evaluator.")
    rng = np.random.default_rng(seed)
    idx = {part: _draws(n, n_boot, rng) for part, n in sizes.items()}
    raw, braw = _resampled_raw(meas, idx), _resampled_raw(base, idx)
    alpha = (1 - level) / 2
    out: dict[str, float] = {}

    def bounds(name: str, values: np.ndarray, se: bool = False) -> None:
        v = values[1:]
        v = v[np.isfinite(v)]
        out[f"{name}_lo"], out[f"{name}_hi"] = ((float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha)))
                                                if v.size else (float("nan"), float("nan")))
        if se:
            out[f"{name}_se"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")

    for key, metric in _RAW_TO_METRIC.items():
        if key in raw:
            bounds(metric, raw[key])
            if metric.startswith("acc_"):
                out[f"d_{metric}"] = float(raw[key][0] - braw[key][0])  # row 0 = the measured items themselves
                bounds(f"d_{metric}", raw[key] - braw[key])
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a draw whose unedited accuracy is at chance gives NaN (dropped)
        for b in range(n_boot + 1):
            rows.append(compute_metrics({k: float(v[b]) for k, v in raw.items()},
                                        {k: float(v[b]) for k, v in braw.items()}))
    for name in INTERVAL_METRICS:
        if name in rows[0]:
            bounds(name, np.array([r[name] for r in rows], dtype=float), se=True)
    return out


def flip_tests(meas: Measurements, base: Measurements) -> dict[str, float]:
    """McNemar's exact test per MC set: ``lost_<set>`` (right → wrong), ``gained_<set>`` and ``mcnemar_p_<set>``."""
    out: dict[str, float] = {}
    for which in base.mc["set"].unique():
        b = base.mc.loc[base.mc["set"] == which, "correct"].to_numpy(bool)
        a = meas.mc.loc[meas.mc["set"] == which, "correct"].to_numpy(bool)
        t = mcnemar_test(b, a)
        out[f"lost_{which}"], out[f"gained_{which}"] = t["right_to_wrong"], t["wrong_to_right"]
        out[f"mcnemar_p_{which}"] = t["p_value"]
    return out


def named_breakdown(state_correct: Any, base_correct: Any, named: Any, prefix: str = "concept") -> dict[str, float]:
    """Accuracy on the questions that contain an edited token (``named``) and on those that contain none,
    for the state and the unedited model, and the share of the lost correct answers that were lost on
    questions without an edited token (``<prefix>_drop_share_unnamed``; NaN when nothing was lost overall)."""
    a, b, m = (np.asarray(x, dtype=bool) for x in (state_correct, base_correct, named))
    if not a.shape == b.shape == m.shape:
        raise ValueError(f"state_correct, base_correct and named must be paired: {a.shape}, {b.shape}, {m.shape}.")
    out: dict[str, float] = {}
    for label, mask in (("named", m), ("unnamed", ~m)):
        out[f"n_{prefix}_{label}"] = int(mask.sum())
        out[f"acc_{prefix}_{label}"] = float(a[mask].mean()) if mask.any() else float("nan")
        out[f"base_acc_{prefix}_{label}"] = float(b[mask].mean()) if mask.any() else float("nan")
    drop = int(b.sum()) - int(a.sum())
    out[f"{prefix}_drop_share_unnamed"] = ((int(b[~m].sum()) - int(a[~m].sum())) / drop) if drop > 0 else float("nan")
    return out


#: metrics whose difference between two states :func:`paired_difference_intervals` reports
DIFFERENCE_METRICS = ("acc_concept", "acc_indirect", "efficacy", "specificity", "coherence", "seamlessness", "score")


def paired_difference_intervals(meas_a: Measurements, meas_b: Measurements, base: Measurements,
                                metrics: Sequence[str] = DIFFERENCE_METRICS, level: float = 0.95,
                                n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """B − A for each metric (``diff_<m>``, ``diff_<m>_lo``/``_hi``), with the same bootstrap draw of items for A,
    B and the unedited model (e.g. A = ELM, B = ELM+EMBER: does adding the edit change efficacy, and at what
    cost?). All three must come from the same evaluator."""
    sizes = _part_sizes(base)
    if _part_sizes(meas_a) != sizes or _part_sizes(meas_b) != sizes:
        raise ValueError("The two states and the unedited model were measured on different items; use results of "
                         "the same Evaluator.")
    rng = np.random.default_rng(seed)
    idx = {part: _draws(n, n_boot, rng) for part, n in sizes.items()}
    ra, rb, rbase = (_resampled_raw(m, idx) for m in (meas_a, meas_b, base))
    alpha = (1 - level) / 2
    values: dict[str, list[float]] = {m: [] for m in metrics}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(n_boot + 1):
            base_b = {k: float(v[b]) for k, v in rbase.items()}
            ma = compute_metrics({k: float(v[b]) for k, v in ra.items()}, base_b)
            mb = compute_metrics({k: float(v[b]) for k, v in rb.items()}, base_b)
            for m in metrics:
                if m.startswith("acc_"):
                    key = m[4:]
                    va = float(ra[key][b]) if key in ra else float("nan")
                    vb = float(rb[key][b]) if key in rb else float("nan")
                else:
                    va, vb = ma.get(m, float("nan")), mb.get(m, float("nan"))
                values[m].append(vb - va)
    out: dict[str, float] = {}
    for m, vals in values.items():
        arr = np.asarray(vals, dtype=float)
        out[f"diff_{m}"] = float(arr[0])
        rest = arr[1:][np.isfinite(arr[1:])]
        out[f"diff_{m}_lo"], out[f"diff_{m}_hi"] = ((float(np.quantile(rest, alpha)), float(np.quantile(rest, 1 - alpha)))
                                                    if rest.size else (float("nan"), float("nan")))
    return out
