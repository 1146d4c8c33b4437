"""What one evaluation of a model state produces: raw measurements and the evaluated result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .likelihood import _token_perplexity
from .mc import mc_accuracy


@dataclass
class Measurements:
    """Raw measurements of one model state (before normalization against the unedited model)."""

    name: str
    mc: pd.DataFrame           # score_mc rows + column 'set' (concept / similar / general / indirect / other_sense)
    open: pd.DataFrame         # score_open rows
    perplexity: float          # held-out neutral perplexity
    generations: pd.DataFrame  # id, prompt, generation, n_tokens, token_ids, base_logprob (mean per token, unedited)
    seconds: float
    neutral: pd.DataFrame | None = None  # text_logprobs rows of the neutral sentences (text, n_tokens, logprob)
    #: items actually run through the model per part ('concept', 'similar', 'general', 'open', 'neutral',
    #: 'generations'); fewer than the part's size when unaffected items were reused (Evaluator.evaluate).
    remeasured: dict[str, int] = field(default_factory=dict)
    collateral: pd.DataFrame | None = None  # text_logprobs rows of the other-sense sentences
    #: seamlessness continuations of the concept prompts: id, prompt, generation, n_tokens, token_ids,
    #: fluency, repetition, word_share (``eval.seamlessness``)
    seamless: pd.DataFrame | None = None

    def accuracy(self, which: str) -> float:
        return mc_accuracy(self.mc[self.mc["set"] == which])

    @property
    def fluency(self) -> float:
        """Mean over prompts of the per-token log-likelihood of the generations under the unedited model."""
        return float(self.generations["base_logprob"].mean())

    def raw(self) -> dict[str, float]:
        """Accuracies per MC set, open accuracy, perplexities and fluencies (the keys of
        :func:`~ember_utils.eval.metrics.compute_metrics`); optional parts only when measured."""
        out = {which: self.accuracy(which) for which in self.mc["set"].unique()}
        out.update(open=mc_accuracy(self.open), perplexity=self.perplexity, fluency=self.fluency)
        if self.collateral is not None:
            out["other_sense_perplexity"] = _token_perplexity(self.collateral)
        if self.seamless is not None:
            for col in ("fluency", "repetition", "word_share"):
                out[f"seamless_{col}"] = float(self.seamless[col].mean())
        return out


@dataclass
class EvalResult:
    """One evaluated state: ``metrics`` (flat dict, also the row of :meth:`Evaluator.table`), the raw
    per-question / per-prompt tables and the state that was measured (``None`` for the unedited model)."""

    name: str
    metrics: dict[str, Any]
    measurements: Measurements
    state: Any = None

    @property
    def mc(self) -> pd.DataFrame:
        return self.measurements.mc

    @property
    def open(self) -> pd.DataFrame:
        return self.measurements.open

    @property
    def generations(self) -> pd.DataFrame:
        return self.measurements.generations

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([self.metrics])
